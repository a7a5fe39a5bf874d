"""Project files keep the conventions: environment.yml mirrors pyproject.toml, and every
committed notebook is headless-ready (kernelspec, ids, one literal parameters cell, no
outputs, CI parameters, an nbval-ignored environment cell at the end)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
import tomllib
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from mlw_lib import notebooks
from mlw_lib.paths import repo_root

ROOT = repo_root()
NOTEBOOKS = notebooks.list_notebooks()
# With no notebooks the parametrized tests get one `None` and fail instead of being skipped.
NOTEBOOK_CASES = [pytest.param(path, id=path.stem) for path in NOTEBOOKS] or [
    pytest.param(None, id="no-notebooks")
]
ENVIRONMENT_WORDS = re.compile(r"environment|version|git", re.IGNORECASE)


def pyproject() -> dict[str, Any]:
    """The parsed pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def environment() -> dict[str, Any]:
    """The parsed environment.yml."""
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def conda_dependencies() -> tuple[list[str], list[str]]:
    """(conda specs, pip lines) of environment.yml."""
    conda, pip = [], []
    for entry in environment()["dependencies"]:
        if isinstance(entry, dict):
            pip.extend(entry["pip"])
        else:
            conda.append(entry)
    return conda, pip


def pinned_names() -> set[str]:
    """Canonical names of every dependency pyproject.toml declares, extras included."""
    project = pyproject()["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {canonicalize_name(Requirement(spec).name) for spec in specs}


def notebook(path: Path | None) -> nbformat.NotebookNode:
    """Read a committed notebook; fail (not skip) when there are none."""
    assert path is not None, "no numbered notebooks in notebooks/"
    return nbformat.read(path, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The notebook's code cells."""
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    """A cell's tags."""
    return list(cell.get("metadata", {}).get("tags", []))


# --- environment.yml ---------------------------------------------------------------------------


def test_environment_yml_python_matches_requires_python() -> None:
    conda, _ = conda_dependencies()
    pythons = [spec for spec in conda if re.fullmatch(r"python\s*[=<>!~].*", spec)]
    assert len(pythons) == 1, f"environment.yml must pin python once, got {pythons}"
    version = re.fullmatch(r"python\s*=\s*(\d+\.\d+)", pythons[0])
    assert version, f"pin python as python=X.Y, got {pythons[0]!r}"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(version.group(1)), f"{pythons[0]} violates {requires}"


def test_environment_yml_installs_the_project_with_its_extras() -> None:
    conda, pip = conda_dependencies()
    assert "pip" in conda
    editable = [line for line in pip if line.startswith("-e ")]
    assert len(editable) == 1, f"expected one `-e .[extras]` line, got {editable}"
    match = re.fullmatch(r"-e \.(?:\[([\w,-]+)\])?", editable[0])
    assert match, f"the project must be installed from the repo root: {editable[0]!r}"
    extras = set(match.group(1).split(",")) if match.group(1) else set()
    declared = set(pyproject()["project"].get("optional-dependencies", {}))
    assert extras == declared, f"install every extra {sorted(declared)}, got {sorted(extras)}"


def test_environment_yml_names_nothing_outside_pyproject() -> None:
    conda, pip = conda_dependencies()
    allowed = pinned_names()
    for spec in conda:
        name = canonicalize_name(re.split(r"[=<>!~ ]", spec, maxsplit=1)[0])
        assert name in allowed | {"python", "pip"}, f"{spec} is not in pyproject.toml"
    for line in pip:
        if line.startswith(("-e ", "-c ", "-r ")):
            continue
        assert canonicalize_name(Requirement(line).name) in allowed, line


def test_environment_yml_uses_the_constraints_file() -> None:
    _, pip = conda_dependencies()
    constraints = [line.split(maxsplit=1)[1] for line in pip if line.startswith("-c ")]
    assert constraints == ["constraints.txt"]
    assert (ROOT / "constraints.txt").is_file()


# --- notebooks ---------------------------------------------------------------------------------


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no numbered notebooks NN_name.ipynb in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOK_CASES)
def test_notebook_kernelspec_and_cell_ids(path: Path | None) -> None:
    nb = notebook(path)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert all(cell.get("id") for cell in nb.cells), "every cell needs an id"


@pytest.mark.parametrize("path", NOTEBOOK_CASES)
def test_notebook_has_no_stored_outputs(path: Path | None) -> None:
    for index, cell in enumerate(code_cells(notebook(path))):
        assert not cell.outputs, f"cell {index} has stored outputs"
        assert cell.execution_count is None, f"cell {index} has an execution count"


def comment_lines(source: str) -> set[int]:
    """Line numbers (1-based) that carry a non-empty `#` comment."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {
        token.start[0]
        for token in tokens
        if token.type == tokenize.COMMENT and token.string.lstrip("#").strip()
    }


@pytest.mark.parametrize("path", NOTEBOOK_CASES)
def test_parameters_cell_is_commented_literal_assignments(path: Path | None) -> None:
    nb = notebook(path)
    cell = nb.cells[notebooks.parameters_cell_index(path)]
    assert cell.cell_type == "code"
    statements = ast.parse(cell.source).body
    assert statements, "the parameters cell is empty"
    commented = comment_lines(cell.source)
    for statement in statements:
        line = ast.get_source_segment(cell.source, statement)
        assert isinstance(statement, ast.Assign), f"not a plain assignment: {line}"
        assert len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name), line
        try:
            ast.literal_eval(statement.value)
        except ValueError:
            pytest.fail(f"not a literal (derived values go after this cell): {line}")
        span = range(statement.lineno, statement.end_lineno + 1)
        assert commented.intersection(span), f"needs a `# comment`: {line}"


@pytest.mark.parametrize("path", NOTEBOOK_CASES)
def test_notebook_has_valid_ci_parameters(path: Path | None) -> None:
    notebook(path)
    ci_file = notebooks.parameter_set_file("ci", path.stem)
    assert ci_file.is_file(), f"missing {ci_file.relative_to(ROOT)}"
    notebooks.validate_parameters(path, notebooks.load_parameter_file(ci_file))


@pytest.mark.parametrize("path", NOTEBOOK_CASES)
def test_papermill_reads_the_same_parameters(path: Path | None) -> None:
    """papermill's own line-based inspection must see every parameter, or it warns "Passed
    unknown parameter" on each run (it cannot parse a line with two `=`, e.g. in a comment)."""
    import papermill

    notebook(path)
    assert list(papermill.inspect_notebook(str(path))) == list(notebooks.notebook_parameters(path))


@pytest.mark.parametrize("path", NOTEBOOK_CASES)
def test_last_code_cell_records_the_environment_ignored_by_nbval(path: Path | None) -> None:
    last = code_cells(notebook(path))[-1]
    assert "nbval-ignore-output" in tags(last), "tag the environment cell nbval-ignore-output"
    assert ENVIRONMENT_WORDS.search(last.source), "the last code cell records the environment"


PARAMETER_FILES = sorted((repo_root() / "params").glob("*/*.yaml"))


@pytest.mark.parametrize("path", PARAMETER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_parameter_file_names_only_its_notebooks_parameters(path: Path) -> None:
    """params/<set>/<NN>_*.yaml belongs to notebook NN; unknown names would only surface when
    someone runs the file. Variant files `<key>.<variant>.yaml` must name an existing key."""
    notebook = notebooks.resolve_notebook(path.name[:2])
    if path.name.count(".") == 2:
        assert path.name.split(".")[0] == notebook.stem, f"no notebook {path.name.split('.')[0]}"
    notebooks.validate_parameters(notebook, notebooks.load_parameter_file(path))


def test_paper_figures_of_02_cnn_cifar10_are_cifar10_only() -> None:
    """Other datasets' 02 runs are variants (`02_cnn_cifar10.<variant>.yaml`) whose dataset
    names their figure folder `figures/paper/02_cnn_<dataset>/`."""
    runs = notebooks.parameter_set_files("paper", "02_cnn_cifar10")
    assert runs, "make paper must run notebook 02"
    for variant, path in runs.items():
        dataset = notebooks.load_parameter_file(path).get("dataset", "cifar10")
        assert dataset == (variant or "cifar10"), f"{path.name} runs {dataset}"


def test_a_parameter_file_with_an_unknown_name_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "02_bad.yaml"
    bad.write_text("dataset: cifar10\nwidht: [8]\n", encoding="utf-8")
    with pytest.raises(notebooks.UnknownParameterError, match="widht"):
        notebooks.validate_parameters(
            notebooks.resolve_notebook("02"), notebooks.load_parameter_file(bad)
        )
