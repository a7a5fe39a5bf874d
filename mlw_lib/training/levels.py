"""The coarse networks of a trained hierarchy as classifiers in their own right.

Level l + 1's network is x_c0 = R x_l: the trained fine net restricted down the hierarchy's
operators (the ones of the last matching), with BatchNorm statistics recalibrated on training
batches in train mode (restricted weights alone do not come with running statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ..models.registry import parameter_count
from ..multilevel import WidthModel, build_model, restrict_params
from ..multilevel.batchnorm import recalibrate
from ..multilevel.hierarchy import assign_params, detached_params
from .trainer import TrainResult, classification_loss, evaluate


def restricted_hierarchy(result: TrainResult, batches: Sequence[tuple]) -> list[WidthModel]:
    """[fine, R fine, R R fine, ...]: one network per level of `result`'s hierarchy, in eval
    mode, BN statistics recalibrated on `batches` ((x, y) minibatches of training data)."""
    convention = result.cycle.config.convention
    models = [result.model]
    for transition in result.cycle.transitions:
        if transition is None:
            break
        fine = models[-1]
        coarse = build_model(fine, transition.coarse_sizes())
        restricted = restrict_params(
            detached_params(fine), fine.param_layout(), transition.transfers, convention
        )
        assign_params(coarse, restricted)
        recalibrate(coarse, batches, classification_loss)
        models.append(coarse.eval())
    return models


def evaluate_levels(
    models: Sequence[WidthModel],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Test loss and accuracy of every level's network (`models[l]` is level l, e.g. from
    `restricted_hierarchy`), with its widths and parameter count: one row per level."""
    rows = []
    for level, model in enumerate(models):
        loss, accuracy = evaluate(model, x_test, y_test, batch_size)
        rows.append(
            {
                "level": level,
                "widths": model.group_sizes(),
                "parameters": parameter_count(model),
                "test_loss": loss,
                "test_accuracy": accuracy,
            }
        )
    return pd.DataFrame(rows)
