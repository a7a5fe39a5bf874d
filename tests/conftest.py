import contextlib
import io
import os
import re
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


# --- the table of bad inputs and faults ---------------------------------------------------------
# Tests of bad input take the `refusals` fixture and check each case through it; run
# `pytest tests --bad-inputs-table results/bad_inputs.md` (`make bad-inputs`) to write what
# each case shows a user. The table is written only when every test passed.
CASES: list[tuple[str, str, str, str]] = []  # (test, what the user did, what they see, verdict)
TEMPORARY = re.compile(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/[^/\s]+")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bad-inputs-table",
        metavar="PATH",
        help="write the bad inputs and faults the tests try (what, message, verdict) to PATH",
    )


class Refusals:
    """Checks one bad input or fault of a test and records it for the table."""

    def __init__(self, test: str) -> None:
        self.test = test

    @contextlib.contextmanager
    def error(self, what: str, kind: type[BaseException], match: str) -> Iterator[object]:
        """`pytest.raises(kind, match=match)` around doing `what`; records the message."""
        with pytest.raises(kind, match=match) as caught:
            yield caught
        self.seen(what, f"{type(caught.value).__name__}: {caught.value}")

    def seen(self, what: str, message: str, verdict: str = "clear error") -> None:
        """Record `message`, what a user saw after `what` (checked by the test)."""
        CASES.append((self.test, what, message, verdict))

    def behaviour(self, what: str, outcome: str) -> None:
        """Record a fault whose handling is a tested behaviour rather than an error."""
        self.seen(what, outcome, "tested behaviour")


@pytest.fixture
def refusals(request: pytest.FixtureRequest) -> Refusals:
    return Refusals(request.node.nodeid)


def _cell(text: str) -> str:
    text = TEMPORARY.sub("<tmp>", " ".join(str(text).split()))
    return text.replace(str(Path(__file__).resolve().parents[1]), "<repo>").replace("|", "\\|")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--bad-inputs-table")
    if not path:
        return
    if exitstatus != 0 or not CASES:
        print(f"\n--bad-inputs-table: not written ({len(CASES)} cases, a test failed or none ran)")
        return
    rows = [
        f"| {n} | {_cell(what)} | {_cell(seen)} | {verdict} | `{test.split('::')[0]}` |"
        for n, (test, what, seen, verdict) in enumerate(CASES, 1)
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(
        "# Bad inputs and faults\n\nWritten by `make bad-inputs` (`pytest tests "
        f"--bad-inputs-table {path}`) from the tests that try each case; every row passed.\n\n"
        "| # | what the user does | what the user sees | verdict | test |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n",
        encoding="utf-8",
    )
