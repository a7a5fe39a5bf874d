"""Cost accounting (DESIGN.md §4.7): FLOPs per level, work units, wall-clock per phase.

One work unit (WU) = the FLOPs of one fine-level forward + backward pass on one minibatch.
A step on level l costs flops(l) / flops(0) WU; tau gradients, transfers and matching are
charged by their own FLOP estimates.

Wall-clock: `running()` brackets everything the training loop does except evaluation, and
its elapsed time is `wall_time`. Phases split it; nested phases charge the innermost one
only, and `breakdown()` adds the unphased rest as "other", so the rows sum to `wall_time`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .batchnorm import preserved_buffers

# "data": drawing (and augmenting) minibatches; "tau_gradient": the forward+backward passes
# tau needs (charged WU); "tau": the rest of it; "recalibration": train-mode forward passes
# that re-estimate BatchNorm statistics; "accounting": counting the FLOPs of a coarse size
# seen for the first time (bookkeeping); "monitor": the forward passes that measure each
# correction's gain (`monitor_corrections`); "other": the loop's time outside every phase.
PHASES = (
    "data",
    "smooth",
    "coarse",
    "tau_gradient",
    "tau",
    "transfer",
    "matching",
    "recalibration",
    "accounting",
    "monitor",
    "other",
)
# A forward pass costs about a third of forward + backward (the backward pass computes two
# products, input and weight gradients, per forward product).
FORWARD_SHARE = 1.0 / 3.0


def forward_backward_flops(model: nn.Module, batch, loss_fn: Callable) -> int:
    """FLOPs of one forward + backward pass of `loss_fn(model, batch)` (counted by torch).

    Counted first on the batch's first 2 and 4 examples (first rows of every tensor): when the
    count doubles exactly (FLOPs proportional to the batch, as for linear, conv and attention
    layers), the full batch's FLOPs follow from it without paying for a full pass; otherwise,
    or when the model cannot run on the slices, the whole batch is counted. The model's
    buffers (BatchNorm statistics) and the RNG are left as they were.
    """
    size = len(batch[0])
    if size > 4:
        try:
            pair = _counted_flops(model, _first(batch, 2), loss_fn)
            doubled = _counted_flops(model, _first(batch, 4), loss_fn) == 2 * pair
        except (RuntimeError, ValueError, IndexError):  # e.g. a batch that is not batch-first
            doubled = False
        if doubled and pair % 2 == 0:
            return pair // 2 * size
    return _counted_flops(model, batch, loss_fn)


def _first(batch, n: int) -> tuple:
    """The first `n` examples of every batch-first tensor of `batch`."""
    return tuple(t[:n] if torch.is_tensor(t) else t for t in batch)


def _counted_flops(model: nn.Module, batch, loss_fn: Callable) -> int:
    """FlopCounterMode's total for one forward + backward pass on exactly `batch`."""
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with preserved_buffers(model), FlopCounterMode(display=False) as counter:
            loss = loss_fn(model, batch)
            torch.autograd.grad(loss, params)
    return int(counter.get_total_flops())


class WorkMeter:
    """Accumulates work units, the loop's elapsed wall-clock and its per-phase split.

    `flops_per_wu` is the fine-level forward+backward FLOPs of one minibatch.
    """

    def __init__(self, flops_per_wu: float, device: torch.device | str = "cpu") -> None:
        self.flops_per_wu = float(flops_per_wu)
        self.work_units = 0.0
        self.work_by_phase: dict[str, float] = defaultdict(float)
        self.seconds: dict[str, float] = defaultdict(float)
        self._sync = torch.device(device).type == "cuda"
        self.elapsed = 0.0  # seconds inside `running()` blocks
        self._stack: list[str] = []
        self._mark = 0.0

    def charge(self, work_units: float, phase: str | None = None) -> None:
        """Add `work_units` WU to the total (and to `phase`, default: the current phase)."""
        self.work_units += work_units
        self.work_by_phase[phase or (self._stack[-1] if self._stack else "other")] += work_units

    def charge_forward(self, work_units: float, passes: int) -> None:
        """Charge `passes` forward-only passes of a net costing `work_units` per fwd+bwd."""
        self.charge(work_units * FORWARD_SHARE * passes)

    def charge_flops(self, flops: float, phase: str | None = None) -> None:
        self.charge(flops / self.flops_per_wu, phase)

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block as `name` (pausing the enclosing phase)."""
        now = self._now()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._stack.append(name)
        self._mark = now
        try:
            yield
        finally:
            now = self._now()
            self.seconds[self._stack.pop()] += now - self._mark
            self._mark = now

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count the enclosed block's elapsed time (synchronized) into `wall_time`."""
        start = self._now()
        try:
            yield
        finally:
            self.elapsed += self._now() - start

    @property
    def wall_time(self) -> float:
        """Elapsed seconds of the `running()` blocks: the real training time."""
        return float(self.elapsed)

    def breakdown(self) -> dict[str, float]:
        """Seconds per phase of PHASES, with "other" = wall_time - the phases (sums to it)."""
        rows = {phase: float(self.seconds.get(phase, 0.0)) for phase in PHASES}
        rows["other"] = self.wall_time - sum(v for k, v in rows.items() if k != "other")
        return rows

    def state_dict(self) -> dict:
        return {
            "work_units": self.work_units,
            "work_by_phase": dict(self.work_by_phase),
            "seconds": dict(self.seconds),
            "elapsed": self.elapsed,
        }

    def load_state_dict(self, state: dict) -> None:
        self.work_units = state["work_units"]
        self.work_by_phase = defaultdict(float, state["work_by_phase"])
        self.seconds = defaultdict(float, state["seconds"])
        self.elapsed = float(state["elapsed"])


def transfer_flops(tensors: dict[str, torch.Tensor]) -> float:
    """Rough FLOPs of one gather/index_add pass over `tensors` (2 per element)."""
    return 2.0 * sum(t.numel() for t in tensors.values())


def matching_flops(n_units: int, n_features: int) -> float:
    """Cosine similarity matrix plus the best-neighbour searches of one group."""
    return 2.0 * n_units * n_units * n_features + 4.0 * n_units * n_units
