"""Speed and memory of the MLP 784-512-256-10 on MNIST (all of it; --quick: 6,000 / 1,000).

Runs of one epoch of work each, per variant the fastest of 3 (round-robin; --quick: 1):
(a) the single-level run (WorkMeter wall_time of `train`) against its FLOP lower bound:
    forward_backward_flops x batches / the fastest fp32 matmul rate measured in this run
    (the first layer's 128x784 @ 784x512 and a square one); target <= 1.5x;
(y) that run in a fresh process with glibc's default malloc, over (a) (information);
(b1) the WorkMeter phase shares of 2- and 3-level V-cycles (batches_per_phase 4, tau "cycle"
    and "none"): machinery (matching, transfer, recalibration, accounting, tau) <= 10%;
(b2) our step on each level of the trained 3-level hierarchy against a bare PyTorch step
    (nn.Sequential of the same widths and weights, fused SGD); target <= 1.15x per coarse level;
(c) peak RSS of a 3-level epoch / a single-level epoch, each in its own process; <= 1.1x;
of a 2-level one, <= 1.3x.

Run: `make benchmark` or `.venv/bin/python benchmarks/bench_mlp.py [--quick] [--device cuda]`.
"""

import common  # first: it sets MLW_DATA_MIRROR and TQDM_DISABLE before torch loads

# isort: split
import torch
from torch import nn

from mlw_lib.data import load_mnist
from mlw_lib.models import MLP
from mlw_lib.training import TrainConfig

SIZES = [784, 512, 256, 10]  # input, hidden..., classes
BATCH = 128


def load(quick: bool):
    """MNIST as in-memory tensors: x (N, 784), y (N,)."""
    return load_mnist(train_subset=6000, test_subset=1000) if quick else load_mnist()


def new_model(data) -> MLP:
    torch.manual_seed(0)
    return MLP(SIZES[0], SIZES[1:-1], SIZES[-1])


def config(epochs: float, device: torch.device) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=BATCH, lr=0.05, momentum=0.9, device=str(device))


def sequential_copy(model: MLP) -> nn.Sequential:
    """`model` as a plain nn.Sequential of Linear and ReLU layers with the same weights."""
    layers: list[nn.Module] = []
    for linear in model.linears:
        layers += [nn.Linear(linear.in_features, linear.out_features), nn.ReLU()]
        layers[-2].load_state_dict(linear.state_dict())
    return nn.Sequential(*layers[:-1]).to(model.linears[0].weight.device)


BENCH = common.Bench(
    name="bench_mlp",
    title="bench_mlp: MLP 784-512-256-10 on MNIST, batch 128, SGD(lr 0.05, momentum 0.9), fp32",
    load=load,
    new_model=new_model,
    config=config,
    bare_copy=sequential_copy,
    gemms={"layer 0 forward 128x784 @ 784x512": (BATCH, SIZES[0], SIZES[1])},
    epoch_target=1.5,
    epochs=(1.0, 1.0),
    repeats=3,
)

if __name__ == "__main__":
    common.run(BENCH, __doc__, __file__)
