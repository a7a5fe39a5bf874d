"""Restriction and prolongation of whole parameter sets, written once over axis bindings.

For a weight W with output group g_out and input group g_in (DESIGN.md §4.1):

    restrict   W_c  = Rout(g_out) . W   . Rin(g_in)
    prolong    dW_f = Pout(g_out) . dW_c . Pin(g_in)
    gradient   G_c  = Pout^T . G_f . Pin^T          (adjoint of prolongation)

Each axis binding resolves, under a convention, to one *kind*:

    kind       restrict   prolong    adjoint of prolong
    "sum"      A (sum)    Q^T split  Q (average)
    "average"  Q          A^T copy   A (sum)

    convention   Role.OUT    Role.IN     Role.IN_NORMALIZED   Role.NORM
    sum_avg      sum         average     sum                  average
    avg_sum      average     sum         sum                  average

(IN_NORMALIZED: columns reading units after BatchNorm, which undoes the OUT scaling, so a
merged unit carries each member's value and the columns add up in both conventions.)

Axes without a binding use the identity; parameters without bindings pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .groups import AxisBinding, Layout, Role
from .operators import GroupTransfer

CONVENTIONS = ("sum_avg", "avg_sum")

_KIND = {
    "sum_avg": {
        Role.OUT: "sum",
        Role.IN: "average",
        Role.IN_NORMALIZED: "sum",
        Role.NORM: "average",
    },
    "avg_sum": {
        Role.OUT: "average",
        Role.IN: "sum",
        Role.IN_NORMALIZED: "sum",
        Role.NORM: "average",
    },
}
_ACTION = {
    "restrict": {"sum": GroupTransfer.sum, "average": GroupTransfer.average},
    "prolong": {"sum": GroupTransfer.split, "average": GroupTransfer.copy},
    "gradient": {"sum": GroupTransfer.average, "average": GroupTransfer.sum},
}

Transfers = Mapping[str, GroupTransfer]
Tensors = dict[str, torch.Tensor]


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {CONVENTIONS}")


def _along_axis(
    tensor: torch.Tensor, binding: AxisBinding, action: Callable, transfer: GroupTransfer
) -> torch.Tensor:
    """Apply a unit action along `binding.axis` (each unit spans `unit_size` entries)."""
    if binding.unit_size == 1:
        return action(transfer, tensor, binding.axis)
    units = tensor.unflatten(binding.axis, (-1, binding.unit_size))
    return action(transfer, units, binding.axis).flatten(binding.axis, binding.axis + 1)


def transform_tensor(
    tensor: torch.Tensor,
    bindings: tuple[AxisBinding, ...],
    transfers: Transfers,
    convention: str,
    which: str,
) -> torch.Tensor:
    """Apply `which` in {"restrict", "prolong", "gradient"} along every bound axis."""
    out = tensor
    for binding in bindings:
        transfer = transfers.get(binding.group)
        if transfer is None:  # group not coarsened at this transition: identity
            continue
        kind = _KIND[convention][binding.role]
        out = _along_axis(out, binding, _ACTION[which][kind], transfer)
    return out


def transform(
    tensors: Mapping[str, torch.Tensor],
    layout: Layout,
    transfers: Transfers,
    convention: str,
    which: str,
) -> Tensors:
    """Apply `which` to every tensor of a name -> tensor mapping (unbound names: identity)."""
    check_convention(convention)
    return {
        name: transform_tensor(t, layout.get(name, ()), transfers, convention, which)
        for name, t in tensors.items()
    }


def restrict_params(
    params: Mapping[str, torch.Tensor], layout: Layout, transfers: Transfers, convention: str
) -> Tensors:
    """x_c = R x_f for every parameter (fine shapes -> coarse shapes)."""
    return transform(params, layout, transfers, convention, "restrict")


def prolong(
    tensors: Mapping[str, torch.Tensor], layout: Layout, transfers: Transfers, convention: str
) -> Tensors:
    """P y for every tensor (coarse shapes -> fine shapes); used on corrections x_c - x_c0."""
    return transform(tensors, layout, transfers, convention, "prolong")


def restrict_gradients(
    grads: Mapping[str, torch.Tensor], layout: Layout, transfers: Transfers, convention: str
) -> Tensors:
    """P^T g for every gradient (fine shapes -> coarse shapes)."""
    return transform(grads, layout, transfers, convention, "gradient")
