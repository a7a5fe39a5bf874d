"""Speed and memory of the small ResNet on Fashion-MNIST (5,120 / 1,000 images; --quick:
1,024 / 256), the model of params/paper/02_cnn_cifar10.fashion_mnist.yaml on 40 batches per epoch.

ResNet [16, 32, 64] x [2, 2, 2] blocks, batch 128, SGD (lr 0.05, momentum 0.9, weight decay
5e-4), crop (padding 2) + flip, channels_last. The measurements of bench_mlp.py, on runs of 4
epochs of work (about ten V-cycles; --quick: 2): (a) the single-level run against its FLOP
bound at the fastest matmul rate of this run (the last stage's 3x3 conv as an im2col GEMM, and
a square one): information, convolutions are not GEMMs; (y) that run with glibc's default
malloc (information); (b1) the machinery share of 2- and 3-level V-cycles, BatchNorm
recalibration included, <= 10%; (b2) our step per level against the same module stepped by
plain PyTorch (cross-entropy, fused SGD), <= 1.15x per coarse level; (c) peak RSS of a
3-level / a single-level epoch, <= 1.1x; of a 2-level one, <= 1.3x; and with per-block
gradient checkpointing (information).

Run: `make benchmark-cnn` or `.venv/bin/python benchmarks/bench_cnn.py [--quick]`.
"""

import copy

import common  # first: it sets MLW_DATA_MIRROR and TQDM_DISABLE before torch loads

# isort: split
import torch

from mlw_lib.data import load_dataset
from mlw_lib.models import build_cnn
from mlw_lib.training import TrainConfig

BATCH = 128


def load(quick: bool):
    """Fashion-MNIST subsets as in-memory tensors: x (N, 1, 28, 28), y (N,)."""
    train_subset, test_subset = (1024, 256) if quick else (5120, 1000)
    return load_dataset("fashion_mnist", train_subset=train_subset, test_subset=test_subset)


def new_model(data) -> torch.nn.Module:
    torch.manual_seed(0)
    _, channels, size, _ = data.x_train.shape
    return build_cnn("resnet", [16, 32, 64], channels, 10, size, blocks=[2, 2, 2])


def config(epochs: float, device: torch.device) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=BATCH,
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        device=str(device),
        eval_every=epochs,
        augment=True,
        crop_padding=2,
        flip=True,
        channels_last=True,
    )


BENCH = common.Bench(
    name="bench_cnn",
    title="bench_cnn: ResNet [16, 32, 64] x [2, 2, 2] on Fashion-MNIST, batch 128, SGD + weight "
    "decay, crop + flip, channels_last, fp32",
    load=load,
    new_model=new_model,
    config=config,
    bare_copy=copy.deepcopy,
    gemms={"stage-2 3x3 conv as im2col 6272x576 @ 576x64": (BATCH * 7 * 7, 64 * 9, 64)},
    epoch_target=None,
    epochs=(4.0, 2.0),
    repeats=2,
)

if __name__ == "__main__":
    common.run(BENCH, __doc__, __file__)
