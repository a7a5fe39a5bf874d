"""Time to target, the budget-fitted single-level frontier, and who beats it."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from helpers import toy_dataset

from mlw_lib.experiments import compare
from mlw_lib.frontier import (
    diagnostics,
    frontier,
    frontier_methods,
    time_to_target,
    time_to_target_table,
    wins,
)
from mlw_lib.models import MLP
from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.training import TrainConfig
from mlw_lib.viz import plot_frontier


def history(curves: dict[str, list[tuple[float, float]]], seeds=(0, 1)) -> pd.DataFrame:
    """Tidy history from {method: [(wall_time, accuracy), ...]}, the same for every seed;
    work_units = 10 x wall_time."""
    rows = [
        {"method": m, "seed": s, "wall_time": t, "work_units": 10 * t, "test_accuracy": a}
        for m, curve in curves.items()
        for s in seeds
        for t, a in curve
    ]
    return pd.DataFrame(rows)


def test_time_to_target_reads_the_curve_linearly_between_evaluations():
    frame = history({"a": [(10, 0.5), (20, 0.7), (30, 0.9)], "never": [(10, 0.5), (20, 0.6)]})
    reached = time_to_target(frame, 0.8).set_index(["method", "seed"])
    assert reached.loc[("a", 0), "wall_time"] == pytest.approx(25.0)
    assert reached.loc[("a", 1), "work_units"] == pytest.approx(250.0)
    assert math.isnan(reached.loc[("never", 0), "wall_time"])
    assert time_to_target(frame, 0.5).loc[0, "wall_time"] == pytest.approx(10.0)  # at once
    losses = frame.assign(test_accuracy=1 - frame["test_accuracy"])  # as a loss: lower is better
    assert time_to_target(losses, 0.2, higher=False).loc[0, "wall_time"] == pytest.approx(25.0)


def test_a_method_wins_only_if_it_is_fast_to_the_target_and_beats_the_fitted_frontier():
    fractions = {"single-level": 1.0, "single-level, 0.5 budget": 0.5}
    frame = history(
        {
            "single-level": [(50, 0.80), (100, 0.90)],
            "single-level, 0.5 budget": [(25, 0.80), (50, 0.86)],
            "fast": [(60, 0.90), (80, 0.91)],  # target (0.90) at 0.6x; frontier at 80 s 0.884
            "slow": [(40, 0.85), (80, 0.90)],  # target at 0.8x
            "fast but poor": [(30, 0.90), (40, 0.85)],  # frontier at 40 s: 0.86 (clamped)
            "never": [(50, 0.80), (100, 0.85)],
        }
    )
    table = frontier(frame, fractions)
    assert list(table["fraction"]) == [0.5, 1.0]  # by wall-clock
    result = wins(frame, fractions).set_index("method")
    assert result.loc["fast", "time_to_target_ratio"] == pytest.approx(0.6)
    assert result.loc["fast", "frontier_test_accuracy"] == pytest.approx(0.884)
    assert result["wins"].to_dict() == {
        "fast": True,
        "slow": False,
        "fast but poor": False,
        "never": False,
    }
    assert result.loc["never", "seeds_reaching_target"] == "0/2"
    assert not wins(frame, fractions, target=0.95)["wins"].any()  # a target nobody reaches


def test_frontier_methods_name_the_budgets_and_need_the_full_one():
    assert frontier_methods((0.5, 1.0)) == {"single-level, 0.5 budget": 0.5, "single-level": 1.0}
    with pytest.raises(ValueError, match="needs the full budget"):
        frontier_methods((0.4, 0.7))
    with pytest.raises(ValueError, match=r"budget fraction must be a finite number in \(0, 1\]"):
        frontier_methods((0.0, 1.0))
    with pytest.raises(ValueError, match="exactly one full-budget run"):
        wins(history({"a": [(1, 0.5)]}), {"a": 0.5})


def test_compare_gives_a_budgeted_method_its_fraction_of_the_work():
    methods = {name: MultilevelConfig() for name in frontier_methods((0.5, 1.0))}
    config = TrainConfig(epochs=2.0, batch_size=32, lr=0.05, eval_every=0.5)
    budgets = frontier_methods((0.5, 1.0))
    result = compare(lambda: MLP(12, [16], 4), toy_dataset(), config, methods, [0], budgets=budgets)
    work = result.final().set_index("method")["work_units"]
    assert work["single-level, 0.5 budget"] == pytest.approx(work["single-level"] / 2)
    with pytest.raises(ValueError, match=r"budgets for unknown methods \['typo'\]"):
        compare(lambda: MLP(12, [16], 4), toy_dataset(), config, methods, [0], budgets={"typo": 1})
    with pytest.raises(ValueError, match="budget of 'single-level' must be a finite number"):
        compare(
            lambda: MLP(12, [16], 4),
            toy_dataset(),
            config,
            methods,
            [0],
            budgets={"single-level": 1.5},
        )


def test_time_to_target_table_counts_the_seeds_and_averages_those_that_reached_it():
    frame = pd.concat(
        [
            history({"a": [(10, 0.5), (20, 0.9)]}, seeds=(0,)),
            history({"a": [(10, 0.5), (40, 0.9)]}, seeds=(1,)),
            history({"a": [(10, 0.5), (40, 0.6)]}, seeds=(2,)),
        ]
    )
    row = time_to_target_table(frame, 0.7).loc["a"]
    assert row["seeds_reaching_target"] == "2/3"
    assert row["wall_time mean"] == pytest.approx((15 + 25) / 2)  # halfway to 0.9 in each
    assert row["work_units mean"] == pytest.approx(200.0)
    # another metric, on a history without work units (the parallel runs' timings)
    timed = frame.drop(columns="work_units").rename(columns={"test_accuracy": "val_accuracy"})
    row = time_to_target_table(timed, 0.55, "val_accuracy").loc["a"]
    assert row["seeds_reaching_target"] == "3/3" and "work_units mean" not in row


def test_diagnostics_give_step_shares_tau_share_and_the_mean_correction_gain():
    frame = pd.DataFrame(
        {
            "method": ["m"] * 4,
            "seed": [0, 0, 1, 1],
            "wall_time": [5.0, 10.0, 5.0, 20.0],
            "time_tau_gradient": [0.0, 1.0, 0.0, 2.0],
            "time_tau": [0.0, 1.0, 0.0, 0.0],
            "level0_steps": [2, 6, 2, 6],
            "level1_steps": [1, 2, 1, 6],
            "correction_gain": [-0.2, -0.4, 0.1, 0.1],
        }
    )
    row = diagnostics(frame).loc["m"]
    assert row["level0 step share"] == pytest.approx((6 / 8 + 6 / 12) / 2)
    assert row["level1 step share"] == pytest.approx((2 / 8 + 6 / 12) / 2)
    assert row["tau share of wall-clock"] == pytest.approx((2 / 10 + 2 / 20) / 2)
    assert row["mean correction gain"] == pytest.approx((-0.3 + 0.1) / 2)
    plain = diagnostics(frame.drop(columns="correction_gain")).loc["m"]
    assert math.isnan(plain["mean correction gain"])


def test_plot_frontier_draws_the_frontier_points_the_target_and_the_time_limit():
    fractions = {"single-level": 1.0, "single-level, 0.5 budget": 0.5}
    frame = history(
        {
            "single-level": [(0, 0.1), (50, 0.80), (100, 0.90)],
            "single-level, 0.5 budget": [(0, 0.1), (25, 0.80), (50, 0.86)],
            "fast": [(0, 0.1), (60, 0.90), (80, 0.91)],
        }
    )
    fig = plot_frontier(frame, fractions, target=0.9)
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "fast" in labels and "single-level" in labels
    assert "single-level, 0.5 budget" not in labels  # a frontier run is drawn as its point
    frontier_line = next(line for line in ax.lines if line.get_linestyle() == "--")
    assert list(frontier_line.get_xdata()) == [50, 100]
    assert list(frontier_line.get_ydata()) == pytest.approx([0.86, 0.90])
    levels = [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":"]
    limits = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "-."]
    assert levels == [0.9] and limits == [pytest.approx(70.0)]
    zoom = fig.axes[1]  # four times the frontier's spread (0.04) below the target, half above
    assert zoom.get_ylim() == pytest.approx((0.9 - 0.16, 0.9 + 0.08))
    assert len(zoom.lines) == len(ax.lines) and zoom.get_legend() is None
    plt.close(fig)
