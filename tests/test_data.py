"""mlw_lib.data: MNIST from the offline mirror, the cache and its provenance, a (simulated)
download, and clear failures.

The network is always the fake of conftest.py: only URLs a test serves can be opened.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from helpers import MIRROR
from torchvision.datasets import MNIST
from torchvision.datasets.utils import calculate_md5

from mlw_lib.data import (
    ChecksumError,
    DatasetInfo,
    DataUnavailableError,
    InMemoryDataset,
    load_mnist,
)
from mlw_lib.data.files import DataRootError
from mlw_lib.data.mnist import MNIST_DATA

if TYPE_CHECKING:
    from conftest import FakeNetwork  # the `network` fixture's type

RAW = MNIST_DATA.files()  # {MNIST/raw/<name>: (md5 of the idx file, md5 of its official .gz)}
GZ_FILES = [f"{rel}.gz" for rel in RAW]
HAVE_MIRROR = all((MIRROR / p).is_file() for p in GZ_FILES)
needs_mirror = pytest.mark.skipif(
    not HAVE_MIRROR,
    reason=f"MNIST mirror not found under {MIRROR} (expected {GZ_FILES[0]} etc.); "
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
        return load_mnist()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _copy_gz(dest: Path) -> Path:
    """A writable copy of the MNIST part of the mirror under `dest`."""
    for rel in GZ_FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MIRROR / rel, dest / rel)
    return dest


def _flip_bytes(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + 4] = bytes(b ^ 0xFF for b in data[offset : offset + 4])
    path.write_bytes(bytes(data))


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.part")] if folder.exists() else []


@contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """`folder` and all in it read-only for the block: write bits cleared, and `chattr +i` as
    root (whom modes do not stop); skips the test where neither makes it so."""
    paths = [folder, *folder.rglob("*")]
    chattr = os.geteuid() == 0 and shutil.which("chattr")
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)
    if chattr:
        subprocess.run([chattr, "-R", "+i", folder], capture_output=True, check=False)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip(f"cannot make {folder} read-only here")
        yield
    finally:
        if chattr:
            subprocess.run([chattr, "-R", "-i", folder], capture_output=True, check=False)
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)


# --- loading ------------------------------------------------------------------------------


@needs_mirror
def test_full_load_from_mirror_then_cache(root: Path, network: FakeNetwork) -> None:
    before = _snapshot(MIRROR)
    ds = load_mnist()

    assert ds.x_train.shape == (60_000, 784) and ds.x_test.shape == (10_000, 784)
    assert ds.y_train.shape == (60_000,) and ds.y_test.shape == (10_000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.device.type == "cpu" and (len(ds.x_train), len(ds.x_test)) == (60_000, 10_000)
    assert ds.y_train[:10].tolist() == FIRST_TRAIN_LABELS
    assert torch.bincount(ds.y_test, minlength=10).tolist()[:2] == [980, 1135]
    assert ds.classes == tuple("0123456789")
    # (x/255 - 0.1307)/0.3081 with the training set's own mean/std: about 0 and 1.
    assert abs(ds.x_train.mean().item()) < 1e-3
    assert abs(ds.x_train.std().item() - 1.0) < 1e-3
    assert ds.x_train.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert ds.x_train.max().item() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)

    info = ds.info
    assert (info.name, info.source, info.origin) == ("MNIST", "mirror", f"mirror:{MIRROR}")
    assert info.files == {rel: md5 for rel, (md5, _) in RAW.items()}
    assert not info.is_subset
    assert info.describe() == (
        f"MNIST (full: 60000 train / 10000 test) from mirror {MIRROR}, md5-verified"
    )
    for rel, (md5, gz_md5) in RAW.items():  # the verified copies, and what was read
        assert calculate_md5(root / rel) == md5 and calculate_md5(root / f"{rel}.gz") == gz_md5
    record = json.loads((root / "provenance.json").read_text())
    recorded = [*RAW, *GZ_FILES]  # what was read, and the copies it was extracted from
    assert {rel: e["origin"] for rel, e in record.items()} == dict.fromkeys(
        recorded, f"mirror:{MIRROR}"
    )

    again = load_mnist()
    assert again.info.source == "cache"
    assert again.info.origin == f"mirror:{MIRROR}"  # the original provenance is kept
    assert "from cache (originally mirror" in again.info.describe()
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)

    assert _snapshot(MIRROR) == before  # the mirror was only read
    assert not _leftovers(root) and network.opened == []


@needs_mirror
def test_subsets_are_the_first_examples(root: Path, full: InMemoryDataset) -> None:
    ds = load_mnist(train_subset=1000, test_subset=250)
    assert (len(ds.x_train), len(ds.y_test)) == (1000, 250)
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
    # The notebooks' call: positional subset sizes, then the device.
    assert torch.equal(load_mnist(1000, 250, device="cpu").x_test, ds.x_test)


@needs_mirror
def test_unflattened_shape_and_to(root: Path) -> None:
    flat = load_mnist(train_subset=64, test_subset=32)
    img = load_mnist(train_subset=64, test_subset=32, flatten=False)
    assert img.x_train.shape == (64, 1, 28, 28) and img.x_test.shape == (32, 1, 28, 28)
    assert torch.equal(img.x_train.reshape(64, -1), flat.x_train)
    moved = img.to("cpu")
    assert moved.info is img.info and moved.x_test.device == torch.device("cpu")
    if torch.cuda.is_available():
        on_gpu = load_mnist(train_subset=64, test_subset=32, device="cuda")
        assert on_gpu.x_train.is_cuda and on_gpu.y_test.is_cuda
        assert torch.equal(on_gpu.to("cpu").x_train, flat.x_train)


@needs_mirror
def test_hold_out_moves_the_last_training_examples_to_a_validation_split(root: Path) -> None:
    ds = load_mnist(train_subset=100, test_subset=20)
    split = ds.hold_out(30)
    assert torch.equal(split.x_train, ds.x_train[:70]) and torch.equal(split.y_val, ds.y_train[70:])
    assert torch.equal(split.x_val, ds.x_train[70:]) and torch.equal(split.x_test, ds.x_test)
    assert split.info.n_train == 70 and ds.x_val is None and ds.info.n_train == 100
    held = "validation: training examples 70-99 of the loaded order held out (30)"
    assert held in split.info.describe()
    assert split.info.as_tags()["data_validation"] == held.removeprefix("validation: ")
    assert torch.equal(split.to("cpu").x_val, split.x_val)
    with pytest.raises(ValueError, match="already holds a validation split"):
        split.hold_out(5)
    with pytest.raises(ValueError, match="validation size 100 leaves no training data"):
        ds.hold_out(100)
    with pytest.raises(ValueError, match="validation size must be a positive integer"):
        ds.hold_out(0)


@pytest.mark.parametrize(
    ("train", "test"),
    [(0, None), (-5, None), (60_001, None), (None, 0), (None, 10_001)],
)
def test_invalid_subset_sizes(empty_mirror: Path, train: int | None, test: int | None) -> None:
    with pytest.raises(ValueError, match="subset must satisfy 0 <"):  # before looking for data
        load_mnist(train_subset=train, test_subset=test)


def test_non_integer_subset(empty_mirror: Path) -> None:
    with pytest.raises(TypeError):
        load_mnist(train_subset=10.0)  # type: ignore[arg-type]


# --- failures -----------------------------------------------------------------------------


def test_offline_without_data_names_the_fix(
    root: Path, empty_mirror: Path, monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    with pytest.raises(DataUnavailableError) as err:
        load_mnist()
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError)
    for rel, (md5, gz_md5) in RAW.items():
        assert f"{rel}  {md5}  or  {rel}.gz  {gz_md5}" in msg
    assert str(root) in msg and str(empty_mirror) in msg
    assert "export MLW_DATA_MIRROR=" in msg and "network disabled" in msg
    assert not _leftovers(root)
    refusals.seen("load MNIST offline, with a mirror that lacks it", msg)

    monkeypatch.delenv("MLW_DATA_MIRROR")
    with pytest.raises(DataUnavailableError, match=r"\$MLW_DATA_MIRROR is not set"):
        load_mnist(train_subset=10)


@needs_mirror
def test_corrupt_mirror_file_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    bad_mirror = _copy_gz(tmp_path / "bad_mirror")
    bad = bad_mirror / "MNIST/raw/train-labels-idx1-ubyte.gz"
    _flip_bytes(bad)
    actual = calculate_md5(bad)
    before = _snapshot(bad_mirror)
    monkeypatch.setenv("MLW_DATA_MIRROR", str(bad_mirror))
    with pytest.raises(ChecksumError) as err:
        load_mnist()
    msg = str(err.value)
    assert str(bad) in msg and "d53e105ee54ea40749a09fcbcd1e9432" in msg and actual in msg
    assert "mirror" in msg and "MLW_DATA_MIRROR" in msg
    assert (err.value.expected, err.value.actual) == ("d53e105ee54ea40749a09fcbcd1e9432", actual)
    assert not (root / "MNIST/raw/train-labels-idx1-ubyte.gz").exists()
    assert not (root / "MNIST/raw/train-labels-idx1-ubyte").exists()
    assert not _leftovers(root) and _snapshot(bad_mirror) == before
    refusals.seen("load MNIST from a mirror holding a bit-flipped file", msg)


@needs_mirror
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_corrupt_cache_file_is_refused_then_repaired(root: Path, suffix: str, refusals) -> None:
    load_mnist(train_subset=10, test_subset=10)
    cached = root / f"MNIST/raw/t10k-labels-idx1-ubyte{suffix}"
    if suffix:  # the .gz is only read when its idx file is missing
        (root / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()
    _flip_bytes(cached, offset=10)
    actual = calculate_md5(cached)
    with pytest.raises(ChecksumError) as err:
        load_mnist(train_subset=10, test_subset=10)
    msg = str(err.value)
    expected = RAW["MNIST/raw/t10k-labels-idx1-ubyte"][1 if suffix else 0]
    assert str(cached) in msg and expected in msg and actual in msg
    assert f"rm '{cached}'" in msg
    refusals.seen(f"load MNIST with a corrupt cached file{suffix and ' (.gz)'}", msg)
    cached.unlink()  # the fix the message names
    ds = load_mnist(train_subset=10, test_subset=10)
    assert ds.info.origin == f"mirror:{MIRROR}" and ds.y_train.tolist() == FIRST_TRAIN_LABELS


# --- download (simulated: the fake network serves the mirror's files) ---------------------


@needs_mirror
def test_download_path_and_its_provenance(
    root: Path, monkeypatch: pytest.MonkeyPatch, network: FakeNetwork
) -> None:
    monkeypatch.delenv("MLW_DATA_MIRROR")
    base, fallback = MNIST.mirrors
    for rel in GZ_FILES:  # the first mirror lacks one file: torchvision falls back
        if "t10k-images" not in rel:
            network.served[base + Path(rel).name] = (MIRROR / rel).read_bytes()
        network.served[fallback + Path(rel).name] = (MIRROR / rel).read_bytes()
    ds = load_mnist(train_subset=100, test_subset=100)
    origin = f"download:{base} or {fallback}"
    assert (ds.info.source, ds.info.origin) == ("download", origin)
    assert ds.y_train[:10].tolist() == FIRST_TRAIN_LABELS
    assert {base + Path(rel).name for rel in GZ_FILES} <= set(network.opened)
    assert fallback + "t10k-images-idx3-ubyte.gz" in network.opened

    network.served.clear()
    again = load_mnist(train_subset=100, test_subset=100)
    assert (again.info.source, again.info.origin) == ("cache", origin)
    assert f"from cache (originally download {base} or " in again.info.describe()
    record = json.loads((root / "provenance.json").read_text())
    assert record["MNIST/raw/t10k-labels-idx1-ubyte"]["origin"] == origin


def test_corrupt_download_is_refused_and_deleted(
    root: Path, empty_mirror: Path, network: FakeNetwork, refusals
) -> None:
    for base in MNIST.mirrors:
        for name, _ in MNIST.resources:
            network.served[base + name] = gzip.compress(b"<html>not the file</html>")
    what = "download MNIST and receive an HTML page instead of the archive"
    with refusals.error(what, ChecksumError, "expected md5 [0-9a-f]{32}, got [0-9a-f]{32}"):
        load_mnist()
    assert not list((root / "MNIST/raw").glob("*.gz")) and not _leftovers(root)


# --- the data root: never the mirror, and an unwritable one names the fix -----------------


@needs_mirror
@pytest.mark.parametrize("where", ["mirror", "inside", "link", "above"])
def test_data_root_overlapping_the_mirror_is_refused_before_writing(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, refusals
) -> None:
    mirror = _copy_gz(tmp_path / "mirror")
    (tmp_path / "link").symlink_to(mirror)
    data = {"mirror": mirror, "inside": mirror / "data", "link": tmp_path / "link"}
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("MLW_DATA_ROOT", str(data.get(where, tmp_path)))
    before = _snapshot(tmp_path), _contents(tmp_path)
    with pytest.raises(DataRootError) as err:
        load_mnist(train_subset=10, test_subset=10)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and str(mirror) in msg
    assert "$MLW_DATA_ROOT=" in msg and "$MLW_DATA_MIRROR=" in msg
    assert "Fix: point MLW_DATA_ROOT at a writable folder outside MLW_DATA_MIRROR" in msg
    # nothing created, modified or deleted, in the mirror or anywhere
    assert (_snapshot(tmp_path), _contents(tmp_path)) == before
    relation = {"mirror": "is", "inside": "lies inside", "link": "links to", "above": "holds"}
    refusals.seen(f"an MLW_DATA_ROOT that {relation[where]} MLW_DATA_MIRROR", msg)


@needs_mirror
@pytest.mark.parametrize("via", ["mirror", "download"])
def test_unwritable_data_root_names_the_fix(
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    network: FakeNetwork,
    via: str,
    refusals,
) -> None:
    (tmp_path / "file").write_text("a file, so no folder can be made under it")
    monkeypatch.setenv("MLW_DATA_ROOT", str(unwritable := tmp_path / "file" / "data"))
    if via == "download":  # the download would succeed, but has nowhere to go
        (tmp_path / "empty").mkdir()
        monkeypatch.setenv("MLW_DATA_MIRROR", str(tmp_path / "empty"))
        for rel in GZ_FILES:
            network.served[MNIST.mirrors[0] + Path(rel).name] = (MIRROR / rel).read_bytes()
    with pytest.raises(DataRootError) as err:
        load_mnist(train_subset=10, test_subset=10)
    msg = str(err.value)
    assert f"Cannot write into $MLW_DATA_ROOT={unwritable}: " in msg
    assert "Fix: point MLW_DATA_ROOT at a writable folder" in msg
    assert isinstance(err.value.__cause__, OSError)
    refusals.seen(f"an MLW_DATA_ROOT that cannot be written, data from the {via}", msg)


@needs_mirror
@pytest.mark.parametrize("missing", ["", ".gz"])
def test_read_only_data_root_loads_what_it_holds_and_names_the_fix_for_the_rest(
    root: Path, missing: str
) -> None:
    load_mnist(train_subset=10, test_subset=10)
    (root / "provenance.json").unlink()  # as if filled by hand: the record cannot be written
    with _read_only(root):
        ds = load_mnist(train_subset=10, test_subset=10)
    assert (ds.info.source, ds.info.origin) == ("cache", f"local:{root}")
    assert ds.y_train.tolist() == FIRST_TRAIN_LABELS and not (root / "provenance.json").exists()
    lost = [root / f"MNIST/raw/t10k-labels-idx1-ubyte{suffix}" for suffix in {"", missing}]
    for path in lost:  # to be extracted from its .gz, or copied from the mirror too
        path.unlink()
    with _read_only(root), pytest.raises(DataRootError) as err:
        load_mnist(train_subset=10, test_subset=10)
    assert f"Cannot write into $MLW_DATA_ROOT={root}: " in str(err.value)
    assert not any(path.exists() for path in lost) and not _leftovers(root)


def test_info_rejects_unknown_source() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        DatasetInfo("X", "somewhere", "local:/x")
