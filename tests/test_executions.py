"""Headless runs that survive: each execution has its own folder, a failed or killed one never
replaces the last good copy nor leaves MLflow runs RUNNING, and `run --resume` continues a
run killed with kill -9 to the same final metrics. Real CLI processes, kernels and stores."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import nbformat
import psutil
import pytest
from helpers import REPO, TOY_COMPARISON, code_cell, write_notebook

from mlw_lib import notebooks, tracking

PARAMETERS = "epochs = 6.0  # work budget\nseeds = [0]  # seeds\npause = 0  # s to sleep first"
COMPARE = (
    TOY_COMPARISON
    + """
import time

config = mlw.training.TrainConfig(epochs=epochs, batch_size=32, eval_every=0.5)
with mlw.tracking.notebook_run("01_toy", log_environment=False):
    time.sleep(pause)
    comparison = toy_comparison(config, seeds)
final = comparison.final()
print("FINAL", final[["method", "seed", "test_loss", "test_accuracy"]].to_json())
"""
)


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`notebooks/01_toy.ipynb`: a two-method, two-seed comparison on generated data; runs and
    the MLflow store under `tmp_path/runs`."""
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return write_notebook(
        tmp_path / "notebooks" / "01_toy.ipynb",
        [code_cell(PARAMETERS, ["parameters"]), code_cell(COMPARE)],
    )


def cli(*args: str) -> subprocess.Popen[str]:
    """`python -m mlw_lib ARGS` started in the background, in its own session."""
    command = [sys.executable, "-m", "mlw_lib", *args]
    return subprocess.Popen(
        command, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def executions(toy: Path) -> list[Path]:
    return sorted((toy.parents[1] / "runs" / "notebooks" / "01_toy").glob("*/parameters.yaml"))


def final_metrics(folder: Path) -> dict:
    """The FINAL line the execution's notebook printed."""
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    return json.loads(text.split("FINAL ", 1)[1].splitlines()[0])


def run_statuses(toy: Path) -> dict[str, list[str]]:
    """{execution id: statuses of its MLflow runs}."""
    store = sqlite3.connect(toy.parents[1] / "runs" / "mlflow" / "mlflow.db")
    rows = store.execute(
        "select t.value, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'mlw_execution'"
    ).fetchall()
    store.close()
    statuses: dict[str, list[str]] = {}
    for execution, status in rows:
        statuses.setdefault(execution, []).append(status)
    return statuses


def test_kill_9_then_resume_ends_with_the_metrics_of_an_uninterrupted_run(
    toy: Path, refusals
) -> None:
    whole = cli("run", str(toy))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    (uninterrupted,) = (path.parent for path in executions(toy))

    killed = cli("run", str(toy))
    wait_for(lambda: len(executions(toy)) == 2, "the second execution")
    folder = executions(toy)[-1].parent
    wait_for(lambda: any((folder / "checkpoints").glob("*.pt")), "its first checkpoint")
    # kill -9 of the run and its kernel at once, as a lost machine does: the kernel alone
    # would otherwise live on for up to a second and could finish this small notebook
    victims = [psutil.Process(killed.pid), *psutil.Process(killed.pid).children(recursive=True)]
    for process in victims:
        process.kill()
    killed.wait(timeout=30)
    psutil.wait_procs(victims, timeout=30)
    assert not (folder / "finished").exists(), "killed before it finished"
    execution = f"01_toy/{folder.name}"
    assert "RUNNING" in run_statuses(toy)[execution]  # kill -9: nothing could end them

    resumed = cli("run", str(toy), "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert len(executions(toy)) == 2, "resumed in place"
    assert final_metrics(folder) == final_metrics(uninterrupted)
    statuses = run_statuses(toy)[execution]
    assert "RUNNING" not in statuses and "KILLED" in statuses
    latest = toy.parents[1] / "runs" / "notebooks" / "01_toy.ipynb"
    assert latest.read_bytes() == (folder / "notebook.ipynb").read_bytes()
    refusals.behaviour(
        "kill -9 of `python -m mlw_lib run NB` and its kernel mid-run, then `run NB --resume`",
        "the same final metrics as an uninterrupted run; its runs left RUNNING end KILLED",
    )


def test_a_stopped_run_ends_its_runs_as_killed_and_keeps_the_last_good_copy(
    toy: Path, refusals
) -> None:
    latest = notebooks.run_notebook(toy, parameters={"epochs": 0.5})  # the last good copy
    before = latest.read_bytes()
    for count, (stop, what) in enumerate(
        [
            (signal.SIGTERM, "kill (SIGTERM) of a CLI run"),
            (signal.SIGINT, "Ctrl-C (SIGINT) of a run"),
        ],
        start=2,
    ):
        stopped = cli("run", str(toy), "-p", "pause", "60")
        wait_for(lambda n=count: len(executions(toy)) == n, "the next execution")
        folder = executions(toy)[-1].parent
        wait_for(lambda f=folder: f"01_toy/{f.name}" in run_statuses_or_empty(toy), "its run")
        stopped.send_signal(stop)
        assert stopped.wait(timeout=60) == 130
        message = stopped.stderr.read()
        assert f"continue with: python -m mlw_lib run {toy} --resume" in message
        assert run_statuses(toy)[f"01_toy/{folder.name}"] == ["KILLED"]
        assert latest.read_bytes() == before
        (line,) = [line for line in message.splitlines() if line.startswith("mlw: interrupted")]
        noise = " Tracebacks of the kernel's shutdown are printed too." * ("Traceback" in message)
        refusals.seen(what, f"{line} (exit 130; its MLflow runs KILLED.{noise})")


def run_statuses_or_empty(toy: Path) -> dict[str, list[str]]:
    try:
        return run_statuses(toy)
    except sqlite3.OperationalError:  # the store or its tables do not exist yet
        return {}


def test_a_killed_kernel_fails_its_runs_and_its_execution_only(
    tmp_path: Path, monkeypatch, refusals
) -> None:
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    source = (
        "import os, signal\nimport mlw_lib as mlw\n"
        "with mlw.tracking.notebook_run('02_dies', log_environment=False):\n"
        "    if die:\n        os.kill(os.getpid(), signal.SIGKILL)"
    )
    notebook = write_notebook(
        tmp_path / "notebooks" / "02_dies.ipynb",
        [code_cell("die = False  # kill the kernel", ["parameters"]), code_cell(source)],
    )
    out = tmp_path / "runs" / "notebooks"
    latest = notebooks.run_notebook(notebook, output_dir=out)
    before = latest.read_bytes()
    what = "the kernel is killed (kill -9) inside an MLflow run"
    with refusals.error(what, notebooks.NotebookExecutionError, "partially executed copy"):
        notebooks.run_notebook(notebook, parameters={"die": True}, output_dir=out, timeout=60)
    store = sqlite3.connect(tmp_path / "runs" / "mlflow" / "mlflow.db")
    statuses = sorted(status for (status,) in store.execute("select status from runs"))
    assert statuses == ["FAILED", "FINISHED"]
    assert latest.read_bytes() == before
    folders = sorted(out.glob("02_dies/*"))
    assert len(folders) == 2 and not (folders[-1] / "finished").exists()


def test_resume_needs_an_unfinished_execution_and_keeps_its_parameters(toy: Path, refusals) -> None:
    out = toy.parents[1] / "runs" / "notebooks"
    what = "run NB --resume when every execution of NB finished"
    with refusals.error(what, notebooks.ResumeError, "no unfinished execution of 01_toy"):
        notebooks.run_notebook(toy, output_dir=out, resume=True)
    what = "run NB --resume -p epochs 1"
    with refusals.error(what, ValueError, "keeps its own parameters; leave out -p and -f"):
        notebooks.run_notebook(toy, parameters={"epochs": 1.0}, output_dir=out, resume=True)


def test_two_first_runs_on_a_fresh_store_both_complete(tmp_path: Path, refusals) -> None:
    code = (
        "import mlw_lib as mlw\n"
        "with mlw.tracking.notebook_run('03_race', log_environment=False):\n"
        "    mlw.tracking.log_text('ok', 'ok.txt')\n"
    )
    env = {**os.environ, "MLW_MLFLOW_DIR": str(tmp_path / "store")}
    runs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read()
    store = sqlite3.connect(tmp_path / "store" / "mlflow.db")
    assert [status for (status,) in store.execute("select status from runs")] == ["FINISHED"] * 3
    refusals.behaviour(
        "three first runs at once on a fresh MLflow store (one used to die: duplicate column)",
        "all complete: the store's tables are created once, under a file lock",
    )


def test_a_new_run_ends_the_runs_an_abandoned_execution_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    """An execution whose process died without a word (kill -9) left a run RUNNING; the next
    run of any notebook ends it KILLED; a live execution's run is left alone."""
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    out = tmp_path / "runs" / "notebooks"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    executions = {}
    for name, pid in (("dead", dead.pid), ("alive", alive.pid)):
        execution = notebooks.Execution.create(out, f"01_{name}", {})
        (execution.folder / "pid").write_text(str(pid))
        monkeypatch.setenv(notebooks.executions.EXECUTION_ENV, execution.id)
        with tracking.notebook_run(f"01_{name}", log_environment=False) as run:
            pass
        executions[name] = (execution, run.info.run_id)
    monkeypatch.delenv(notebooks.executions.EXECUTION_ENV)
    client = mlflow.MlflowClient()
    for _, run_id in executions.values():
        client.update_run(run_id, "RUNNING")  # as a killed process leaves it
    later = write_notebook(
        tmp_path / "notebooks" / "02_later.ipynb", [code_cell("x = 1  # a number", ["parameters"])]
    )
    try:
        notebooks.run_notebook(later, output_dir=out)
    finally:
        alive.kill()
        alive.wait()
    assert client.get_run(executions["dead"][1]).info.status == "KILLED"
    assert client.get_run(executions["alive"][1]).info.status == "RUNNING"
    refusals.behaviour(
        "kill -9 of a CLI run, then a new run of any notebook (not --resume)",
        "the new run ends the runs the dead one left RUNNING as KILLED",
    )


def test_an_interrupted_sweep_resumes_without_running_finished_points_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    """A sweep whose second point died (here: its kernel failed; kill -9 of a run is tested
    above), resumed: the finished point is not run again, the other continues in place."""
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    marker = tmp_path / "may-finish"
    source = write_notebook(
        tmp_path / "notebooks" / "01_sweep.ipynb",
        [
            code_cell("x = 0  # a grid value", ["parameters"]),
            code_cell(f"from pathlib import Path\nassert x == 0 or Path({str(marker)!r}).exists()"),
        ],
    )
    out = tmp_path / "runs" / "notebooks"
    with pytest.raises(notebooks.NotebookExecutionError):
        notebooks.run_sweep(source, {"x": [0, 1]}, output_dir=out)
    (first,), (second,) = out.glob("01_sweep__x=0/*"), out.glob("01_sweep__x=1/*")
    assert (first / "finished").exists() and not (second / "finished").exists()

    marker.touch()
    copies = notebooks.run_sweep(source, {"x": [0, 1]}, output_dir=out, resume=True)
    assert copies == [first / "notebook.ipynb", out / "01_sweep__x=1.ipynb"]
    assert list(out.glob("01_sweep__x=0/*")) == [first], "a finished point is not run again"
    assert list(out.glob("01_sweep__x=1/*")) == [second], "resumed in place"
    assert (second / "finished").exists()
    refusals.behaviour(
        "`python -m mlw_lib sweep NB -g ...` interrupted mid-sweep, then the same command "
        "with --resume (run-all --resume likewise)",
        "finished points are not run again; the interrupted one continues in its own folder",
    )


@pytest.mark.parametrize(
    "argv, again",
    [
        (["run", "02", "-p", "epochs", "2"], "python -m mlw_lib run 02 --resume"),
        (["run-all", "--params", "paper"], "python -m mlw_lib run-all --params paper --resume"),
        (
            ["sweep", "01", "-g", "widths", "[[64], [128]]"],
            "python -m mlw_lib sweep 01 -g widths '[[64], [128]]' --resume",
        ),
    ],
)
def test_an_interrupted_command_names_the_command_that_continues_it(argv, again) -> None:
    from mlw_lib.__main__ import build_parser, resume_command

    assert resume_command(build_parser().parse_args(argv), argv) == again


def test_an_execution_is_abandoned_only_when_no_live_process_runs_it(tmp_path: Path) -> None:
    execution = notebooks.Execution.create(tmp_path, "01_toy", {"epochs": 1.0})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (execution.folder / "pid").write_text(str(sleeper.pid))
        assert execution.running_pid == sleeper.pid and not execution.abandoned
        hour_ago = time.time() - 3600  # the pid file predates the process: the pid was reused
        os.utime(execution.folder / "pid", (hour_ago, hour_ago))
        assert execution.running_pid is None and execution.abandoned
    finally:
        sleeper.kill()
        sleeper.wait()
    (execution.folder / "pid").touch()
    assert execution.abandoned, "its process is gone"
    (execution.folder / "finished").touch()
    assert not execution.abandoned
