import io
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

from helpers import MIRROR  # noqa: E402  (needs the sys.path entry above)


class _Response(io.BytesIO):
    """What `urllib.request.urlopen` returns, as far as torchvision's downloads use it."""

    def __init__(self, url: str, data: bytes) -> None:
        super().__init__(data)
        self.url, self.length = url, len(data)


class FakeNetwork:
    """Stands in for `urllib.request.urlopen`, which torchvision downloads with: serves only
    the URLs in `served` {url: bytes}, fails at once on any other ("network disabled in
    tests"), and logs every URL opened in `opened`."""

    def __init__(self) -> None:
        self.served: dict[str, bytes] = {}
        self.opened: list[str] = []

    def urlopen(self, request: urllib.request.Request | str, *args: object, **kwargs: object):
        url = request if isinstance(request, str) else request.full_url
        self.opened.append(url)
        if url not in self.served:
            raise urllib.error.URLError(f"network disabled in tests ({url})")
        return _Response(url, self.served[url])


@pytest.fixture(scope="session", autouse=True)
def _offline() -> Iterator[FakeNetwork]:
    """No test (nor module-scoped fixture) reaches the network."""
    net = FakeNetwork()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(urllib.request, "urlopen", net.urlopen)
        yield net


@pytest.fixture(autouse=True)
def network(_offline: FakeNetwork) -> FakeNetwork:
    """The fake network, emptied for each test (see `FakeNetwork`)."""
    _offline.served.clear()
    _offline.opened.clear()
    return _offline


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
