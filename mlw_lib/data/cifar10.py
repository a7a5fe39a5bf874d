"""CIFAR-10 as per-channel normalized in-memory tensors, from md5-verified files.

Two file sets, tried in this order (`variant="auto"`):

1. "full official": `cifar-10-python.tar.gz` (50,000 train / 10,000 test; as torchvision lists
   it) from the data root, `$MLW_DATA_MIRROR`, or the official URL;
2. "subset": `cifar10-subset/cifar10_official_prefix_subset.npz` + `batches.meta` from the
   shared offline mirror: 5,170 train / 1,017 test images cut from truncated copies of the
   official batches (the first 1,102 images of data_batch_1 and the first 1,017 of the other
   batches and of test_batch, in that order; see shared/datasets/README.md).

`info.variant` and `info.describe()` say which one was loaded.
"""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch

from mlw_lib.data.dataset import (
    DatasetInfo,
    InMemoryDataset,
    image_tensor,
    label_tensor,
    subset_size,
)
from mlw_lib.data.sources import DataFile, DatasetSpec, FetchResult, ensure_first

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel (R, G, B) of the 50,000 training images
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SHAPE = (3, 32, 32)

CIFAR10_FULL_SPEC = DatasetSpec(
    name="CIFAR-10 (official cifar-10-python.tar.gz)",
    files=(
        DataFile(
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        ),
    ),
)
CIFAR10_SUBSET_SPEC = DatasetSpec(
    name="CIFAR-10 (offline-mirror subset)",
    files=(
        DataFile(
            "cifar10-subset/cifar10_official_prefix_subset.npz", "9c3fdbcda5c0a8a9edc3953050a0efcd"
        ),
        DataFile("cifar10-subset/batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    ),
)

_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_META = "batches.meta"

Variant = Literal["auto", "full", "subset"]


@dataclass(frozen=True)
class _Arrays:
    """uint8 images (N, 3072) in CIFAR's row layout (1024 R, 1024 G, 1024 B), labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def _label_names(meta: dict[bytes, Any]) -> tuple[str, ...]:
    return tuple(name.decode() for name in meta[b"label_names"])


def _read_official(fetched: FetchResult) -> _Arrays:
    """All batches of the md5-verified official tarball (unpickled only after the md5 check)."""
    (path,) = fetched.paths.values()
    batches: dict[str, dict[bytes, Any]] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = PurePosixPath(member.name).name
            if member.isfile() and name in (*_TRAIN_BATCHES, _TEST_BATCH, _META):
                with tar.extractfile(member) as f:  # type: ignore[union-attr]
                    batches[name] = pickle.load(f, encoding="bytes")
    missing = [n for n in (*_TRAIN_BATCHES, _TEST_BATCH, _META) if n not in batches]
    if missing:
        raise ValueError(f"{path}: members {missing} not found in the archive")
    train = [batches[n] for n in _TRAIN_BATCHES]
    return _Arrays(
        x_train=np.concatenate([b[b"data"] for b in train]),
        y_train=np.concatenate([np.asarray(b[b"labels"]) for b in train]),
        x_test=np.asarray(batches[_TEST_BATCH][b"data"]),
        y_test=np.asarray(batches[_TEST_BATCH][b"labels"]),
        classes=_label_names(batches[_META]),
    )


def _read_subset(fetched: FetchResult) -> _Arrays:
    """The mirror's npz subset and the official `batches.meta` (both md5-verified)."""
    paths = {Path(rel).name: p for rel, p in fetched.paths.items()}
    with open(paths[_META], "rb") as f:
        classes = _label_names(pickle.load(f, encoding="bytes"))
    with np.load(paths["cifar10_official_prefix_subset.npz"]) as npz:
        return _Arrays(
            x_train=npz["x_train"],
            y_train=npz["y_train"],
            x_test=npz["x_test"],
            y_test=npz["y_test"],
            classes=classes,
        )


@dataclass(frozen=True)
class Cifar10FileSet:
    """One variant of CIFAR-10: its files, sizes, whether it is only part of the official
    data, and its reader."""

    spec: DatasetSpec
    variant: str
    train_size: int
    test_size: int
    partial: bool
    read: Callable[[FetchResult], _Arrays]


CIFAR10_FULL = Cifar10FileSet(
    CIFAR10_FULL_SPEC, "full official", 50_000, 10_000, False, _read_official
)
CIFAR10_SUBSET = Cifar10FileSet(
    CIFAR10_SUBSET_SPEC,
    "subset 5,170/1,017 from the offline mirror",
    5_170,
    1_017,
    True,
    _read_subset,
)
VARIANTS = ("auto", "full", "subset")


def _file_sets(variant: str) -> tuple[Cifar10FileSet, ...]:
    """The variants to try, best first."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    return {
        "auto": (CIFAR10_FULL, CIFAR10_SUBSET),
        "full": (CIFAR10_FULL,),
        "subset": (CIFAR10_SUBSET,),
    }[variant]


def _images(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3072) -> float32 (N, 3, 32, 32) on `device`, normalized per channel."""
    return image_tensor(x.reshape(-1, *IMAGE_SHAPE), CIFAR10_MEAN, CIFAR10_STD, device)


def load_cifar10(
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    variant: Variant = "auto",
) -> InMemoryDataset:
    """CIFAR-10 on `device`: x float32 (N, 3, 32, 32), y int64 (N,).

    Pixels are normalized per channel as `(x/255 - CIFAR10_MEAN[c])/CIFAR10_STD[c]`.
    `variant`: "auto" loads the full official data when it can be had (data root, mirror or
    download), else the offline mirror's subset; "full" or "subset" insist on one. A subset
    size is the first N examples of the variant loaded; asking for more than it holds is an
    error. `info.variant` says which variant was loaded.
    """
    choices = _file_sets(variant)
    largest = max(choices, key=lambda c: c.train_size)
    subset_size("train_subset", train_subset, largest.train_size)  # type checks before fetching
    subset_size("test_subset", test_subset, largest.test_size)
    device = torch.device(device)

    fetched = ensure_first([c.spec for c in choices])
    chosen = next(c for c in choices if c.spec == fetched.spec)
    try:
        n_train = subset_size("train_subset", train_subset, chosen.train_size)
        n_test = subset_size("test_subset", test_subset, chosen.test_size)
    except ValueError as exc:
        raise ValueError(
            f"{exc}: the CIFAR-10 {chosen.variant} was loaded, with"
            f" {chosen.train_size} train / {chosen.test_size} test images"
        ) from exc

    arrays = chosen.read(fetched)
    info = DatasetInfo.of_fetch(
        "CIFAR-10",
        fetched,
        n_train,
        n_test,
        full_train=chosen.train_size,
        full_test=chosen.test_size,
        variant=chosen.variant,
        partial=chosen.partial,
    )
    return InMemoryDataset(
        x_train=_images(arrays.x_train[:n_train], device),
        y_train=label_tensor(arrays.y_train[:n_train], device),
        x_test=_images(arrays.x_test[:n_test], device),
        y_test=label_tensor(arrays.y_test[:n_test], device),
        info=info,
        classes=arrays.classes,
    )
