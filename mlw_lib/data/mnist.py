"""MNIST and Fashion-MNIST through `torchvision.datasets`, as normalized in-memory tensors.

Read: the four idx files in `<data root>/<MNIST|FashionMNIST>/raw/`, each checked against the
md5 of its official uncompressed content. They come from the data root, else the mirror
(uncompressed, or torchvision's `.gz`: md5-checked, then extracted), else torchvision's
download (which checks the `.gz` md5s).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.datasets import MNIST, FashionMNIST
from torchvision.datasets.utils import extract_archive

from mlw_lib.data.dataset import InMemoryDataset, image_tensor, subset_sizes
from mlw_lib.data.files import Files

# md5s of the official uncompressed idx files (of the gunzipped official MNIST archives; for
# Fashion-MNIST see shared/datasets/README.md)
RAW_MD5 = {
    "MNIST/raw/train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "MNIST/raw/train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "MNIST/raw/t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "MNIST/raw/t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    "FashionMNIST/raw/train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "FashionMNIST/raw/train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "FashionMNIST/raw/t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "FashionMNIST/raw/t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


@dataclass(frozen=True)
class IdxDataset:
    """A torchvision MNIST-style dataset, the pixel mean/std of its training images (in
    [0, 1]), its class names and its (train, test) sizes."""

    tv: type[MNIST]
    name: str
    mean: float
    std: float
    classes: tuple[str, ...]
    sizes: tuple[int, int] = (60_000, 10_000)

    def files(self) -> dict[str, tuple[str, str]]:
        """{path relative to the data root: (md5, md5 of its official .gz)} of the idx files."""
        folder = f"{self.tv.__name__}/raw"
        raw = {f"{folder}/{gz.removesuffix('.gz')}": gz_md5 for gz, gz_md5 in self.tv.resources}
        return {rel: (RAW_MD5[rel], gz_md5) for rel, gz_md5 in raw.items()}


MNIST_DATA = IdxDataset(MNIST, "MNIST", 0.1307, 0.3081, tuple("0123456789"))
FASHION_MNIST_DATA = IdxDataset(
    FashionMNIST, "Fashion-MNIST", 0.2860, 0.3530, (*FashionMNIST.classes,)
)


def fetch_idx(kind: IdxDataset) -> Files:
    """The four idx files of `kind`, made present and verified in the data root."""
    files, missing = Files(), {}
    for rel, (md5, gz_md5) in kind.files().items():
        found = files.find(rel, md5)
        if found is None and (found := files.find(f"{rel}.gz", gz_md5)):
            with files.writing():
                extract_archive(str(files.root / f"{rel}.gz"))
            files.check(rel, md5)
        if found:
            files.add(rel, md5, found)
        else:
            missing[rel] = md5, gz_md5
    if missing:
        wanted = "".join(f"\n    {r}  {m}  or  {r}.gz  {g}" for r, (m, g) in missing.items())
        archives = {f"{rel}.gz": gz_md5 for rel, (_, gz_md5) in kind.files().items()}
        what = f"{kind.name}: {len(missing)} of 4 files are not available:{wanted}"
        origin = "download:" + " or ".join(kind.tv.mirrors)
        files.download(lambda: kind.tv(str(files.root), download=True), archives, what, origin)
        for rel, (md5, _) in missing.items():
            files.check(rel, md5)
            files.add(rel, md5, ("download", origin))
    return files


def load_idx(
    kind: IdxDataset,
    train_subset: int | None,
    test_subset: int | None,
    device: str | torch.device,
    flatten: bool,
) -> InMemoryDataset:
    """`kind` on `device`: x float32 (N, 784) if `flatten` else (N, 1, 28, 28), y int64 (N,);
    pixels normalized as `(x/255 - kind.mean)/kind.std`; a subset is the first N examples."""
    n = subset_sizes(train_subset, test_subset, kind.sizes)
    files = fetch_idx(kind)

    def split(train: bool, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = kind.tv(str(files.root), train=train)
        x = image_tensor(data.data[:n, None], (kind.mean,), (kind.std,), torch.device(device))
        return x.reshape(n, -1) if flatten else x, data.targets[:n].to(device)

    (x_train, y_train), (x_test, y_test) = split(True, n[0]), split(False, n[1])
    info = files.info(kind.name, n, kind.sizes)
    return InMemoryDataset(x_train, y_train, x_test, y_test, info, kind.classes)


def load_mnist(
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    flatten: bool = True,
) -> InMemoryDataset:
    """MNIST on `device`: x float32 (N, 784) if `flatten` else (N, 1, 28, 28), y int64 (N,).
    Pixels are normalized as `(x/255 - 0.1307)/0.3081`; a subset is the first N examples."""
    return load_idx(MNIST_DATA, train_subset, test_subset, device, flatten)


def load_fashion_mnist(
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    flatten: bool = False,
) -> InMemoryDataset:
    """Fashion-MNIST on `device`: x float32 (N, 1, 28, 28), or (N, 784) if `flatten`; y int64.
    Pixels are normalized as `(x/255 - 0.2860)/0.3530`; a subset is the first N examples."""
    return load_idx(FASHION_MNIST_DATA, train_subset, test_subset, device, flatten)
