"""MNIST-style datasets stored as idx files: one reader and one loader for every such dataset."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlw_lib.data.dataset import (
    DatasetInfo,
    InMemoryDataset,
    image_tensor,
    label_tensor,
    subset_size,
)
from mlw_lib.data.sources import DatasetSpec, ensure_first

IMAGE_SHAPE = (28, 28)
# The four files of every MNIST-style dataset, by name without a ".gz" suffix.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-style dataset: its file sets, pixel statistics, sizes and class names.

    `specs` are alternative file sets of the same content (e.g. gzipped or not), tried in order
    (`ensure_first`); each must hold the four idx files named above, gzipped or not.
    """

    name: str
    specs: tuple[DatasetSpec, ...]
    mean: float
    std: float
    classes: tuple[str, ...]
    train_size: int = 60_000
    test_size: int = 10_000


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


def load_idx_dataset(
    kind: IdxDataset,
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    flatten: bool = False,
) -> InMemoryDataset:
    """`kind` on `device`: x float32 (N, 784) if `flatten` else (N, 1, 28, 28), y int64 (N,).

    Pixels are normalized as `(x/255 - kind.mean)/kind.std`. A subset is the first N examples.
    """
    n_train = subset_size("train_subset", train_subset, kind.train_size)
    n_test = subset_size("test_subset", test_subset, kind.test_size)
    device = torch.device(device)
    fetched = ensure_first(kind.specs)
    path = {Path(rel).name.removesuffix(".gz"): p for rel, p in fetched.paths.items()}
    info = DatasetInfo.of_fetch(
        kind.name,
        fetched,
        n_train,
        n_test,
        full_train=kind.train_size,
        full_test=kind.test_size,
    )

    def images(file: Path, n: int) -> torch.Tensor:
        pixels = read_idx(file, n).reshape(n, 1, *IMAGE_SHAPE)
        x = image_tensor(pixels, (kind.mean,), (kind.std,), device)
        return x.reshape(n, -1) if flatten else x

    def labels(file: Path, n: int) -> torch.Tensor:
        return label_tensor(read_idx(file, n), device)

    return InMemoryDataset(
        x_train=images(path[TRAIN_IMAGES], n_train),
        y_train=labels(path[TRAIN_LABELS], n_train),
        x_test=images(path[TEST_IMAGES], n_test),
        y_test=labels(path[TEST_LABELS], n_test),
        info=info,
        classes=kind.classes,
    )
