"""One headless execution of a notebook: its own folder, so that no run overwrites another.

    runs/notebooks/<stem>.ipynb                     the last successful executed copy
    runs/notebooks/<stem>/<stamp>/notebook.ipynb    this execution's copy, written cell by cell
                                  parameters.yaml   the parameters it ran with (for --resume)
                                  checkpoints/      one checkpoint per (method, seed)
                                  pid, finished     who runs it; present once it succeeded

`<stem>` is the notebook key, or `<key>__<variant>`. While it runs, the kernel sees
`MLW_EXECUTION` (tagged on its MLflow runs) and `MLW_CHECKPOINT_DIR` (where `compare` keeps
and resumes its checkpoints). A resumed execution re-runs the notebook in the same folder:
finished (method, seed) runs load from their checkpoints, the interrupted one continues.
An execution is *abandoned* when it did not finish and the process in `pid` is gone
(kill -9, a lost session): the next start ends the MLflow runs it left RUNNING.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlw_lib.notebooks.parameters import load_parameter_file

EXECUTION_ENV = "MLW_EXECUTION"
CHECKPOINT_ENV = "MLW_CHECKPOINT_DIR"


class ResumeError(ValueError):
    """There is no execution to resume, or it is still running."""


@dataclass(frozen=True)
class Execution:
    """The folder of one execution of `stem` (see the module docstring)."""

    folder: Path

    @property
    def id(self) -> str:
        """`<stem>/<stamp>`: unique per execution; the MLflow tag `mlw_execution`."""
        return f"{self.folder.parent.name}/{self.folder.name}"

    @property
    def notebook(self) -> Path:
        return self.folder / "notebook.ipynb"

    @classmethod
    def create(cls, output_dir: Path, stem: str, params: Mapping[str, Any]) -> Execution:
        """A new folder `<output_dir>/<stem>/<time>-<pid>` holding `params`."""
        stamp = Path(output_dir) / stem / (time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")
        for number in itertools.count(1):  # a second execution in the same second: -2, -3 ...
            folder = stamp.with_name(stamp.name + (f"-{number}" if number > 1 else ""))
            try:
                folder.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        text = yaml.safe_dump(dict(params), sort_keys=False)
        (folder / "parameters.yaml").write_text(text, encoding="utf-8")
        return cls(folder)

    @classmethod
    def latest_unfinished(cls, output_dir: Path, stem: str) -> Execution:
        """The newest execution of `stem` that did not finish; ResumeError if there is none
        or it is still running."""
        for execution in cls.all_of(output_dir, stem):
            if not execution.finished:
                execution.check_not_running()
                return execution
        raise ResumeError(
            f"no unfinished execution of {stem} to resume in {Path(output_dir, stem)}; "
            "start one without --resume"
        )

    @classmethod
    def newest_with(
        cls, output_dir: Path, stem: str, params: Mapping[str, Any]
    ) -> Execution | None:
        """The newest execution of `stem` started with exactly `params`, if any."""
        wanted = dict(params)
        return next((e for e in cls.all_of(output_dir, stem) if e.parameters() == wanted), None)

    @classmethod
    def all_of(cls, output_dir: Path, stem: str) -> list[Execution]:
        """Every execution of `stem` under `output_dir`, newest first."""
        files = sorted(Path(output_dir, stem).glob("*/parameters.yaml"), reverse=True)
        return [cls(path.parent) for path in files]

    def parameters(self) -> dict[str, Any]:
        """The parameters this execution was started with."""
        return load_parameter_file(self.folder / "parameters.yaml")

    @property
    def finished(self) -> bool:
        return (self.folder / "finished").exists()

    @property
    def running_pid(self) -> int | None:
        """The pid of the live process running this execution (not this process), else None.
        A pid the OS has since given to a process started later does not count."""
        import psutil

        pid_file = self.folder / "pid"
        try:
            pid, written = int(pid_file.read_text()), pid_file.stat().st_mtime
            started = psutil.Process(pid).create_time()
        except (OSError, ValueError, psutil.Error):  # no pid file, or no such process
            return None
        return pid if pid != os.getpid() and started <= written + 1 else None

    @property
    def abandoned(self) -> bool:
        """Not finished, and no live process runs it."""
        return self.folder.is_dir() and not self.finished and self.running_pid is None

    def check_not_running(self) -> None:
        """ResumeError if the process recorded in `pid` is still alive."""
        if (pid := self.running_pid) is not None:
            raise ResumeError(f"execution {self.folder} is still running (pid {pid})")

    def start(self) -> dict[str, str]:
        """Record this process as the runner; the kernel's environment for this execution."""
        (self.folder / "pid").write_text(str(os.getpid()))
        return {EXECUTION_ENV: self.id, CHECKPOINT_ENV: str(self.folder / "checkpoints")}

    def finish(self, latest: Path) -> Path:
        """Mark the execution finished; copy its notebook to `latest` atomically."""
        part = latest.with_name(f".{latest.name}.part")
        shutil.copyfile(self.notebook, part)
        os.replace(part, latest)
        (self.folder / "finished").touch()
        return latest
