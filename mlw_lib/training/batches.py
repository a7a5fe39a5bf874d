"""Minibatches drawn from in-memory tensors by a seeded permutation per epoch."""

from __future__ import annotations

from collections.abc import Callable

import torch

TRANSFORM_SEED_OFFSET = 7919  # the transform's generator is seeded apart from the order's
BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class BatchStream:
    """Endless minibatches of (x[idx], y[idx]); a new seeded permutation every data epoch.

    x: (N, ...) and y: (N,) live on the training device; the last partial batch is dropped.
    `transform(x_batch, generator)`, e.g. `Augment()`, is applied to every batch with its own
    seeded generator: augmented runs are reproducible and resumable, and see the same batch
    order as runs without augmentation.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        transform: BatchTransform | None = None,
    ) -> None:
        if batch_size < 1 or batch_size > len(x):
            raise ValueError(
                f"batch_size must lie in [1, {len(x)}] (training set size), got {batch_size}"
            )
        self.x, self.y, self.batch_size, self.transform = x, y, batch_size, transform
        self.batches_per_epoch = len(x) // batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0
        self.transform_generator = torch.Generator().manual_seed(seed + TRANSFORM_SEED_OFFSET)
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
        x = self.x.index_select(0, idx)
        if self.transform is not None:
            x = self.transform(x, self.transform_generator)
        return x, self.y.index_select(0, idx)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "transform_generator": self.transform_generator.get_state(),
            "batches_drawn": self.batches_drawn,
            "perm": self._perm.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if "transform_generator" in state:  # absent in checkpoints of older versions
            self.transform_generator.set_state(state["transform_generator"])
        self.batches_drawn = int(state["batches_drawn"])
        self._perm = state["perm"].clone()
