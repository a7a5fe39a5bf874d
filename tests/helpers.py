"""Small shared builders for the tests (generated data: the tests are about mechanics)."""

from __future__ import annotations

import torch

from mlw_lib.models import MLP
from mlw_lib.multilevel import GroupTransfer, MultilevelConfig, WorkMeter, forward_backward_flops
from mlw_lib.multilevel.cycle import FASCycle
from mlw_lib.training import classification_loss


def random_pairing(n_coarse: int, n_fine: int, generator: torch.Generator) -> torch.Tensor:
    """A random assignment (n_fine,) of fine units to coarse units, 1 or 2 per coarse unit."""
    assert n_coarse <= n_fine <= 2 * n_coarse
    members = torch.cat(
        [torch.arange(n_coarse), torch.randperm(n_coarse, generator=generator)[: n_fine - n_coarse]]
    )
    return members[torch.randperm(n_fine, generator=generator)]


def random_transfer(n_coarse: int, n_fine: int, generator: torch.Generator) -> GroupTransfer:
    assign = random_pairing(n_coarse, n_fine, generator)
    weights = torch.rand(n_fine, generator=generator, dtype=torch.float64) + 0.1
    return GroupTransfer(assign, weights, n_coarse)


def toy_data(n: int, features: int, classes: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def make_cycle(
    model: MLP, config: MultilevelConfig, x, y, batch_size=16, lr=0.05, optimizer="sgd"
) -> FASCycle:
    """A FASCycle over cycling slices of (x, y)."""
    position = [0]

    def next_batch():
        start = position[0] % (len(x) - batch_size + 1)
        position[0] += batch_size
        return x[start : start + batch_size], y[start : start + batch_size]

    def make_optimizer(params, lr):
        if optimizer == "adam":
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    example = (x[:batch_size], y[:batch_size])
    meter = WorkMeter(forward_backward_flops(model, example, classification_loss))
    return FASCycle(
        model,
        config,
        make_optimizer,
        [lr] * config.levels,
        classification_loss,
        next_batch,
        meter,
        lambda m: forward_backward_flops(m, example, classification_loss) / meter.flops_per_wu,
    )
