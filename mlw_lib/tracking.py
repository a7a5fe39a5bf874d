"""MLflow tracking: one SQLite store under the repository, one experiment per notebook.

Layout (absolute paths, independent of the working directory):
`<runs>/mlflow/mlflow.db` and `<runs>/mlflow/artifacts/<experiment>/` (`<runs>`: `<repo>/runs`
or `$MLW_RUNS_DIR`). `$MLW_MLFLOW_DIR` moves both (tests point it at a temporary folder);
`$MLFLOW_TRACKING_URI` overrides the database URI only. Every entry point sets the tracking
URI, so each works in a fresh process. Browse with `mlw_lib.mlflow_ui` (`make mlflow-ui`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from mlw_lib.notebooks.executions import EXECUTION_ENV
from mlw_lib.paths import runs_dir
from mlw_lib.reproducibility import environment_info, git_info

MAX_PARAM_VALUE_LENGTH = 6000  # MLflow rejects longer parameter values
MAX_TAG_VALUE_LENGTH = 8000
_TRUNCATION_MARK = "...[truncated]"
EXECUTION_TAG = "mlw_execution"  # the headless execution (runs/notebooks/<stem>/<stamp>) of a run


def mlflow_dir() -> Path:
    """Folder of the MLflow database and artifacts: `$MLW_MLFLOW_DIR` or `<runs_dir>/mlflow`."""
    default = runs_dir() / "mlflow"
    path = Path(os.environ.get("MLW_MLFLOW_DIR", default)).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI` if set, else `sqlite:///<mlflow_dir>/mlflow.db` (absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(mlflow_dir() / 'mlflow.db').as_posix()}"


def artifact_root() -> Path:
    """Absolute folder under which each experiment keeps its artifacts (created on demand)."""
    path = mlflow_dir() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


_READY: set[str] = set()  # stores whose tables this process has seen created


def use_store() -> None:
    """Point MLflow at the store; the first time in a process, create its tables under a file
    lock, so that two first runs on a fresh store do not race to create them."""
    uri, chosen = tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if chosen is None:  # MLflow also exports it: a later MLW_MLFLOW_DIR would be ignored
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if uri in _READY or not uri.startswith("sqlite:///"):
        return
    lock_file = Path(uri.removeprefix("sqlite:///")).with_suffix(".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mlflow.MlflowClient().search_experiments(max_results=1)  # creates the tables once
    _READY.add(uri)


def store_exists() -> bool:
    """True unless the store is a SQLite file that does not exist yet."""
    uri = tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def end_runs_of_executions(which: Callable[[str], bool], status: str = "KILLED") -> list[str]:
    """End with `status` every RUNNING run whose `mlw_execution` tag satisfies `which` (e.g.
    the runs of an execution whose kernel was killed); return their ids."""
    use_store()
    client = mlflow.MlflowClient()
    ids = [experiment.experiment_id for experiment in client.search_experiments()]
    if not ids:
        return []
    runs = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=50_000)
    tagged = [run for run in runs if EXECUTION_TAG in run.data.tags]
    ended = [run.info.run_id for run in tagged if which(run.data.tags[EXECUTION_TAG])]
    for run_id in ended:
        client.set_terminated(run_id, status)
    return ended


def experiment_name(notebook_key: str) -> str:
    """Experiment of a notebook: `01_mlp_mnist` -> `01-mlp-mnist`."""
    return notebook_key.replace("_", "-")


def get_or_create_experiment(name: str) -> str:
    """Id of experiment `name`, created (artifacts under `artifact_root()/<name>`) if absent.

    A deleted experiment of that name is restored rather than shadowed.
    """
    use_store()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        folder = artifact_root() / re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        try:
            return client.create_experiment(name, artifact_location=folder.as_uri())
        except MlflowException:
            # Another process created it in between: use theirs.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _params_for_mlflow(params: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _truncate(_stringify(v), MAX_PARAM_VALUE_LENGTH) for k, v in params.items()}


def _tags_for_mlflow(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _truncate(_stringify(v), MAX_TAG_VALUE_LENGTH) for k, v in tags.items()}


def _require_active_run() -> mlflow.ActiveRun:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call this inside `with notebook_run(...)`")
    return run


@contextmanager
def notebook_run(
    notebook_key: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    log_environment: bool = True,
) -> Iterator[mlflow.ActiveRun]:
    """Parent run of a notebook in experiment `experiment_name(notebook_key)`.

    Logs `params` (values stringified, truncated to MLflow's 6000 characters), sets the tags
    git_commit, git_dirty, notebook (`notebooks/<key>.ipynb`) and the caller's `tags` (which
    win), and with `log_environment` logs `environment.json` (see `environment_info`).
    The run ends FAILED if the body raises, KILLED if it is interrupted.
    """
    experiment_id = get_or_create_experiment(experiment_name(notebook_key))
    all_tags = {**git_info(), "notebook": f"notebooks/{notebook_key}.ipynb", **(tags or {})}
    if os.environ.get(EXECUTION_ENV):  # a headless execution: ended by its runner if killed
        all_tags[EXECUTION_TAG] = os.environ[EXECUTION_ENV]
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=_tags_for_mlflow(all_tags)
    ) as run:
        if params:
            mlflow.log_params(_params_for_mlflow(params))
        if log_environment:
            mlflow.log_dict(environment_info(), "environment.json")
        with _killed_on_interrupt():
            yield run


@contextmanager
def child_run(
    run_name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Nested run (e.g. one seed or level) under the active run, or under `parent_run_id`
    (a run of another process, e.g. the notebook that launched a torchrun job), in the
    parent's experiment.

    Inherits the parent's git_commit, git_dirty, notebook and mlw_execution tags; logs `params` like
    `notebook_run`.
    """
    use_store()
    parent_id = parent_run_id or _require_active_run().info.run_id
    parent = mlflow.MlflowClient().get_run(parent_id)
    inherited = {
        k: v
        for k, v in parent.data.tags.items()
        if k in ("git_commit", "git_dirty", "notebook", EXECUTION_TAG)
    }
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id,
        run_name=run_name,
        nested=parent_run_id is None,
        parent_run_id=parent_run_id,
        tags=_tags_for_mlflow({**inherited, **(tags or {})}),
    ) as run:
        if params:
            mlflow.log_params(_params_for_mlflow(params))
        with _killed_on_interrupt():
            yield run


@contextmanager
def _killed_on_interrupt() -> Iterator[None]:
    """End the active run KILLED, not FAILED, when the body is interrupted (Ctrl-C, `kill`,
    or a headless run's runner interrupting its kernel)."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise


def log_history(history: pd.DataFrame, step_column: str = "epoch") -> None:
    """Log each numeric column except `step_column` as a metric, one step per row.

    `history` is one run's tidy history (one row per evaluation). MLflow steps are integers:
    when `step_column` holds whole numbers (within 1e-6) they are the steps; otherwise (e.g.
    fractional work-epochs) the row position is the step and `step_column` is logged as a
    metric too. NaN values are skipped. Logged to the active run in one batch.
    """
    run = _require_active_run()
    if step_column not in history.columns:
        raise KeyError(f"step column {step_column!r} not in {list(history.columns)}")
    values = pd.to_numeric(history[step_column], errors="coerce").to_numpy(dtype=float)
    rounded = np.round(values)
    whole = bool(np.all(np.isfinite(values)) and np.all(np.abs(values - rounded) <= 1e-6))
    steps = rounded.astype(int) if whole else np.arange(len(history))
    numeric = history.select_dtypes(include="number")
    if whole:
        numeric = numeric.drop(columns=[step_column], errors="ignore")
    timestamp = int(time.time() * 1000)
    metrics = [
        Metric(key=str(column), value=float(value), timestamp=timestamp, step=int(step))
        for column in numeric.columns
        for step, value in zip(steps, numeric[column], strict=True)
        if pd.notna(value)
    ]
    if metrics:
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics)


def log_correction_gains(corrections: Sequence[Mapping[str, Any]]) -> None:
    """Log the gain (loss after - before) of every coarse correction recorded with
    `monitor_corrections` as metric `correction_gain_level<l>`, one step per cycle."""
    for level in sorted({c["level"] for c in corrections}):
        rows = [c for c in corrections if c["level"] == level]
        gains = {
            "cycle": [c["cycle"] for c in rows],
            f"correction_gain_level{level}": [c["after"] - c["before"] for c in rows],
        }
        log_history(pd.DataFrame(gains), step_column="cycle")


def log_switches(switches: Sequence[Mapping[str, Any]]) -> None:
    """Where coarse-first training left each coarse level: metric
    `coarse_first_switch_level<l>` (the work in WU at the switch) and a tag of that name
    saying why ("stalled": adaptive switching; "budget": its share was spent)."""
    for switch in switches:
        name = f"coarse_first_switch_level{switch['level']}"
        mlflow.log_metric(name, switch["work_units"])
        mlflow.set_tag(name, switch["reason"])


def log_checkpoint(
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    name: str = "checkpoint",
    artifact_path: str = "checkpoints",
) -> list[str]:
    """Log `state` (torch.save, e.g. a state_dict) as `<name>.pt` and `config` as
    `<name>_config.json` under `artifact_path` of the active run; return the artifact paths.
    """
    _require_active_run()
    with tempfile.TemporaryDirectory(prefix="mlw-checkpoint-") as tmp:
        folder = Path(tmp)
        torch.save(state, folder / f"{name}.pt")
        (folder / f"{name}_config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
        )
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
    return [f"{artifact_path}/{name}.pt", f"{artifact_path}/{name}_config.json"]


def load_logged_checkpoint(
    run_id: str, name: str = "checkpoint", artifact_path: str = "checkpoints"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, config) logged by `log_checkpoint` in run `run_id`; tensors load on CPU."""
    use_store()
    with tempfile.TemporaryDirectory(prefix="mlw-checkpoint-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=tmp
            )
        )
        state = torch.load(local / f"{name}.pt", map_location="cpu", weights_only=True)
        config = json.loads((local / f"{name}_config.json").read_text())
    return state, config


def log_figure_files(paths: list[Path], artifact_path: str = "figures") -> None:
    """Log existing figure files as artifacts of the active run under `artifact_path`."""
    _require_active_run()
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


@contextmanager
def resume_run(run_id: str) -> Iterator[mlflow.ActiveRun]:
    """Re-open a finished run (e.g. a notebook's parent run) to log figures from a later cell."""
    use_store()
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def log_text(text: str, artifact_file: str) -> None:
    """Log `text` as the artifact `artifact_file` (e.g. "results.txt") of the active run."""
    _require_active_run()
    mlflow.log_text(text, artifact_file)
