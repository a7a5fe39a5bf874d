"""Decoupled training with synthetic gradients (Jaderberg et al. 2016) over two processes.

Rank 0 holds the lower half of a stable net (the lift and the first N/2 layers) and a
label-conditioned synthetic-gradient module M; rank 1 the upper half and the head. Both draw
the same minibatches (the same seeded stream). Per minibatch t:

  rank 0: h_t = lower(x_t), sent to rank 1; the lower half steps with M(h_t, y_t) in place of
          dL/dh_t; then it receives the true dL/dh_{t-1} of the *previous* batch and fits M to
          it (squared error per example): rank 0 runs one batch ahead of the true gradient.
  rank 1: receives h_t, finishes the forward pass, steps, sends dL/dh_t back.

The interface h is the stream state (Y, and Z or Y_{j-1} for the Hamiltonian and leapfrog
forms, stacked on axis 1). With `oracle=True` rank 0 waits for dL/dh_t and steps with it:
exactly backpropagation. `serial=True` runs both halves in one process, the messages going
through a queue: the same arithmetic, the reference a 2-process run is measured against.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .. import distributed
from ..checks import integer, number
from ..models.stable import StableNet
from ..training.batches import BatchStream

ACTIVATION, GRADIENT = 0, 1  # message tags


@dataclass
class SyntheticConfig:
    """Settings of synthetic-gradient training."""

    lr: float = 0.05  # SGD step of both halves
    momentum: float = 0.9  # SGD momentum of both halves
    sg_lr: float = 0.01  # SGD step of the synthetic-gradient module
    batch_size: int = 50  # minibatch size
    seed: int = 0  # minibatch order (the same on both ranks)

    def __post_init__(self) -> None:
        integer("batch_size", self.batch_size, 1)
        integer("seed", self.seed, 0)
        number("lr", self.lr, 0.0, open_low=True)
        number("sg_lr", self.sg_lr, 0.0, open_low=True)
        number("momentum", self.momentum, 0.0, 1.0, open_high=True)


class SyntheticGradient(nn.Module):
    """M(h, y): the predicted dL/dh from the interface h and the label y (one-hot), a linear
    map for h (N, F) or a 3x3 conv for h (N, C, H, W), initialised to predict 0."""

    def __init__(self, shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        self.classes = classes
        if len(shape) == 1:
            self.net: nn.Module = nn.Linear(shape[0] + classes, shape[0])
        else:
            self.net = nn.Conv2d(shape[0] + classes, shape[0], 3, padding=1)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        label = F.one_hot(y, self.classes).to(h.dtype)
        if h.dim() > 2:
            label = label[:, :, None, None].expand(-1, -1, *h.shape[2:])
        return self.net(torch.cat([h, label], dim=1))


def halves(model: StableNet) -> tuple[list[str], list[str]]:
    """Parameter names of the lower half (lift, first N/2 layers) and of the upper half."""
    if not isinstance(model, StableNet):
        raise ValueError(
            f"synthetic gradients split a StableNet in two; got {type(model).__name__}"
        )
    depth = model.config["depth"]
    if depth % 2:
        raise ValueError(
            f"a depth of {depth} layers cannot be split into 2 halves; choose an even depth"
        )
    lower = [
        n
        for n, _ in model.named_parameters()
        if n.startswith("lift.") or (n.startswith("layers.") and int(n.split(".")[1]) < depth // 2)
    ]
    return lower, [n for n, _ in model.named_parameters() if n not in lower]


class _Queue:
    """The messages of a serial run: tensors in order, one queue per tag."""

    def __init__(self) -> None:
        self.queues = {ACTIVATION: deque(), GRADIENT: deque()}

    def send(self, tensor: torch.Tensor, tag: int) -> None:
        self.queues[tag].append(tensor.detach().clone())

    def recv(self, like: torch.Tensor, tag: int) -> torch.Tensor:
        return self.queues[tag].popleft()


class _Peer:
    """Point-to-point messages to the other of two ranks (sends do not wait)."""

    def __init__(self) -> None:
        self.peer, self.pending = 1 - distributed.rank(), []

    def send(self, tensor: torch.Tensor, tag: int) -> None:
        tensor = tensor.detach().contiguous()
        self.pending = [(w, t) for w, t in self.pending if not w.is_completed()]
        self.pending.append((dist.isend(tensor, self.peer, tag=tag), tensor))

    def recv(self, like: torch.Tensor, tag: int) -> torch.Tensor:
        buffer = torch.empty_like(like)
        dist.recv(buffer, self.peer, tag=tag)
        return buffer

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending = []


class SyntheticGradients:
    """Two-half training of `model` (in place) on `data`'s training split."""

    def __init__(
        self,
        model: StableNet,
        data,
        config: SyntheticConfig,
        serial: bool = False,
        oracle: bool = False,
    ) -> None:
        self.lower_names, self.upper_names = halves(model)
        if serial and oracle:
            raise ValueError("the oracle (true gradients) needs two processes: serial=False")
        if not serial and distributed.world_size() != 2:
            raise ValueError(
                f"synthetic gradients run on 2 processes (one per half), this run has "
                f"{distributed.world_size()}; start torchrun with --nproc-per-node 2, or run "
                "serial"
            )
        self.model, self.config, self.serial, self.oracle = model, config, serial, oracle
        self.role = None if serial else distributed.rank()
        self.channel = _Queue() if serial else _Peer()
        self.stream = BatchStream(data.x_train, data.y_train, config.batch_size, config.seed)
        params = dict(model.named_parameters())
        self.lower_opt = torch.optim.SGD(
            [params[n] for n in self.lower_names], lr=config.lr, momentum=config.momentum
        )
        self.upper_opt = torch.optim.SGD(
            [params[n] for n in self.upper_names], lr=config.lr, momentum=config.momentum
        )
        with torch.no_grad():
            example = self.lower(data.x_train[:1])
        self.like = torch.zeros(config.batch_size, *example.shape[1:], dtype=example.dtype)
        self.sg = SyntheticGradient(tuple(example.shape[1:]), model.config["num_classes"])
        self.sg.to(example.device, example.dtype)
        self.sg_opt = torch.optim.SGD(self.sg.parameters(), lr=config.sg_lr)
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self.errors: list[float] = []  # relative error of M against each true gradient

    # ---------------------------------------------------------------- the two halves
    def lower(self, x: torch.Tensor) -> torch.Tensor:
        """h (N, state) or (N, state, H, W): the stream state after the first N/2 layers."""
        y, aux = self.model.stream(x)
        for layer in self.model.layers[: len(self.model.layers) // 2]:
            y, aux = layer(y, aux)
        return y if aux is None else torch.cat([y, aux], dim=1)

    def upper(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from the interface h."""
        aux = None
        if self.model.config["form"] in ("hamiltonian", "leapfrog"):
            h, aux = h.chunk(2, dim=1)
        for layer in self.model.layers[len(self.model.layers) // 2 :]:
            h, aux = layer(h, aux)
        return self.model.classify(h)

    def lower_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Rank 0's part of one minibatch."""
        x, y = batch
        h = self.lower(x)
        self.channel.send(h, ACTIVATION)
        if self.oracle:
            gradient = self.channel.recv(self.like, GRADIENT)
        else:
            gradient = self.sg(h.detach(), y).detach()
        self.lower_opt.zero_grad()
        h.backward(gradient)
        self.lower_opt.step()
        if not self.oracle:
            if self.previous is not None:
                self.fit_synthetic(self.channel.recv(self.like, GRADIENT))
            self.previous = (h.detach(), y)

    def fit_synthetic(self, true: torch.Tensor) -> None:
        """One step of M towards the true gradient of the previous minibatch."""
        h, y = self.previous
        predicted = self.sg(h, y)
        self.sg_opt.zero_grad()
        (predicted - true).square().sum().div(len(h)).backward()  # per-example squared error
        self.sg_opt.step()
        error = (predicted.detach() - true).norm() / true.norm().clamp_min(1e-30)
        self.errors.append(float(error))

    def upper_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Rank 1's part of one minibatch; its training loss."""
        h = self.channel.recv(self.like, ACTIVATION).requires_grad_()
        loss = F.cross_entropy(self.upper(h), batch[1])
        self.upper_opt.zero_grad()
        loss.backward()
        self.upper_opt.step()
        self.channel.send(h.grad, GRADIENT)
        return float(loss.detach())

    # ---------------------------------------------------------------- running
    def step(self) -> None:
        """One minibatch: this rank's half (both halves in a serial run)."""
        batch = self.stream.next()
        if self.role in (None, 0):
            self.lower_step(batch)
        if self.role in (None, 1):
            self.upper_step(batch)

    def finish(self) -> None:
        """Fit M to the last true gradient and wait for every message (before evaluating)."""
        if self.role in (None, 0) and not self.oracle and self.previous is not None:
            self.fit_synthetic(self.channel.recv(self.like, GRADIENT))
            self.previous = None
        if isinstance(self.channel, _Peer):
            self.channel.flush()

    def gather_model(self) -> None:
        """Rank 0's copy of the model gets rank 1's upper half (a collective: both call it)."""
        if self.serial:
            return
        params = dict(self.model.named_parameters())
        flat = torch.cat([params[n].detach().reshape(-1) for n in self.upper_names])
        dist.broadcast(flat, src=1)
        with torch.no_grad():
            parts = flat.split([params[n].numel() for n in self.upper_names])
            for name, part in zip(self.upper_names, parts, strict=True):
                params[name].copy_(part.view_as(params[name]))
