"""Regression in the one training loop: the `loss` option, error metrics in original units,
the strided conv net, and refusals of targets that do not fit the loss (issue 20).
Generated data from a fixed teacher (learnable)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mlw_lib.experiments import Comparison, verdict
from mlw_lib.models import MLP, StridedConvNet, build_pde_net
from mlw_lib.multilevel import FASCycle, MultilevelConfig
from mlw_lib.training import TrainConfig, evaluate_levels, regression_errors, train


def teacher_data(n: int = 512, seed: int = 0) -> SimpleNamespace:
    """x (n, 12) -> y (n, 3) = tanh(x A) B / 2 + 5: learnable targets, stored normalised
    (y_scale: mean 5, std 2) like a generated PDE dataset."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    a, b = torch.randn(12, 8, generator=g) / 2, torch.randn(8, 3, generator=g)
    y = torch.tanh(x @ a) @ b / 2
    split = n * 3 // 4
    scale = (torch.full((1, 1), 5.0), torch.full((1, 1), 2.0))
    return SimpleNamespace(
        x_train=x[:split], y_train=y[:split], x_test=x[split:], y_test=y[split:], y_scale=scale
    )


@pytest.mark.parametrize("levels", [1, 2])
def test_the_loop_trains_a_regression_net_with_the_mse_loss(levels):
    data = teacher_data()
    torch.manual_seed(0)
    config = TrainConfig(epochs=30, batch_size=32, lr=0.05, loss="mse", eval_every=10)
    history = train(MLP(12, [32, 16], 3), data, config, MultilevelConfig(levels=levels)).history
    assert "test_accuracy" not in history
    first, last = history.iloc[0], history.iloc[-1]
    assert last["test_loss"] < 0.2 * first["test_loss"]
    assert last["test_mse"] == pytest.approx(4 * last["test_loss"])  # std 2 -> original units
    for column in ("test_rel_l2", "test_linf", "test_linf_p99", "test_linf_p999"):
        assert last[column] < first[column]
    assert last["test_linf_p99"] <= last["test_linf_p999"] <= last["test_linf"]


def test_regression_errors_are_measured_in_original_units():
    data = teacher_data(64)
    model = torch.nn.Linear(12, 3)
    x, y = data.x_test, data.y_test
    got = regression_errors(model, x, y, batch_size=5, y_scale=data.y_scale)
    with torch.no_grad():
        stored = (model(x) - y).numpy()
    error, truth = 2 * stored, 2 * y.numpy() + 5
    worst = np.abs(error).max(axis=1)
    expected = {
        "loss": (stored**2).mean(),
        "mse": (error**2).mean(),
        "rel_l2": (np.linalg.norm(error, axis=1) / np.linalg.norm(truth, axis=1)).mean(),
        "linf": worst.max(),
        "linf_p99": np.percentile(worst, 99),
        "linf_p999": np.percentile(worst, 99.9),
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5), name


def test_per_level_errors_of_a_regression_hierarchy():
    data = teacher_data()
    fine, coarse = MLP(12, [16], 3), MLP(12, [8], 3)
    table = evaluate_levels([fine, coarse], data.x_test, data.y_test, 64, "mse", data.y_scale)
    assert list(table["level"]) == [0, 1]
    assert table.loc[1, "test_linf"] == pytest.approx(
        regression_errors(coarse, data.x_test, data.y_test, 64, data.y_scale)["linf"]
    )


def test_the_reference_darcy_cnn_flattens_3600_features_into_its_head():
    net = StridedConvNet([100, 200, 400], [11, 7, 3], [2, 1, 1], [1024, 1024])
    assert net.head.config["in_features"] == 3600
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 1)
    assert net.group_sizes() == {
        "conv0": 100,
        "conv1": 200,
        "conv2": 400,
        "hidden0": 1024,
        "hidden1": 1024,
    }
    coarse = net.resized({"conv0": 50, "conv1": 100, "conv2": 200, "hidden0": 512, "hidden1": 9})
    assert coarse.head.config["in_features"] == 1800
    assert coarse(torch.randn(2, 1, 32, 32)).shape == (2, 1)


def test_a_verdict_on_an_error_calls_the_lower_one_better():
    rows = [
        {"method": method, "seed": seed, "test_linf": value, "wall_time": 1.0, "work_units": 1}
        for method, values in (("single-level", [2.0, 2.1, 1.9]), ("V-cycle", [1.0, 1.1, 0.9]))
        for seed, value in enumerate(values)
    ]
    comparison = Comparison(pd.DataFrame(rows), {}, {})
    lines = verdict(comparison, "test_linf").splitlines()
    assert lines and all(line.endswith("-> better.") for line in lines)


@pytest.mark.parametrize(
    ("what", "loss", "targets", "message"),
    [
        (
            "a regression target (floats (N, 3)) with the classification loss",
            "cross_entropy",
            lambda y: y,
            "float regression targets train with loss='mse'",
        ),
        (
            "class labels with the mse loss",
            "mse",
            lambda y: torch.zeros(len(y), dtype=torch.int64),
            "integer class labels train with loss='cross_entropy'",
        ),
        (
            "regression targets of another shape than the net's output",
            "mse",
            lambda y: y[:, :2],
            r"loss 'mse' needs float targets shaped like the model's output \(N, 3\)",
        ),
        (
            "fewer targets than inputs",
            "mse",
            lambda y: y[:-1],
            "train split: 384 inputs but 383 targets",
        ),
    ],
)
def test_targets_that_do_not_fit_the_loss_are_refused_before_training(
    what, loss, targets, message, refusals, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(FASCycle, "run_cycle", lambda self: pytest.fail("trained"))
    data = teacher_data()
    data.y_train = targets(data.y_train)
    with refusals.error(what, ValueError, message):
        train(MLP(12, [8], 3), data, TrainConfig(epochs=1, batch_size=16, loss=loss))


def test_an_unknown_loss_is_refused(refusals):
    with refusals.error("loss='l1'", ValueError, "unknown loss 'l1'; choose one of"):
        TrainConfig(loss="l1")


@pytest.mark.parametrize(
    ("problem", "net", "inputs", "outputs"),
    [
        ("darcy", "fc", (2, 1024), (2, 1)),
        ("darcy", "cnn", (2, 1, 32, 32), (2, 1)),
        ("poisson", "fc", (2, 3072), (2, 1024)),
    ],
)
def test_the_reference_pde_nets_take_their_problems_shapes(problem, net, inputs, outputs):
    model = build_pde_net(problem, net, 64)
    assert model(torch.randn(inputs)).shape == outputs
    assert max(model.group_sizes().values()) >= 64  # the width reaches the net


def test_a_pde_net_that_does_not_exist_is_refused(refusals):
    with refusals.error("the Poisson problem with the conv net", ValueError, "darcy cnn"):
        build_pde_net("poisson", "cnn", 64)
