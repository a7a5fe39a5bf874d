"""Fashion-MNIST as normalized in-memory tensors, from md5-verified idx files.

Two file sets hold the same content, each with its own md5s: the official gzipped files
(as torchvision.datasets.FashionMNIST lists them; downloadable) and the uncompressed files
(as the shared offline mirror holds them). The uncompressed set is tried first (cache, then
mirror), then the gzipped one (cache, mirror, then download).
"""

from __future__ import annotations

import torch

from mlw_lib.data.dataset import InMemoryDataset
from mlw_lib.data.idx import IdxDataset, load_idx_dataset
from mlw_lib.data.sources import DataFile, DatasetSpec

_BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_GZ_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# md5s of the decompressed content (shared/datasets/README.md).
_RAW_FILES = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_MNIST_GZ_SPEC = DatasetSpec(
    name="Fashion-MNIST (official .gz files)",
    files=tuple(
        DataFile(f"FashionMNIST/raw/{name}", md5, (_BASE_URL + name,))
        for name, md5 in _GZ_FILES.items()
    ),
)
FASHION_MNIST_RAW_SPEC = DatasetSpec(
    name="Fashion-MNIST (uncompressed idx files)",
    files=tuple(DataFile(f"FashionMNIST/raw/{name}", md5) for name, md5 in _RAW_FILES.items()),
)

FASHION_MNIST_MEAN = 0.2860  # of the 60,000 training images, pixels scaled to [0, 1]
FASHION_MNIST_STD = 0.3530
FASHION_MNIST = IdxDataset(
    name="Fashion-MNIST",
    specs=(FASHION_MNIST_RAW_SPEC, FASHION_MNIST_GZ_SPEC),
    mean=FASHION_MNIST_MEAN,
    std=FASHION_MNIST_STD,
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)


def load_fashion_mnist(
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    flatten: bool = False,
) -> InMemoryDataset:
    """Fashion-MNIST on `device`: x float32 (N, 1, 28, 28), or (N, 784) if `flatten`; y int64 (N,).

    Pixels are normalized as `(x/255 - 0.2860)/0.3530`. A subset is the first N examples.
    Files come from the data root, `$MLW_DATA_MIRROR`, or the official URLs (md5-verified).
    """
    return load_idx_dataset(FASHION_MNIST, train_subset, test_subset, device, flatten)
