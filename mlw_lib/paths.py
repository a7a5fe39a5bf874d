"""Repository-rooted paths: nothing in mlw depends on the caller's working directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The repository root (the folder that holds `mlw_lib/`)."""
    return REPO_ROOT


def data_root() -> Path:
    """Dataset cache: `$MLW_DATA_ROOT` if set, else `<repo>/data`."""
    return Path(os.environ.get("MLW_DATA_ROOT", REPO_ROOT / "data")).resolve()


def figures_dir(notebook_key: str) -> Path:
    """`<repo>/figures/<notebook_key>/` (base: `$MLW_FIGURES_DIR` if set), created on demand."""
    base = Path(os.environ.get("MLW_FIGURES_DIR", REPO_ROOT / "figures")).resolve()
    path = base / notebook_key
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Executed notebooks, checkpoints and MLflow files: `$MLW_RUNS_DIR` if set, else the
    git-ignored `<repo>/runs`."""
    path = Path(os.environ.get("MLW_RUNS_DIR", REPO_ROOT / "runs")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
