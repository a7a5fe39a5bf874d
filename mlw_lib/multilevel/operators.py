"""Matrix-free transfer operators of one unit group (DESIGN.md §4.1).

A group with n_f fine units merged into n_c coarse units has an assignment A (n_c x n_f; fine
unit i lies in coarse unit assign[i]), positive unit weights w (n_f), d = A w, and the
row-stochastic average Q = diag(1/d) A diag(w). Four actions along the unit axis, all with
gathers and `index_add_` (never a dense n x n matrix):

    sum      A   (n_f, m) -> (n_c, m)     average  Q   (n_f, m) -> (n_c, m)
    copy     A^T (n_c, m) -> (n_f, m)     split    Q^T (n_c, m) -> (n_f, m)

Both A Q^T = I and Q A^T = I, so restrict o prolong = identity for either pairing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class GroupTransfer:
    """Assignment and unit weights of one coarsened group. `assign`: (n_f,) int64."""

    assign: torch.Tensor
    weights: torch.Tensor
    n_coarse: int
    coarse_weight: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.assign.shape != self.weights.shape or self.assign.dim() != 1:
            raise ValueError("assign and weights must both have shape (n_fine,)")
        if bool((self.weights <= 0).any()):
            raise ValueError("unit weights must be positive")
        self.coarse_weight = torch.zeros(
            self.n_coarse, dtype=self.weights.dtype, device=self.weights.device
        ).index_add_(0, self.assign, self.weights)

    @property
    def n_fine(self) -> int:
        return int(self.assign.numel())

    def sum(self, fine: torch.Tensor) -> torch.Tensor:
        """A x: add the rows of each coarse unit. (n_f, m) -> (n_c, m)."""
        out = fine.new_zeros((self.n_coarse, *fine.shape[1:]))
        return out.index_add_(0, self.assign, fine)

    def average(self, fine: torch.Tensor) -> torch.Tensor:
        """Q x: w-weighted average of the rows of each coarse unit. (n_f, m) -> (n_c, m)."""
        w = self.weights.to(fine.dtype).unsqueeze(1)
        return self.sum(fine * w) / self.coarse_weight.to(fine.dtype).unsqueeze(1)

    def copy(self, coarse: torch.Tensor) -> torch.Tensor:
        """A^T y: every fine unit gets its coarse unit's row. (n_c, m) -> (n_f, m)."""
        return coarse.index_select(0, self.assign)

    def split(self, coarse: torch.Tensor) -> torch.Tensor:
        """Q^T y: fine unit i gets w_i / d_c of its coarse row. (n_c, m) -> (n_f, m)."""
        share = self.weights / self.coarse_weight.index_select(0, self.assign)
        return coarse.index_select(0, self.assign) * share.to(coarse.dtype).unsqueeze(1)

    def to(self, device: torch.device | str) -> GroupTransfer:
        return GroupTransfer(self.assign.to(device), self.weights.to(device), self.n_coarse)

    def state_dict(self) -> dict:
        return {
            "assign": self.assign.cpu(),
            "weights": self.weights.cpu(),
            "n_coarse": self.n_coarse,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> GroupTransfer:
        return cls(state["assign"], state["weights"], int(state["n_coarse"]))
