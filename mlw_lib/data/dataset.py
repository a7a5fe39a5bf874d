"""In-memory dataset container and the record of which data it holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..checks import integer

SOURCES = ("cache", "mirror", "download")


@dataclass(frozen=True)
class DatasetInfo:
    """Which data a dataset holds and where they came from.

    `source`: how the files reached the data root in *this* load ("cache", "mirror" or
    "download"); `origin`: where they first came from ("mirror:<path>", "download:<url>", or
    "local:<data root>" for files found there without a record); `files`: {path relative to
    the data root: verified md5}. `full_train`/`full_test`: sizes of the file set loaded (a
    subset is its first examples); `variant` names that file set when there are several, and
    `partial` marks one that holds only part of the official dataset. `settings`: how the
    files were turned into tensors where that is a choice (e.g. a tokenizer), {name: value}.
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
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    @property
    def is_subset(self) -> bool:
        """True when fewer than all official train or test examples are loaded."""
        return self.partial or (self.n_train, self.n_test) != (self.full_train, self.full_test)

    def describe(self) -> str:
        """One line, e.g. `MNIST (full: 60000 train / 10000 test) from mirror /x, md5-verified`
        or `CIFAR-10 subset 5,170/1,017 from the offline mirror (5170 train / 1017 test) from
        cache (originally mirror /x), md5-verified`."""
        n, full = (self.n_train, self.n_test), (self.full_train, self.full_test)
        if n != full:
            size = f"subset: first {n[0]}/{full[0]} train / {n[1]}/{full[1]} test"
        else:  # of a partial file set, the variant says which part
            size = f"{'' if self.partial else 'full: '}{n[0]} train / {n[1]} test"
        where = self.origin.replace(":", " ", 1)  # the first ':' only: URLs stay intact
        where = f"cache (originally {where})" if self.source == "cache" else where
        label = f"{self.name} {self.variant}".strip()
        settings = "".join(f"; {name}: {value}" for name, value in self.settings.items())
        return f"{label} ({size}) from {where}, md5-verified{settings}"

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
        tags |= {f"data_{name}": value for name, value in self.settings.items()}
        return tags | ({"data_variant": self.variant} if self.variant else {})


@dataclass
class InMemoryDataset:
    """A whole dataset held as tensors on one device: `x_train` (N_train, ...) float32 images
    or int64 token ids (N_train, max_len), `y_train` (N_train,) int64, `x_test` and `y_test`
    likewise; `classes[k]` names label k; `tokenizer` (text only) turns ids back into tokens;
    `x_val`, `y_val`: a validation split held out of the training data (`hold_out`), or None."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo
    classes: tuple[str, ...] = ()
    tokenizer: Any = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def to(self, device: str | torch.device) -> InMemoryDataset:
        """A new dataset with every tensor on `device` (tensors already there are shared)."""
        names = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")
        moved = {k: getattr(self, k).to(device) for k in names if getattr(self, k) is not None}
        return replace(self, **moved)

    def hold_out(self, n: int) -> InMemoryDataset:
        """A new dataset whose last `n` training examples (of the fixed order) are the
        validation split `x_val`, `y_val` and no longer training data; `info` says so."""
        if self.x_val is not None:
            raise ValueError("this dataset already holds a validation split")
        integer("validation size", n, 1)
        if n >= len(self.x_train):
            raise ValueError(
                f"validation size {n} leaves no training data: {len(self.x_train)} are loaded"
            )
        keep = len(self.x_train) - n
        held = f"training examples {keep}-{keep + n - 1} of the loaded order held out ({n})"
        info = replace(
            self.info, n_train=keep, settings={**self.info.settings, "validation": held}
        )
        x, y = self.x_train, self.y_train
        return replace(
            self, x_train=x[:keep], y_train=y[:keep], x_val=x[keep:], y_val=y[keep:], info=info
        )


def subset_sizes(train: int | None, test: int | None, full: tuple[int, int]) -> tuple[int, int]:
    """(train, test) subset sizes checked against the `full` (train, test) sizes; None: all."""
    sizes = []
    for name, value, n in (("train_subset", train, full[0]), ("test_subset", test, full[1])):
        if value is None:
            value = n
        elif isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
        elif not 0 < value <= n:
            raise ValueError(f"{name} must satisfy 0 < {name} <= {n} (or be None), got {value}")
        sizes.append(int(value))
    return sizes[0], sizes[1]


def image_tensor(
    pixels: torch.Tensor | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float32 (N, C, H, W) on `device`, normalized per channel
    as (x/255 - mean[c]) / std[c]."""
    x = torch.as_tensor(pixels).contiguous().to(device).to(torch.float32)
    view = dict(dtype=torch.float32, device=x.device)
    mean_t, std_t = (torch.tensor(v, **view).view(1, -1, 1, 1) for v in (mean, std))
    return x.div_(255.0).sub_(mean_t).div_(std_t)
