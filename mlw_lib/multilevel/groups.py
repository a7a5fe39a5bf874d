"""Unit groups and axis roles: how a model tells the multilevel core what can be coarsened.

A *unit group* is a set of interchangeable units (the neurons of one hidden layer, the channels
of one conv stage, the heads of one attention block). Each parameter tensor declares, per axis,
which group indexes it and in which role. Everything multilevel is written against these
declarations, never against a concrete model (DESIGN.md §3).
"""

from __future__ import annotations

import abc
import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class Role(enum.Enum):
    """How a parameter axis relates to the units of its group."""

    OUT = "out"  # the units' own rows: weight rows, biases (written by the unit)
    IN = "in"  # the units' outputs consumed by a later layer: weight columns
    # Weight columns that consume the units *after* a normalisation that removes their scale
    # (BatchNorm): a merged unit then carries each member's value, not their sum, so these
    # columns sum on restriction in both conventions.
    IN_NORMALIZED = "in_normalized"
    NORM = "norm"  # per-unit normalisation parameters (BN/LN gamma, beta): always averaged


@dataclass(frozen=True)
class AxisBinding:
    """Axis `axis` of a parameter is indexed by `group` in `role`.

    `unit_size` consecutive entries belong to one unit (1 for neurons; head_dim for the rows of
    one attention head; pixels-per-channel for a linear layer after flatten). `in_matching`
    says whether the entries take part in the unit's feature vector for matching (only
    meaningful for Role.OUT; e.g. a conv bias followed by BatchNorm does not).
    """

    group: str
    axis: int
    role: Role
    unit_size: int = 1
    in_matching: bool = True


Layout = dict[str, tuple[AxisBinding, ...]]
"""Parameter name (as in `named_parameters`) -> its axis bindings; absent name = no group."""


@contextlib.contextmanager
def statistics_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of `module` leave their running statistics and batch count as they
    are (momentum 0 meanwhile)."""
    layers = [
        m
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.momentum
    ]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, (momentum, count) in zip(layers, saved, strict=True):
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(count)


class WidthModel(nn.Module, abc.ABC):
    """A model that declares its unit groups and can build itself at other group sizes.

    A model made of blocks runs each through `run_block`; with `checkpointing` on (see
    `enable_checkpointing`) a training forward keeps only the blocks' inputs and recomputes
    their activations in the backward pass (less memory, about one more forward of time).
    """

    has_blocks = False  # True where forward runs its blocks through `run_block`
    checkpointing = False

    def enable_checkpointing(self, on: bool = True) -> None:
        """Turn per-block gradient checkpointing on or off (coarse models inherit it)."""
        if on and not self.has_blocks:
            raise ValueError(
                f"checkpoint_blocks needs a model made of blocks (ResNet, transformer); "
                f"{type(self).__name__} has none: set checkpoint_blocks=False"
            )
        self.checkpointing = on

    def run_block(self, block: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        """block(*inputs), checkpointed when `checkpointing` is on in a training forward (the
        recomputation leaves BatchNorm running statistics alone: each batch counts once)."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(
                block,
                *inputs,
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), statistics_frozen(block)),
            )
        return block(*inputs)

    @abc.abstractmethod
    def group_sizes(self) -> dict[str, int]:
        """Number of units in each group, e.g. {"hidden0": 512, "hidden1": 256}."""

    @abc.abstractmethod
    def param_layout(self) -> Layout:
        """Axis bindings of every parameter that a group indexes."""

    @abc.abstractmethod
    def resized(self, sizes: dict[str, int]) -> WidthModel:
        """A freshly built model of the same architecture with the given group sizes."""

    def tied_axes(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """Parameter axes that must carry the same group, or none: (what, [(param, axis)]).

        E.g. every conv and BN that writes into or reads a residual stream. The hierarchy
        checks them before coarsening. Default: none.
        """
        return []

    def unit_features(self, group: str) -> torch.Tensor:
        """Feature vector of every unit of `group` for matching: (n_units, n_features).

        Default: the concatenated entries of all OUT-role axes of the group marked
        `in_matching` (incoming weights, plus bias where it counts). Override for
        functional similarities (e.g. attention heads).
        """
        return torch.cat(self._feature_parts(group), dim=1)

    def unit_feature_norms(self, group: str) -> torch.Tensor:
        """||unit_features(group)[i]|| for every unit: (n_units,).

        Default: from the parts, without building the concatenated features (the unit
        weights need only the norms, every cycle); a model that overrides `unit_features`
        gets the norms of its own features.
        """
        if type(self).unit_features is not WidthModel.unit_features:
            return self.unit_features(group).norm(dim=1)
        parts = self._feature_parts(group)
        return sum(torch.linalg.vector_norm(part, dim=1).square() for part in parts).sqrt()

    def _feature_parts(self, group: str) -> list[torch.Tensor]:
        """The (n_units, -1) views of the parameters whose OUT axis is `group` (matching)."""
        params = dict(self.named_parameters())
        parts = []
        for name, bindings in self.param_layout().items():
            for b in bindings:
                if b.group == group and b.role is Role.OUT and b.in_matching:
                    parts.append(units_first(params[name].detach(), b))
        if not parts:
            raise ValueError(f"group {group!r} has no OUT-role parameters to match on")
        return parts


def units_first(tensor: torch.Tensor, binding: AxisBinding) -> torch.Tensor:
    """View `tensor` as (n_units, everything else) along `binding.axis`."""
    moved = tensor.movedim(binding.axis, 0)
    return moved.reshape(moved.shape[0] // binding.unit_size, -1)


def check_layout(model: WidthModel) -> None:
    """Raise ValueError if the declared layout disagrees with the parameter shapes, or if
    axes that must share units (`tied_axes`) are bound to different groups."""
    sizes = model.group_sizes()
    params = dict(model.named_parameters())
    layout = model.param_layout()
    for what, axes in model.tied_axes():
        groups = {}
        for name, axis in axes:
            bound = [b.group for b in layout.get(name, ()) if b.axis == axis]
            groups[f"{name} (axis {axis})"] = bound[0] if bound else None
        if len(set(groups.values())) > 1:
            listing = ", ".join(
                f"{layer}: {group or 'not coarsened'}" for layer, group in groups.items()
            )
            raise ValueError(
                f"inconsistent unit groups on {what}: these layers share its channels and must "
                f"all be coarsened with one group (or none), but {listing}"
            )
    for name, bindings in layout.items():
        if name not in params:
            raise ValueError(f"layout names parameter {name!r}, which the model does not have")
        shape = params[name].shape
        for b in bindings:
            if b.group not in sizes:
                raise ValueError(f"{name}: unknown group {b.group!r} (groups: {sorted(sizes)})")
            expected = sizes[b.group] * b.unit_size
            if b.axis >= len(shape) or shape[b.axis] != expected:
                raise ValueError(
                    f"{name}: axis {b.axis} should have {sizes[b.group]} units x "
                    f"{b.unit_size} = {expected} entries for group {b.group!r}, shape is "
                    f"{tuple(shape)}"
                )
