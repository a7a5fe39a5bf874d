"""Image datasets for the CNN notebooks: Fashion-MNIST, CIFAR-10 (full or mirror subset), the
`load_dataset` dispatcher, and batch augmentation.

Network access is always blocked here: `sources.download_file` is replaced in every test.
Real data come from the offline mirror; the official CIFAR-10 tarball is not available
offline, so its reader is tested on a small archive in the official format.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import pickle
import shutil
import tarfile
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import MIRROR, no_network

from mlw_lib.data import (
    CIFAR10_FULL_SPEC,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10_SUBSET_SPEC,
    FASHION_MNIST_GZ_SPEC,
    FASHION_MNIST_RAW_SPEC,
    Augment,
    ChecksumError,
    DataFile,
    DatasetSpec,
    DataUnavailableError,
    InMemoryDataset,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    md5sum,
    random_crop_flip,
    sources,
)
from mlw_lib.data import cifar10 as cifar10_module
from mlw_lib.data import fashion_mnist as fashion_module

FASHION_FILES = [f.path for f in FASHION_MNIST_RAW_SPEC.files]
SUBSET_FILES = [f.path for f in CIFAR10_SUBSET_SPEC.files]
TARBALL = CIFAR10_FULL_SPEC.files[0].path
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
        mp.setattr(sources, "download_file", no_network)
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


def _idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 idx file holding `array`."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _official_cifar_tarball(dest: Path, per_batch: int, seed: int) -> dict[str, np.ndarray]:
    """A small `cifar-10-python.tar.gz` in the official format: pickled batches, bytes keys."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batches[name] = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
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
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return {
        "x_train": np.concatenate([b[b"data"] for b in train]),
        "y_train": np.concatenate([b[b"labels"] for b in train]),
        "x_test": batches["test_batch"][b"data"],
        "y_test": np.asarray(batches["test_batch"][b"labels"]),
    }


def _use_full_tarball(monkeypatch: pytest.MonkeyPatch, tarball: Path) -> None:
    """Declare the md5 of a test tarball for the official file (same path and URL)."""
    official = CIFAR10_FULL_SPEC.files[0]
    spec = DatasetSpec(
        CIFAR10_FULL_SPEC.name, (dataclasses.replace(official, md5=md5sum(tarball)),)
    )
    full = dataclasses.replace(cifar10_module.CIFAR10_FULL, spec=spec)
    monkeypatch.setattr(cifar10_module, "CIFAR10_FULL", full)


def _cifar_normalized(x: np.ndarray) -> torch.Tensor:
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (torch.from_numpy(x).reshape(-1, 3, 32, 32).float() / 255 - mean) / std


# --- Fashion-MNIST ------------------------------------------------------------------------


@needs_fashion
def test_fashion_mnist_from_mirror_then_cache(root: Path) -> None:
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
    assert info.files == {f.path: f.md5 for f in FASHION_MNIST_RAW_SPEC.files}
    assert info.describe() == (
        "Fashion-MNIST (subset: first 10000/60000 train / 500/10000 test)"
        f" from mirror {MIRROR}, md5-verified"
    )
    assert info.as_tags()["data_subset"] == "true" and "data_variant" not in info.as_tags()

    flat = load_fashion_mnist(train_subset=100, test_subset=10, flatten=True)
    assert flat.info.source == "cache"
    assert torch.equal(flat.x_train, ds.x_train[:100].reshape(100, 784))
    assert torch.equal(flat.y_test, ds.y_test[:10])


def test_fashion_mnist_gz_files_when_uncompressed_are_absent(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 10, dtype=np.uint8),
    }
    mirror = tmp_path / "gz_mirror"
    (mirror / "FashionMNIST/raw").mkdir(parents=True)
    files = []
    for name, array in arrays.items():
        path = mirror / f"FashionMNIST/raw/{name}.gz"
        path.write_bytes(gzip.compress(_idx_bytes(array)))
        files.append(DataFile(f"FashionMNIST/raw/{name}.gz", md5sum(path)))
    tiny = dataclasses.replace(
        fashion_module.FASHION_MNIST,
        specs=(FASHION_MNIST_RAW_SPEC, DatasetSpec("tiny .gz", tuple(files))),
        train_size=20,
        test_size=10,
    )
    monkeypatch.setattr(fashion_module, "FASHION_MNIST", tiny)
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))

    ds = load_fashion_mnist()
    assert ds.info.source == "mirror" and all(p.endswith(".gz") for p in ds.info.files)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255
    assert torch.allclose(ds.x_train[:, 0], (expected - 0.2860) / 0.3530, atol=1e-6)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_gz_spec_matches_torchvision() -> None:
    from torchvision.datasets import FashionMNIST

    ours = {Path(f.path).name: (f.md5, f.urls) for f in FASHION_MNIST_GZ_SPEC.files}
    theirs = {
        name: (md5, tuple(m + name for m in FashionMNIST.mirrors))
        for name, md5 in FashionMNIST.resources
    }
    assert ours == theirs
    assert [Path(f.path).name for f in FASHION_MNIST_RAW_SPEC.files] == [
        name.removesuffix(".gz") for name in theirs
    ]


@needs_fashion
def test_fashion_mnist_corrupt_mirror_file_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_rel = "FashionMNIST/raw/train-labels-idx1-ubyte"
    mirror = _mirror_with(tmp_path / "bad", FASHION_FILES, corrupt=bad_rel)
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))
    with pytest.raises(ChecksumError) as err:  # never a silent fall-back to the .gz files
        load_fashion_mnist(train_subset=10, test_subset=10)
    msg = str(err.value)
    assert str(mirror / bad_rel) in msg and "9018921c3c673c538a1fc5bad174d6f9" in msg
    assert err.value.actual == md5sum(mirror / bad_rel) and err.value.actual in msg
    assert not (root / bad_rel).exists()


# --- CIFAR-10 -----------------------------------------------------------------------------


@needs_cifar_subset
def test_cifar_subset_is_detected_and_labelled(cifar_subset: InMemoryDataset) -> None:
    ds = cifar_subset
    assert ds.x_train.shape == (5170, 3, 32, 32) and ds.x_test.shape == (1017, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
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
def test_cifar_subset_sizes(root: Path, cifar_subset: InMemoryDataset) -> None:
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
    with pytest.raises(DataUnavailableError, match="cifar-10-python.tar.gz"):
        load_cifar10(train_subset=10, variant="full")


@needs_cifar_subset
def test_cifar_prefers_full_official_data(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = tmp_path / "served" / TARBALL
    expected = _official_cifar_tarball(tarball, per_batch=6, seed=0)
    _use_full_tarball(monkeypatch, tarball)
    fetched: list[str] = []

    def serve(url: str, dest: Path, timeout: float = 60.0) -> None:
        fetched.append(url)
        shutil.copyfile(tarball, dest)

    # The mirror holds only the subset, but the full data can be downloaded: full wins.
    monkeypatch.setattr(sources, "download_file", serve)
    ds = load_cifar10(train_subset=30, test_subset=6)
    assert fetched == list(CIFAR10_FULL_SPEC.files[0].urls)
    assert (ds.info.variant, ds.info.source) == ("full official", "download")
    assert not ds.info.partial and ds.info.is_subset
    assert ds.info.describe().startswith(
        "CIFAR-10 full official (subset: first 30/50000 train / 6/10000 test) from download"
    )
    assert torch.allclose(ds.x_train, _cifar_normalized(expected["x_train"]), atol=1e-6)
    assert ds.y_train.tolist() == expected["y_train"].tolist()  # batches 1..5 in order
    assert torch.allclose(ds.x_test, _cifar_normalized(expected["x_test"]), atol=1e-6)
    assert ds.classes[:2] == ("airplane", "automobile")

    monkeypatch.setattr(sources, "download_file", no_network)
    again = load_cifar10(train_subset=30, test_subset=6)
    assert (again.info.variant, again.info.source) == ("full official", "cache")
    assert torch.equal(again.x_train, ds.x_train)
    subset = load_cifar10(train_subset=30, test_subset=6, variant="subset")
    assert subset.info.variant == SUBSET_VARIANT


@needs_cifar_subset
def test_cifar_failed_full_download_is_not_retried_for_a_day(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def unreachable(url: str, dest: Path, timeout: float = 60.0) -> None:
        calls.append(url)
        raise OSError("no route to host")

    monkeypatch.setattr(sources, "download_file", unreachable)
    urls = list(CIFAR10_FULL_SPEC.files[0].urls)
    assert load_cifar10(train_subset=10, test_subset=10).info.variant == SUBSET_VARIANT
    assert calls == urls
    failures = root / sources.DOWNLOAD_FAILURES_FILE
    record = json.loads(failures.read_text())
    assert list(record) == [CIFAR10_FULL_SPEC.name]

    # Within a day "auto" falls back at once, and says how to retry.
    with pytest.warns(UserWarning, match=r"not downloaded again .*download-failures\.json"):
        again = load_cifar10(train_subset=10, test_subset=10)
    assert again.info.variant == SUBSET_VARIANT and calls == urls
    # Asking for the full data explicitly always tries the download.
    with pytest.raises(DataUnavailableError, match="no route to host"):
        load_cifar10(train_subset=10, variant="full")
    assert calls == urls * 2
    # A day later "auto" tries again.
    old = datetime.now(UTC) - sources.RETRY_DOWNLOAD_AFTER - timedelta(minutes=1)
    failures.write_text(json.dumps({CIFAR10_FULL_SPEC.name: old.isoformat()}))
    load_cifar10(train_subset=10, test_subset=10)
    assert calls == urls * 3

    # The record never hides full data that is already in the data root.
    tarball = root / TARBALL
    _official_cifar_tarball(tarball, per_batch=2, seed=2)
    _use_full_tarball(monkeypatch, tarball)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_cifar10(train_subset=4, test_subset=2).info.variant == "full official"


@needs_cifar_subset
@pytest.mark.parametrize("corrupt", [TARBALL, SUBSET_FILES[0]])
def test_cifar_corrupt_file_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt: str
) -> None:
    mirror = _mirror_with(tmp_path / "bad", SUBSET_FILES, corrupt=corrupt)
    if corrupt == TARBALL:  # a bad official file must not fall back to the subset silently
        _official_cifar_tarball(mirror / TARBALL, per_batch=2, seed=1)
        expected = CIFAR10_FULL_SPEC.files[0].md5
    else:
        expected = CIFAR10_SUBSET_SPEC.files[0].md5
    monkeypatch.setenv("MLW_DATA_MIRROR", str(mirror))
    with pytest.raises(ChecksumError) as err:
        load_cifar10(train_subset=10, test_subset=10)
    assert str(mirror / corrupt) in str(err.value) and expected in str(err.value)
    assert err.value.actual == md5sum(mirror / corrupt)
    assert not (root / corrupt).exists()


@pytest.mark.parametrize(
    "load, specs",
    [
        (load_fashion_mnist, (FASHION_MNIST_RAW_SPEC, FASHION_MNIST_GZ_SPEC)),
        (load_cifar10, (CIFAR10_FULL_SPEC, CIFAR10_SUBSET_SPEC)),
    ],
)
def test_missing_data_names_every_file_set_and_the_fix(
    load, specs, root: Path, empty_mirror: Path
) -> None:
    with pytest.raises(DataUnavailableError) as err:
        load()
    msg = str(err.value)
    for f in (file for spec in specs for file in spec.files):
        assert f"{f.path}  {f.md5}" in msg
    assert str(root) in msg and f"MLW_DATA_MIRROR={empty_mirror}" in msg
    assert "export MLW_DATA_MIRROR=" in msg and "network disabled" in msg
    assert "None of the 2 alternative file sets is available" in msg


def test_cifar_full_spec_matches_torchvision() -> None:
    from torchvision.datasets import CIFAR10

    (official,) = CIFAR10_FULL_SPEC.files
    assert (official.path, official.md5, official.urls) == (
        CIFAR10.filename,
        CIFAR10.tgz_md5,
        (CIFAR10.url,),
    )
    meta = next(f for f in CIFAR10_SUBSET_SPEC.files if f.path.endswith("batches.meta"))
    assert meta.md5 == CIFAR10.meta["md5"]


# --- dispatcher ---------------------------------------------------------------------------


@needs_fashion
def test_load_dataset_dispatches_by_name(root: Path) -> None:
    ds = load_dataset("fashion_mnist", train_subset=8, test_subset=4)
    assert ds.info.name == "Fashion-MNIST" and ds.x_train.shape == (8, 1, 28, 28)
    mnist = load_dataset("mnist", train_subset=8, test_subset=4)
    assert torch.equal(mnist.x_train, load_mnist(train_subset=8, test_subset=4).x_train)


def test_load_dataset_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'; valid names: cifar10, "):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="fashion_mnist, mnist"):
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
