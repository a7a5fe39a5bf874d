"""Parallel Variable Distribution (PVD; Solodov 1997) for a stable net.

The layers split into P contiguous blocks; block r (block 0 with the lift) belongs to rank r,
and every rank trains the head. One iteration from the shared parameters x:

1. direction: d = -grad L(x; B) on the iteration's shared minibatch B (every rank computes
   the same d, no message needed);
2. parallel step: rank r minimises L over its block, the head and one "forget-me-not"
   multiplier mu_s per other block, whose parameters move along the direction as
   x_s + mu_s d_s (mu_s starts at 0): `local_steps` SGD steps on its own minibatches;
3. synchronisation: every candidate's loss on one held-out batch; the lowest wins and is
   broadcast, so every rank again holds the same x.

Run under torchrun with P processes, or `serial` in one process (the P subproblems one after
another, with the same arithmetic: the reference a parallel run's speed-up is measured
against).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .. import distributed
from ..checks import integer, number
from ..models.stable import StableNet
from ..training.batches import BatchStream

Params = dict[str, torch.Tensor]


@dataclass
class PVDConfig:
    """Settings of PVD training."""

    blocks: int = 2  # P: blocks of layers (under torchrun: the number of processes)
    local_steps: int = 10  # SGD steps of each block's subproblem per iteration
    lr: float = 0.05  # step size of the subproblems (block, head and multipliers alike)
    batch_size: int = 50  # minibatch size (the direction's and the subproblems')
    holdout: int = 200  # validation examples the synchronisation compares the candidates on
    seed: int = 0  # minibatch order: the shared stream's seed; block r's own is seed + 1 + r

    def __post_init__(self) -> None:
        for name in ("blocks", "local_steps", "batch_size", "holdout"):
            integer(name, getattr(self, name), 1)
        integer("seed", self.seed, 0)
        number("lr", self.lr, 0.0, open_low=True)


def partition(model: nn.Module, blocks: int) -> list[list[str]]:
    """The parameter names of each block of `model`'s layers (block 0 also the lift's)."""
    if not isinstance(model, StableNet):
        raise ValueError(f"PVD splits the layers of a StableNet; got {type(model).__name__}")
    if any(layer.norms for layer in model.layers):
        raise ValueError(
            "PVD needs a net without BatchNorm (its running statistics would differ between "
            "the candidates): build the StableNet with norm=False"
        )
    depth = model.config["depth"]
    if depth % blocks:
        raise ValueError(
            f"a depth of {depth} layers cannot be split into {blocks} blocks of equal size; "
            f"choose a depth that is a multiple of {blocks} (the number of blocks / processes)"
        )
    size = depth // blocks
    names: list[list[str]] = [[] for _ in range(blocks)]
    for name, _ in model.named_parameters():
        if name.startswith("layers."):
            names[int(name.split(".")[1]) // size].append(name)
        elif name.startswith("lift."):
            names[0].append(name)
    return names


class PVD:
    """PVD iterations on `model` (trained in place) with the data's training split, its
    validation split's first `holdout` examples as the held-out batch."""

    def __init__(self, model: StableNet, data, config: PVDConfig, serial: bool = False) -> None:
        self.model, self.config, self.serial = model, config, serial
        self.blocks = partition(model, config.blocks)
        if not serial and distributed.world_size() != config.blocks:
            raise ValueError(
                f"PVD with {config.blocks} blocks runs on {config.blocks} processes, this run "
                f"has {distributed.world_size()}; start torchrun with --nproc-per-node "
                f"{config.blocks}, or run serial"
            )
        if getattr(data, "x_val", None) is None:
            raise ValueError("PVD compares its candidates on held-out data: give data a x_val")
        self.owner = {name: r for r, names in enumerate(self.blocks) for name in names}
        x, y = data.x_train, data.y_train
        self.shared = BatchStream(x, y, config.batch_size, config.seed)
        self.own = [
            BatchStream(x, y, config.batch_size, config.seed + 1 + r) for r in range(config.blocks)
        ]
        self.held_out = (data.x_val[: config.holdout], data.y_val[: config.holdout])
        self.chosen: list[int] = []  # the winning block of every iteration

    def loss(self, params: Params, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the model with `params` on `batch`."""
        return F.cross_entropy(functional_call(self.model, params, (batch[0],)), batch[1])

    def direction(self, x: Params) -> Params:
        """d = -grad L(x; B) on the next shared minibatch."""
        leaves = {n: p.clone().requires_grad_() for n, p in x.items()}
        grads = torch.autograd.grad(self.loss(leaves, self.shared.next()), list(leaves.values()))
        return {n: -g for n, g in zip(leaves, grads, strict=True)}

    def subproblem(self, r: int, x: Params, d: Params) -> tuple[Params, float]:
        """Block r's candidate after `local_steps` steps, and its held-out loss."""
        free = {n: p.clone().requires_grad_() for n, p in x.items() if self.owner.get(n, r) == r}
        mu = torch.zeros(self.config.blocks, requires_grad=True)  # mu[r] itself stays unused

        def params() -> Params:
            return {n: free[n] if n in free else x[n] + mu[self.owner[n]] * d[n] for n in x}

        optimizer = torch.optim.SGD([*free.values(), mu], lr=self.config.lr)
        for _ in range(self.config.local_steps):
            optimizer.zero_grad()
            self.loss(params(), self.own[r].next()).backward()
            optimizer.step()
        with torch.no_grad():
            candidate = {n: p.detach() for n, p in params().items()}
            return candidate, float(self.loss(candidate, self.held_out))

    def iterate(self) -> None:
        """One PVD iteration; the model then holds the winning candidate (on every rank)."""
        x = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        d = self.direction(x)
        if self.serial:
            candidates = [self.subproblem(r, x, d) for r in range(self.config.blocks)]
            losses = [loss for _, loss in candidates]
            best = losses.index(min(losses))
            chosen = candidates[best][0]
        else:
            candidate, loss = self.subproblem(distributed.rank(), x, d)
            losses = distributed.gather(loss)
            best = losses.index(min(losses))
            flat = torch.cat([candidate[n].reshape(-1) for n in x])
            dist.broadcast(flat, src=best)
            chosen = dict(zip(x, flat.split([p.numel() for p in x.values()]), strict=True))
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(chosen[name].view_as(p))
        self.chosen.append(best)
