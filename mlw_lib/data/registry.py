"""One entry point for every dataset by name: `load_dataset("cifar10", train_subset=1000)`."""

from __future__ import annotations

from collections.abc import Callable

from mlw_lib.data.cifar10 import load_cifar10
from mlw_lib.data.dataset import InMemoryDataset
from mlw_lib.data.fashion_mnist import load_fashion_mnist
from mlw_lib.data.mnist import load_mnist

LOADERS: dict[str, Callable[..., InMemoryDataset]] = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load_dataset(name: str, **kwargs: object) -> InMemoryDataset:
    """The loader registered under `name` called with `kwargs` (see `LOADERS` for the names)."""
    try:
        loader = LOADERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(sorted(LOADERS))}"
        ) from None
    return loader(**kwargs)
