"""Datasets as in-memory tensors, from md5-verified files (cache, mirror or download)."""

from mlw_lib.data.dataset import DatasetInfo, InMemoryDataset
from mlw_lib.data.mnist import MNIST_SPEC, load_mnist, read_idx
from mlw_lib.data.sources import (
    MIRROR_ENV,
    ChecksumError,
    DataFile,
    DatasetSpec,
    DataUnavailableError,
    FetchResult,
    ensure_files,
    md5sum,
    mirror_dir,
)

__all__ = [
    "MIRROR_ENV",
    "MNIST_SPEC",
    "ChecksumError",
    "DataFile",
    "DataUnavailableError",
    "DatasetInfo",
    "DatasetSpec",
    "FetchResult",
    "InMemoryDataset",
    "ensure_files",
    "load_mnist",
    "md5sum",
    "mirror_dir",
    "read_idx",
]
