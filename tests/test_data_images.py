"""Image datasets for the CNN notebooks: Fashion-MNIST, CIFAR-10 (full or mirror subset), the
`load_dataset` dispatcher, and batch augmentation.

The network is always the fake of conftest.py: only URLs a test serves can be opened. Real
data come from the offline mirror; the official CIFAR-10 tarball is not available offline, so
the full variant is tested on a small archive in the official format.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import MIRROR
from torchvision.datasets import CIFAR10, FashionMNIST
from torchvision.datasets.utils import calculate_md5

from mlw_lib.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGES,
    Augment,
    ChecksumError,
    DataUnavailableError,
    InMemoryDataset,
    imdb,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    random_crop_flip,
)
from mlw_lib.data import cifar10 as cifar10_module
from mlw_lib.data import mnist as mnist_module

if TYPE_CHECKING:
    from conftest import FakeNetwork  # the `network` fixture's type

FASHION = mnist_module.FASHION_MNIST_DATA.files()  # {path: (md5, md5 of the official .gz)}
FASHION_FILES = list(FASHION)
SUBSET_FILES = ["cifar10-subset/cifar10_official_prefix_subset.npz", "cifar10-subset/batches.meta"]
TARBALL = CIFAR10.filename
needs_fashion = pytest.mark.skipif(
    not all((MIRROR / p).is_file() for p in FASHION_FILES),
    reason=f"Fashion-MNIST not found in the mirror {MIRROR}; set MLW_DATA_MIRROR",
)
needs_cifar_subset = pytest.mark.skipif(
    not all((MIRROR / p).is_file() for p in SUBSET_FILES),
    reason=f"CIFAR-10 subset not found in the mirror {MIRROR}; set MLW_DATA_MIRROR",
)
FASHION_FIRST_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
SUBSET_VARIANT = "subset 5,170/1,017 from the offline mirror"


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory: pytest.TempPathFactory) -> InMemoryDataset:
    """The whole CIFAR-10 mirror subset, loaded once."""
    if not all((MIRROR / p).is_file() for p in SUBSET_FILES):
        pytest.skip(f"CIFAR-10 subset not found in the mirror {MIRROR}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLW_DATA_ROOT", str(tmp_path_factory.mktemp("cifar") / "data"))
        mp.setenv("MLW_DATA_MIRROR", str(MIRROR))
        return load_cifar10()


def _mirror_with(dest: Path, files: list[str], corrupt: str | None = None) -> Path:
    """A mirror under `dest` linking `files` of the shared mirror; `corrupt` is a bad copy."""
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == corrupt:
            data = bytearray((MIRROR / rel).read_bytes())
            data[100:104] = bytes(b ^ 0xFF for b in data[100:104])
            (dest / rel).write_bytes(bytes(data))
        else:
            (dest / rel).symlink_to(MIRROR / rel)
    return dest


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 idx file holding `array`."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _tiny_cifar(
    dest: Path, per_batch: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> dict[str, np.ndarray]:
    """A small `cifar-10-python.tar.gz` in the official format (pickled batches)
    at `dest`, declared as the official data: torchvision's md5s and our sizes are patched."""
    rng = np.random.default_rng(seed)
    batches, md5s = {}, {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batches[name] = {
            "batch_label": name,
            "labels": rng.integers(0, 10, per_batch).tolist(),
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
    members = {name: pickle.dumps(batch, protocol=2) for name, batch in batches.items()}
    members["batches.meta"] = (MIRROR / "cifar10-subset/batches.meta").read_bytes()
    members["readme.html"] = b"<html></html>"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in members.items():
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
            md5s[name] = _md5(data)
    monkeypatch.setattr(CIFAR10, "tgz_md5", calculate_md5(dest))
    monkeypatch.setattr(
        CIFAR10, "train_list", [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)]
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setitem(cifar10_module.SIZES, cifar10_module.FULL, (5 * per_batch, per_batch))
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return {
        "x_train": np.concatenate([b["data"] for b in train]),
        "y_train": np.concatenate([b["labels"] for b in train]),
        "x_test": batches["test_batch"]["data"],
        "y_test": np.asarray(batches["test_batch"]["labels"]),
    }


def _cifar_normalized(x: np.ndarray) -> torch.Tensor:
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (torch.from_numpy(x).reshape(-1, 3, 32, 32).float() / 255 - mean) / std


# --- Fashion-MNIST ------------------------------------------------------------------------


@needs_fashion
def test_fashion_mnist_from_mirror_then_cache(root: Path) -> None:
    before = _snapshot(MIRROR)
    ds = load_fashion_mnist(train_subset=10_000, test_subset=500)
    assert ds.x_train.shape == (10_000, 1, 28, 28) and ds.x_test.shape == (500, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_train[:10].tolist() == FASHION_FIRST_TRAIN_LABELS
    assert ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    assert abs(ds.x_train.mean().item()) < 0.02 and abs(ds.x_train.std().item() - 1) < 0.02
    assert ds.x_train.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-5)
    assert ds.x_train.max().item() == pytest.approx((1 - 0.2860) / 0.3530, abs=1e-5)

    info = ds.info
    assert (info.name, info.source, info.origin) == ("Fashion-MNIST", "mirror", f"mirror:{MIRROR}")
    assert info.files == {rel: md5 for rel, (md5, _) in FASHION.items()}
    assert info.describe() == (
        "Fashion-MNIST (subset: first 10000/60000 train / 500/10000 test)"
        f" from mirror {MIRROR}, md5-verified"
    )
    assert info.as_tags()["data_subset"] == "true" and "data_variant" not in info.as_tags()
    for rel, (md5, _) in FASHION.items():
        assert calculate_md5(root / rel) == md5

    flat = load_fashion_mnist(train_subset=100, test_subset=10, flatten=True)
    assert flat.info.source == "cache"
    assert torch.equal(flat.x_train, ds.x_train[:100].reshape(100, 784))
    assert torch.equal(flat.y_test, ds.y_test[:10])
    assert _snapshot(MIRROR) == before


def test_fashion_mnist_gz_files_when_uncompressed_are_absent(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror with torchvision's .gz files (as for MNIST): each is md5-checked, copied and
    extracted, and the extracted file checked against its own md5 (tiny generated files)."""
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 10, dtype=np.uint8),
    }
    mirror = tmp_path / "gz_mirror"
    (mirror / "FashionMNIST/raw").mkdir(parents=True)
    resources = []
    for name, array in arrays.items():
        raw = _idx_bytes(array)
        (mirror / f"FashionMNIST/raw/{name}.gz").write_bytes(gzip.compress(raw))
        resources.append((f"{name}.gz", calculate_md5(mirror / f"FashionMNIST/raw/{name}.gz")))
        monkeypatch.setitem(mnist_module.RAW_MD5, f"FashionMNIST/raw/{name}", _md5(raw))
    monkeypatch.setattr(FashionMNIST, "resources", resources)
    tiny = dataclasses.replace(mnist_module.FASHION_MNIST_DATA, sizes=(20, 10))
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_DATA", tiny)
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))

    ds = load_fashion_mnist()
    assert ds.info.source == "mirror" and ds.info.origin == f"mirror:{mirror}"
    assert set(ds.info.files) == {f"FashionMNIST/raw/{name}" for name in arrays}
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255
    assert torch.allclose(ds.x_train[:, 0], (expected - 0.2860) / 0.3530, atol=1e-6)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    mirrored = sorted(p.name for p in (mirror / "FashionMNIST/raw").iterdir())
    assert mirrored == sorted(f"{name}.gz" for name in arrays)  # nothing extracted into it

    # An extracted file that does not have its declared md5 is refused.
    monkeypatch.setitem(mnist_module.RAW_MD5, "FashionMNIST/raw/train-images-idx3-ubyte", "0" * 32)
    shutil.rmtree(root)
    with pytest.raises(ChecksumError, match="expected md5 0{32}") as err:
        load_fashion_mnist()
    assert err.value.path == root / "FashionMNIST/raw/train-images-idx3-ubyte"


@needs_fashion
def test_fashion_mnist_corrupt_mirror_file_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_rel = "FashionMNIST/raw/train-labels-idx1-ubyte"
    mirror = _mirror_with(tmp_path / "bad", FASHION_FILES, corrupt=bad_rel)
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))
    with pytest.raises(ChecksumError) as err:  # never a silent fall-back to a download
        load_fashion_mnist(train_subset=10, test_subset=10)
    msg = str(err.value)
    assert str(mirror / bad_rel) in msg and "9018921c3c673c538a1fc5bad174d6f9" in msg
    assert err.value.actual == calculate_md5(mirror / bad_rel) and err.value.actual in msg
    assert not (root / bad_rel).exists()


# --- CIFAR-10 -----------------------------------------------------------------------------


@needs_cifar_subset
def test_cifar_subset_is_detected_and_labelled(cifar_subset: InMemoryDataset) -> None:
    ds = cifar_subset
    assert ds.x_train.shape == (5170, 3, 32, 32) and ds.x_test.shape == (1017, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.is_contiguous()
    assert ds.y_test.shape == (1017,) and 0 <= ds.y_train.min() and ds.y_train.max() <= 9
    # Per-channel normalization with the official training set's statistics: ~0 mean, ~1 std.
    assert ds.x_train.mean(dim=(0, 2, 3)).abs().max().item() < 0.03
    assert (ds.x_train.std(dim=(0, 2, 3)) - 1).abs().max().item() < 0.03
    # The well-known first image of data_batch_1: a frog whose R row starts 59 43 50 68 98 119.
    red = ds.x_train[0, 0, 0, :6] * CIFAR10_STD[0] + CIFAR10_MEAN[0]
    assert (red * 255).round().tolist() == [59, 43, 50, 68, 98, 119]
    assert ds.classes[int(ds.y_train[0])] == "frog" and len(ds.classes) == 10
    assert torch.bincount(ds.y_train, minlength=10).min() > 400

    info = ds.info
    assert (info.name, info.variant, info.source) == ("CIFAR-10", SUBSET_VARIANT, "mirror")
    assert info.is_subset and info.partial and (info.full_train, info.full_test) == (5170, 1017)
    assert info.describe() == (
        f"CIFAR-10 {SUBSET_VARIANT} (5170 train / 1017 test) from mirror {MIRROR}, md5-verified"
    )
    tags = info.as_tags()
    assert tags["data_variant"] == SUBSET_VARIANT and tags["data_subset"] == "true"
    assert set(info.files) == set(SUBSET_FILES)


@needs_cifar_subset
def test_cifar_subset_sizes(
    root: Path, cifar_subset: InMemoryDataset, network: FakeNetwork
) -> None:
    ds = load_cifar10(train_subset=300, test_subset=50, variant="subset")
    assert torch.equal(ds.x_train, cifar_subset.x_train[:300])
    assert torch.equal(ds.y_test, cifar_subset.y_test[:50])
    assert "(subset: first 300/5170 train / 50/1017 test)" in ds.info.describe()
    with pytest.raises(ValueError, match=rf"<= 5170 .*CIFAR-10 {SUBSET_VARIANT} was loaded"):
        load_cifar10(train_subset=6000)
    with pytest.raises(ValueError, match="<= 50000"):
        load_cifar10(train_subset=50_001)
    with pytest.raises(ValueError, match="variant must be one of"):
        load_cifar10(variant="tiny")  # type: ignore[arg-type]
    assert network.opened == []  # the subset never needs the network
    with pytest.raises(DataUnavailableError, match=f"{TARBALL}  {CIFAR10.tgz_md5}"):
        load_cifar10(train_subset=10, variant="full")
    assert network.opened[-1] == CIFAR10.url  # "full" tries the download
    assert sorted(p.name for p in root.iterdir()) == ["cifar10-subset", "provenance.json"]


@needs_cifar_subset
def test_cifar_auto_takes_local_full_data_and_never_downloads_when_the_subset_is_there(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: FakeNetwork
) -> None:
    served = tmp_path / "served" / TARBALL
    expected = _tiny_cifar(served, per_batch=6, seed=0, monkeypatch=monkeypatch)
    network.served[CIFAR10.url] = served.read_bytes()

    # The mirror has only the subset: "auto" uses it and never opens a URL.
    assert load_cifar10(train_subset=30, test_subset=6).info.variant == SUBSET_VARIANT
    assert network.opened == []
    # "full" downloads it (torchvision checks the tarball's md5 and extracts it) ...
    ds = load_cifar10(train_subset=30, test_subset=6, variant="full")
    assert network.opened and set(network.opened) == {CIFAR10.url}
    assert (ds.info.variant, ds.info.source) == ("full official", "download")
    assert not ds.info.partial and not ds.info.is_subset  # the whole (tiny) official set
    assert ds.info.describe() == (
        "CIFAR-10 full official (full: 30 train / 6 test)"
        f" from download {CIFAR10.url}, md5-verified"
    )
    assert torch.allclose(ds.x_train, _cifar_normalized(expected["x_train"]), atol=1e-6)
    assert ds.y_train.tolist() == expected["y_train"].tolist()  # batches 1..5 in order
    assert torch.allclose(ds.x_test, _cifar_normalized(expected["x_test"]), atol=1e-6)
    assert ds.y_test.tolist() == expected["y_test"].tolist()
    assert ds.classes[:2] == ("airplane", "automobile")
    assert set(ds.info.files) == {
        f"cifar-10-batches-py/{n}"
        for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    }

    # ... and once it is in the data root, "auto" prefers it, from the cache.
    network.served.clear()
    again = load_cifar10(train_subset=12, test_subset=6)
    assert (again.info.variant, again.info.source) == ("full official", "cache")
    assert again.info.origin == f"download:{CIFAR10.url}"
    assert torch.equal(again.x_train, ds.x_train[:12])

    # A tarball in the mirror is copied and extracted without the network.
    mirror = _mirror_with(tmp_path / "mirror", SUBSET_FILES)
    shutil.copyfile(served, mirror / TARBALL)
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("MLW_DATA_ROOT", str(tmp_path / "root2"))
    network.opened.clear()
    local = load_cifar10(train_subset=30, test_subset=6)
    assert (local.info.variant, local.info.source, local.info.origin) == (
        "full official",
        "mirror",
        f"mirror:{mirror}",
    )
    assert torch.equal(local.x_train, ds.x_train) and network.opened == []


@needs_cifar_subset
@pytest.mark.parametrize("corrupt", [TARBALL, SUBSET_FILES[0]])
def test_cifar_corrupt_mirror_file_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt: str
) -> None:
    mirror = _mirror_with(tmp_path / "bad", SUBSET_FILES, corrupt=corrupt)
    if corrupt == TARBALL:  # a bad official file must not fall back to the subset silently
        _tiny_cifar(mirror / TARBALL, per_batch=2, seed=1, monkeypatch=monkeypatch)
        monkeypatch.setattr(CIFAR10, "tgz_md5", "c58f30108f718f92721af3b95e74349a")
    expected = {TARBALL: CIFAR10.tgz_md5, SUBSET_FILES[0]: "9c3fdbcda5c0a8a9edc3953050a0efcd"}
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))
    with pytest.raises(ChecksumError) as err:
        load_cifar10(train_subset=10, test_subset=2)
    assert str(mirror / corrupt) in str(err.value) and expected[corrupt] in str(err.value)
    assert err.value.actual == calculate_md5(mirror / corrupt)
    assert not (root / corrupt).exists()


def test_cifar_corrupt_batch_and_corrupt_download_are_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: FakeNetwork
) -> None:
    served = tmp_path / "served" / TARBALL
    _tiny_cifar(served, per_batch=2, seed=4, monkeypatch=monkeypatch)
    network.served[CIFAR10.url] = served.read_bytes()
    load_cifar10(variant="full")
    batch = root / "cifar-10-batches-py/data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-1] + b"x")
    with pytest.raises(ChecksumError, match=f"rm '{batch}'"):
        load_cifar10(variant="full")

    shutil.rmtree(root)
    network.served[CIFAR10.url] = b"<html>not the file</html>"
    with pytest.raises(ChecksumError, match=f"expected md5 {CIFAR10.tgz_md5}, got ") as err:
        load_cifar10(variant="full")
    assert "deleted" in str(err.value) and not (root / TARBALL).exists()


@pytest.mark.parametrize("load", [load_fashion_mnist, load_cifar10])
def test_missing_data_names_every_file_and_the_fix(load, root: Path, empty_mirror: Path) -> None:
    with pytest.raises(DataUnavailableError) as err:
        load()
    msg = str(err.value)
    if load is load_cifar10:
        wanted = {TARBALL: CIFAR10.tgz_md5} | {
            SUBSET_FILES[0]: "9c3fdbcda5c0a8a9edc3953050a0efcd",
            SUBSET_FILES[1]: CIFAR10.meta["md5"],
        }
        assert "none of these file sets is available" in msg
        assert "full official:" in msg and "subset 5,170/1,017 from the offline mirror:" in msg
    else:
        wanted = {rel: md5 for rel, (md5, _) in FASHION.items()}
        wanted |= {f"{rel}.gz": gz_md5 for rel, (_, gz_md5) in FASHION.items()}
    for rel, md5 in wanted.items():
        assert f"{rel}  {md5}" in msg
    assert str(root) in msg and f"MLW_DATA_MIRROR={empty_mirror}" in msg
    assert "export MLW_DATA_MIRROR=" in msg and "network disabled" in msg


# --- dispatcher ---------------------------------------------------------------------------


@needs_fashion
def test_load_dataset_dispatches_by_name(root: Path) -> None:
    ds = load_dataset("fashion_mnist", train_subset=8, test_subset=4)
    assert ds.info.name == "Fashion-MNIST" and ds.x_train.shape == (8, 1, 28, 28)
    mnist = load_dataset("mnist", train_subset=8, test_subset=4)
    assert torch.equal(mnist.x_train, load_mnist(train_subset=8, test_subset=4).x_train)


@needs_cifar_subset
def test_every_dataset_loads_with_defaults_from_the_mirror(
    root: Path, network: FakeNetwork
) -> None:
    """What `make data` does: with only the mirror, no dataset needs the network."""
    for name in IMAGES:
        assert load_dataset(name).info.source == "mirror"
    assert "from mirror:" in imdb.fetch_archive()
    assert network.opened == []


def test_load_dataset_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'; valid names: cifar10, "):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="fashion_mnist, imdb, mnist"):
        load_dataset("MNIST")


# --- augmentation -------------------------------------------------------------------------


def _windows(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Every H x W window of the zero-padded x: (N, C, 2p+1, 2p+1, H, W)."""
    _, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    return padded.unfold(2, h, 1).unfold(3, w, 1)


def _matches(out: torch.Tensor, x: torch.Tensor, padding: int) -> torch.Tensor:
    """(N, 2p+1, 2p+1) bool: which window of the padded x each output image equals."""
    return (_windows(x, padding) == out[:, :, None, None]).flatten(4).all(-1).all(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_only_shifts_content_by_at_most_the_padding(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = 48, int(torch.randint(1, 4, (1,), generator=g)), 7, 9
    padding = int(torch.randint(1, 4, (1,), generator=g))
    x = torch.randn(n, c, h, w, generator=g)
    out = Augment(crop_padding=padding, flip=False)(x, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    hits = _matches(out, x, padding)
    assert (hits.flatten(1).sum(1) == 1).all()  # each image is exactly one shifted window
    shifts = hits.flatten(1).float().argmax(1)
    assert len(shifts.unique()) > 3  # offsets vary across the batch
    zero_shift = padding * (2 * padding + 1) + padding
    assert (shifts != zero_shift).any()


def test_flip_only_equals_torch_flip_for_flipped_samples() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 3, 5, 6, generator=g)
    out = Augment(crop_padding=0, flip=True)(x, g)
    flipped = (out == torch.flip(x, dims=[3])).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # each sample is either flipped or untouched
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(out[flipped], torch.flip(x[flipped], dims=[3]))


def test_crop_and_flip_together() -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(64, 2, 8, 8, generator=g)
    out = random_crop_flip(x, padding=2, flip=True, generator=g)
    plain = _matches(out, x, 2).flatten(1).any(1)
    mirrored = _matches(out, torch.flip(x, dims=[3]), 2).flatten(1).any(1)
    assert (plain ^ mirrored).all() and plain.any() and mirrored.any()


def test_same_seed_same_output_and_dtypes_kept() -> None:
    x = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    aug = Augment()
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    half = aug(x.to(torch.float64), torch.Generator().manual_seed(5))
    assert half.dtype == torch.float64 and torch.equal(half, a.to(torch.float64))


def test_channels_last_is_preserved() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 10, 10, generator=g)
    x_cl = x.to(memory_format=torch.channels_last)
    aug = Augment(crop_padding=3)
    out_cl = aug(x_cl, torch.Generator().manual_seed(1))
    out = aug(x, torch.Generator().manual_seed(1))
    assert out_cl.is_contiguous(memory_format=torch.channels_last) and not out_cl.is_contiguous()
    assert out.is_contiguous()
    assert torch.equal(out_cl, out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_the_same_generator() -> None:
    x = torch.randn(32, 3, 16, 16)
    aug = Augment()
    on_gpu = aug(x.cuda().to(memory_format=torch.channels_last), torch.Generator().manual_seed(2))
    assert on_gpu.is_cuda and on_gpu.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(on_gpu.cpu(), aug(x, torch.Generator().manual_seed(2)))


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="crop_padding must be an int >= 0"):
        Augment(crop_padding=-1)
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\)"):
        Augment()(torch.zeros(3, 8, 8))
    x = torch.zeros(2, 1, 4, 4)
    assert Augment(crop_padding=0, flip=False)(x) is x
