"""In-memory dataset container and its provenance record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

SOURCES = ("cache", "mirror", "download")


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset came from and how much of it is loaded.

    `source` is how the files reached the data root in *this* call ("cache", "mirror" or
    "download"); `origin` is where they originally came from ("mirror:<abs path>",
    "download:<url>", or "local:<data root>" for files found there without a record).
    `files` maps each file's path relative to the data root to its verified md5.
    `full_train`/`full_test` are the sizes of the file set loaded from (a subset is its first
    examples). `variant` names that file set when a dataset has several (e.g. "full official");
    `partial` marks a file set that holds only part of the official dataset.
    """

    name: str
    source: str
    origin: str
    files: dict[str, str] = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0
    full_train: int = 0
    full_test: int = 0
    variant: str = ""
    partial: bool = False

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    @classmethod
    def of_fetch(cls, name: str, fetched, n_train: int, n_test: int, **sizes) -> DatasetInfo:
        """Info for `n_train`/`n_test` examples loaded from a `sources.FetchResult`; `sizes`
        are the remaining fields (full_train, full_test, variant, partial)."""
        return cls(
            name=name,
            source=fetched.source,
            origin=fetched.origin,
            files=dict(fetched.md5s),
            n_train=n_train,
            n_test=n_test,
            **sizes,
        )

    @property
    def is_subset(self) -> bool:
        """True when fewer than all official train or test examples are loaded."""
        return self.partial or self.n_train < self.full_train or self.n_test < self.full_test

    def describe(self) -> str:
        """One human-readable line, e.g. `MNIST (full: 60000 train / 10000 test) from mirror
        /work/shared/datasets, md5-verified`; with a variant, e.g. `CIFAR-10 subset 5,170/1,017
        from the offline mirror (5170 train / 1017 test) from mirror ..., md5-verified`."""
        if self.n_train < self.full_train or self.n_test < self.full_test:
            size = (
                f"subset: first {self.n_train}/{self.full_train} train"
                f" / {self.n_test}/{self.full_test} test"
            )
        elif self.partial:  # the variant says which part
            size = f"{self.n_train} train / {self.n_test} test"
        else:
            size = f"full: {self.n_train} train / {self.n_test} test"
        label = f"{self.name} {self.variant}" if self.variant else self.name
        where = _origin_words(self.origin)
        if self.source == "cache":
            where = f"cache (originally {where})"
        return f"{label} ({size}) from {where}, md5-verified"

    def as_tags(self) -> dict[str, str]:
        """Flat string dict for MLflow tags (`data_variant` only when the dataset has one)."""
        tags = {
            "data_name": self.name,
            "data_source": self.source,
            "data_origin": self.origin,
            "data_subset": str(self.is_subset).lower(),
            "n_train": str(self.n_train),
            "n_test": str(self.n_test),
        }
        if self.variant:
            tags["data_variant"] = self.variant
        return tags


def subset_size(name: str, value: int | None, full: int) -> int:
    """`value` checked as a subset size of a dataset with `full` examples; None means `full`."""
    if value is None:
        return full
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if not 0 < value <= full:
        raise ValueError(f"{name} must satisfy 0 < {name} <= {full} (or be None), got {value}")
    return int(value)


def _origin_words(origin: str) -> str:
    """'mirror:/x' -> 'mirror /x' (the first ':' only, so URLs stay intact)."""
    kind, sep, rest = origin.partition(":")
    return f"{kind} {rest}" if sep else origin


@dataclass
class InMemoryDataset:
    """A whole dataset held as tensors on one device.

    Shapes: `x_train` (N_train, ...) float32, `y_train` (N_train,) int64, `x_test`
    (N_test, ...) float32, `y_test` (N_test,) int64. `classes[k]` names label k.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo
    classes: tuple[str, ...] = ()

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> InMemoryDataset:
        """A new dataset with every tensor on `device` (tensors already there are shared)."""
        device = torch.device(device)
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


def image_tensor(
    pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float32 (N, C, H, W) on `device`, normalized per channel
    as (x/255 - mean[c]) / std[c]."""
    raw = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    shape = (1, len(mean), 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return raw.to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)


def label_tensor(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    """Class indices (N,) -> int64 (N,) on `device`."""
    return torch.from_numpy(labels.astype(np.int64)).to(device)
