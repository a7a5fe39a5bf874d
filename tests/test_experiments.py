"""Comparisons: equal-time selection and the computed verdict."""

from __future__ import annotations

import pandas as pd

from mlw_lib.experiments import Comparison, method_name, verdict
from mlw_lib.multilevel import MultilevelConfig


def _comparison(multi_accuracies):
    rows = []
    for seed, (single, multi) in enumerate(zip([0.90, 0.91, 0.92], multi_accuracies, strict=True)):
        for step in (1, 2):
            rows.append(
                {
                    "method": "single-level",
                    "seed": seed,
                    "wall_time": 10.0 * step,
                    "work_units": 100 * step,
                    "test_accuracy": single - 0.1 * (2 - step),
                }
            )
            rows.append(
                {
                    "method": "V-cycle, 2 levels",
                    "seed": seed,
                    "wall_time": 15.0 * step,
                    "work_units": 100 * step,
                    "test_accuracy": multi - 0.1 * (2 - step),
                }
            )
    return Comparison(pd.DataFrame(rows), {}, {})


def test_at_equal_time_takes_each_run_at_the_shortest_final_time():
    table = _comparison([0.95, 0.96, 0.97]).at_equal_time()
    assert (table["wall_time"] == 20.0).all()
    multi = table[table["method"] == "V-cycle, 2 levels"]["test_accuracy"].round(6).tolist()
    assert multi == [0.85, 0.86, 0.87]  # multilevel runs at t=15 <= 20 (their first evaluation)


def test_verdict_says_better_worse_or_no_clear_difference():
    better = verdict(_comparison([0.95, 0.96, 0.97]))
    assert "At equal work, V-cycle, 2 levels" in better and "-> better." in better
    assert "At equal wall-clock" in better and "-> worse." in better
    unclear = verdict(_comparison([0.903, 0.909, 0.924]))  # +0.001 with a spread of ~0.01
    assert "equal work" in unclear and "no clear difference" in unclear


def test_method_names():
    assert method_name(MultilevelConfig()) == "single-level"
    assert method_name(MultilevelConfig(levels=3, cycle="W")) == "W-cycle, 3 levels"
    squeeze = MultilevelConfig(levels=3, model_level=1)
    assert method_name(squeeze) == "V-cycle squeeze, level 1 of 3"
