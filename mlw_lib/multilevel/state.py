"""Optimizer-state transfer between levels (DESIGN.md §4.4), generic over torch optimizers.

Per-parameter state tensors shaped like their parameter (SGD `momentum_buffer`, Adam
`exp_avg`, `exp_avg_sq`) restrict with the parameter operator R and are corrected like the
parameters, m_f <- m_f + beta * P(m_c - m_c0). Second moments stay non-negative (R and P are
non-negative operators; the corrected value is clamped at 0). Anything else (Adam's `step`)
is copied down and left alone on the way up. Adam/AdamW transfer is experimental: no
reference implementation exists to compare against.
"""

from __future__ import annotations

import torch
from torch import nn

from .groups import Layout
from .transfer import Transfers, prolong, restrict_params

NamedState = dict[str, dict[str, torch.Tensor]]
NONNEGATIVE_STATE = frozenset({"exp_avg_sq", "max_exp_avg_sq"})


def named_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> NamedState:
    """Optimizer state keyed by parameter name instead of parameter object."""
    return {
        name: dict(optimizer.state[p])
        for name, p in model.named_parameters()
        if p in optimizer.state
    }


def load_named_state(optimizer: torch.optim.Optimizer, model: nn.Module, state: NamedState) -> None:
    """Replace the optimizer's per-parameter state with `state` (names of `model`)."""
    optimizer.state.clear()
    for name, p in model.named_parameters():
        if name in state:
            optimizer.state[p] = dict(state[name])


def _shaped_like_param(state: NamedState, key_filter) -> dict[str, torch.Tensor]:
    return {
        f"{name}\0{key}": value
        for name, entries in state.items()
        for key, value in entries.items()
        if torch.is_tensor(value) and value.dim() > 0 and key_filter(key)
    }


def _layout_for(flat_names, layout: Layout) -> Layout:
    return {flat: layout.get(flat.split("\0")[0], ()) for flat in flat_names}


def restrict_state(
    state: NamedState, layout: Layout, transfers: Transfers, convention: str
) -> NamedState:
    """Coarse initial state m_c0 = R m_f; scalars (e.g. `step`) are cloned."""
    tensors = _shaped_like_param(state, lambda key: True)
    coarse = restrict_params(tensors, _layout_for(tensors, layout), transfers, convention)
    out: NamedState = {}
    for name, entries in state.items():
        out[name] = {}
        for key, value in entries.items():
            flat = f"{name}\0{key}"
            out[name][key] = coarse[flat] if flat in coarse else _clone(value)
    return out


def correct_state(
    fine: NamedState,
    coarse_now: NamedState,
    coarse_start: NamedState,
    layout: Layout,
    transfers: Transfers,
    convention: str,
    damping: float,
) -> None:
    """In place: m_f += damping * P(m_c - m_c0) for every parameter-shaped state tensor."""
    deltas = {
        f"{name}\0{key}": coarse_now[name][key] - start
        for name, entries in coarse_start.items()
        for key, start in entries.items()
        if torch.is_tensor(start) and start.dim() > 0 and name in coarse_now
    }
    fine_deltas = prolong(deltas, _layout_for(deltas, layout), transfers, convention)
    for flat, delta in fine_deltas.items():
        name, key = flat.split("\0")
        target = fine[name][key]
        target.add_(delta, alpha=damping)
        if key in NONNEGATIVE_STATE:
            target.clamp_(min=0)


def _clone(value):
    return value.clone() if torch.is_tensor(value) else value
