"""BatchNorm running statistics across levels (DESIGN.md §4.6).

Running means and variances are buffers, not parameters, so restriction does not carry them.
After x_c0 = R x the coarse net's statistics are either *recalibrated* (reset, then estimated
as the plain average over a few minibatches in train mode; the default), *restricted*
approximately from the fine ones, or *kept* as they are: training runs BN in train mode,
which normalizes with batch statistics and never reads the running ones, so "keep" trains
exactly like "recalibrate" (a test checks it) without the extra forward passes; recalibrate
before evaluating a coarse net. A BN layer follows the group its weight is bound to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import distributed
from ..modes import in_mode
from .groups import AxisBinding, Layout, Role
from .transfer import Transfers, transform_tensor

BATCHNORM_MODES = ("recalibrate", "restrict", "keep")


def batchnorm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """Every BatchNorm layer of `model` with running statistics, by module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and module.track_running_stats
    }


@contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Run the enclosed passes without changing any buffer of `model` (e.g. BN statistics)."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


@torch.no_grad()
def recalibrate(
    model: nn.Module, batches: Sequence[tuple], forward: Callable[[nn.Module, tuple], object]
) -> None:
    """Re-estimate every BN layer's running statistics as the plain average over `batches`
    (train-mode forward passes `forward(model, batch)`; the model's mode is restored; under
    torchrun also over ranks)."""
    layers = batchnorm_layers(model)
    if not layers:
        return
    momenta = {name: layer.momentum for name, layer in layers.items()}
    for layer in layers.values():
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the passes below
    try:
        with in_mode(model, training=True):
            for batch in batches:
                forward(model, batch)
    finally:
        for name, layer in layers.items():
            layer.momentum = momenta[name]
    distributed.average_buffers(model)


def normalized_group(layout: Layout, bn: str) -> str | None:
    """The unit group whose channels BN layer `bn` normalises (its gamma's NORM binding)."""
    groups = [b.group for b in layout.get(f"{bn}.weight", ()) if b.role is Role.NORM]
    return groups[0] if groups else None


def statistics_binding(layout: Layout, bn: str) -> tuple[AxisBinding, ...]:
    """How BN `bn`'s running mean/std transfer: like the rows of the conv before it (OUT)."""
    group = normalized_group(layout, bn)
    return (AxisBinding(group, 0, Role.OUT),) if group is not None else ()


@torch.no_grad()
def restrict_running_stats(
    fine: nn.Module, coarse: nn.Module, layout: Layout, transfers: Transfers, convention: str
) -> None:
    """Approximate coarse statistics: the pre-BN activation of a merged channel is its
    members' activations combined like the conv rows (the OUT operator), so
    mean_c = R_out mean_f and the normaliser sqrt(var_c + eps) = R_out sqrt(var_f + eps)
    (exact for identical or proportional channels, with BN's own eps; it assumes merged
    channels are perfectly correlated)."""
    fine_layers = batchnorm_layers(fine)
    for name, layer in batchnorm_layers(coarse).items():
        source = fine_layers[name]
        out = statistics_binding(layout, name)
        mean = transform_tensor(source.running_mean, out, transfers, convention, "restrict")
        scale = (source.running_var + source.eps).sqrt()
        scale = transform_tensor(scale, out, transfers, convention, "restrict")
        layer.running_mean.copy_(mean)
        layer.running_var.copy_((scale.square() - layer.eps).clamp(min=0))
        layer.num_batches_tracked.copy_(source.num_batches_tracked)


class RecalibrateStatistics:
    """Coarse BN statistics re-estimated by train-mode passes on the tau batches (charged)."""

    needs_batches = True

    def __init__(self, loss_fn: Callable[[nn.Module, tuple], object]) -> None:
        self.loss_fn = loss_fn

    def coarse_statistics(self, fine, coarse, transfers: Transfers, batches, meter) -> None:
        """`fine`, `coarse`: Levels; `coarse.model` holds x_c0."""
        with meter.phase("recalibration"):
            recalibrate(coarse.model, batches, self.loss_fn)
            meter.charge_forward(coarse.work, len(batches))


@dataclass(frozen=True)
class RestrictStatistics:
    """Coarse BN statistics restricted from the fine ones (approximate, no passes)."""

    convention: str
    needs_batches = False

    def coarse_statistics(self, fine, coarse, transfers: Transfers, batches, meter) -> None:
        layout = fine.model.param_layout()
        with meter.phase("recalibration"):
            restrict_running_stats(fine.model, coarse.model, layout, transfers, self.convention)


class KeepStatistics:
    """Coarse BN statistics left as they are (train mode never reads them)."""

    needs_batches = False

    def coarse_statistics(self, fine, coarse, transfers: Transfers, batches, meter) -> None:
        return None


def statistics_policy(mode: str, convention: str, loss_fn: Callable) -> object:
    """The policy for `batchnorm=mode`: "recalibrate", "restrict" or "keep"."""
    if mode == "recalibrate":
        return RecalibrateStatistics(loss_fn)
    if mode == "restrict":
        return RestrictStatistics(convention)
    if mode == "keep":
        return KeepStatistics()
    raise ValueError(f"unknown batchnorm mode {mode!r}; choose one of {list(BATCHNORM_MODES)}")
