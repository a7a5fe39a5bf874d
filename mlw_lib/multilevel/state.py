"""Optimizer-state transfer between levels (DESIGN.md §4.4), generic over torch optimizers.

Per-parameter state tensors shaped like their parameter (SGD `momentum_buffer`, Adam
`exp_avg`, `exp_avg_sq`) restrict with the parameter operator R and are corrected like the
parameters, m_f <- m_f + beta * P(m_c - m_c0). Second moments stay non-negative (R and P are
non-negative operators; the corrected value is clamped at 0). Anything else (Adam's `step`)
is copied down and left alone on the way up. Adam/AdamW transfer is experimental: no
reference implementation exists to compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .groups import Layout
from .transfer import Transfers, prolong, restrict_params

STATE_TRANSFER = ("restrict", "reset")
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


def clone_state(state: NamedState) -> NamedState:
    """A copy of `state` whose tensors share no memory with it."""
    return {name: {k: _clone(v) for k, v in entries.items()} for name, entries in state.items()}


@dataclass(frozen=True)
class RestrictState:
    """Coarse state starts at m_c0 = R m_f; the fine state is corrected with `damping`."""

    convention: str
    damping: float

    def start(self, fine, coarse, transfers: Transfers) -> NamedState:
        """Load R m_f into the coarse optimizer (`fine`, `coarse`: Levels); return m_c0."""
        layout = fine.model.param_layout()
        fine_state = named_state(fine.optimizer, fine.model)
        m_c0 = restrict_state(fine_state, layout, transfers, self.convention)
        load_named_state(coarse.optimizer, coarse.model, clone_state(m_c0))
        return m_c0

    def correct(self, fine, coarse, m_c0: NamedState, transfers: Transfers) -> None:
        """m_f += damping * P(m_c - m_c0)."""
        correct_state(
            named_state(fine.optimizer, fine.model),
            named_state(coarse.optimizer, coarse.model),
            m_c0,
            fine.model.param_layout(),
            transfers,
            self.convention,
            self.damping,
        )


class ResetState:
    """Coarse state starts empty every cycle; the fine state is left alone."""

    def start(self, fine, coarse, transfers: Transfers) -> NamedState:
        coarse.optimizer.state.clear()
        return {}

    def correct(self, fine, coarse, m_c0: NamedState, transfers: Transfers) -> None:
        return None


def state_policy(mode: str, convention: str, damping: float) -> RestrictState | ResetState:
    """The policy for `state_transfer=mode`: "restrict" or "reset"."""
    if mode == "restrict":
        return RestrictState(convention, damping)
    if mode == "reset":
        return ResetState()
    raise ValueError(f"unknown state_transfer {mode!r}; choose one of {list(STATE_TRANSFER)}")
