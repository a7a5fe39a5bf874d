"""FAS tau correction (DESIGN.md §4.3).

At a transition l -> l+1 with restricted point x_c0 = R x and tau batches B:

    v_{l+1} = s * ( grad loss_{l+1}(x_c0; B) - P^T grad F_l(x; B) )

so that with s = 1 the coarse objective's gradient at x_c0 equals the restricted fine
gradient exactly (first-order coherence). Modes: "none" (v = 0), "cycle" (one v per cycle on
the pre-smoothing batches) and "minibatch" (v recomputed on every coarse minibatch, from the
fine point frozen during the coarse phase and a frozen copy of the coarse model at x_c0).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from .groups import WidthModel
from .objective import Level, LossFn, Tensors, loss_gradient, no_tau, objective_gradient
from .transfer import Transfers, restrict_gradients
from .work import WorkMeter


def tau_vector(
    fine: Level,
    coarse_at_start: WidthModel,
    coarse_work: float,
    batches: Sequence[tuple],
    transfers: Transfers,
    convention: str,
    scale: float,
    loss_fn: LossFn,
    meter: WorkMeter,
) -> Tensors:
    """v = s (grad loss_c(x_c0; B) - P^T grad F_f(x; B)); `coarse_at_start` holds x_c0."""
    with meter.phase("tau_gradient"):
        fine_grad = objective_gradient(fine, batches, loss_fn, meter)
        coarse_grad = loss_gradient(coarse_at_start, batches, loss_fn)
        meter.charge(coarse_work * len(batches))
    restricted = restrict_gradients(fine_grad, fine.model.param_layout(), transfers, convention)
    return {name: scale * (coarse_grad[name] - restricted[name]) for name in coarse_grad}


def make_tau(
    mode: str,
    fine: Level,
    coarse: Level,
    batches: Sequence[tuple],
    transfers: Transfers,
    convention: str,
    scale: float,
    loss_fn: LossFn,
    meter: WorkMeter,
) -> Callable[[tuple], Tensors | None]:
    """The coarse level's linear term v_{l+1}(batch) for the given mode.

    Must be called right after restriction, while `coarse.model` holds x_c0.
    """
    if mode == "none":
        return no_tau
    if mode == "cycle":
        v = tau_vector(
            fine, coarse.model, coarse.work, batches, transfers, convention, scale, loss_fn, meter
        )
        return lambda batch: v
    if mode == "minibatch":
        frozen = copy.deepcopy(coarse.model)

        def per_minibatch(batch: tuple) -> Tensors:
            with meter.phase("tau"):
                return tau_vector(
                    fine, frozen, coarse.work, [batch], transfers, convention, scale, loss_fn, meter
                )

        return per_minibatch
    raise ValueError(f"unknown tau mode {mode!r}; choose none, cycle or minibatch")
