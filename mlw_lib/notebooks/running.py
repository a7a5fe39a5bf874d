"""Execute notebooks with papermill: one, all of a parameter set, or prepared for CI.

papermill is imported on first use, not with the package (it is slow to import).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlw_lib.notebooks.catalog import (
    list_notebooks,
    notebook_key,
    parameter_set_file,
    parameter_set_files,
    params_root,
    resolve_notebook,
)
from mlw_lib.notebooks.executions import Execution
from mlw_lib.notebooks.parameters import load_parameter_file, merge_parameters, validate_parameters
from mlw_lib.paths import runs_dir

log = logging.getLogger(__name__)

SWEEP_SEPARATOR = "__"
PROGRESS_ENGINE = "mlw_progress"
# Folders named by environment variables; the kernel runs in notebooks/, so relative values
# are made absolute against the caller's working directory before it starts.
PATH_VARIABLES = (
    "MLW_DATA_ROOT",
    "MLW_DATA_MIRROR",
    "MLW_FIGURES_DIR",
    "MLW_MLFLOW_DIR",
    "MLW_RUNS_DIR",
)


class NotebookExecutionError(RuntimeError):
    """A notebook failed while executing; `output_path` holds the partially executed copy."""

    def __init__(self, message: str, output_path: Path) -> None:
        super().__init__(message)
        self.output_path = output_path


@contextlib.contextmanager
def headless_environment(extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """The kernel's environment while it runs: `MPLBACKEND=Agg` unless the caller set one,
    every `PATH_VARIABLES` value absolute (relative to the caller's cwd), and `extra`.
    Restored afterwards."""
    extra = dict(extra or {})
    saved = {name: os.environ.get(name) for name in ("MPLBACKEND", *PATH_VARIABLES, *extra)}
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.update(extra)
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
    temporary folder (mode 0700, removed afterwards) instead of TCP on localhost. Not a
    warning filter: over TCP the kernel's messages are plain text and its iopub (output)
    socket accepts any subscriber, so on a shared machine every local user could read the
    notebook's outputs (ipykernel warns about exactly this and names IPC as the remedy).
    `{}` (TCP) where there are no Unix sockets (Windows) or the socket path would be too long
    for the OS (a very long TMPDIR)."""
    if os.name != "posix":
        yield {}
        return
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="mlw-kernel-", ignore_cleanup_errors=True) as folder:
        ip = str(Path(folder) / "kernel")  # the kernel binds <ip>-1 ... <ip>-5
        if len(os.fsencode(ip)) + 2 > MAX_SOCKET_PATH:
            yield {}
        else:
            yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": ip}})}


def progress_enabled() -> bool:
    """Per-cell progress lines unless `TQDM_DISABLE` is set (CI sets it; same switch as tqdm)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"", "0", "false", "no", "off"}


class CellProgress:
    """Logs `<label>: cell i/n (t s)` as each code cell starts, t = seconds since the start."""

    def __init__(self, label: str, cells: list[Any]) -> None:
        self.label = label
        self.code_cells = [index for index, cell in enumerate(cells) if cell.cell_type == "code"]
        self.started = time.monotonic()

    def cell_started(self, index: int | None) -> None:
        """Log the cell at notebook position `index` if it is a code cell."""
        if index in self.code_cells:
            number = self.code_cells.index(index) + 1
            elapsed = time.monotonic() - self.started
            log.info("%s: cell %d/%d (%.0f s)", self.label, number, len(self.code_cells), elapsed)


def register_progress_engine() -> str:
    """Register (once per process) papermill's nbclient engine with `CellProgress` lines;
    return its name. Run a notebook with `engine_name=<name>, progress_label=<label>`."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            progress = CellProgress(kwargs.pop("progress_label", "notebook"), nb_man.nb.cells)
            cell_start = nb_man.cell_start

            def cell_start_with_progress(cell: Any, cell_index: int | None = None, **kw: Any):
                progress.cell_started(cell_index)
                return cell_start(cell, cell_index, **kw)

            nb_man.cell_start = cell_start_with_progress
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(PROGRESS_ENGINE, ProgressEngine)
    return PROGRESS_ENGINE


def output_path_for(source: Path, output_dir: Path, suffix: str | None = None) -> Path:
    """`<output_dir>/<key>.ipynb` or `<key>__<suffix>.ipynb`; never the source itself."""
    stem = notebook_key(source) + (f"{SWEEP_SEPARATOR}{suffix}" if suffix else "")
    output = Path(output_dir) / f"{stem}.ipynb"
    if output.resolve() == Path(source).resolve():
        raise ValueError(f"refusing to write the executed copy over its source {source}")
    return output


def _execute(
    source: Path,
    output: Path,
    params: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    label: str | None = None,
    **options: Any,
) -> Path:
    """Run papermill (`env`: more kernel environment; `label`: of the progress lines); a
    failure is re-raised with the partially executed copy's path."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    prepare_only = options.get("prepare_only", False)
    if not prepare_only:
        log.info("executing %s%s ...", source.name, f" with {dict(params)}" if params else "")
        if progress_enabled():
            options |= {
                "engine_name": register_progress_engine(),
                "progress_label": label or output.stem,
            }
    started = time.monotonic()
    try:
        with headless_environment(env), kernel_transport() as kernel:
            papermill.execute_notebook(
                str(source),
                str(output),
                parameters=dict(params),
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
    if prepare_only:
        log.info("prepared %s -> %s", source.name, output)
    else:
        log.info("executed %s in %.0f s -> %s", source.name, time.monotonic() - started, output)
    return output


def run_notebook(
    name: str | Path,
    parameters: Mapping[str, Any] | None = None,
    parameter_file: Path | None = None,
    output_dir: Path | None = None,
    timeout: int | None = None,
    kernel_name: str = "python3",
    suffix: str | None = None,
    resume: bool = False,
) -> Path:
    """Execute one notebook with file parameters overridden by `parameters`; return the copy.

    Each execution writes its own folder `<output_dir>/<stem>/<stamp>/` (see
    `executions`); on success its copy becomes `<output_dir>/<stem>.ipynb` (`<stem>`:
    `<key>` or `<key>__<suffix>`; `output_dir` defaults to `runs/notebooks/`). A failed,
    interrupted or concurrent execution never touches that copy, and leaves no MLflow run of
    its own RUNNING. `resume=True` continues the newest unfinished execution with its own
    parameters (finished runs load from their checkpoints). `timeout`: seconds per cell
    (None: no limit; a paper run's training cell takes hours).
    """
    source, output_dir, latest = _locate(name, output_dir, suffix)
    if resume:
        if parameters or parameter_file:
            raise ValueError("a resumed execution keeps its own parameters; leave out -p and -f")
        execution = Execution.latest_unfinished(output_dir, latest.stem)
        log.info("resuming %s", execution.folder)
        params = execution.parameters()
    else:
        params = merge_parameters(parameter_file, parameters)
        validate_parameters(source, params)
        execution = Execution.create(output_dir, latest.stem, params)
    return _run_execution(source, execution, params, latest, timeout, kernel_name)


def continue_notebook(
    name: str | Path,
    parameters: Mapping[str, Any] | None = None,
    parameter_file: Path | None = None,
    output_dir: Path | None = None,
    suffix: str | None = None,
    **kw: Any,
) -> Path:
    """One notebook of a resumed batch (`run-all --resume`, `sweep --resume`): if the newest
    execution with exactly these parameters finished, nothing runs and its copy is returned;
    if it did not finish, it continues (as `run_notebook(resume=True)`); if there is none,
    a new one runs."""
    source, output_dir, latest = _locate(name, output_dir, suffix)
    params = merge_parameters(parameter_file, parameters)
    validate_parameters(source, params)
    execution = Execution.newest_with(output_dir, latest.stem, params)
    if execution is None:
        return run_notebook(source, params, output_dir=output_dir, suffix=suffix, **kw)
    if execution.finished:
        log.info("%s: already finished in %s", latest.stem, execution.folder)
        return execution.notebook
    execution.check_not_running()
    log.info("resuming %s", execution.folder)
    return _run_execution(source, execution, params, latest, **kw)


def _locate(
    name: str | Path, output_dir: Path | None, suffix: str | None
) -> tuple[Path, Path, Path]:
    """(the notebook, the executions folder (default runs/notebooks/), its latest copy)."""
    source = resolve_notebook(name)
    output_dir = runs_dir() / "notebooks" if output_dir is None else Path(output_dir)
    return source, output_dir, output_path_for(source, output_dir, suffix)


def _run_execution(
    source: Path,
    execution: Execution,
    params: Mapping[str, Any],
    latest: Path,
    timeout: int | None = None,
    kernel_name: str = "python3",
) -> Path:
    """Run `execution` (new or resumed) and make its copy `latest` if it succeeds; first end
    the runs that abandoned executions (this one, if resumed) left RUNNING."""
    end_unfinished_runs(lambda id: Execution(latest.parent / id).abandoned, "KILLED")
    status = "KILLED"  # unless it ends otherwise: interrupted (SIGINT/SIGTERM)
    try:
        _execute(
            source,
            execution.notebook,
            params,
            env=execution.start(),
            label=latest.stem,
            kernel_name=kernel_name,
            execution_timeout=timeout,
        )
    except NotebookExecutionError as error:
        if _stopping.is_set():  # its kernel was killed by `stop_executions`
            raise KeyboardInterrupt(f"stopped; {error}") from error
        status = "FAILED"
        raise
    finally:
        end_unfinished_runs(lambda id: id == execution.id, status)
    return execution.finish(latest)


_stopping = threading.Event()


def stop_executions(signum: int, frame: object) -> None:
    """Signal handler (SIGINT, SIGTERM) of the CLI: kill the kernels this process started, so
    that the execution stops at once and ends its MLflow runs KILLED; with no kernel running,
    raise KeyboardInterrupt."""
    import psutil

    _stopping.set()
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if not children:
        raise KeyboardInterrupt(f"signal {signum}")


def end_unfinished_runs(which: Callable[[str], bool], status: str) -> None:
    """End with `status` the MLflow runs still RUNNING of the executions (ids) `which` selects
    (their kernels are gone); nothing when the store was never created."""
    from mlw_lib import tracking

    if tracking.store_exists():
        tracking.end_runs_of_executions(which, status)


def run_all(
    parameter_set: str | None = None,
    *,
    notebooks: Path | None = None,
    params_dir: Path | None = None,
    resume: bool = False,
    **kw: Any,
) -> list[Path]:
    """Run every notebook in order, once per file of `parameter_set_files(parameter_set, key)`
    (`<key>.yaml`, then each `<key>.<variant>.yaml` with the copy `<key>__<variant>.ipynb`),
    with the defaults where there is none.

    `notebooks` and `params_dir` override the notebook folder and the `params/` root;
    `resume=True` continues an interrupted run-all (see `continue_notebook`); other keyword
    arguments go to `run_notebook`.
    """
    run = continue_notebook if resume else run_notebook
    sources = list_notebooks(notebooks)
    if parameter_set is not None:
        set_dir = (params_root() if params_dir is None else Path(params_dir)) / parameter_set
        if not set_dir.is_dir():
            raise ValueError(f"unknown parameter set {parameter_set!r}: no folder {set_dir}")
    outputs = []
    for source in sources:
        runs: dict[str, Path | None] = {"": None}
        if parameter_set is not None:
            runs = parameter_set_files(parameter_set, source.stem, params_dir) or runs
            if runs == {"": None}:
                log.warning("%s: no parameters in %s, using the defaults", source.name, set_dir)
        for variant, parameter_file in runs.items():
            outputs.append(run(source, parameter_file=parameter_file, suffix=variant or None, **kw))
    return outputs


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
