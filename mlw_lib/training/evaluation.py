"""Evaluating networks: the loss, test metrics, and the coarse networks of a hierarchy as
classifiers in their own right.

Level l + 1's network is x_c0 = R x_l: the trained fine net restricted down the hierarchy's
operators (the ones of the last matching), with BatchNorm statistics recalibrated on training
batches in train mode (restricted weights alone do not come with running statistics). The
same restriction gives the product of a "squeeze" run (`MultilevelConfig.model_level` > 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn

from .. import distributed
from ..allocator import keep_freed_memory
from ..models.registry import parameter_count
from ..modes import in_mode
from ..multilevel import MultilevelConfig, WidthModel, build_model, match_model, restrict_params
from ..multilevel.batchnorm import recalibrate
from ..multilevel.hierarchy import Transition, assign_params, detached_params

if TYPE_CHECKING:
    from .trainer import TrainResult

CALIBRATION_BATCHES = 20  # training minibatches that re-estimate a restricted net's BN statistics


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of `model(x)` (N, C) against labels y (N,)."""
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def regression_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean squared error of `model(x)` (N, outputs) against targets y (N, outputs)."""
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


LOSSES = {"cross_entropy": classification_loss, "mse": regression_loss}
PERCENTILES = {"linf_p99": 0.99, "linf_p999": 0.999}  # of the per-sample max |error|


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on (x, y), in eval mode (under torchrun
    each rank evaluates its share of (x, y) and every rank gets the totals)."""
    keep_freed_memory()
    count = len(x)
    distributed.average_buffers(model)
    x, y = distributed.shard((x, y))
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    with in_mode(model, training=False):
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            loss += nn.functional.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(dim=1) == target).sum()
    loss, correct = distributed.total([float(loss), float(correct)])
    return loss / count, correct / count


@torch.no_grad()
def regression_errors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    y_scale: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Errors of `model` on (x, y (N, outputs)) in eval mode: "loss", the MSE of the stored
    (normalised) targets; in original units (y * std + mean with `y_scale` = (mean, std)):
    "mse", "rel_l2" (mean over samples of |error|_2 / |y|_2), "linf" (the largest |error| of
    any output of any sample) and its percentiles over samples (`PERCENTILES`). Under
    torchrun each rank evaluates its share and every rank gets the totals."""
    keep_freed_memory()
    count, outputs = len(x), y[0].numel()
    distributed.average_buffers(model)
    x, y = distributed.shard((x, y))
    mean, std = (0.0, 1.0) if y_scale is None else (t.to(y.device) for t in y_scale)
    squares, original_squares, relative, worst = 0.0, 0.0, 0.0, []
    with in_mode(model, training=False):
        for start in range(0, len(x), batch_size):
            target = y[start : start + batch_size]
            error = model(x[start : start + batch_size]) - target
            squares += float(error.square().sum())
            error, truth = (error * std).flatten(1), (target * std + mean).flatten(1)
            original_squares += float(error.square().sum())
            relative += float((error.norm(dim=1) / truth.norm(dim=1)).sum())
            worst.append(error.abs().amax(dim=1).cpu())
    squares, original_squares, relative = distributed.total([squares, original_squares, relative])
    worst = torch.cat(distributed.gather(torch.cat(worst)))
    metrics = {
        "loss": squares / (count * outputs),
        "mse": original_squares / (count * outputs),
        "rel_l2": relative / count,
        "linf": float(worst.max()),
    }
    return metrics | {k: float(torch.quantile(worst.double(), q)) for k, q in PERCENTILES.items()}


def test_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    loss: str = "cross_entropy",
    y_scale: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """{"loss", "accuracy"} (`loss` "cross_entropy") or `regression_errors` ("mse")."""
    if loss == "mse":
        return regression_errors(model, x, y, batch_size, y_scale)
    test_loss, accuracy = evaluate(model, x, y, batch_size)
    return {"loss": test_loss, "accuracy": accuracy}


def forward_only(model: nn.Module, batch: tuple) -> torch.Tensor:
    """model(x) of a batch (x, y): what re-estimating BN statistics needs."""
    return model(batch[0])


def calibration_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, count: int = CALIBRATION_BATCHES
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` full minibatches of (x, y) (fewer if the data is short; at least
    one): fixed batches, so evaluations draw no random numbers and resume exactly."""
    full = max(1, min(count, len(x) // batch_size))
    return [
        (x[i * batch_size : (i + 1) * batch_size], y[i * batch_size : (i + 1) * batch_size])
        for i in range(full)
    ]


@torch.no_grad()
def restricted_models(
    fine: WidthModel,
    transitions: Sequence[Transition | None],
    convention: str,
    batches: Sequence[tuple],
    depth: int | None = None,
) -> list[WidthModel]:
    """[fine, R fine, R R fine, ...] down `transitions` (all of them, or the first `depth`),
    each coarse net in eval mode with BN statistics recalibrated on `batches`."""
    depth = len(transitions) if depth is None else depth
    models = [fine]
    for level, transition in enumerate(transitions[:depth]):
        if transition is None:
            raise ValueError(
                f"the hierarchy has no operators below level {level} yet (they are built by "
                "the first cycle that reaches it); run a cycle first"
            )
        above = models[-1]
        coarse = build_model(above, transition.coarse_sizes())
        restricted = restrict_params(
            detached_params(above), above.param_layout(), transition.transfers, convention
        )
        assign_params(coarse, restricted)
        devices = [p.device for p in coarse.parameters() if p.is_cuda][:1]
        with torch.random.fork_rng(devices=devices):  # evaluating never moves training's RNG
            recalibrate(coarse, batches, forward_only)
        models.append(coarse.eval())
    return models


def restricted_hierarchy(result: TrainResult, batches: Sequence[tuple]) -> list[WidthModel]:
    """[fine, R fine, R R fine, ...]: one network per level of `result`'s hierarchy, in eval
    mode, BN statistics recalibrated on `batches` ((x, y) minibatches of training data)."""
    transitions = result.cycle.transitions
    depth = next((i for i, t in enumerate(transitions) if t is None), len(transitions))
    return restricted_models(
        result.model, transitions, result.cycle.config.convention, batches, depth
    )


def matched_hierarchy(
    model: WidthModel, config: MultilevelConfig, batches: Sequence[tuple], seed: int = 0
) -> tuple[list[WidthModel], list[Transition]]:
    """The trained `model` matched afresh from its current weights and restricted, level by
    level, `config.levels` deep: ([fine, R fine, R R fine, ...], the transitions), each net
    in eval mode with BN statistics recalibrated on `batches`."""
    nets, transitions = [model.eval()], []
    for level in range(config.levels - 1):
        transitions.append(match_model(nets[-1], config, level, seed))
        nets.append(restricted_models(nets[-1], transitions[-1:], config.convention, batches)[1])
    return nets, transitions


def evaluate_levels(
    models: Sequence[WidthModel],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    batch_size: int = 4096,
    loss: str = "cross_entropy",
    y_scale: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Test metrics (`test_metrics`: loss and accuracy, or the regression errors with `loss`
    "mse") of every level's network (`models[l]` is level l, e.g. from
    `restricted_hierarchy`), with its widths and parameter count: one row per level."""
    rows = []
    for level, model in enumerate(models):
        metrics = test_metrics(model, x_test, y_test, batch_size, loss, y_scale)
        rows.append(
            {"level": level, "widths": model.group_sizes(), "parameters": parameter_count(model)}
            | {f"test_{name}": value for name, value in metrics.items()}
        )
    return pd.DataFrame(rows)
