"""The headless runner on tiny notebooks built in a temporary folder (real papermill kernels)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from helpers import code_cell, write_notebook

from mlw_lib import notebooks
from mlw_lib.__main__ import parse_grid_values, parse_value
from mlw_lib.paths import repo_root

PARAMETERS_SOURCE = (
    "a = 1  # a number (0 = none)\n"
    'b = "x"  # a label\n'
    "fail = False  # raise in the second cell when true\n"
    "sleep = 0  # seconds to sleep in the second cell"
)
WORK_SOURCE = (
    "import time\n"
    "time.sleep(sleep)\n"
    "result = a * 10\n"
    'if fail:\n    raise RuntimeError("asked to fail")\n'
    'print(f"result={result} b={b}")'
)
ENVIRONMENT_SOURCE = "import sys\nprint(sys.version)"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """`notebooks/01_tiny.ipynb`: parameters a, b, fail; a work cell; an environment cell."""
    return write_notebook(
        tmp_path / "notebooks" / "01_tiny.ipynb",
        [
            nbformat.v4.new_markdown_cell("# Tiny"),
            code_cell(PARAMETERS_SOURCE, ["parameters"]),
            code_cell(WORK_SOURCE),
            code_cell("assert isinstance(a, int) and isinstance(b, str)"),
            code_cell(ENVIRONMENT_SOURCE, ["nbval-ignore-output"]),
        ],
    )


def cell_text(cell: nbformat.NotebookNode) -> str:
    """All stream and error text a cell produced."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.extend(output.get("traceback", []))
    return "".join(parts)


def executed_text(path: Path) -> str:
    """Output text of every cell of an executed notebook."""
    return "".join(cell_text(cell) for cell in nbformat.read(path, as_version=4).cells)


def injected_cell(path: Path) -> nbformat.NotebookNode:
    """The single cell papermill tagged `injected-parameters`."""
    cells = [
        cell
        for cell in nbformat.read(path, as_version=4).cells
        if "injected-parameters" in cell.metadata.get("tags", [])
    ]
    assert len(cells) == 1
    return cells[0]


# --- finding notebooks and parameters ------------------------------------------------------------


def test_resolve_notebook_accepts_number_key_file_and_path(tiny: Path) -> None:
    folder = tiny.parent
    write_notebook(folder / "02_other.ipynb", [code_cell("x = 1  # x", ["parameters"])])
    assert notebooks.list_notebooks(folder) == [tiny, folder / "02_other.ipynb"]
    for name in ("01", "01_tiny", "01_tiny.ipynb", str(tiny), tiny):
        assert notebooks.resolve_notebook(name, folder) == tiny.resolve()
    with pytest.raises(notebooks.UnknownNotebookError, match="01_tiny, 02_other"):
        notebooks.resolve_notebook("03", folder)


def test_notebook_parameters_reads_defaults_types_and_help(tiny: Path) -> None:
    params = notebooks.notebook_parameters(tiny)
    assert list(params) == ["a", "b", "fail", "sleep"]
    assert params["a"] == {"default": "1", "inferred_type": "int", "help": "a number (0 = none)"}
    assert params["b"]["default"] == '"x"'
    assert params["b"]["help"] == "a label"


def test_parameters_cell_parsing_handles_what_papermill_inspection_drops() -> None:
    source = (
        "n = 0  # first N images (0 = all)\n"
        "widths = [\n    64,\n    32,\n]  # hidden widths\n"
        "lr: float = 1e-3  # learning rate\n"
        "import math\n"
        "seed = 0"
    )
    params = notebooks.parse_parameters_source(source)
    assert list(params) == ["n", "widths", "lr", "seed"]
    assert params["n"]["help"] == "first N images (0 = all)"
    assert params["widths"]["inferred_type"] == "list"
    assert params["widths"]["help"] == "hidden widths"
    assert params["lr"] == {"default": "1e-3", "inferred_type": "float", "help": "learning rate"}
    assert params["seed"]["help"] == ""


def test_parameter_values_reads_the_current_values(tiny: Path) -> None:
    namespace = {"a": 7, "b": "y", "fail": False, "sleep": 0, "other": 1}
    assert notebooks.parameter_values(tiny, namespace) == {
        "a": 7,
        "b": "y",
        "fail": False,
        "sleep": 0,
    }
    with pytest.raises(KeyError, match="sleep"):
        notebooks.parameter_values(tiny, {"a": 1, "b": "x", "fail": True})


def test_validate_parameters_rejects_unknown_names_listing_valid_ones(tiny: Path) -> None:
    notebooks.validate_parameters(tiny, {"a": 2, "b": "y"})
    with pytest.raises(notebooks.UnknownParameterError) as caught:
        notebooks.validate_parameters(tiny, {"a": 2, "epochz": 3})
    message = str(caught.value)
    assert "epochz" in message and "01_tiny.ipynb" in message
    assert "valid parameters: a, b, fail, sleep" in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("count", [0, 2])
def test_a_notebook_needs_exactly_one_parameters_cell(tmp_path: Path, count: int) -> None:
    cells = [code_cell(f"x{i} = {i}  # x", ["parameters"]) for i in range(count)]
    path = write_notebook(tmp_path / "01_bad.ipynb", [*cells, code_cell("y = 2")])
    with pytest.raises(notebooks.ParametersCellError, match=f"found {count}"):
        notebooks.validate_parameters(path, {})


def test_load_parameter_file_requires_a_mapping(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("a: 3\nwidths: [512, 256]\n")
    assert notebooks.load_parameter_file(good) == {"a": 3, "widths": [512, 256]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        notebooks.load_parameter_file(bad)


# --- running -----------------------------------------------------------------------------------


def test_run_notebook_injects_parameters_and_writes_the_executed_copy(
    tiny: Path, tmp_path: Path
) -> None:
    parameter_file = tmp_path / "p.yaml"
    parameter_file.write_text("a: 2\nb: from-file\n")
    out = tmp_path / "runs"
    source_before = tiny.read_bytes()
    path = notebooks.run_notebook(
        tiny, parameters={"a": 7}, parameter_file=parameter_file, output_dir=out, timeout=60
    )
    assert path == out / "01_tiny.ipynb" and path.is_file()
    assert tiny.read_bytes() == source_before
    injected = injected_cell(path).source
    assert "a = 7" in injected and 'b = "from-file"' in injected
    assert "result=70 b=from-file" in executed_text(path)


def test_run_notebook_logs_one_line_per_code_cell_unless_tqdm_is_disabled(
    tiny: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with caplog.at_level(logging.INFO, logger=notebooks.__name__):
        path = notebooks.run_notebook(tiny, parameters={"a": 3}, output_dir=tmp_path / "runs")
    assert "result=30" in executed_text(path)
    assert "executing 01_tiny.ipynb with {'a': 3} ..." in caplog.text  # said before it starts
    progress = [r.getMessage() for r in caplog.records if ": cell " in r.getMessage()]
    # 4 code cells in the source, plus the injected-parameters cell papermill adds.
    expected = [f"01_tiny: cell {number}/5" for number in range(1, 6)]
    assert [line.split(" (")[0] for line in progress] == expected
    caplog.clear()
    monkeypatch.setenv("TQDM_DISABLE", "1")  # CI: quiet
    with caplog.at_level(logging.INFO, logger=notebooks.__name__):
        notebooks.run_notebook(tiny, parameters={"a": 3}, output_dir=tmp_path / "runs")
    assert "executing 01_tiny.ipynb" in caplog.text and ": cell " not in caplog.text


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets")
def test_kernel_runs_on_private_unix_sockets_not_on_plain_tcp(
    tiny: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Over TCP on localhost any local user could subscribe to the kernel's outputs (and
    # ipykernel warns so); the runner starts it on Unix sockets in a temporary 0700 folder
    # that is removed after the run. The kernel's cwd (notebooks/) differs from the caller's,
    # so the socket path must be absolute.
    with notebooks.kernel_transport() as kernel:
        ip = Path(kernel["config"].KernelManager.ip)
        assert kernel["config"].KernelManager.transport == "ipc" and ip.is_absolute()
        assert (ip.parent.stat().st_mode & 0o777) == 0o700
    assert not ip.parent.exists()
    capfd.readouterr()
    path = notebooks.run_notebook(tiny, parameters={"a": 3}, output_dir=tmp_path / "runs")
    assert "result=30" in executed_text(path)
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out


def test_kernel_falls_back_to_tcp_when_the_socket_path_is_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with notebooks.kernel_transport() as kernel:
        assert kernel == {}


def test_run_notebook_failure_names_the_partially_executed_copy(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(notebooks.NotebookExecutionError) as caught:
        notebooks.run_notebook(tiny, parameters={"fail": True}, output_dir=out, timeout=60)
    (expected,) = out.glob("01_tiny/*/notebook.ipynb")  # this execution's own copy
    assert str(expected) in str(caught.value) and "asked to fail" in str(caught.value)
    assert caught.value.output_path == expected
    assert "asked to fail" in executed_text(expected)
    assert not (out / "01_tiny.ipynb").exists(), "only a successful run becomes the latest copy"


def test_run_notebook_enforces_the_cell_timeout(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(notebooks.NotebookExecutionError, match="partially executed copy"):
        notebooks.run_notebook(tiny, parameters={"sleep": 60}, output_dir=out, timeout=2)


def test_run_sweep_writes_one_copy_per_grid_point(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    paths = notebooks.run_sweep(
        tiny, {"a": [1, 2], "b": ["x", "y z"]}, parameters={"fail": False}, output_dir=out
    )
    names = sorted(path.name for path in paths)
    assert names == [
        "01_tiny__a=1_b=x.ipynb",
        "01_tiny__a=1_b=y-z.ipynb",
        "01_tiny__a=2_b=x.ipynb",
        "01_tiny__a=2_b=y-z.ipynb",
    ]
    assert sorted(p.name for p in out.glob("*.ipynb")) == names
    assert "result=20 b=y z" in executed_text(out / "01_tiny__a=2_b=y-z.ipynb")


def test_run_sweep_validates_every_name_before_running(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    with pytest.raises(notebooks.UnknownParameterError, match="lr"):
        notebooks.run_sweep(tiny, {"a": [1, 2], "lr": [0.1]}, output_dir=out)
    assert not out.exists()


def test_sweep_suffixes_are_filesystem_safe_and_distinct() -> None:
    points = notebooks.grid_points({"widths": [[64, 32], [[64], [32]]], "lr": [1e-3]})
    suffixes = notebooks.sweep_suffixes(points)
    assert len(set(suffixes)) == 2
    for suffix in suffixes:
        assert suffix.startswith("widths=64-32_lr=0.001")
        assert all(ch.isalnum() or ch in "._=+-" for ch in suffix)


# --- CI preparation, checked with nbval --------------------------------------------------------


def run_nbval(paths: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`pytest --nbval-lax --nbval-current-env` on prepared notebooks, in a subprocess."""
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env"]
    command += ["--nbval-cell-timeout=120", "-p", "no:cacheprovider", "-rA", *map(str, paths)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_prepare_ci_injects_ci_parameters_and_nbval_runs_them(tiny: Path, tmp_path: Path) -> None:
    failing = tiny.parent / "02_failing.ipynb"
    failing.write_bytes(tiny.read_bytes())
    params = tmp_path / "params"
    (params / "ci").mkdir(parents=True)
    (params / "ci" / "01_tiny.yaml").write_text("a: 5\n")
    (params / "ci" / "02_failing.yaml").write_text("fail: true\n")
    out = tmp_path / "ci"
    prepared = notebooks.prepare_ci(out, notebooks=tiny.parent, params_dir=params)
    assert prepared == [out / "01_tiny.ipynb", out / "02_failing.ipynb"]
    assert "a = 5" in injected_cell(prepared[0]).source
    assert executed_text(prepared[0]) == ""  # prepared, not executed
    result = run_nbval(prepared, tmp_path)
    report = result.stdout
    assert result.returncode == 1, report + result.stderr
    # --nbval-lax: the untagged cells and the nbval-ignore-output cell pass ...
    assert "FAILED ci/01_tiny.ipynb" not in report and "PASSED ci/01_tiny.ipynb" in report
    # ... but an exception in any cell fails that cell.
    assert "FAILED ci/02_failing.ipynb::" in report and "asked to fail" in report


def test_run_all_runs_each_variant_file_of_a_parameter_set(tiny: Path, tmp_path: Path) -> None:
    paper = tmp_path / "params" / "paper"
    paper.mkdir(parents=True)
    (paper / "01_tiny.yaml").write_text("a: 2\n")
    (paper / "01_tiny.other.yaml").write_text("a: 4\nb: other\n")
    (paper / "01_tiny_by_hand.yaml").write_text("a: 9\n")  # only for `run -f`
    assert notebooks.parameter_set_files("paper", "01_tiny", tmp_path / "params") == {
        "": paper / "01_tiny.yaml",
        "other": paper / "01_tiny.other.yaml",
    }
    out = tmp_path / "runs"
    written = notebooks.run_all(
        "paper", notebooks=tiny.parent, params_dir=tmp_path / "params", output_dir=out
    )
    assert written == [out / "01_tiny.ipynb", out / "01_tiny__other.ipynb"]
    assert "result=20 b=x" in executed_text(written[0])
    assert "result=40 b=other" in executed_text(written[1])


def test_prepare_ci_rejects_unknown_ci_parameters(tiny: Path, tmp_path: Path) -> None:
    params = tmp_path / "params"
    (params / "ci").mkdir(parents=True)
    (params / "ci" / "01_tiny.yaml").write_text("epochs: 1\n")
    with pytest.raises(notebooks.UnknownParameterError, match="epochs"):
        notebooks.prepare_ci(tmp_path / "ci", notebooks=tiny.parent, params_dir=params)


def test_import_mlw_lib_loads_no_heavy_dependencies() -> None:
    code = (
        "import sys, mlw_lib, mlw_lib.notebooks, mlw_lib.__main__\n"
        "print(sorted(m for m in ('mlflow', 'papermill', 'seaborn', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    check = "import mlw_lib as mlw; print(mlw.paths.repo_root().name, 'viz' in dir(mlw))"
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert result.stdout.split() == [repo_root().name, "True"], result.stderr


# --- command line ------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m mlw_lib ARGS` from an unrelated working directory."""
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    command = [sys.executable, "-m", "mlw_lib", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cli_unknown_parameter_exits_2_with_one_clear_line(
    tiny: Path, tmp_path: Path, refusals
) -> None:
    result = run_cli("run", str(tiny), "-p", "a", "3", "-p", "epochz", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "epochz" in lines[0] and "valid parameters: a, b, fail, sleep" in lines[0]
    refusals.seen("python -m mlw_lib run 01 -p epochz 1 (a typo)", lines[0] + " (exit 2)")


def test_cli_unknown_notebook_exits_2(tmp_path: Path, refusals) -> None:
    result = run_cli("run", "99", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown notebook '99'" in result.stderr
    assert "Traceback" not in result.stderr
    refusals.seen("python -m mlw_lib run 99", result.stderr.strip() + " (exit 2)")


def test_cli_values_are_yaml() -> None:
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("[512, 256]") == [512, 256]
    assert parse_value("1e-3") == pytest.approx(0.001)
    assert parse_value("true") is True
    assert parse_value("adam") == "adam"
    assert parse_grid_values("0.1,0.01") == [0.1, 0.01]
    assert parse_grid_values("[[64], [128, 64]]") == [[64], [128, 64]]
    assert parse_grid_values("1e-3,2E-3") == [0.001, 0.002]


def test_kernel_gets_absolute_folders_and_the_caller_keeps_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel runs in notebooks/, so `MLW_FIGURES_DIR=figures/paper` typed in the repository
    # root must reach it as <cwd>/figures/paper, not notebooks/figures/paper.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLW_FIGURES_DIR", "figures/paper")
    monkeypatch.setenv("MLW_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    with notebooks.headless_environment():
        assert os.environ["MLW_FIGURES_DIR"] == str(tmp_path / "figures" / "paper")
        assert os.environ["MLW_DATA_ROOT"] == str(tmp_path / "data")
        assert "MLW_MLFLOW_DIR" not in os.environ and os.environ["MPLBACKEND"] == "Agg"
    assert os.environ["MLW_FIGURES_DIR"] == "figures/paper"
    assert "MPLBACKEND" not in os.environ


def test_the_cli_sets_no_cell_timeout_unless_asked() -> None:
    # A paper run's training cell takes hours; a default limit once killed one after 3600 s.
    from mlw_lib.__main__ import build_parser

    assert build_parser().parse_args(["run", "01"]).timeout is None
    assert build_parser().parse_args(["run-all", "--timeout", "5"]).timeout == 5
