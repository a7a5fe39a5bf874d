"""One training loop for single-level and multilevel runs, batches, checkpoints."""

from .batches import BatchStream
from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import (
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    classification_loss,
    evaluate,
    train,
)

__all__ = [
    "BatchStream",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "classification_loss",
    "evaluate",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
