"""Minibatches drawn from in-memory tensors by a seeded permutation per epoch."""

from __future__ import annotations

import torch


class BatchStream:
    """Endless minibatches of (x[idx], y[idx]); a new seeded permutation every data epoch.

    x: (N, ...) and y: (N,) live on the training device; the last partial batch is dropped.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        if batch_size < 1 or batch_size > len(x):
            raise ValueError(
                f"batch_size must lie in [1, {len(x)}] (training set size), got {batch_size}"
            )
        self.x, self.y, self.batch_size = x, y, batch_size
        self.batches_per_epoch = len(x) // batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0
        self._perm = torch.randperm(len(x), generator=self.generator)

    @property
    def data_epochs(self) -> float:
        """Passes over the training set so far."""
        return self.batches_drawn / self.batches_per_epoch

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        position = self.batches_drawn % self.batches_per_epoch
        if position == 0 and self.batches_drawn > 0:
            self._perm = torch.randperm(len(self.x), generator=self.generator)
        idx = self._perm[position * self.batch_size : (position + 1) * self.batch_size]
        idx = idx.to(self.x.device)
        self.batches_drawn += 1
        return self.x.index_select(0, idx), self.y.index_select(0, idx)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "batches_drawn": self.batches_drawn,
            "perm": self._perm.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])
        self._perm = state["perm"].clone()
