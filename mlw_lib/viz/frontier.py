"""Accuracy against wall-clock with the budget-fitted single-level frontier drawn
(`mlw_lib.frontier`)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from mlw_lib.frontier import frontier
from mlw_lib.viz.curves import axis_label, plot_metric
from mlw_lib.viz.style import SINGLE_LEVEL_COLOR


def plot_frontier(
    history: pd.DataFrame,
    fractions: Mapping[str, float],
    target: float,
    metric: str = "test_accuracy",
    max_time_ratio: float = 0.7,
) -> Figure:
    """Two panels, the whole range and a zoom on the target, each with every method's `metric`
    against wall-clock (mean ± sd over seeds; the frontier's runs other than the full budget
    are drawn only as its points), the frontier (each budget's final mean ± sd, joined), the
    target and the `max_time_ratio` x full-budget time. The zoom spans four times the
    frontier's spread below the target (at least 0.01) and half that above it."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharex=True)
    full = next(name for name, fraction in fractions.items() if fraction == 1)
    shown = history[(~history["method"].isin(list(fractions))) | (history["method"] == full)]
    line = frontier(history, fractions, metric)
    limit = max_time_ratio * float(line.loc[full, "wall_time_mean"])
    for ax in axes:
        plot_metric(shown[shown["work_units"] > 0], x="wall_time", y=metric, ax=ax)
        ax.errorbar(
            line["wall_time_mean"],
            line[f"{metric}_mean"],
            xerr=line["wall_time_std"].fillna(0),
            yerr=line[f"{metric}_std"].fillna(0),
            color=SINGLE_LEVEL_COLOR,
            linestyle="--",
            marker="o",
            label="single-level frontier (budgets "
            + ", ".join(f"{f:g}" for f in line["fraction"])
            + ")",
        )
        ax.axhline(target, color="0.4", linestyle=":", linewidth=1, label=f"target {target:.4f}")
        ax.axvline(
            limit, color="0.4", linestyle="-.", linewidth=1, label=f"{max_time_ratio:g} x full time"
        )
        ax.set_xlabel(axis_label("wall_time"))
    spread = max(4 * float((target - line[f"{metric}_mean"]).abs().max()), 0.01)
    axes[1].set_ylim(target - spread, target + spread / 2)
    axes[1].set_title("near the target", fontsize="medium")
    axes[1].get_legend().remove()
    axes[0].legend(fontsize="small")
    return fig
