"""Comparisons: equal-time reading, run order, machine load and the computed verdict."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import mlflow
import pandas as pd
import psutil
import pytest
import torch
from helpers import toy_dataset

from mlw_lib import tracking
from mlw_lib.experiments import (
    Comparison,
    compare,
    interleaved,
    load_trained,
    method_name,
    verdict,
)
from mlw_lib.models import MLP
from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.reproducibility import CpuContention
from mlw_lib.training import TrainConfig
from mlw_lib.viz import save_results


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


def test_at_equal_time_reads_each_curve_at_the_shortest_final_time():
    table = _comparison([0.95, 0.96, 0.97]).at_equal_time()
    assert (table["wall_time"] == 20.0).all()
    multi = table[table["method"] == "V-cycle, 2 levels"]["test_accuracy"].round(6).tolist()
    # multilevel curves pass (15, a - 0.1) and (30, a): at t = 20 they read a - 0.1 + 0.1/3
    assert multi == [round(a - 0.2 / 3, 6) for a in (0.95, 0.96, 0.97)]


def test_at_equal_time_gives_a_slow_run_a_value_from_its_start():
    """A run whose first evaluation comes after the fastest run has ended is read between its
    initial evaluation (time 0) and that first evaluation."""
    rows = [
        {"method": "fast", "seed": 0, "wall_time": t, "test_accuracy": a}
        for t, a in ((0.0, 0.1), (5.0, 0.8), (10.0, 0.9))
    ] + [
        {"method": "slow", "seed": 0, "wall_time": t, "test_accuracy": a}
        for t, a in ((0.0, 0.1), (40.0, 0.5), (80.0, 0.9))
    ]
    table = Comparison(pd.DataFrame(rows), {}, {}).at_equal_time().set_index("method")
    assert table.loc["slow", "test_accuracy"] == pytest.approx(0.1 + 0.4 / 4)
    assert table.loc["fast", "test_accuracy"] == pytest.approx(0.9)


def test_runs_are_interleaved_seed_by_seed_in_alternating_order():
    assert interleaved(["a", "b"], [0, 1, 2]) == [
        ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)
    ]  # fmt: skip


def test_cpu_contention_counts_another_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        child = psutil.Process(busy.pid)
        before = sum(child.cpu_times()[:2])
        with CpuContention() as load:
            start = time.perf_counter()
            time.sleep(1.0)
            child_cores = (sum(child.cpu_times()[:2]) - before) / (time.perf_counter() - start)
    finally:
        busy.kill()
        busy.wait()
    assert child_cores > 0.2  # the neighbour did run
    assert load.record()["other_cores"] >= 0.8 * child_cores
    assert set(load.record()) == {"load_average", "other_cores"}


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


def test_report_is_written_as_a_markdown_results_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLW_FIGURES_DIR", str(tmp_path))
    history = _comparison([0.95, 0.96, 0.97]).history.assign(
        time_smooth=1.0, time_other=0.5, load_average=1.0, other_cores=0.25
    )
    comparison = Comparison(history, {}, {})
    sections = {"Data": "toy", **comparison.report(), "Parameters": {"lr": 0.05}}
    path = save_results("99_demo", "demo", sections)
    text = path.read_text()
    assert path == tmp_path / "99_demo" / "results.md"
    assert "| single-level | 3 | 0.910 ± 0.010 |" in text  # equal work, mean ± std
    assert "At equal wall-clock" in text and "-> better." in text
    assert "| lr | 0.05 |" in text and "| time_other |" not in text.split("## Seconds")[0]
    assert comparison.phase_seconds().loc["single-level", "time_other"] == 0.5
    renamed = Comparison(history.replace({"method": {"single-level": "from scratch"}}), {}, {})
    assert "vs from scratch" in renamed.report(baseline="from scratch")["Verdict"]


def test_load_trained_gives_back_the_net_and_matchings_a_comparison_logged(
    tmp_path, monkeypatch, refusals
):
    """The `run_id` path of notebooks 04 and 05: a child run of `compare` loads as its net."""
    monkeypatch.setenv("MLW_MLFLOW_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    methods = {"single-level": MultilevelConfig(), "V2": MultilevelConfig(levels=2)}
    config = TrainConfig(epochs=2.0, batch_size=32, lr=[0.05, 0.05], eval_every=1.0)
    with tracking.notebook_run("toy", log_environment=False) as parent:
        comparison = compare(lambda: MLP(12, [16, 8], 4), toy_dataset(), config, methods, [0])
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        experiment_ids=[parent.info.experiment_id],
    )
    run_ids = dict(zip(children["tags.mlflow.runName"], children["run_id"], strict=True))
    for name in methods:
        model, log = load_trained(run_ids[f"{name} / seed 0"], MLP)
        result = comparison.results[(name, 0)]
        trained = result.model.state_dict()
        assert model.group_sizes() == result.model.group_sizes()
        assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
        if name == "single-level":
            assert log is None
        else:
            assert log and len(log) == len(result.cycle.matchings_log)
            for loaded, kept in zip(log, result.cycle.matchings_log, strict=True):
                assert loaded["level"] == kept["level"]
                assert all(torch.equal(loaded["assign"][g], a) for g, a in kept["assign"].items())
    what = "notebook 04/05 given the run id of a notebook's parent run"
    with refusals.error(what, ValueError, "not of its parent run"):
        load_trained(parent.info.run_id, MLP)
    run_id = run_ids["V2 / seed 0"]
    mlflow.MlflowClient().set_tag(run_id, "data_name", "MNIST")  # as if trained on MNIST
    other = SimpleNamespace(info=SimpleNamespace(as_tags=lambda: {"data_name": "IMDB"}))
    what = "notebook 04/05 given a run trained on other data than the notebook loads"
    with refusals.error(what, ValueError, "data_name: run 'MNIST', here 'IMDB'"):
        load_trained(run_id, MLP, data=other)
    same = SimpleNamespace(info=SimpleNamespace(as_tags=lambda: {"data_name": "MNIST"}))
    assert load_trained(run_id, MLP, data=same)[1] is not None


def test_compare_logs_the_gain_of_every_correction_by_cycle(tmp_path, monkeypatch):
    monkeypatch.setenv("MLW_MLFLOW_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, extra = toy_dataset(), toy_dataset(seed=5, n=64)
    data = SimpleNamespace(**vars(data), x_val=extra.x_train, y_val=extra.y_train)
    methods = {"V2": MultilevelConfig(levels=2, monitor_corrections=True)}
    config = TrainConfig(epochs=1.0, batch_size=32, lr=[0.05, 0.05])
    with tracking.notebook_run("toy", log_environment=False) as parent:
        comparison = compare(lambda: MLP(12, [16, 8], 4), data, config, methods, [0])
    (child,) = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        experiment_ids=[parent.info.experiment_id],
    )["run_id"]
    logged = mlflow.MlflowClient().get_metric_history(child, "correction_gain_level0")
    corrections = comparison.results[("V2", 0)].cycle.corrections
    assert sorted((m.step, m.value) for m in logged) == [
        (c["cycle"], pytest.approx(c["after"] - c["before"])) for c in corrections
    ]


def test_compare_logs_where_coarse_first_switched_levels_and_why(tmp_path, monkeypatch):
    monkeypatch.setenv("MLW_MLFLOW_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, extra = toy_dataset(), toy_dataset(seed=5, n=64)
    data = SimpleNamespace(**vars(data), x_val=extra.x_train, y_val=extra.y_train)
    adaptive = MultilevelConfig(levels=3, coarse_first=0.5, switch_threshold=0.9, switch_every=2)
    config = TrainConfig(epochs=1.0, batch_size=32, lr=[0.05, 0.05, 0.05])
    with tracking.notebook_run("toy", log_environment=False) as parent:
        comparison = compare(lambda: MLP(12, [16, 8], 4), data, config, {"CF": adaptive}, [0])
    (child,) = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        experiment_ids=[parent.info.experiment_id],
    )["run_id"]
    logged = mlflow.MlflowClient().get_run(child).data
    switches = comparison.results[("CF", 0)].cycle.coarse_stage.switches
    assert [s["level"] for s in switches] == [2, 1]
    for switch in switches:
        name = f"coarse_first_switch_level{switch['level']}"
        assert logged.metrics[name] == pytest.approx(switch["work_units"])
        assert logged.tags[name] == switch["reason"]
