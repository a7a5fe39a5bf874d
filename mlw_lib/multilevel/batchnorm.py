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

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

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


@torch.no_grad()
def recalibrate(
    model: nn.Module, batches: Sequence[tuple], forward: Callable[[nn.Module, tuple], object]
) -> None:
    """Re-estimate every BN layer's running statistics as the plain average over `batches`
    (train-mode forward passes `forward(model, batch)`; the model's mode is restored)."""
    layers = batchnorm_layers(model)
    if not layers:
        return
    momenta = {name: layer.momentum for name, layer in layers.items()}
    was_training = model.training
    for layer in layers.values():
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the passes below
    model.train()
    try:
        for batch in batches:
            forward(model, batch)
    finally:
        for name, layer in layers.items():
            layer.momentum = momenta[name]
        model.train(was_training)


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
    mean_c = R_out mean_f and std_c = R_out std_f (exact for identical or proportional
    channels; it assumes merged channels are perfectly correlated)."""
    fine_layers = batchnorm_layers(fine)
    for name, layer in batchnorm_layers(coarse).items():
        source = fine_layers[name]
        out = statistics_binding(layout, name)
        mean = transform_tensor(source.running_mean, out, transfers, convention, "restrict")
        std = transform_tensor(source.running_var.sqrt(), out, transfers, convention, "restrict")
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(std.square())
        layer.num_batches_tracked.copy_(source.num_batches_tracked)
