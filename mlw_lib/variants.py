"""Named multilevel variants for "does multilevel pay?" (notebook 06): each a set of
`MultilevelConfig` fields over the notebook's base config. Larger coarse learning rates are
the `lr` list (one per level), not part of a variant.

    fas                  the V-cycle as DESIGN.md §4.5 defines it (tau once per cycle)
    no_tau               the V-cycle without the tau correction (tau="none")
    near_free_tau        tau from the last pre-smoothing step's gradient (tau="last_step")
    safeguarded          each correction cut to 1, 1/2, 1/4 or 0 by the held-out loss
    coarse_heavy         W-cycles, twice the minibatches and two passes on the coarsest level
    aggressive           coarse units of up to four units (ratio 0.25), coarse batches twice
                         as large
    coarse_first         half the budget on the coarse levels first, then plain fine training
    coarse_first_cycles  the same, then V-cycles
    coarse_first_blend   coarse first, prolonged halfway: x <- x/2 + (P x_c)/2
    adaptive             coarse first for up to 70% of the budget, each level handing over when
                         its held-out loss rate falls below 30% of its first rate
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .multilevel import MultilevelConfig

VARIANTS: dict[str, dict[str, Any]] = {
    "fas": {},
    "no_tau": {"tau": "none"},
    "near_free_tau": {"tau": "last_step"},
    "safeguarded": {"correction_search": True},
    "coarse_heavy": {"cycle": "W", "coarse_passes": 2, "coarse_batches_per_phase": 8},
    "aggressive": {"ratio": 0.25, "coarse_batch_multiple": 2},
    "coarse_first": {"coarse_first": 0.5, "coarse_first_then": "fine"},
    "coarse_first_cycles": {"coarse_first": 0.5},
    "coarse_first_blend": {"coarse_first": 0.5, "coarse_first_then": "fine", "prolong_blend": 0.5},
    "adaptive": {"coarse_first": 0.7, "coarse_first_then": "fine", "switch_threshold": 0.3},
}


def variant_config(name: str, base: MultilevelConfig) -> MultilevelConfig:
    """`base` with the fields of variant `name` set (validated again)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
    return replace(base, **VARIANTS[name])


def variant_methods(names: list[str], base: MultilevelConfig) -> dict[str, MultilevelConfig]:
    """{'<name>, <L> levels': config} for every variant named (a name may appear once)."""
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"variants must be a non-empty list of distinct names, got {names!r}")
    return {variant_name(name, base.levels): variant_config(name, base) for name in names}


def variant_name(name: str, levels: int) -> str:
    """The method name of variant `name` with `levels` levels, e.g. 'fas, 2 levels'."""
    return f"{name}, {levels} levels"


def describe(fields: Mapping[str, Any]) -> str:
    """'tau=last_step, ratio=0.25' (or 'as defined' for no fields)."""
    return ", ".join(f"{k}={v}" for k, v in fields.items()) or "as defined"
