"""Multi-seed training curves and result tables from tidy histories.

A tidy history has one row per (method, seed, epoch) with columns such as `method`, `seed`,
`epoch`, `work_units`, `wall_time`, `test_accuracy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mlw_lib.viz.style import method_palette

AXIS_LABELS = {
    "epoch": "epoch",
    "work_units": "work units (fine fwd+bwd minibatches)",
    "wall_time": "wall-clock (s)",
    "test_accuracy": "test accuracy",
    "val_accuracy": "validation accuracy",
    "train_accuracy": "train accuracy",
    "test_loss": "test loss",
    "test_mse": "test mean squared error",
    "test_rel_l2": "test relative L2 error (mean)",
    "test_linf": "test L∞ error (worst sample)",
    "test_linf_p99": "99th percentile of the max error",
    "test_linf_p999": "99.9th percentile of the max error",
    "train_loss": "train loss",
    "lr": "learning rate",
}

# Decimals used by `results_table` per metric; others use `DEFAULT_DECIMALS`.
METRIC_DECIMALS = {"wall_time": 1, "work_units": 0}
DEFAULT_DECIMALS = 3


def axis_label(column: str) -> str:
    """Human label for a history column (falls back to the name with spaces)."""
    return AXIS_LABELS.get(column, column.replace("_", " "))


def _align_x(history: pd.DataFrame, x: str, hue: str | None, units: str | None) -> pd.DataFrame:
    """Put the runs of each hue on a common x grid when they disagree on `x`.

    Runs are identified by `units` (e.g. seed). Wall-clock times (and fractional work-epochs)
    differ between runs, so seaborn would see one sample per x value: no band, zig-zag lines.
    Instead the i-th evaluation of every run (in x order) is placed at the mean x of the i-th
    evaluations of its hue.
    """
    if units is None or units not in history.columns or units == x:
        return history
    run_keys = [hue, units] if hue is not None and hue in history.columns else [units]
    evaluation = history.groupby(run_keys, sort=False)[x].rank(method="first")
    keys = [history[key] for key in run_keys[:-1]] + [evaluation]
    if history.groupby(keys, sort=False)[x].nunique().max() <= 1:
        return history
    aligned = history.copy()
    aligned[x] = history.groupby(keys, sort=False)[x].transform("mean")
    return aligned


def plot_metric(
    history: pd.DataFrame,
    x: str,
    y: str,
    hue: str = "method",
    ax: Axes | None = None,
    title: str | None = None,
    errorbar: Any = ("sd", 1),
    units: str | None = "seed",
) -> Axes:
    """Mean curve of `y` against `x` per `hue` value with a band over seeds; returns the Axes.

    `errorbar` is passed to `seaborn.lineplot` (bootstrap bands use a fixed seed). When the
    runs (`units`, e.g. seeds) of a hue disagree on `x` (e.g. wall-clock), each run's i-th
    evaluation is drawn at the mean x of the i-th evaluations, so the band spans the seeds.
    """
    if ax is None:
        _, ax = plt.subplots()
    data = _align_x(history, x, hue, units)
    palette = None
    hue_order = None
    if hue in data.columns:
        hue_order = list(pd.unique(data[hue]))
        if hue == "method":
            palette = method_palette(hue_order)
    sns.lineplot(
        data=data,
        x=x,
        y=y,
        hue=hue if hue in data.columns else None,
        hue_order=hue_order,
        palette=palette,
        errorbar=errorbar,
        seed=0,
        ax=ax,
    )
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    if title is not None:
        ax.set_title(title)
    return ax


def plot_metric_panels(
    history: pd.DataFrame,
    xs: Sequence[str] = ("epoch", "work_units", "wall_time"),
    y: str = "test_accuracy",
    hue: str = "method",
    errorbar: Any = ("sd", 1),
    from_start: bool = False,
) -> Figure:
    """One row of `plot_metric` panels, one per x column, sharing y (legend on the last).

    The evaluation of the initial net (rows with `work_units` 0) is left out unless
    `from_start`: at chance level it would stretch the y-axis over the whole range.
    """
    if not from_start and "work_units" in history.columns:
        history = history[history["work_units"] > 0]
    fig, axes = plt.subplots(
        1, len(xs), sharey=True, figsize=(3.4 * len(xs), 3.4), squeeze=False, layout="constrained"
    )
    row = axes[0]
    for index, (ax, x) in enumerate(zip(row, xs, strict=True)):
        plot_metric(history, x=x, y=y, hue=hue, ax=ax, errorbar=errorbar)
        legend = ax.get_legend()
        if legend is not None and index < len(xs) - 1:
            legend.remove()
        if index > 0:
            ax.set_ylabel("")
    return fig


def results_table(
    final: pd.DataFrame,
    metrics: Sequence[str] = ("test_accuracy", "wall_time", "work_units"),
    by: str = "method",
    decimals: int | Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Table of "mean ± std" strings per `by` group (sample std, ddof=1) plus `n` seeds.

    `final` has one row per (group, seed), e.g. the last epoch of each run. Groups keep their
    order of appearance. `decimals` is one int for all metrics or a per-metric mapping
    (default: `METRIC_DECIMALS`, else 3). With a single seed only the mean is shown.
    """
    missing = [column for column in (by, *metrics) if column not in final.columns]
    if missing:
        raise KeyError(f"results_table: columns {missing} not in {list(final.columns)}")
    grouped = final.groupby(by, sort=False)
    counts = grouped["seed"].nunique() if "seed" in final.columns else grouped.size()
    table = pd.DataFrame({"n": counts.astype(int)}, index=counts.index)
    for metric in metrics:
        if isinstance(decimals, int):
            places = decimals
        else:
            places = {**METRIC_DECIMALS, **(decimals or {})}.get(metric, DEFAULT_DECIMALS)
        mean = grouped[metric].mean()
        std = grouped[metric].std(ddof=1)
        table[metric] = [
            f"{m:.{places}f}" if np.isnan(s) else f"{m:.{places}f} ± {s:.{places}f}"
            for m, s in zip(mean[table.index], std[table.index], strict=True)
        ]
    return table
