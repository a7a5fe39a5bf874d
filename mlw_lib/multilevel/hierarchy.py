"""Building the width hierarchy: match every group, build operators and coarse models."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import MultilevelConfig
from .groups import WidthModel
from .matching import Matching, match_units, narrowest_width
from .operators import GroupTransfer


class CoarseningError(ValueError):
    """A group cannot be coarsened as requested (too narrow, or no similar units)."""


@dataclass
class Transition:
    """Operators between level l (fine) and l + 1 (coarse), one per unit group."""

    transfers: dict[str, GroupTransfer]
    matchings: dict[str, Matching]
    feature_dims: dict[str, int] = field(default_factory=dict)  # per group, for work accounting

    def coarse_sizes(self) -> dict[str, int]:
        return {group: t.n_coarse for group, t in self.transfers.items()}

    def state_dict(self) -> dict:
        return {group: t.state_dict() for group, t in self.transfers.items()}


def unit_weights(model: WidthModel, group: str, kind: str) -> torch.Tensor:
    """omega of every unit of `group`: (n,), feature norms (floored) or ones."""
    if kind == "uniform":
        param = next(model.parameters())
        n = model.group_sizes()[group]
        return torch.ones(n, dtype=torch.float64, device=param.device)
    norms = model.unit_feature_norms(group).to(torch.float64)
    return norms.clamp_min(1e-8 * float(norms.max().clamp_min(1e-30)))


def match_model(model: WidthModel, config: MultilevelConfig, level: int, seed: int) -> Transition:
    """Match every group of `model` (level `level`) and build its transfer operators.

    A group in which no two units have positive similarity keeps its width at this
    transition (its operator is the identity; units are never merged against their
    similarity); CoarseningError when no group of the model can shrink at all."""
    transfers, matchings, feature_dims = {}, {}, {}
    for group in model.group_sizes():
        features = model.unit_features(group)
        feature_dims[group] = features.shape[1]
        matching = match_units(features, config.ratio, config.matching, config.similarity, seed)
        matchings[group] = matching
        transfers[group] = GroupTransfer(
            matching.assign, unit_weights(model, group, config.unit_weights), matching.n_coarse
        )
    if all(m.n_coarse == m.n_fine for m in matchings.values()):
        widths = ", ".join(f"{group} ({m.n_fine})" for group, m in matchings.items())
        raise CoarseningError(
            f"cannot coarsen any group below level {level}: in none of {widths} do two units "
            f"have positive similarity (or a group has a single unit). Use fewer levels "
            f"(levels={level + 1}) or wider layers."
        )
    return Transition(transfers, matchings, feature_dims)


def reweight(transition: Transition, model: WidthModel, config: MultilevelConfig) -> Transition:
    """Same assignment, unit weights recomputed from the current parameters (uniform
    weights never change: then the transition is returned as it is)."""
    if config.unit_weights == "uniform":
        return transition
    transfers = {
        group: GroupTransfer(t.assign, unit_weights(model, group, config.unit_weights), t.n_coarse)
        for group, t in transition.transfers.items()
    }
    return Transition(transfers, transition.matchings, transition.feature_dims)


def build_model(template: WidthModel, sizes: dict[str, int]) -> WidthModel:
    """`template.resized(sizes)` on the template's device, dtype and memory format (e.g.
    channels_last), with its block checkpointing, without touching the global RNG (coarse
    parameters are overwritten by restriction anyway)."""
    param = next(template.parameters())
    with torch.random.fork_rng(devices=[param.device] if param.is_cuda else []):
        model = template.resized(sizes)
    model = model.to(device=param.device, dtype=param.dtype).train(template.training)
    model.checkpointing = template.checkpointing
    if is_channels_last(template):
        model = model.to(memory_format=torch.channels_last)
    return model


def detached_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{name: parameter.detach()}: the parameter values without autograd history."""
    return {name: p.detach() for name, p in model.named_parameters()}


def assign_params(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy `values[name]` into every parameter of `model`, in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(values[name])


def is_channels_last(model: torch.nn.Module) -> bool:
    """Whether the model's 4-D (conv) weights are stored channels_last (NHWC)."""
    return any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in model.parameters()
    )


def check_depth(sizes: dict[str, int], levels: int, ratio: float) -> None:
    """Fail early when `levels` asks for more coarsening than the widths allow (best case:
    every requested pair is found)."""
    for group, width in sizes.items():
        n = width
        for level in range(1, levels):
            coarser = narrowest_width(n, ratio)
            if coarser == n:
                raise CoarseningError(
                    f"{levels} levels ask for {levels - 1} coarsenings of group {group!r} "
                    f"(width {width}), but at level {level - 1} its width {n} cannot shrink "
                    f"with ratio {ratio}. Use at most {level} levels or widen the layer."
                )
            n = coarser
