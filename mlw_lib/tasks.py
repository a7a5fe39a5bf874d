"""The three tasks on which notebook 06 asks whether multilevel pays: each a dataset and a
fine net family scaled by one `width` (the paper nets of 01, 02 and 03 at their paper width).

    mlp_mnist              MNIST,          MLP 784-w-w/2-10 (ReLU)              paper w = 512
    resnet_fashion_mnist   Fashion-MNIST,  ResNet [w/4, w/2, w], 2 blocks/stage  paper w = 64
    transformer_imdb       IMDB reviews,   2 blocks, d_model w, 4 heads of w/4,  paper w = 128
                                           FFN 4w
"""

from __future__ import annotations

from . import data as datasets
from .checks import choice, integer
from .data import InMemoryDataset
from .models import MLP, TransformerClassifier
from .models.registry import build_cnn
from .multilevel import WidthModel

TASKS = ("mlp_mnist", "resnet_fashion_mnist", "transformer_imdb")
DATASETS = {
    "mlp_mnist": "mnist",
    "resnet_fashion_mnist": "fashion_mnist",
    "transformer_imdb": "imdb",
}
PROBE_SIZE = 32  # training reviews on which transformer heads are compared


def load_task_data(
    task: str,
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str = "cpu",
    vocab_size: int = 8000,
    max_len: int = 128,
) -> InMemoryDataset:
    """The task's dataset (`vocab_size` and `max_len` are read by the IMDB task only)."""
    choice("task", task, TASKS)
    text = {"vocab_size": vocab_size, "max_len": max_len} if task == "transformer_imdb" else {}
    return datasets.load_dataset(
        DATASETS[task], train_subset=train_subset, test_subset=test_subset, device=device, **text
    )


def build_task_model(task: str, width: int, data: InMemoryDataset) -> WidthModel:
    """The task's fine net at `width` (a multiple of 4); the transformer reads the vocabulary
    size, the sequence length and its probe reviews from `data`."""
    choice("task", task, TASKS)
    integer("width", width, 4)
    if width % 4:
        raise ValueError(f"width must be a multiple of 4 (it is split into quarters), got {width}")
    if task == "mlp_mnist":
        return MLP(784, [width, width // 2], 10)
    if task == "resnet_fashion_mnist":
        return build_cnn("resnet", [width // 4, width // 2, width], 1, 10, 28, blocks=[2, 2, 2])
    return TransformerClassifier(
        data.tokenizer.get_vocab_size(),
        2,
        d_model=width,
        heads=4,
        head_dim=width // 4,
        ffn=4 * width,
        max_len=data.x_train.shape[1],
        probe=data.x_train[:PROBE_SIZE],
    )
