"""MNIST as normalized in-memory tensors, from md5-verified official idx files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from mlw_lib.data.dataset import DatasetInfo, InMemoryDataset
from mlw_lib.data.sources import DataFile, DatasetSpec, ensure_files

# The official files, their md5s and download locations (as listed by torchvision.datasets.MNIST).
_MNIST_BASE_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_SPEC = DatasetSpec(
    name="MNIST",
    files=tuple(
        DataFile(f"MNIST/raw/{name}", md5, tuple(base + name for base in _MNIST_BASE_URLS))
        for name, md5 in _MNIST_FILES.items()
    ),
)

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
_IMAGE_SHAPE = (28, 28)


def read_idx(path: Path, count: int | None = None) -> np.ndarray:
    """Read an idx file of uint8 (gzipped if the name ends in .gz) into a writable array.

    Returns shape (N, *dims) as in the header, or only the first `count` items.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
            raise ValueError(f"{path}: not a uint8 idx file (magic {magic.hex()})")
        ndim = magic[3]
        dims = [int(d) for d in np.frombuffer(f.read(4 * ndim), dtype=">u4")]
        if len(dims) != ndim or ndim == 0:
            raise ValueError(f"{path}: truncated idx header")
        if count is not None:
            dims[0] = min(count, dims[0])
        out = np.empty(dims, dtype=np.uint8)
        view = memoryview(out).cast("B")
        filled = 0
        while filled < len(view):
            n = f.readinto(view[filled:])
            if not n:
                raise ValueError(f"{path}: truncated idx data ({filled} of {len(view)} bytes)")
            filled += n
    return out


def _subset_size(name: str, value: int | None, full: int) -> int:
    if value is None:
        return full
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if not 0 < value <= full:
        raise ValueError(f"{name} must satisfy 0 < {name} <= {full} (or be None), got {value}")
    return int(value)


def _images(path: Path, n: int, device: torch.device, flatten: bool) -> torch.Tensor:
    """(n, 784) or (n, 1, 28, 28) float32 normalized as (x/255 - mean)/std."""
    raw = torch.from_numpy(read_idx(path, n)).to(device)
    x = raw.to(torch.float32).div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)
    return x.reshape(n, -1) if flatten else x.reshape(n, 1, *_IMAGE_SHAPE)


def _labels(path: Path, n: int, device: torch.device) -> torch.Tensor:
    """(n,) int64."""
    return torch.from_numpy(read_idx(path, n).astype(np.int64)).to(device)


def load_mnist(
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    flatten: bool = True,
) -> InMemoryDataset:
    """MNIST on `device`: x float32 (N, 784) if `flatten` else (N, 1, 28, 28), y int64 (N,).

    Pixels are normalized as `(x/255 - 0.1307)/0.3081`. A subset is the first N examples.
    Files come from the data root, `$MLW_DATA_MIRROR`, or the official URLs (md5-verified).
    """
    n_train = _subset_size("train_subset", train_subset, MNIST_TRAIN_SIZE)
    n_test = _subset_size("test_subset", test_subset, MNIST_TEST_SIZE)
    device = torch.device(device)
    fetched = ensure_files(MNIST_SPEC)
    p = {Path(rel).name: path for rel, path in fetched.paths.items()}
    info = DatasetInfo(
        name=MNIST_SPEC.name,
        source=fetched.source,
        origin=fetched.origin,
        files=dict(fetched.md5s),
        n_train=n_train,
        n_test=n_test,
        full_train=MNIST_TRAIN_SIZE,
        full_test=MNIST_TEST_SIZE,
    )
    return InMemoryDataset(
        x_train=_images(p["train-images-idx3-ubyte.gz"], n_train, device, flatten),
        y_train=_labels(p["train-labels-idx1-ubyte.gz"], n_train, device),
        x_test=_images(p["t10k-images-idx3-ubyte.gz"], n_test, device, flatten),
        y_test=_labels(p["t10k-labels-idx1-ubyte.gz"], n_test, device),
        info=info,
    )
