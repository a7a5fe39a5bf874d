"""Two-class toy problems in the plane (Haber & Ruthotto 2017), generated in memory from a
seed: x (N, 2) float32, y (N,) int64; every split drawn independently, classes balanced.

  ellipses    class 0 fills the ellipse with semi-axes (1, 0.5); class 1 the ring between it
              and the ellipse (2, 1) (uniform in area); 500 train / 100 validation / 100 test
              per class.
  swiss_roll  two turns of a spiral, class 0 at radius r(t) = 0.1 + 0.4 t / 2pi, class 1 at
              r(t) + 0.2, t uniform in [0, 4pi]; 250 per class in each split.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..checks import integer
from .dataset import DatasetInfo, InMemoryDataset

CLASSES = {"ellipses": ("inside", "ring"), "swiss_roll": ("arm 0", "arm 1")}


def _ellipse_class(rng: np.random.Generator, label: int, n: int) -> np.ndarray:
    """n points of class `label`: scaled radius r in [0, 1) (inside) or [1, 2] (ring)."""
    low, high = (0.0, 1.0) if label == 0 else (1.0, 4.0)  # r^2 uniform: uniform in area
    r = np.sqrt(rng.uniform(low, high, n))
    t = rng.uniform(0.0, 2 * math.pi, n)
    return np.stack([r * np.cos(t), 0.5 * r * np.sin(t)], axis=1)


def _swiss_class(rng: np.random.Generator, label: int, n: int) -> np.ndarray:
    """n points on arm `label` of the two-turn spiral."""
    t = rng.uniform(0.0, 4 * math.pi, n)
    r = 0.1 + 0.4 * t / (2 * math.pi) + 0.2 * label
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


SAMPLERS = {"ellipses": _ellipse_class, "swiss_roll": _swiss_class}


def load_toy(
    name: str,
    seed: int = 0,
    n_train: int = 0,
    n_val: int = 0,
    n_test: int = 0,
    device: str | torch.device = "cpu",
) -> InMemoryDataset:
    """The toy problem `name` ("ellipses" or "swiss_roll") with `n_train`, `n_val`, `n_test`
    points per class (0: the problem's default size) drawn from `seed`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown toy problem {name!r}; choose one of {list(SAMPLERS)}")
    integer("seed", seed, 0)
    defaults = {"ellipses": (500, 100, 100), "swiss_roll": (250, 250, 250)}[name]
    sizes = []
    for what, value, default in zip(("n_train", "n_val", "n_test"), (n_train, n_val, n_test),
                                    defaults, strict=True):
        integer(what, value, 0)
        sizes.append(value or default)
    rng = np.random.default_rng(seed)
    splits = []
    for n in sizes:
        x = np.concatenate([SAMPLERS[name](rng, label, n) for label in (0, 1)])
        y = np.repeat([0, 1], n)
        order = rng.permutation(2 * n)
        splits.append((torch.tensor(x[order], dtype=torch.float32, device=device),
                       torch.tensor(y[order], dtype=torch.int64, device=device)))
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    n_tr, n_te = len(x_train), len(x_test)
    info = DatasetInfo(
        name,
        "generated",
        f"generated:{__name__} (seed {seed})",
        n_train=n_tr,
        n_test=n_te,
        full_train=n_tr,
        full_test=n_te,
        settings={"validation": f"{len(x_val)} points drawn separately"},
        checksum="",
    )
    return InMemoryDataset(x_train, y_train, x_test, y_test, info, CLASSES[name],
                           x_val=x_val, y_val=y_val)


def load_ellipses(**kwargs: object) -> InMemoryDataset:
    """`load_toy("ellipses", **kwargs)`."""
    return load_toy("ellipses", **kwargs)


def load_swiss_roll(**kwargs: object) -> InMemoryDataset:
    """`load_toy("swiss_roll", **kwargs)`."""
    return load_toy("swiss_roll", **kwargs)
