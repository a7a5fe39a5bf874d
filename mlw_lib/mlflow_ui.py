"""The MLflow UI of the project's store: the command that serves it, a server run from Python
(for tests and screenshots), and a screenshot of an experiment's runs.

The server listens on 127.0.0.1 only, with one worker and MLflow's job execution off (low
memory); `make mlflow-ui` runs `mlflow_ui_command()`.
"""

from __future__ import annotations

import http.client
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from mlw_lib.tracking import tracking_uri, use_store


def mlflow_ui_command(port: int = 5000) -> str:
    """Shell command that serves the MLflow UI for this store on 127.0.0.1.

    `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` and one worker keep the server's memory low.
    """
    executable = Path(sys.executable).parent / "mlflow"
    program = str(executable) if executable.exists() else "mlflow"
    return (
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "
        f"{shlex.quote(program)} ui --backend-store-uri {shlex.quote(tracking_uri())} "
        f"--host 127.0.0.1 --port {port} --workers 1"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Server:
    """A running UI: its `url`, and the `pid` leading its process group (server + workers)."""

    url: str
    pid: int


@contextmanager
def ui_server(port: int | None = None, timeout: float = 180.0) -> Iterator[Server]:
    """The MLflow UI of this store (`mlflow_ui_command`) running in the background on
    127.0.0.1, yielded once `/health` answers; on exit the server and its workers (one
    process group) are stopped. A server that exits or does not answer within `timeout` s
    raises RuntimeError with its last output."""
    port = port or free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        mlflow_ui_command(port), shell=True, start_new_session=True, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                state = (
                    f"exited with {server.returncode}"
                    if server.poll() is not None
                    else (f"did not answer within {timeout:.0f} s")
                )
                raise RuntimeError(f"the MLflow UI on port {port} {state}:\n{tail}")
            time.sleep(0.25)
        yield Server(f"http://127.0.0.1:{port}", server.pid)
    finally:
        _stop_group(server)
        log.close()


def _stop_group(leader: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to `leader`'s process group, SIGKILL to what is left after `grace` seconds."""
    with suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
    if not _group_gone(leader, grace):
        with suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        _group_gone(leader, grace)


def _group_gone(leader: subprocess.Popen, seconds: float) -> bool:
    """Whether no process of `leader`'s group is left within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        leader.poll()  # reap the leader itself, or its zombie counts as left
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _answers(port: int) -> bool:
    """Whether an HTTP GET of /health on 127.0.0.1:`port` returns 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def ui_screenshot(path: Path, experiment: str, browser: str = "chromium") -> Path:
    """A PNG of the MLflow UI showing `experiment`'s runs, taken by headless `browser`
    (Chromium) from a server started for it (`ui_server`)."""
    import mlflow

    use_store()
    found = mlflow.MlflowClient().get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no experiment {experiment!r} in {tracking_uri()}; run its notebook")
    program = shutil.which(browser)
    if program is None:
        raise FileNotFoundError(f"{browser} not found; install it (Debian: apt install chromium)")
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with ui_server() as server:
        subprocess.run(
            [
                program,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1600,900",
                "--virtual-time-budget=15000",
                f"--screenshot={path}",
                f"{server.url}/#/experiments/{found.experiment_id}/runs",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return path
