"""Multilevel configuration with validation (every knob of DESIGN.md §4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..checks import choice, flag, integer, number
from .batchnorm import BATCHNORM_MODES
from .matching import MATCHING_METHODS, MIN_RATIO, SIMILARITIES
from .state import STATE_TRANSFER
from .tau import TAU_MODES
from .transfer import CONVENTIONS

CYCLES = {"V": 1, "W": 2, "F": 1}  # cycle type -> gamma (F = nested iteration, then V-cycles)
COARSE_BATCHES = ("reuse", "fresh")
COARSE_FIRST_THEN = ("cycles", "fine")
UNIT_WEIGHTS = ("norm", "uniform")


@dataclass
class MultilevelConfig:
    """How the hierarchy is built and cycled. `levels=1` is plain training."""

    levels: int = 1  # number of levels L (1 = single-level training)
    cycle: str = "V"  # "V", "W" (gamma = 2) or "F" (nested iteration, then V-cycles)
    convention: str = "sum_avg"  # transfer convention: "sum_avg" or "avg_sum"
    matching: str = "mutual_best"  # "mutual_best" (deterministic) or "greedy" (seeded HEM)
    similarity: str = "cosine"  # "cosine" or "rbf"
    ratio: float = 0.5  # target n_coarse / n_fine per transition, in [0.25, 1); below 0.5 a
    # second round of pairing merges up to four fine units into one coarse unit
    unit_weights: str = "norm"  # omega_i = ||feature_i|| ("norm") or 1 ("uniform")
    rematch_every: int = 10  # re-match every M cycles; in between reuse A, recompute omega
    batches_per_phase: int = 1  # k minibatches per smoothing phase
    nu_pre: int = 1  # passes over the k minibatches before descending
    nu_post: int = 1  # passes over k fresh minibatches after the correction
    coarse_batches: str = "reuse"  # coarse steps reuse the tau batches, or draw "fresh" ones
    coarse_batches_per_phase: int = 0  # minibatches per phase on coarse levels (0: k); more
    # than k: the tau batches, then fresh ones
    coarse_passes: int = 0  # passes on the coarsest level per visit (0: nu_pre)
    coarse_batch_multiple: int = 1  # a coarse step takes this many minibatches at once (a
    # batch m times larger, charged m times the work of one)
    tau: str = "cycle"  # "none", "cycle" (one per cycle), "minibatch" or "last_step" (near-free)
    tau_scale: float = 1.0  # s; 0 behaves like "none"
    correction_damping: float = 1.0  # alpha in x <- x + alpha P(x_c - x_c0)
    state_damping: float = 1.0  # beta for the optimizer-state correction
    state_transfer: str = "restrict"  # "restrict" optimizer state, or "reset" it each cycle
    batchnorm: str = "recalibrate"  # coarse BN statistics: "recalibrate" (train-mode pass on
    # the tau minibatches), "restrict" (approximate restriction of the fine statistics) or
    # "keep" (untouched: training never reads them; same training, less work)
    recalibrate_fine: bool = False  # also recalibrate the fine net's BN after each correction
    # Record the fine loss on a fixed held-out minibatch just before and after each correction
    # (its gain; needs a validation split, `InMemoryDataset.hold_out`); charged as forward work.
    monitor_corrections: bool = False
    # Safeguard: apply 1, 1/2 or 1/4 of each correction, or none, whichever gives the lowest
    # fine loss on that held-out minibatch (forward passes charged; needs a validation split).
    correction_search: bool = False
    fmg_cycles: int = 1  # F-cycle: cycles at each level before prolonging upward
    fmg_noise: float = 1e-3  # F-cycle: relative std of symmetry-breaking noise after prolonging
    # Coarse-first: this fraction of the work budget trains the coarse levels, coarsest first
    # (an equal share of work each), before the first prolongation; then `coarse_first_then`:
    # "cycles" (the cycle above) or "fine" (plain training of the fine net).
    coarse_first: float = 0.0
    coarse_first_then: str = "cycles"
    # Adaptive level switching within coarse-first: every `switch_every` phases, the loss on
    # the held-out monitor batch; a level hands over to the finer one early when its loss
    # decrease per WU falls below `switch_threshold` times the rate it started with (its
    # unspent share of the budget goes to the finer level); 0: fixed equal shares.
    switch_threshold: float = 0.0
    switch_every: int = 10
    prolong_blend: float = 1.0  # prolonging a coarse solution: x <- (1 - a) x + a (P x_c + noise)
    seed: int = 0  # seed of greedy matching and F-cycle noise
    model_level: int = 0  # the level whose net is the model of interest: 0 = the fine net;
    # m > 0 = "squeeze": the wider levels 0..m-1 help train it, and the product (evaluated,
    # returned) is the fine net restricted m levels down, R^m x (DESIGN.md §4.5)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], *, other: Iterable[str] = (), **overrides: Any
    ) -> MultilevelConfig:
        """This config from a notebook's parameters: every field found in `params`, then
        `overrides` (e.g. `levels=2` where the notebook's `levels` is a list of counts).

        A key of `params` that is a field of neither MultilevelConfig nor TrainConfig and not
        named in `other` (model, data and seed parameters) raises ValueError naming it.
        """
        from ..training.trainer import TrainConfig

        return cls(**fields_from_params(cls, params, other, overrides, TrainConfig))

    @property
    def gamma(self) -> int:
        return CYCLES[self.cycle]

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the accepted values."""
        integer("levels", self.levels, 1)
        choice("cycle", self.cycle, tuple(CYCLES))
        choice("convention", self.convention, CONVENTIONS)
        choice("matching", self.matching, MATCHING_METHODS)
        choice("similarity", self.similarity, SIMILARITIES)
        choice("unit_weights", self.unit_weights, UNIT_WEIGHTS)
        choice("coarse_batches", self.coarse_batches, COARSE_BATCHES)
        choice("coarse_first_then", self.coarse_first_then, COARSE_FIRST_THEN)
        number("coarse_first", self.coarse_first, 0.0, 1.0, open_high=True)
        number("prolong_blend", self.prolong_blend, 0.0, 1.0)
        number("switch_threshold", self.switch_threshold, 0.0, 1.0, open_high=True)
        choice("tau", self.tau, TAU_MODES)
        choice("state_transfer", self.state_transfer, STATE_TRANSFER)
        choice("batchnorm", self.batchnorm, BATCHNORM_MODES)
        for name in ("recalibrate_fine", "monitor_corrections", "correction_search"):
            flag(name, getattr(self, name))
        number("ratio", self.ratio, MIN_RATIO, 1.0, open_high=True)
        for name in (
            "rematch_every",
            "batches_per_phase",
            "fmg_cycles",
            "coarse_batch_multiple",
            "switch_every",
        ):
            integer(name, getattr(self, name), 1)
        for name in (
            "model_level",
            "nu_pre",
            "nu_post",
            "seed",
            "coarse_batches_per_phase",
            "coarse_passes",
        ):
            integer(name, getattr(self, name), 0)
        for name in ("tau_scale", "correction_damping", "state_damping", "fmg_noise"):
            number(name, getattr(self, name), 0.0)
        if self.tau == "last_step" and self.nu_pre == 0 and self.levels > 1:
            raise ValueError(
                "tau='last_step' reuses the last pre-smoothing step's gradient, but nu_pre is "
                "0; set nu_pre >= 1 or choose tau='cycle'"
            )
        if self.coarse_first and (self.levels == 1 or self.cycle == "F"):
            raise ValueError(
                f"coarse_first needs coarse levels to train first and is a nested iteration of "
                f"its own; got levels={self.levels}, cycle={self.cycle!r} (use levels >= 2 and "
                "cycle 'V' or 'W')"
            )
        if self.switch_threshold and not self.coarse_first:
            raise ValueError(
                "switch_threshold decides when coarse-first training moves up a level, but "
                "coarse_first is 0; set coarse_first to the largest budget fraction to spend"
            )
        if self.model_level >= self.levels:
            raise ValueError(
                f"model_level must name one of the {self.levels} levels (0 to "
                f"{self.levels - 1}), got {self.model_level}; add levels below the fine net "
                f"(levels={self.model_level + 1} or more) or lower model_level"
            )

    def check_takes_steps(self) -> None:
        """Raise ValueError if a cycle would take no optimizer step (training would never
        change the net). Not part of `validate`: the invariant tests build such cycles."""
        if self.nu_pre == 0 and (self.levels == 1 or self.nu_post == 0):
            why = "a single level only pre-smooths" if self.levels == 1 else "nu_post is 0 too"
            raise ValueError(
                f"nu_pre=0 with levels={self.levels} takes no optimizer step ({why}); "
                "set nu_pre >= 1"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def fields_from_params(
    config_class: type,
    params: Mapping[str, Any],
    other: Iterable[str],
    overrides: Mapping[str, Any],
    sibling: type,
) -> dict[str, Any]:
    """Keyword arguments of the dataclass `config_class`: its fields found in `params`, then
    `overrides`. Keys of `params` that are fields of neither `config_class` nor `sibling` (the
    other config a notebook builds from the same parameters) and not in `other` raise
    ValueError naming them, so no parameter is dropped silently."""
    own = {field.name for field in fields(config_class)}
    known = own | {field.name for field in fields(sibling)} | set(other)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"parameter(s) {', '.join(unknown)} are fields of neither {config_class.__name__} "
            f"nor {sibling.__name__}; pass them in other= if the notebook uses them elsewhere"
        )
    return {**{name: value for name, value in params.items() if name in own}, **overrides}
