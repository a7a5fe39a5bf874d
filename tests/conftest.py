import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

from helpers import MIRROR, no_network  # noqa: E402  (needs the sys.path entry above)

from mlw_lib.data import sources  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test downloads anything: `sources.download_file` always fails."""
    monkeypatch.setattr(sources, "download_file", no_network)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root, with the shared mirror configured."""
    path = tmp_path / "data"
    monkeypatch.setenv("MLW_DATA_ROOT", str(path))
    monkeypatch.setenv("MLW_DATA_MIRROR", str(MIRROR))
    return path


@pytest.fixture
def empty_mirror(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root and an empty mirror: no data anywhere (and no network)."""
    path = tmp_path / "empty_mirror"
    path.mkdir()
    monkeypatch.setenv("MLW_DATA_MIRROR", str(path))
    return path
