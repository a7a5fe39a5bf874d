"""FAS tau correction (DESIGN.md §4.3), as policy objects chosen once per run.

At a transition l -> l+1 with restricted point x_c0 = R x and tau batches B:

    v_{l+1} = s * ( grad loss_{l+1}(x_c0; B) - P^T grad F_l(x; B) )

so that with s = 1 the coarse objective's gradient at x_c0 equals the restricted fine
gradient exactly (first-order coherence). Policies: `NoTau` (v = 0; also what s = 0 selects:
no passes, no charge), `CycleTau` (one v per cycle on the pre-smoothing batches) and
`MinibatchTau` (v recomputed on every coarse minibatch, from the fine point frozen during the
coarse phase and a frozen copy of the coarse model at x_c0). Tau's gradient passes leave
every buffer (BatchNorm running statistics) of both nets as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .batchnorm import preserved_buffers
from .groups import WidthModel
from .objective import Level, LossFn, Tensors, loss_gradient, no_tau, objective_gradient
from .transfer import Transfers, restrict_gradients
from .work import WorkMeter

TAU_MODES = ("none", "cycle", "minibatch")
LinearTerm = Callable[[tuple], Tensors | None]


@dataclass(frozen=True)
class TauVector:
    """Computes v = s (grad loss_c(x_c0; B) - P^T grad F_f(x; B)) for one transition."""

    scale: float
    convention: str
    loss_fn: LossFn

    def __call__(
        self,
        fine: Level,
        coarse_at_start: WidthModel,
        coarse_work: float,
        batches: Sequence[tuple],
        transfers: Transfers,
        meter: WorkMeter,
    ) -> Tensors:
        """v on `batches`; `coarse_at_start` holds x_c0. Charged as tau_gradient work."""
        with meter.phase("tau_gradient"):
            with preserved_buffers(fine.model), preserved_buffers(coarse_at_start):
                fine_grad = objective_gradient(fine, batches, self.loss_fn, meter)
                coarse_grad = loss_gradient(coarse_at_start, batches, self.loss_fn)
            meter.charge(coarse_work * len(batches))
        layout = fine.model.param_layout()
        restricted = restrict_gradients(fine_grad, layout, transfers, self.convention)
        return {name: self.scale * (coarse_grad[name] - restricted[name]) for name in coarse_grad}


class NoTau:
    """v = 0: the coarse level minimises its plain loss.

    Every policy's `linear_term(fine, coarse, batches, transfers, meter)` takes the fine and
    coarse Levels, the tau batches B, the group transfers and the WorkMeter.
    """

    def linear_term(self, fine, coarse, batches, transfers, meter) -> LinearTerm:
        return no_tau


@dataclass(frozen=True)
class CycleTau:
    """One v per cycle, on the pre-smoothing batches."""

    vector: TauVector

    def linear_term(self, fine, coarse, batches, transfers, meter) -> LinearTerm:
        """v for `coarse` (a Level holding x_c0: call right after restriction)."""
        v = self.vector(fine, coarse.model, coarse.work, batches, transfers, meter)
        return lambda batch: v


@dataclass(frozen=True)
class MinibatchTau:
    """v recomputed on every coarse minibatch at the frozen fine point and x_c0."""

    vector: TauVector

    def linear_term(self, fine, coarse, batches, transfers, meter) -> LinearTerm:
        """v for `coarse` (a Level holding x_c0: call right after restriction)."""
        frozen = copy.deepcopy(coarse.model)

        def per_minibatch(batch: tuple) -> Tensors:
            with meter.phase("tau"):
                return self.vector(fine, frozen, coarse.work, [batch], transfers, meter)

        return per_minibatch


def tau_policy(
    mode: str, scale: float, convention: str, loss_fn: LossFn
) -> NoTau | CycleTau | MinibatchTau:
    """The policy for `mode`; a zero scale is `NoTau` (no passes, no charge, no RNG)."""
    if mode not in TAU_MODES:
        raise ValueError(f"unknown tau mode {mode!r}; choose one of {list(TAU_MODES)}")
    if mode == "none" or scale == 0:
        return NoTau()
    vector = TauVector(float(scale), convention, loss_fn)
    return CycleTau(vector) if mode == "cycle" else MinibatchTau(vector)
