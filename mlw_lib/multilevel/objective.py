"""Levels and their objectives F_l(x; B) = loss_l(x; B) - <v_l(B), x> (DESIGN.md §4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .. import distributed
from .groups import WidthModel
from .work import WorkMeter

LossFn = Callable[[torch.nn.Module, tuple], torch.Tensor]
Tensors = dict[str, torch.Tensor]


def no_tau(batch: tuple) -> None:
    """The linear term of the finest level (and of `tau="none"`): v = 0."""
    return None


@dataclass
class Level:
    """One level of the hierarchy: its model, optimizer, learning rate and linear term.

    `work` is the cost of one forward+backward minibatch in WU (1.0 on the fine level).
    `tau(batch)` returns v_l for that batch as {name: tensor} or None for v = 0.
    Optimizer steps run the model through `runner` (default: the model itself; under
    torchrun the model wrapped in DistributedDataParallel, compiled with `compile`).
    """

    index: int
    model: WidthModel
    optimizer: torch.optim.Optimizer
    lr: float
    work: float
    tau: Callable[[tuple], Tensors | None] = no_tau
    loss_sum: torch.Tensor | None = field(default=None, repr=False)
    steps: int = 0
    # (minibatch, grad F_l) of the last pre-smoothing step, kept for tau="last_step"
    last_step: tuple[tuple, Tensors] | None = field(default=None, repr=False)
    runner: torch.nn.Module | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.runner is None:
            self.runner = self.model

    @cached_property
    def named_parameters(self) -> tuple[tuple[str, torch.nn.Parameter], ...]:
        """The model's (name, parameter) pairs, looked up once (the model never changes)."""
        return tuple(self.model.named_parameters())

    def record_loss(self, loss: torch.Tensor) -> None:
        """Accumulate a step's plain loss without a host sync."""
        value = loss.detach()
        self.loss_sum = value.clone() if self.loss_sum is None else self.loss_sum + value
        self.steps += 1

    def pop_mean_loss(self) -> float | None:
        """Mean plain loss since the last call (None if no steps; the mean over ranks under
        torchrun), then reset."""
        if self.steps == 0:
            return None
        mean = float(self.loss_sum) / self.steps
        mean = distributed.total([mean])[0] / distributed.world_size()
        self.loss_sum, self.steps = None, 0
        return mean


def linear_term(model: torch.nn.Module, v: Tensors) -> torch.Tensor:
    """<v, x> over all parameters of `model`."""
    return sum((v[name] * p).sum() for name, p in model.named_parameters())


def objective(level: Level, batch: tuple, loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor]:
    """(F_l(x; batch), loss_l(x; batch)) at the level's current parameters."""
    plain = loss_fn(level.model, batch)
    v = level.tau(batch)
    total = plain if v is None else plain - linear_term(level.model, v)
    return total, plain


def objective_backward(level: Level, batch: tuple, loss_fn: LossFn) -> torch.Tensor:
    """Set every `p.grad` to grad F_l(x; batch) = grad loss_l(x; batch) - v_l; return the loss.

    Same maths as backpropagating `objective()`, whose gradient of -<v, x> is -v (the tests
    check the two agree), but v is subtracted in one fused `_foreach_sub_` after the backward
    pass instead of costing 2 autograd ops per parameter, which on a coarse level is a large
    part of a step. Under torchrun the backward pass averages the gradient over ranks.
    """
    plain = loss_fn(level.runner, batch)
    plain.backward()
    v = level.tau(batch)
    if v is not None:
        grads = []
        for _, p in level.named_parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        torch._foreach_sub_(grads, [v[name] for name, _ in level.named_parameters])
    return plain


def loss_gradient(model: torch.nn.Module, batches: Sequence[tuple], loss_fn: LossFn) -> Tensors:
    """Mean over `batches` of grad loss(x; b) at the model's current parameters (and over
    ranks under torchrun: each rank's batches are its shards)."""
    names, params = zip(*model.named_parameters(), strict=True)
    total = [torch.zeros_like(p) for p in params]
    for batch in batches:
        for acc, g in zip(total, torch.autograd.grad(loss_fn(model, batch), params), strict=True):
            acc.add_(g)
    distributed.average_(total)
    return {name: g / len(batches) for name, g in zip(names, total, strict=True)}


def objective_gradient(
    level: Level, batches: Sequence[tuple], loss_fn: LossFn, meter: WorkMeter
) -> Tensors:
    """Mean over `batches` of grad F_l(x; b) = grad loss_l(x; b) - v_l(b), charged to `meter`."""
    grad = loss_gradient(level.model, batches, loss_fn)
    meter.charge(level.work * len(batches))
    for batch in batches:
        v = level.tau(batch)
        if v is not None:
            for name in grad:
                grad[name] -= v[name] / len(batches)
    return grad
