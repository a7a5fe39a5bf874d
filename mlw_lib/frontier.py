"""Time to a target accuracy, and the single-level frontier that a multilevel method must beat.

The frontier is single-level training whose schedule is annealed over shorter budgets
(fractions of the full work budget), so that a multilevel "win" is not just a sign that the
full budget was too long. A method **wins** when its curve reaches the target in at most
`max_time_ratio` of the full-budget single-level wall-clock and it ends at least as good as
the frontier read at its own final wall-clock. All functions read a comparison's tidy history
(one row per method, seed and evaluation; `wall_time` excludes evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .checks import number

SINGLE = "single-level"
FRONTIER_FRACTIONS = (0.4, 0.55, 0.7, 1.0)  # budgets of the frontier's single-level runs
CLOCKS = ("wall_time", "work_units", "flops")


def higher_is_better(metric: str) -> bool:
    """True for an accuracy column; False for a loss or an error (e.g. `test_linf`)."""
    return metric.endswith("accuracy")


def budget_name(fraction: float) -> str:
    """'single-level' for the full budget, e.g. 'single-level, 0.55 budget' otherwise."""
    return SINGLE if fraction == 1 else f"{SINGLE}, {fraction:g} budget"


def final_rows(history: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every (method, seed)."""
    return history.groupby(["method", "seed"], sort=False).tail(1).reset_index(drop=True)


def time_to_target(
    history: pd.DataFrame, target: float, metric: str = "test_accuracy", higher: bool = True
) -> pd.DataFrame:
    """Per (method, seed): `wall_time`, `work_units` and `flops` at which the run's curve
    (its evaluations, read linearly in between, from the initial net at 0) first reaches
    `target` (>= it; `higher=False`: <= it, for a loss); NaN where it never does."""
    rows = []
    for (method, seed), run in history.groupby(["method", "seed"], sort=False):
        curve = run[run[metric].notna()]
        values = curve[metric].to_numpy() * (1 if higher else -1)
        goal = target * (1 if higher else -1)
        row = {"method": method, "seed": seed, **dict.fromkeys(CLOCKS, np.nan)}
        hits = np.flatnonzero(values >= goal)
        if len(hits):
            i = hits[0]
            # fraction of the way from the evaluation before to the one that reached the goal
            share = 1.0 if i == 0 else (goal - values[i - 1]) / (values[i] - values[i - 1])
            for clock in CLOCKS:
                if clock in curve:
                    points = curve[clock].to_numpy()
                    start = points[i - 1] if i else 0.0
                    row[clock] = start + share * (points[i] - start)
        rows.append(row)
    return pd.DataFrame(rows)


def frontier(
    history: pd.DataFrame, fractions: Mapping[str, float], metric: str = "test_accuracy"
) -> pd.DataFrame:
    """One row per frontier method (name -> budget fraction): its fraction, and the mean over
    seeds of its final `wall_time` and `metric` (with the metric's std), by wall-clock."""
    final = final_rows(history)
    final = final[final["method"].isin(list(fractions))]
    table = final.groupby("method")[["wall_time", metric]].agg(["mean", "std"])
    table.columns = [f"{column}_{stat}" for column, stat in table.columns]
    table["fraction"] = [fractions[name] for name in table.index]
    return table.sort_values("wall_time_mean")


def wins(
    history: pd.DataFrame,
    fractions: Mapping[str, float],
    metric: str = "test_accuracy",
    target: float | None = None,
    max_time_ratio: float = 0.7,
) -> pd.DataFrame:
    """Every method off the frontier against it: the mean time to `target` (default: the
    full-budget single-level runs' mean final `metric`) over the full-budget single-level
    mean wall-clock (NaN unless every seed reached it), its mean final `metric`, the frontier's
    `metric` at its mean final wall-clock, and `wins` (both conditions of the module doc)."""
    full = [name for name, fraction in fractions.items() if fraction == 1]
    if len(full) != 1:
        raise ValueError(f"the frontier needs exactly one full-budget run (fraction 1), got {full}")
    final = final_rows(history)
    baseline = final[final["method"] == full[0]]
    target = float(baseline[metric].mean()) if target is None else target
    reached = time_to_target(history, target, metric)
    line = frontier(history, fractions, metric)
    rows = []
    for method, runs in final.groupby("method", sort=False):
        if method in fractions:
            continue
        times = reached.loc[reached["method"] == method, "wall_time"]
        ratio = times.mean() / baseline["wall_time"].mean() if times.notna().all() else np.nan
        own_time = runs["wall_time"].mean()
        fitted = np.interp(own_time, line["wall_time_mean"], line[f"{metric}_mean"])
        rows.append(
            {
                "method": method,
                "target": target,
                "seeds_reaching_target": f"{int(times.notna().sum())}/{len(times)}",
                "time_to_target_ratio": ratio,
                metric: runs[metric].mean(),
                "wall_time": own_time,
                f"frontier_{metric}": fitted,
                "wins": bool(ratio <= max_time_ratio and runs[metric].mean() >= fitted),
            }
        )
    return pd.DataFrame(rows)


def frontier_methods(fractions: Sequence[float] = FRONTIER_FRACTIONS) -> dict[str, float]:
    """{method name: budget fraction} of the frontier's single-level runs."""
    for fraction in fractions:
        number("a budget fraction", fraction, 0, 1, open_low=True)
    if 1 not in fractions:
        raise ValueError(f"the frontier needs the full budget (1.0) among {list(fractions)}")
    return {budget_name(f): float(f) for f in fractions}


def diagnostics(history: pd.DataFrame) -> pd.DataFrame:
    """Per method (mean over seeds of the final evaluations): the share of optimizer steps on
    each level, tau's share of the wall-clock (its gradient passes and its assembly), and
    the mean correction gain over the run (held-out loss after - before a correction; < 0
    helps; NaN without `monitor_corrections`)."""
    final = final_rows(history)
    steps = sorted(c for c in final.columns if c.startswith("level") and c.endswith("_steps"))
    total = final[steps].fillna(0).sum(axis=1).replace(0, np.nan)
    table = pd.DataFrame({"method": final["method"]})
    for column in steps:
        table[f"{column.removesuffix('_steps')} step share"] = final[column].fillna(0) / total
    tau = [c for c in ("time_tau_gradient", "time_tau") if c in final]
    table["tau share of wall-clock"] = final[tau].sum(axis=1) / final["wall_time"]
    if "correction_gain" in history:  # matched to the final rows by (method, seed)
        runs = pd.MultiIndex.from_frame(final[["method", "seed"]])
        gains = history.groupby(["method", "seed"])["correction_gain"].mean()
        table["mean correction gain"] = gains.reindex(runs).to_numpy()
    else:
        table["mean correction gain"] = np.nan
    return table.groupby("method", sort=False).mean()


def time_to_target_table(
    history: pd.DataFrame, target: float, metric: str = "test_accuracy"
) -> pd.DataFrame:
    """Per method: how many seeds reached `target` in `metric`, and the mean and std over
    those seeds of the wall-clock (s) and the work (WU, where the history has it) at which
    they did."""
    reached = time_to_target(history, target, metric)
    grouped = reached.groupby("method", sort=False)
    clocks = [clock for clock in ("wall_time", "work_units") if clock in history]
    table = grouped[clocks].agg(["mean", "std"])
    table.columns = [f"{clock} {stat}" for clock, stat in table.columns]
    counts = grouped["wall_time"].agg(lambda t: f"{int(t.notna().sum())}/{len(t)}")
    return table.assign(seeds_reaching_target=counts)
