"""Seeding, git state and environment records: what a run needs to be repeatable."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil
import torch

from mlw_lib.paths import repo_root

UNKNOWN = "unknown"

# Distributions whose versions are recorded with every run (key -> distribution name).
_RECORDED_PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "pandas": "pandas",
    "mlflow": "mlflow",
    "papermill": "papermill",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
}


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python `random`, numpy and torch (CPU and every CUDA device).

    With `deterministic`, torch uses deterministic algorithms (warning, not failing, where an
    op has none) and cuDNN autotuning is off. `CUBLAS_WORKSPACE_CONFIG` is set if unset; it
    only takes effect if this runs before the first cuBLAS call of the process.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    set_deterministic(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False


def set_deterministic(mode: bool) -> None:
    """`torch.use_deterministic_algorithms(mode, warn_only=True)`, which also sets TorchInductor's
    flag and so imports it (about 2 s per process). Until a process imports TorchInductor, only
    torch's own flag is set; `torch_compile_deterministic` sets Inductor's before compiling."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=True)


def torch_compile_deterministic() -> None:
    """Give TorchInductor (imported now) torch's deterministic setting, before torch.compile."""
    if torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(
            True, warn_only=torch.is_deterministic_algorithms_warn_only_enabled()
        )


def _git(args: list[str], cwd: Path) -> str | None:
    """stdout of `git <args>` in `cwd`, or None if git is missing or the command fails."""
    try:
        completed = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout


def git_info(path: Path | None = None) -> dict[str, str]:
    """`{"git_commit": sha or "unknown", "git_dirty": "true"/"false"/"unknown"}`.

    Looks at the checkout holding `path` (default: the repository root). Untracked files
    count as dirty (executed notebooks and runs are git-ignored, so untracked means new
    source). Never raises: no git, no checkout or no commit yet give "unknown".
    """
    cwd = Path(path) if path is not None else repo_root()
    if not cwd.is_dir():
        return {"git_commit": UNKNOWN, "git_dirty": UNKNOWN}
    head = _git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd)
    commit = head.strip() if head and head.strip() else UNKNOWN
    status = _git(["status", "--porcelain"], cwd)
    if status is None:
        dirty = UNKNOWN
    else:
        dirty = "true" if status.strip() else "false"
    return {"git_commit": commit, "git_dirty": dirty}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device_name(device: str) -> str:
    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "cuda (not available)"
        index = torch.device(device).index
        return torch.cuda.get_device_name(index if index is not None else 0)
    if kind == "mps":
        return "Apple MPS"
    return cpu_model() or platform.processor() or platform.machine() or kind


def cpu_model() -> str | None:
    """CPU model name from /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def environment_info(device: str | None = None) -> dict[str, str]:
    """Package versions, machine, torch threading, device and git state, all as strings.

    `device` defaults to "cuda" when available, else "cpu". Keys: python, platform, the
    package names in `_RECORDED_PACKAGES`, cuda, cpu_count, torch_threads, device,
    device_name, git_commit, git_dirty.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    info.update({key: _version(dist) for key, dist in _RECORDED_PACKAGES.items()})
    info.update(
        {
            "cuda": str(torch.version.cuda) if torch.version.cuda else "none",
            "cpu_count": str(os.cpu_count()),
            "torch_threads": str(torch.get_num_threads()),
            "device": str(device),
            "device_name": _device_name(str(device)),
        }
    )
    info.update(git_info())
    return info


class CpuContention:
    """How busy the machine was during a block: `with CpuContention() as load: ...`, then
    `load.record()` = {"load_average": 1-min load at the start, "other_cores": CPU-seconds
    that other processes used per wall-clock second (0 on a quiet machine)}."""

    def __enter__(self) -> CpuContention:
        self._load = psutil.getloadavg()[0]
        self._system, self._own = _busy_seconds(), _own_seconds()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.perf_counter() - self._start, 1e-9)
        others = (_busy_seconds() - self._system) - (_own_seconds() - self._own)
        self._other = max(others, 0.0) / wall

    def record(self) -> dict[str, float]:
        return {"load_average": round(self._load, 2), "other_cores": round(self._other, 3)}


def _busy_seconds() -> float:
    """CPU-seconds all processes spent busy (not idle or waiting) since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _own_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system
