"""The MLflow UI as users run it: the project's command serves a store that a real notebook run
wrote, on 127.0.0.1; the runs, metrics, parameters and figures come back through the server;
stopping it leaves no process behind."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import psutil
import pytest
from helpers import TOY_COMPARISON, code_cell, write_notebook

from mlw_lib import mlflow_ui, notebooks

NOTEBOOK = (
    TOY_COMPARISON
    + """
config = mlw.training.TrainConfig(epochs=2.0, batch_size=32)
with mlw.tracking.notebook_run("06_ui", params={"epochs": 2.0}, log_environment=False):
    comparison = toy_comparison(config, [0])
    fig = mlw.viz.plot_metric_panels(comparison.history, y="test_accuracy")
    mlw.viz.save_figure(fig, "06_ui", "test_accuracy")
"""
)


def test_the_ui_serves_the_runs_a_notebook_wrote_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MLW_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    source = write_notebook(
        tmp_path / "notebooks" / "06_ui.ipynb",
        [code_cell("seed = 0  # unused", ["parameters"]), code_cell(NOTEBOOK)],
    )
    notebooks.run_notebook(source)

    with mlflow_ui.ui_server() as server:
        assert server.url.startswith("http://127.0.0.1:")
        group = os.getpgid(server.pid)
        client = mlflow.MlflowClient(tracking_uri=server.url)
        experiment = client.get_experiment_by_name("06-ui")
        runs = client.search_runs([experiment.experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags["mlflow.runName"] for r in children) == [
            "V2 / seed 0",
            "single-level / seed 0",
        ]
        assert parent.data.params["epochs"] == "2.0"
        assert all(0.0 <= r.data.metrics["test_accuracy"] <= 1.0 for r in children)
        history = client.get_metric_history(children[0].info.run_id, "test_accuracy")
        assert len(history) >= 2, "the whole curve, not only the last value"
        figures = [a.path for a in client.list_artifacts(parent.info.run_id, "figures")]
        assert figures == ["figures/test_accuracy.pdf", "figures/test_accuracy.png"]
    left = [p for p in psutil.process_iter(["pid"]) if _group_of(p.pid) == group]
    assert left == [], f"processes of the server left running: {left}"


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
