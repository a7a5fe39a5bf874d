"""One training loop for single-level and multilevel runs, batches, checkpoints."""

from .batches import BatchStream
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluation import (
    LOSSES,
    calibration_batches,
    classification_loss,
    evaluate,
    evaluate_levels,
    matched_hierarchy,
    regression_errors,
    regression_loss,
    restricted_hierarchy,
    restricted_models,
    test_metrics,
)
from .trainer import NonFiniteLossError, TrainConfig, TrainResult, train

__all__ = [
    "LOSSES",
    "BatchStream",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "calibration_batches",
    "classification_loss",
    "evaluate",
    "evaluate_levels",
    "load_checkpoint",
    "matched_hierarchy",
    "restricted_hierarchy",
    "regression_errors",
    "regression_loss",
    "restricted_models",
    "save_checkpoint",
    "test_metrics",
    "train",
]
