"""CIFAR-10 as per-channel normalized in-memory tensors, in one of two variants.

- "full official" (50,000/10,000): `torchvision.datasets.CIFAR10` reads `cifar-10-batches-py/`
  in the data root (md5-checked), extracted from `cifar-10-python.tar.gz` found in the data
  root or the mirror, or downloaded by torchvision.
- "subset" (5,170/1,017): the mirror's `cifar10-subset/` (an npz cut from the official batches,
  and the official `batches.meta`; see shared/datasets/README.md), md5-checked, read with numpy.

`variant="auto"` takes the full data if the data root or the mirror has it, else the subset if
they have that, else downloads the full data (so it never downloads when the mirror has the
subset). `info.variant` and `info.describe()` say which was loaded.
"""

from __future__ import annotations

import pickle
from typing import Literal

import numpy as np
import torch
from torchvision.datasets import CIFAR10

from mlw_lib.data.dataset import InMemoryDataset, image_tensor, subset_sizes
from mlw_lib.data.files import DataUnavailableError, Files

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel (R, G, B) of the 50,000 training images
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FULL, SUBSET = "full official", "subset 5,170/1,017 from the offline mirror"
SIZES = {FULL: (50_000, 10_000), SUBSET: (5_170, 1_017)}
SUBSET_FILES = {  # {path relative to the data root and the mirror: md5}
    "cifar10-subset/cifar10_official_prefix_subset.npz": "9c3fdbcda5c0a8a9edc3953050a0efcd",
    "cifar10-subset/batches.meta": CIFAR10.meta["md5"],
}
VARIANTS = {"auto": (FULL, SUBSET), "full": (FULL,), "subset": (SUBSET,)}  # tried in order


def _batches() -> dict[str, str]:
    """{path relative to the data root: md5} of the files torchvision's CIFAR10 reads."""
    names = [
        *CIFAR10.train_list,
        *CIFAR10.test_list,
        [CIFAR10.meta["filename"], CIFAR10.meta["md5"]],
    ]
    return {f"{CIFAR10.base_folder}/{name}": md5 for name, md5 in names}


def _fetch_full(files: Files, download: bool, what: str = "") -> bool:
    """The full batches verified in the data root, extracted from the tarball in the data root
    or the mirror, else downloaded if `download` (`what` names the files for an error)."""
    batches, tarball = _batches(), {CIFAR10.filename: CIFAR10.tgz_md5}
    what = what or f"CIFAR-10 {FULL}: {CIFAR10.filename}  {CIFAR10.tgz_md5}"
    if files.find_all(batches):
        return True
    found = files.find(CIFAR10.filename, CIFAR10.tgz_md5)
    if found is None and not download:
        return False
    found = found or ("download", f"download:{CIFAR10.url}")
    files.download(lambda: CIFAR10(str(files.root), download=True), tarball, what, found[1])
    for rel, md5 in batches.items():
        files.check(rel, md5)
        files.add(rel, md5, found)
    return True


def _fetch(files: Files, variant: str) -> str:
    """The variant made available in the data root (see the module docstring)."""
    if variant != "subset" and _fetch_full(files, download=False):
        return FULL
    if variant != "full" and files.find_all(SUBSET_FILES):
        return SUBSET
    wanted = {FULL: {CIFAR10.filename: CIFAR10.tgz_md5}, SUBSET: SUBSET_FILES}
    what = "CIFAR-10: none of these file sets is available:" + "".join(
        f"\n  {name}:" + "".join(f"\n    {rel}  {md5}" for rel, md5 in wanted[name].items())
        for name in VARIANTS[variant]
    )
    if variant == "subset":
        raise DataUnavailableError(files.unavailable(what, "none (only a mirror has the subset)"))
    _fetch_full(files, download=True, what=what)
    return FULL


def _read(root: str, variant: str) -> tuple[np.ndarray, ...]:
    """uint8 images (N, 3, 32, 32) and labels (N,) of train and test, and the class names."""
    if variant == FULL:
        train, test = CIFAR10(root, train=True), CIFAR10(root, train=False)
        x_train, x_test = (d.data.transpose(0, 3, 1, 2) for d in (train, test))  # from NHWC
        return x_train, np.array(train.targets), x_test, np.array(test.targets), train.classes
    with open(f"{root}/cifar10-subset/batches.meta", "rb") as f:
        classes = pickle.load(f, encoding="latin1")[CIFAR10.meta["key"]]
    with np.load(f"{root}/cifar10-subset/cifar10_official_prefix_subset.npz") as npz:
        x_train, x_test = (npz[k].reshape(-1, 3, 32, 32) for k in ("x_train", "x_test"))
        return x_train, npz["y_train"], x_test, npz["y_test"], classes


def load_cifar10(
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    variant: Literal["auto", "full", "subset"] = "auto",
) -> InMemoryDataset:
    """CIFAR-10 on `device`: x float32 (N, 3, 32, 32), y int64 (N,); pixels normalized per
    channel as `(x/255 - CIFAR10_MEAN[c])/CIFAR10_STD[c]`. `variant`: "auto", "full" or
    "subset" (see the module docstring). A subset is the first N examples of the variant
    loaded; asking for more than it holds is an error."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    subset_sizes(train_subset, test_subset, SIZES[FULL])  # checks before fetching
    files = Files()
    chosen = _fetch(files, variant)
    sizes = SIZES[chosen]
    try:
        n = subset_sizes(train_subset, test_subset, sizes)
    except ValueError as exc:
        loaded = f"the CIFAR-10 {chosen} was loaded, with {sizes[0]} train / {sizes[1]} test"
        raise ValueError(f"{exc}: {loaded} images") from exc
    x_train, y_train, x_test, y_test, classes = _read(str(files.root), chosen)
    norm = CIFAR10_MEAN, CIFAR10_STD, torch.device(device)
    return InMemoryDataset(
        x_train=image_tensor(x_train[: n[0]], *norm),
        y_train=torch.as_tensor(y_train[: n[0]], dtype=torch.int64, device=device),
        x_test=image_tensor(x_test[: n[1]], *norm),
        y_test=torch.as_tensor(y_test[: n[1]], dtype=torch.int64, device=device),
        info=files.info("CIFAR-10", n, sizes, variant=chosen, partial=chosen == SUBSET),
        classes=tuple(classes),
    )
