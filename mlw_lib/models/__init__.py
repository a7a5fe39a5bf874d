"""Models that declare their unit groups."""

from .mlp import MLP

__all__ = ["MLP"]
