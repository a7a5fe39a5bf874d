"""mlw_lib.data: MNIST from the offline mirror, the cache and provenance, and clear failures.

Network access is always blocked here: `sources.download_file` is replaced in every test.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import MIRROR, no_network

from mlw_lib.data import (
    MNIST_SPEC,
    ChecksumError,
    DataFile,
    DatasetInfo,
    DatasetSpec,
    DataUnavailableError,
    InMemoryDataset,
    ensure_files,
    load_mnist,
    md5sum,
    sources,
)

MNIST_FILES = [f.path for f in MNIST_SPEC.files]
HAVE_MIRROR = all((MIRROR / p).is_file() for p in MNIST_FILES)
needs_mirror = pytest.mark.skipif(
    not HAVE_MIRROR,
    reason=f"MNIST mirror not found under {MIRROR} (expected {MNIST_FILES[0]} etc.); "
    "set MLW_DATA_MIRROR to the shared datasets folder",
)
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> InMemoryDataset:
    """Full MNIST loaded once from the mirror (shared by comparisons)."""
    if not HAVE_MIRROR:
        pytest.skip(f"MNIST mirror not found under {MIRROR}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLW_DATA_ROOT", str(tmp_path_factory.mktemp("full") / "data"))
        mp.setenv("MLW_DATA_MIRROR", str(MIRROR))
        mp.setattr(sources, "download_file", no_network)
        return load_mnist()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _copy_mnist(dest: Path) -> Path:
    """A writable copy of the MNIST part of the mirror under `dest`."""
    for rel in MNIST_FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MIRROR / rel, dest / rel)
    return dest


def _flip_bytes(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + 4] = bytes(b ^ 0xFF for b in data[offset : offset + 4])
    path.write_bytes(bytes(data))


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.part")] if folder.exists() else []


# --- loading ------------------------------------------------------------------------------


@needs_mirror
def test_full_load_from_mirror_then_cache(root: Path) -> None:
    before = _snapshot(MIRROR)
    ds = load_mnist()

    assert ds.x_train.shape == (60_000, 784) and ds.x_test.shape == (10_000, 784)
    assert ds.y_train.shape == (60_000,) and ds.y_test.shape == (10_000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.device.type == "cpu" and (ds.n_train, ds.n_test) == (60_000, 10_000)
    assert ds.y_train[:10].tolist() == FIRST_TRAIN_LABELS
    assert torch.bincount(ds.y_test, minlength=10).tolist()[:2] == [980, 1135]
    # (x/255 - 0.1307)/0.3081 with the training set's own mean/std: about 0 and 1.
    assert abs(ds.x_train.mean().item()) < 1e-3
    assert abs(ds.x_train.std().item() - 1.0) < 1e-3
    assert ds.x_train.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert ds.x_train.max().item() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)

    info = ds.info
    assert (info.name, info.source, info.origin) == ("MNIST", "mirror", f"mirror:{MIRROR}")
    assert info.files == {f.path: f.md5 for f in MNIST_SPEC.files}
    assert not info.is_subset
    assert info.describe() == (
        f"MNIST (full: 60000 train / 10000 test) from mirror {MIRROR}, md5-verified"
    )
    for rel, md5 in info.files.items():
        assert md5sum(root / rel) == md5
    record = json.loads((root / "MNIST/raw/provenance.json").read_text())["files"]
    assert {rel: e["origin"] for rel, e in record.items()} == dict.fromkeys(
        MNIST_FILES, f"mirror:{MIRROR}"
    )

    again = load_mnist()
    assert again.info.source == "cache"
    assert again.info.origin == f"mirror:{MIRROR}"  # the original provenance is kept
    assert "from cache (originally mirror" in again.info.describe()
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)

    assert _snapshot(MIRROR) == before  # the mirror was only read
    assert not _leftovers(root)


@needs_mirror
def test_subsets_are_the_first_examples(root: Path, full: InMemoryDataset) -> None:
    ds = load_mnist(train_subset=1000, test_subset=250)
    assert (ds.n_train, ds.n_test) == (1000, 250)
    assert torch.equal(ds.x_train, full.x_train[:1000])
    assert torch.equal(ds.y_train, full.y_train[:1000])
    assert torch.equal(ds.x_test, full.x_test[:250])
    assert torch.equal(ds.y_test, full.y_test[:250])
    assert ds.info.is_subset and (ds.info.full_train, ds.info.full_test) == (60_000, 10_000)
    assert "subset: first 1000/60000 train / 250/10000 test" in ds.info.describe()
    tags = ds.info.as_tags()
    assert tags == {
        "data_name": "MNIST",
        "data_source": "mirror",
        "data_origin": f"mirror:{MIRROR}",
        "data_subset": "true",
        "n_train": "1000",
        "n_test": "250",
    }
    assert all(isinstance(v, str) for v in tags.values())
    assert full.info.as_tags()["data_subset"] == "false"


@needs_mirror
def test_unflattened_shape_and_to(root: Path) -> None:
    flat = load_mnist(train_subset=64, test_subset=32)
    img = load_mnist(train_subset=64, test_subset=32, flatten=False)
    assert img.x_train.shape == (64, 1, 28, 28) and img.x_test.shape == (32, 1, 28, 28)
    assert torch.equal(img.x_train.reshape(64, -1), flat.x_train)
    moved = img.to("cpu")
    assert moved.info is img.info and moved.device == torch.device("cpu")
    if torch.cuda.is_available():
        on_gpu = load_mnist(train_subset=64, test_subset=32, device="cuda")
        assert on_gpu.x_train.is_cuda and on_gpu.y_test.is_cuda
        assert torch.equal(on_gpu.to("cpu").x_train, flat.x_train)


@pytest.mark.parametrize(
    ("train", "test"),
    [(0, None), (-5, None), (60_001, None), (None, 0), (None, 10_001)],
)
def test_invalid_subset_sizes(root: Path, train: int | None, test: int | None) -> None:
    with pytest.raises(ValueError, match="subset must satisfy 0 <"):
        load_mnist(train_subset=train, test_subset=test)


def test_non_integer_subset(root: Path) -> None:
    with pytest.raises(TypeError):
        load_mnist(train_subset=10.0)  # type: ignore[arg-type]


# --- failures -----------------------------------------------------------------------------


def test_offline_without_data_names_the_fix(
    root: Path, empty_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = empty_mirror
    with pytest.raises(DataUnavailableError) as err:
        load_mnist()
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError)
    for rel in MNIST_FILES:
        assert rel in msg
    assert str(root) in msg and str(empty) in msg
    assert "export MLW_DATA_MIRROR=" in msg and "network disabled" in msg
    assert not _leftovers(root)

    monkeypatch.delenv("MLW_DATA_MIRROR")
    with pytest.raises(DataUnavailableError, match=r"\$MLW_DATA_MIRROR is not set"):
        load_mnist(train_subset=10)


@needs_mirror
def test_corrupt_mirror_file_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_mirror = _copy_mnist(tmp_path / "bad_mirror")
    bad = bad_mirror / "MNIST/raw/train-labels-idx1-ubyte.gz"
    _flip_bytes(bad)
    actual = md5sum(bad)
    monkeypatch.setenv("MLW_DATA_MIRROR", str(bad_mirror))
    with pytest.raises(ChecksumError) as err:
        load_mnist()
    msg = str(err.value)
    assert str(bad) in msg and "d53e105ee54ea40749a09fcbcd1e9432" in msg and actual in msg
    assert "mirror" in msg
    assert (err.value.expected, err.value.actual) == ("d53e105ee54ea40749a09fcbcd1e9432", actual)
    assert not (root / "MNIST/raw/train-labels-idx1-ubyte.gz").exists()
    assert not _leftovers(root)


@needs_mirror
def test_corrupt_cache_file_is_refused_then_repaired(root: Path) -> None:
    load_mnist(train_subset=10, test_subset=10)
    cached = root / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    _flip_bytes(cached)
    actual = md5sum(cached)
    with pytest.raises(ChecksumError) as err:
        load_mnist(train_subset=10, test_subset=10)
    msg = str(err.value)
    assert str(cached) in msg and "ec29112dd5afa0611ce80d1b7f02629c" in msg and actual in msg
    assert "delete it" in msg
    cached.unlink()  # the fix the message names
    ds = load_mnist(train_subset=10, test_subset=10)
    assert ds.info.source == "mirror" and ds.y_train.tolist() == FIRST_TRAIN_LABELS


# --- download (simulated: the "network" serves files from the mirror) --------------------


@needs_mirror
def test_download_path_and_its_provenance(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLW_DATA_MIRROR")
    fetched: list[str] = []

    def fake_download(url: str, dest: Path, timeout: float = 60.0) -> None:
        fetched.append(url)
        shutil.copyfile(MIRROR / "MNIST/raw" / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(sources, "download_file", fake_download)
    ds = load_mnist(train_subset=100, test_subset=100)
    base = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert ds.info.source == "download" and ds.info.origin == f"download:{base}"
    assert sorted(fetched) == sorted(base + Path(p).name for p in MNIST_FILES)

    monkeypatch.setattr(sources, "download_file", no_network)
    again = load_mnist(train_subset=100, test_subset=100)
    assert (again.info.source, again.info.origin) == ("cache", f"download:{base}")
    record = json.loads((root / "MNIST/raw/provenance.json").read_text())["files"]
    assert record["MNIST/raw/t10k-labels-idx1-ubyte.gz"]["origin"] == (
        f"download:{base}t10k-labels-idx1-ubyte.gz"
    )


def test_corrupt_download_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def garbage(url: str, dest: Path, timeout: float = 60.0) -> None:
        dest.write_bytes(b"<html>not the file</html>")

    monkeypatch.setattr(sources, "download_file", garbage)
    spec = DatasetSpec("Tiny", (DataFile("tiny/a.bin", "0" * 32, ("https://a/a", "https://b/a")),))
    with pytest.raises(ChecksumError, match="expected md5 0{32}, got [0-9a-f]{32}"):
        ensure_files(spec, root=tmp_path, mirror=None)
    assert not (tmp_path / "tiny/a.bin").exists() and not _leftovers(tmp_path)


def test_generic_spec_with_gunzip_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"idx-like payload " * 100
    (tmp_path / "src.gz").write_bytes(gzip.compress(payload))
    (tmp_path / "src").write_bytes(payload)
    md5 = md5sum(tmp_path / "src")

    def serve(url: str, dest: Path, timeout: float = 60.0) -> None:
        if "dead" in url:
            raise OSError("HTTP 404")
        shutil.copyfile(tmp_path / "src.gz", dest)

    monkeypatch.setattr(sources, "download_file", serve)
    spec = DatasetSpec(
        "Tiny",
        (DataFile("Tiny/raw/a", md5, ("https://dead/a.gz", "https://ok/a.gz"), gunzip=True),),
    )
    assert spec.provenance_dir == "Tiny/raw"
    out = ensure_files(spec, root=tmp_path / "data", mirror=None)
    assert (out.source, out.origin) == ("download", "download:https://ok/a.gz")
    assert out.paths["Tiny/raw/a"].read_bytes() == payload
    assert ensure_files(spec, root=tmp_path / "data", mirror=None).source == "cache"


def test_spec_matches_torchvision() -> None:
    from torchvision.datasets import MNIST

    ours = {Path(f.path).name: (f.md5, f.urls) for f in MNIST_SPEC.files}
    theirs = {name: (md5, tuple(m + name for m in MNIST.mirrors)) for name, md5 in MNIST.resources}
    assert ours == theirs


def test_info_rejects_unknown_source() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        DatasetInfo("X", "somewhere", "local:/x")
