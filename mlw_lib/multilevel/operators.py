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
    coarse_weight: torch.Tensor = field(init=False, repr=False)  # d = A w, (n_c,)
    share: torch.Tensor = field(init=False, repr=False)  # w_i / d_assign[i], (n_f,)

    def __post_init__(self) -> None:
        if self.assign.shape != self.weights.shape or self.assign.dim() != 1:
            raise ValueError("assign and weights must both have shape (n_fine,)")
        if bool((self.weights <= 0).any()):
            raise ValueError("unit weights must be positive")
        self.coarse_weight = torch.zeros(
            self.n_coarse, dtype=self.weights.dtype, device=self.weights.device
        ).index_add_(0, self.assign, self.weights)
        self.share = self.weights / self.coarse_weight.index_select(0, self.assign)

    @property
    def n_fine(self) -> int:
        return int(self.assign.numel())

    @staticmethod
    def _along(values: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
        """Per-unit `values` (n,) shaped to broadcast along `dim` of `like`."""
        shape = [1] * like.dim()
        shape[dim] = values.numel()
        return values.to(like.dtype).reshape(shape)

    def sum(self, fine: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """A x: add the fine units of each coarse unit along `dim` (n_f -> n_c)."""
        shape = list(fine.shape)
        shape[dim] = self.n_coarse
        return fine.new_zeros(shape).index_add_(dim, self.assign, fine)

    def average(self, fine: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Q x: w-weighted average of the fine units of each coarse unit (n_f -> n_c).

        Q = diag(1/d) A diag(w) = A diag(share), so one scaling and one sum."""
        return self.sum(fine * self._along(self.share, fine, dim), dim)

    def copy(self, coarse: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """A^T y: every fine unit gets its coarse unit's entries (n_c -> n_f)."""
        return coarse.index_select(dim, self.assign)

    def split(self, coarse: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Q^T y: fine unit i gets w_i / d_c of its coarse unit's entries (n_c -> n_f)."""
        fine = self.copy(coarse, dim)  # a new tensor: scaled in place
        return fine.mul_(self._along(self.share, fine, dim))

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
