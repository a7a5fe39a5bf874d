"""MNIST as normalized in-memory tensors, from md5-verified official idx files."""

from __future__ import annotations

import torch

from mlw_lib.data.dataset import InMemoryDataset
from mlw_lib.data.idx import IdxDataset, load_idx_dataset, read_idx
from mlw_lib.data.sources import DataFile, DatasetSpec

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
MNIST = IdxDataset(
    name="MNIST",
    specs=(MNIST_SPEC,),
    mean=MNIST_MEAN,
    std=MNIST_STD,
    classes=tuple(str(digit) for digit in range(10)),
    train_size=MNIST_TRAIN_SIZE,
    test_size=MNIST_TEST_SIZE,
)

__all__ = ["MNIST", "MNIST_SPEC", "load_mnist", "read_idx"]


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
    return load_idx_dataset(MNIST, train_subset, test_subset, device, flatten)
