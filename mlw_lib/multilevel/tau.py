"""FAS tau correction (DESIGN.md §4.3), as policy objects chosen once per run.

At a transition l -> l+1 with restricted point x_c0 = R x and tau batches B:

    v_{l+1} = s * ( grad loss_{l+1}(x_c0; B) - P^T grad F_l(x; B) )

so that with s = 1 the coarse objective's gradient at x_c0 equals the restricted fine
gradient exactly (first-order coherence). Policies: `NoTau` (v = 0; also what s = 0 selects:
no passes, no charge), `CycleTau` (one v per cycle on the pre-smoothing batches),
`MinibatchTau` (v recomputed on every coarse minibatch, from the fine point frozen during the
coarse phase and a frozen copy of the coarse model at x_c0) and `LastStepTau` (near-free: the
fine gradient that the last pre-smoothing step computed anyway, and one coarse gradient at
x_c0 on that step's minibatch b). Tau's gradient passes leave every buffer (BatchNorm running
statistics) of both nets as it was.
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

TAU_MODES = ("none", "cycle", "minibatch", "last_step")
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
        fine_grad: Tensors | None = None,
    ) -> Tensors:
        """v on `batches`; `coarse_at_start` holds x_c0; `fine_grad` is grad F_f(x; B) when
        it is known already (else computed). Charged as tau_gradient work."""
        with meter.phase("tau_gradient"):
            if fine_grad is None:
                with preserved_buffers(fine.model):
                    fine_grad = objective_gradient(fine, batches, self.loss_fn, meter)
            with preserved_buffers(coarse_at_start):
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

    needs_last_step = False

    def linear_term(self, fine, coarse, batches, transfers, meter) -> LinearTerm:
        return no_tau


@dataclass(frozen=True)
class CycleTau:
    """One v per cycle, on the pre-smoothing batches."""

    vector: TauVector
    needs_last_step = False

    def linear_term(self, fine, coarse, batches, transfers, meter) -> LinearTerm:
        """v for `coarse` (a Level holding x_c0: call right after restriction)."""
        v = self.vector(fine, coarse.model, coarse.work, batches, transfers, meter)
        return lambda batch: v


@dataclass(frozen=True)
class MinibatchTau:
    """v recomputed on every coarse minibatch at the frozen fine point and x_c0."""

    vector: TauVector
    needs_last_step = False

    def linear_term(self, fine, coarse, batches, transfers, meter) -> LinearTerm:
        """v for `coarse` (a Level holding x_c0: call right after restriction)."""
        frozen = copy.deepcopy(coarse.model)

        def per_minibatch(batch: tuple) -> Tensors:
            with meter.phase("tau"):
                return self.vector(fine, frozen, coarse.work, [batch], transfers, meter)

        return per_minibatch


@dataclass(frozen=True)
class LastStepTau:
    """Near-free v = s (grad loss_c(x_c0; b) - P^T g_f): g_f is the gradient of F_f that the
    last pre-smoothing step took (on minibatch b, at the point just before that step; kept in
    `fine.last_step`), so v costs one coarse pass instead of k fine and k coarse ones. As the
    learning rate goes to 0 it is `CycleTau` on b."""

    vector: TauVector
    needs_last_step = True

    def linear_term(self, fine, coarse, batches, transfers, meter) -> LinearTerm:
        """v for `coarse` (a Level holding x_c0: call right after restriction)."""
        if fine.last_step is None:
            raise RuntimeError("tau='last_step' needs a pre-smoothing step first (nu_pre >= 1)")
        batch, fine_grad = fine.last_step
        v = self.vector(fine, coarse.model, coarse.work, [batch], transfers, meter, fine_grad)
        return lambda batch: v


def tau_policy(
    mode: str, scale: float, convention: str, loss_fn: LossFn
) -> NoTau | CycleTau | MinibatchTau | LastStepTau:
    """The policy for `mode`; a zero scale is `NoTau` (no passes, no charge, no RNG)."""
    if mode not in TAU_MODES:
        raise ValueError(f"unknown tau mode {mode!r}; choose one of {list(TAU_MODES)}")
    if mode == "none" or scale == 0:
        return NoTau()
    vector = TauVector(float(scale), convention, loss_fn)
    policies = {"cycle": CycleTau, "minibatch": MinibatchTau, "last_step": LastStepTau}
    return policies[mode](vector)
