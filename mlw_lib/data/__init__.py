"""Datasets as in-memory tensors, from md5-verified files (cache, mirror or download)."""

from mlw_lib.data.augment import Augment, random_crop_flip
from mlw_lib.data.cifar10 import (
    CIFAR10_FULL_SPEC,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10_SUBSET_SPEC,
    load_cifar10,
)
from mlw_lib.data.dataset import DatasetInfo, InMemoryDataset
from mlw_lib.data.fashion_mnist import (
    FASHION_MNIST_GZ_SPEC,
    FASHION_MNIST_RAW_SPEC,
    load_fashion_mnist,
)
from mlw_lib.data.idx import read_idx
from mlw_lib.data.mnist import MNIST_SPEC, load_mnist
from mlw_lib.data.registry import LOADERS, load_dataset
from mlw_lib.data.sources import (
    MIRROR_ENV,
    ChecksumError,
    DataFile,
    DatasetSpec,
    DataUnavailableError,
    FetchResult,
    ensure_files,
    ensure_first,
    md5sum,
    mirror_dir,
)

__all__ = [
    "CIFAR10_FULL_SPEC",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_SUBSET_SPEC",
    "FASHION_MNIST_GZ_SPEC",
    "FASHION_MNIST_RAW_SPEC",
    "LOADERS",
    "MIRROR_ENV",
    "MNIST_SPEC",
    "Augment",
    "ChecksumError",
    "DataFile",
    "DataUnavailableError",
    "DatasetInfo",
    "DatasetSpec",
    "FetchResult",
    "InMemoryDataset",
    "ensure_files",
    "ensure_first",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "md5sum",
    "mirror_dir",
    "random_crop_flip",
    "read_idx",
]
