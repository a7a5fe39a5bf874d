"""Run a module in train or eval mode for a while, then give it back its own mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def in_mode(module: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """`with in_mode(model):` runs the body in eval mode (`training=True`: train mode) and
    restores the mode the module had, also when the body raises."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)
