"""Datasets as in-memory tensors, loaded from md5-verified files in the data root (copied from
`$MLW_DATA_MIRROR` or downloaded): images through torchvision, IMDB reviews as token ids, and
generated PDE regression data (Darcy, Poisson; cached with a sha256 manifest), and the
generated toy problems ellipses and swiss roll (in memory).
`load_dataset(name, **kwargs)` dispatches by name; every dataset's `info.describe()` says
which data were loaded. The image modules (`mnist`, `cifar10`) import torchvision, which takes
a second or more: they are imported on first use, so toy, PDE and text data do without."""

import importlib
from collections.abc import Callable

from mlw_lib.data import imdb
from mlw_lib.data.augment import Augment, random_crop_flip
from mlw_lib.data.dataset import DatasetInfo, InMemoryDataset
from mlw_lib.data.files import MIRROR_ENV, ChecksumError, DataUnavailableError, mirror_dir
from mlw_lib.data.imdb import load_imdb
from mlw_lib.data.pde import load_darcy, load_pde, load_poisson
from mlw_lib.data.toy import load_ellipses, load_swiss_roll, load_toy

IMAGE_NAMES = {  # name here: its module, imported on first access
    "load_mnist": "mnist",
    "load_fashion_mnist": "mnist",
    "load_cifar10": "cifar10",
    "CIFAR10_MEAN": "cifar10",
    "CIFAR10_STD": "cifar10",
}


def __getattr__(name: str) -> object:
    """`load_mnist`, `load_cifar10`, ...: from their module, imported now (PEP 562)."""
    if name not in IMAGE_NAMES:
        raise AttributeError(f"module 'mlw_lib.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mlw_lib.data.{IMAGE_NAMES[name]}"), name)


def _image_loader(name: str) -> Callable[..., InMemoryDataset]:
    """A loader that imports its image module when called."""

    def load(**kwargs: object) -> InMemoryDataset:
        return __getattr__(name)(**kwargs)

    load.__name__ = load.__qualname__ = name
    return load


IMAGES = ("mnist", "fashion_mnist", "cifar10")
LOADERS: dict[str, Callable[..., InMemoryDataset]] = {
    "mnist": _image_loader("load_mnist"),
    "fashion_mnist": _image_loader("load_fashion_mnist"),
    "cifar10": _image_loader("load_cifar10"),
    "imdb": load_imdb,
    "darcy": load_darcy,
    "poisson": load_poisson,
    "ellipses": load_ellipses,
    "swiss_roll": load_swiss_roll,
}


def load_dataset(name: str, **kwargs: object) -> InMemoryDataset:
    """The loader registered under `name` called with `kwargs` (see `LOADERS` for the names)."""
    if not isinstance(name, str) or name not in LOADERS:
        valid = ", ".join(sorted(LOADERS))
        raise ValueError(f"unknown dataset {name!r}; valid names: {valid}")
    return LOADERS[name](**kwargs)


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGES",
    "LOADERS",
    "MIRROR_ENV",
    "Augment",
    "ChecksumError",
    "DataUnavailableError",
    "DatasetInfo",
    "InMemoryDataset",
    "load_cifar10",
    "load_darcy",
    "load_ellipses",
    "load_dataset",
    "load_fashion_mnist",
    "imdb",
    "load_imdb",
    "load_mnist",
    "load_pde",
    "load_poisson",
    "load_swiss_roll",
    "load_toy",
    "mirror_dir",
    "random_crop_flip",
]
