"""Run the numbered notebooks headlessly with papermill: one notebook, all of them, or a sweep.

Parameter names are checked against the notebook's single `parameters` cell before anything
runs (papermill itself only warns about unknown names). Executed copies go to the git-ignored
`runs/notebooks/` folder, never over the source; `prepare_ci` writes parameterised, unexecuted
copies to `runs/ci/` for `pytest --nbval-lax --nbval-current-env runs/ci/*.ipynb`.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import re
import tempfile
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from traitlets.config import Config

from mlw_lib.paths import repo_root, runs_dir

log = logging.getLogger(__name__)

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
PARAMETERS_TAG = "parameters"
SWEEP_SEPARATOR = "__"


class UnknownNotebookError(ValueError):
    """No notebook matches the requested name."""


class UnknownParameterError(ValueError):
    """A parameter name is not assigned in the notebook's `parameters` cell."""


class ParametersCellError(ValueError):
    """The notebook does not have exactly one cell tagged `parameters`."""


class NotebookExecutionError(RuntimeError):
    """A notebook failed while executing; `output_path` holds the partially executed copy."""

    def __init__(self, message: str, output_path: Path) -> None:
        super().__init__(message)
        self.output_path = output_path


# --- finding notebooks -------------------------------------------------------------------------


def notebooks_dir() -> Path:
    """`<repo>/notebooks/`."""
    return repo_root() / "notebooks"


def params_root() -> Path:
    """`<repo>/params/`, holding one folder per parameter set (`ci/`, `paper/`)."""
    return repo_root() / "params"


def list_notebooks(directory: Path | None = None) -> list[Path]:
    """Numbered notebooks `NN_name.ipynb` in `directory` (default `notebooks/`), in order."""
    directory = notebooks_dir() if directory is None else Path(directory)
    return sorted(directory.glob(NOTEBOOK_GLOB))


def notebook_key(path: Path) -> str:
    """The key that links notebook, runs and figures: the file stem, e.g. `01_mlp_mnist`."""
    return Path(path).stem


def resolve_notebook(name: str | Path, directory: Path | None = None) -> Path:
    """Find a notebook by number (`01`), key (`01_mlp_mnist`), file name or path."""
    candidate = Path(name)
    if candidate.suffix == ".ipynb" and candidate.is_file():
        return candidate.resolve()
    available = list_notebooks(directory)
    text = str(name)
    for path in available:
        if text in (path.name, path.stem) or path.stem.split("_", 1)[0] == text:
            return path.resolve()
    names = ", ".join(p.stem for p in available) or "none"
    raise UnknownNotebookError(f"unknown notebook {text!r}; available notebooks: {names}")


# --- parameters --------------------------------------------------------------------------------


def parameters_cell_index(path: Path) -> int:
    """Index of the single cell tagged `parameters`; ParametersCellError if not exactly one."""
    notebook = nbformat.read(Path(path), as_version=4)
    tagged = [
        index
        for index, cell in enumerate(notebook.cells)
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])
    ]
    if len(tagged) != 1:
        raise ParametersCellError(
            f"{Path(path).name}: expected exactly one cell tagged {PARAMETERS_TAG!r}, "
            f"found {len(tagged)}"
        )
    return tagged[0]


def literal_type_name(source: str) -> str:
    """Type name of a literal's value (`"1"` -> `int`), or `"None"` if not a literal."""
    try:
        return type(ast.literal_eval(source)).__name__
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "None"


def comments_by_line(source: str) -> dict[int, str]:
    """1-based line number -> text of the `#` comment on that line."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokens
        if token.type == tokenize.COMMENT
    }


def assigned_names(target: ast.expr) -> list[str]:
    """Names bound by an assignment target (`a`, or `a, b`)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [name for element in target.elts for name in assigned_names(element)]
    return []


def parse_parameters_source(source: str) -> dict[str, dict[str, str]]:
    """Parameters of a python parameters cell: name -> {default, inferred_type, help}.

    `default` is the value's source text; `inferred_type` the annotation, else the literal's
    type; `help` the comment on the assignment's lines. Raises SyntaxError on non-Python.
    """
    tree = ast.parse(source)
    comments = comments_by_line(source)
    parameters = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, annotation = statement.targets, None
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, annotation = [statement.target], ast.unparse(statement.annotation)
        else:
            continue
        default = ast.get_source_segment(source, statement.value) or ""
        lines = range(statement.lineno, (statement.end_lineno or statement.lineno) + 1)
        help_text = next((comments[line] for line in reversed(lines) if line in comments), "")
        for target in targets:
            for name in assigned_names(target):
                parameters[name] = {
                    "default": default,
                    "inferred_type": annotation or literal_type_name(default),
                    "help": help_text,
                }
    return parameters


def notebook_parameters(path: Path) -> dict[str, dict[str, str]]:
    """Parameters of a notebook: name -> {default (source text), inferred_type, help}.

    The parameters cell is parsed with `ast`: papermill's line-based inspection drops any
    assignment whose comment contains `=` (e.g. `n = 0  # 0 = all`). A cell that is not
    plain Python (magics) falls back to `papermill.inspect_notebook`.
    """
    index = parameters_cell_index(path)
    source = nbformat.read(Path(path), as_version=4).cells[index].source
    try:
        return parse_parameters_source(source)
    except SyntaxError:
        inspected = papermill.inspect_notebook(str(path))
    return {
        name: {
            "default": info["default"],
            "inferred_type": info["inferred_type_name"]
            if info["inferred_type_name"] != "None"
            else literal_type_name(info["default"]),
            "help": info["help"],
        }
        for name, info in inspected.items()
    }


def parameter_values(name: str | Path, namespace: dict[str, Any]) -> dict[str, Any]:
    """The notebook's parameters with their current values in `namespace` (e.g. `globals()`
    after the injected-parameters cell), in declaration order, e.g. to log to MLflow."""
    names = list(notebook_parameters(resolve_notebook(name)))
    missing = [key for key in names if key not in namespace]
    if missing:
        raise KeyError(f"parameters not defined in the namespace: {', '.join(missing)}")
    return {key: namespace[key] for key in names}


def load_parameter_file(path: Path) -> dict[str, Any]:
    """Read a YAML parameter file; it must hold a mapping of parameter names to values."""
    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: a parameter file must be a YAML mapping of name: value, "
            f"got {type(loaded).__name__}"
        )
    return loaded


def validate_parameters(path: Path, params: dict[str, Any]) -> None:
    """Raise UnknownParameterError if any name in `params` is not a parameter of the notebook."""
    valid = notebook_parameters(path)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UnknownParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for notebook {Path(path).name}; "
            f"valid parameters: {', '.join(valid) or 'none'}"
        )


def merge_parameters(
    parameter_file: Path | None = None, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters from the file, then explicit ones on top."""
    merged = load_parameter_file(parameter_file) if parameter_file is not None else {}
    merged.update(parameters or {})
    return merged


# --- executing ---------------------------------------------------------------------------------


class _InspectionWarningFilter(logging.Filter):
    """Drops papermill's own parameter-inspection warnings (false alarms for cells it
    cannot parse, such as `n = 0  # 0 = all`); names are validated with `ast` instead."""

    PREFIXES = ("Passed unknown parameter", "Unable to parse line")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


@contextlib.contextmanager
def quiet_papermill_inspection() -> Iterator[None]:
    """Silence papermill's inspection warnings while our validated parameters are injected."""
    loggers = [logging.getLogger(name) for name in ("papermill", "papermill.translators")]
    warning_filter = _InspectionWarningFilter()
    for logger in loggers:
        logger.addFilter(warning_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(warning_filter)


# Folders named by environment variables; the kernel runs in notebooks/, so relative values
# are made absolute against the caller's working directory before it starts.
PATH_VARIABLES = ("MLW_DATA_ROOT", "MLW_DATA_MIRROR", "MLW_FIGURES_DIR", "MLW_MLFLOW_DIR")


@contextlib.contextmanager
def headless_environment() -> Iterator[None]:
    """The kernel's environment while it runs: `MPLBACKEND=Agg` unless the caller set one, and
    every `PATH_VARIABLES` value absolute (relative to the caller's cwd). Restored afterwards."""
    saved = {name: os.environ.get(name) for name in ("MPLBACKEND", *PATH_VARIABLES)}
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PATH_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            os.environ[name] = str(Path(value).expanduser().resolve())
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# sun_path of a Unix socket holds 108 bytes on Linux (104 on macOS), terminator included.
MAX_SOCKET_PATH = 103


@contextlib.contextmanager
def kernel_transport() -> Iterator[dict[str, Any]]:
    """papermill keyword arguments that start the kernel on Unix sockets in a private
    temporary folder (mode 0700, removed afterwards) instead of unencrypted TCP on
    localhost, which ipykernel warns about. `{}` (TCP) where there are no Unix sockets
    (Windows) or the socket path would be too long for the OS (a very long TMPDIR)."""
    if os.name != "posix":
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="mlw-kernel-", ignore_cleanup_errors=True) as folder:
        ip = str(Path(folder) / "kernel")  # the kernel binds <ip>-1 ... <ip>-5
        if len(os.fsencode(ip)) + 2 > MAX_SOCKET_PATH:
            yield {}
        else:
            yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": ip}})}


def output_path_for(source: Path, output_dir: Path, suffix: str | None = None) -> Path:
    """`<output_dir>/<key>.ipynb` or `<key>__<suffix>.ipynb`; never the source itself."""
    stem = notebook_key(source) + (f"{SWEEP_SEPARATOR}{suffix}" if suffix else "")
    output = Path(output_dir) / f"{stem}.ipynb"
    if output.resolve() == Path(source).resolve():
        raise ValueError(f"refusing to write the executed copy over its source {source}")
    return output


def _execute(source: Path, output: Path, params: dict[str, Any], **options: Any) -> Path:
    """Run papermill; a failure is re-raised with the partially executed copy's path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if not options.get("prepare_only"):
        log.info("executing %s%s ...", source.name, f" with {params}" if params else "")
    try:
        with headless_environment(), quiet_papermill_inspection(), kernel_transport() as kernel:
            papermill.execute_notebook(
                str(source),
                str(output),
                parameters=params,
                progress_bar=False,
                log_output=False,
                cwd=str(source.parent),
                **kernel,
                **options,
            )
    except Exception as error:
        summary = str(error).strip().splitlines()
        reason = summary[0] if summary else type(error).__name__
        if isinstance(error, papermill.PapermillExecutionError):
            detail = f"{error.ename}: {error.evalue}" if error.evalue else error.ename
            reason = f"In [{error.exec_count}]: {detail}"
        where = f"partially executed copy: {output}" if output.exists() else "no copy written"
        raise NotebookExecutionError(f"{source.name} failed ({reason}); {where}", output) from error
    verb = "prepared" if options.get("prepare_only") else "executed"
    log.info("%s %s -> %s", verb, source.name, output)
    return output


def run_notebook(
    name: str | Path,
    parameters: dict[str, Any] | None = None,
    parameter_file: Path | None = None,
    output_dir: Path | None = None,
    timeout: int = 3600,
    kernel_name: str = "python3",
    suffix: str | None = None,
) -> Path:
    """Execute one notebook with file parameters overridden by `parameters`; return the copy.

    The executed copy is `runs/notebooks/<key>.ipynb` (or `<key>__<suffix>.ipynb`); `timeout`
    is the per-cell execution timeout in seconds.
    """
    source = resolve_notebook(name)
    params = merge_parameters(parameter_file, parameters)
    validate_parameters(source, params)
    output_dir = runs_dir() / "notebooks" if output_dir is None else Path(output_dir)
    output = output_path_for(source, output_dir, suffix)
    return _execute(source, output, params, kernel_name=kernel_name, execution_timeout=timeout)


def parameter_set_file(parameter_set: str, key: str, root: Path | None = None) -> Path:
    """`params/<parameter_set>/<key>.yaml` (may not exist)."""
    return (params_root() if root is None else Path(root)) / parameter_set / f"{key}.yaml"


def run_all(
    parameter_set: str | None = None,
    *,
    notebooks: Path | None = None,
    params_dir: Path | None = None,
    **kw: Any,
) -> list[Path]:
    """Run every notebook in order, with `params/<parameter_set>/<key>.yaml` where it exists.

    `notebooks` and `params_dir` override the notebook folder and the `params/` root; other
    keyword arguments go to `run_notebook`.
    """
    sources = list_notebooks(notebooks)
    if parameter_set is not None:
        set_dir = (params_root() if params_dir is None else Path(params_dir)) / parameter_set
        if not set_dir.is_dir():
            raise ValueError(f"unknown parameter set {parameter_set!r}: no folder {set_dir}")
    outputs = []
    for source in sources:
        parameter_file = None
        if parameter_set is not None:
            parameter_file = parameter_set_file(parameter_set, source.stem, params_dir)
            if not parameter_file.is_file():
                log.warning("%s: no %s, using the defaults", source.name, parameter_file)
                parameter_file = None
        outputs.append(run_notebook(source, parameter_file=parameter_file, **kw))
    return outputs


# --- sweeps ------------------------------------------------------------------------------------


def value_slug(value: Any) -> str:
    """A filesystem-safe rendering of a parameter value: `[64, 128]` -> `64-128`."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = re.sub(r"[\[\]{}\"']", "", text)
    text = re.sub(r"[^A-Za-z0-9.+=-]+", "-", text)
    return text or "empty"


def point_suffix(point: dict[str, Any]) -> str:
    """File-name suffix for one grid point, e.g. `lr=0.1_widths=64-128`."""
    return "_".join(f"{name}={value_slug(value)}" for name, value in point.items())


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of the grid, in the order given."""
    for name, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"grid entry {name!r} must be a non-empty list of values")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def sweep_suffixes(points: list[dict[str, Any]]) -> list[str]:
    """One distinct suffix per grid point (a short hash is appended where slugs collide)."""
    suffixes = [point_suffix(point) for point in points]
    if len(set(suffixes)) == len(suffixes):
        return suffixes
    digests = [
        hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:8] for point in points
    ]
    return [f"{suffix}_{digest}" for suffix, digest in zip(suffixes, digests, strict=True)]


def run_sweep(
    name: str | Path,
    grid: dict[str, list[Any]],
    parameters: dict[str, Any] | None = None,
    parameter_file: Path | None = None,
    **kw: Any,
) -> list[Path]:
    """Run the notebook once per point of the grid's Cartesian product; return the copies.

    Grid values override `parameters`, which override the file. All names are validated
    before anything runs. Copies are named `<key>__<name>=<value>_....ipynb`.
    """
    source = resolve_notebook(name)
    base = merge_parameters(parameter_file, parameters)
    validate_parameters(source, {**base, **grid})
    points = grid_points(grid)
    return [
        run_notebook(source, parameters={**base, **point}, suffix=suffix, **kw)
        for point, suffix in zip(points, sweep_suffixes(points), strict=True)
    ]


# --- CI ------------------------------------------------------------------------------------------


def prepare_ci(
    output_dir: Path | None = None,
    *,
    notebooks: Path | None = None,
    params_dir: Path | None = None,
) -> list[Path]:
    """Write each notebook with its `params/ci/<key>.yaml` injected, unexecuted, to `runs/ci/`.

    Then CI runs `pytest --nbval-lax --nbval-current-env runs/ci/*.ipynb`. A missing CI
    parameter file is an error: CI must not silently run full-size defaults.
    """
    output_dir = runs_dir() / "ci" if output_dir is None else Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for source in list_notebooks(notebooks):
        parameter_file = parameter_set_file("ci", source.stem, params_dir)
        if not parameter_file.is_file():
            raise FileNotFoundError(f"{source.name}: missing CI parameter file {parameter_file}")
        params = load_parameter_file(parameter_file)
        validate_parameters(source, params)
        outputs.append(
            _execute(source, output_path_for(source, output_dir), params, prepare_only=True)
        )
    return outputs
