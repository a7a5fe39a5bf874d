"""Tracking against a real MLflow SQLite store in a temporary folder (no mocks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
import pytest
import torch

from mlw_lib import mlflow_ui, tracking
from mlw_lib.reproducibility import git_info
from mlw_lib.viz import save_figure

NOTEBOOK = "98_tracking_test"
HISTORY = pd.DataFrame(
    {
        "epoch": [1, 2, 3],
        "method": ["ml-v", "ml-v", "ml-v"],
        "test_accuracy": [0.5, 0.625, 0.75],
        "train_loss": [2.0, 1.5, float("nan")],
        "flag": [True, False, True],
    }
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A fresh store (database + artifacts + figures) for this module; no run left open."""
    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLW_MLFLOW_DIR", str(root / "store"))
        patch.setenv(
            "MLFLOW_TRACKING_URI", f"sqlite:///{(root / 'store' / 'mlflow.db').as_posix()}"
        )
        patch.setenv("MLW_FIGURES_DIR", str(root / "figures"))
        yield root
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def logged(store: Path) -> dict:
    """One parent run with two seed children; history, checkpoint and a figure logged."""
    state = {"weight": torch.arange(6.0).reshape(2, 3), "step": torch.tensor(7)}
    config = {"widths": [64, 32], "lr": 0.05, "optimizer": "sgd"}
    with tracking.notebook_run(
        NOTEBOOK,
        params={"epochs": 3, "levels": [1, 2], "long": "x" * 7000},
        tags={"purpose": "test"},
        run_name="parent",
    ) as parent:
        children = []
        for seed in (0, 1):
            with tracking.child_run(f"seed{seed}", params={"seed": seed}) as child:
                history = HISTORY.assign(test_accuracy=HISTORY["test_accuracy"] + seed / 10)
                tracking.log_history(history)
                children.append(child.info.run_id)
        checkpoint_paths = tracking.log_checkpoint(state, config, name="final")
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        figure_paths = save_figure(fig, NOTEBOOK, "curve")
        plt.close(fig)
    return {
        "parent": parent.info.run_id,
        "children": children,
        "state": state,
        "config": config,
        "checkpoint_paths": checkpoint_paths,
        "figure_paths": figure_paths,
    }


def test_store_lives_in_the_redirected_folder(store: Path, logged: dict) -> None:
    assert tracking.tracking_uri() == f"sqlite:///{(store / 'store' / 'mlflow.db').as_posix()}"
    assert (store / "store" / "mlflow.db").is_file()
    assert tracking.artifact_root() == store / "store" / "artifacts"
    experiment = mlflow.MlflowClient().get_experiment_by_name("98-tracking-test")
    assert experiment is not None
    assert (
        experiment.artifact_location
        == (store / "store" / "artifacts" / "98-tracking-test").as_uri()
    )
    run = mlflow.get_run(logged["parent"])
    assert run.info.artifact_uri.startswith(experiment.artifact_location)
    assert run.info.status == "FINISHED"


def test_params_and_tags(logged: dict) -> None:
    run = mlflow.MlflowClient().get_run(logged["parent"])
    params, tags = run.data.params, run.data.tags
    assert params["epochs"] == "3"
    assert params["levels"] == "[1, 2]"
    assert len(params["long"]) == tracking.MAX_PARAM_VALUE_LENGTH
    assert params["long"].startswith("xxx") and params["long"].endswith("[truncated]")
    assert tags["notebook"] == f"notebooks/{NOTEBOOK}.ipynb"
    assert tags["git_commit"] == git_info()["git_commit"]
    assert tags["git_dirty"] in {"true", "false", "unknown"}
    assert tags["purpose"] == "test"
    assert tags["mlflow.runName"] == "parent"


def test_children_are_nested_with_their_histories(logged: dict) -> None:
    client = mlflow.MlflowClient()
    parent = client.get_run(logged["parent"])
    runs = mlflow.search_runs(experiment_ids=[parent.info.experiment_id])
    assert set(runs["run_id"]) == {logged["parent"], *logged["children"]}
    for seed, run_id in enumerate(logged["children"]):
        child = client.get_run(run_id)
        assert child.data.tags["mlflow.parentRunId"] == logged["parent"]
        assert child.data.tags["notebook"] == f"notebooks/{NOTEBOOK}.ipynb"
        assert child.data.params == {"seed": str(seed)}
        accuracy = client.get_metric_history(run_id, "test_accuracy")
        assert [(m.step, m.value) for m in sorted(accuracy, key=lambda m: m.step)] == [
            (1, pytest.approx(0.5 + seed / 10)),
            (2, pytest.approx(0.625 + seed / 10)),
            (3, pytest.approx(0.75 + seed / 10)),
        ]
        loss = client.get_metric_history(run_id, "train_loss")
        assert sorted((m.step, m.value) for m in loss) == [(1, 2.0), (2, 1.5)]  # NaN skipped
        assert set(child.data.metrics) == {"test_accuracy", "train_loss"}  # no step/str/bool


def test_artifacts_and_checkpoint_round_trip(logged: dict) -> None:
    client = mlflow.MlflowClient()
    run_id = logged["parent"]
    top = {a.path for a in client.list_artifacts(run_id)}
    assert top == {"checkpoints", "figures", "environment.json"}
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == set(
        logged["checkpoint_paths"]
    )
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == {
        "figures/curve.pdf",
        "figures/curve.png",
    }
    state, config = tracking.load_logged_checkpoint(run_id, name="final")
    assert config == logged["config"]
    assert set(state) == set(logged["state"])
    for key, tensor in logged["state"].items():
        assert torch.equal(state[key], tensor)
    # The raw artifact loads with plain torch.load too.
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints"))
    raw = torch.load(local / "final.pt", weights_only=True)
    assert torch.equal(raw["weight"], logged["state"]["weight"])
    environment = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="environment.json")
        ).read_text()
    )
    assert environment["torch"] == torch.__version__.split("+")[0]


def test_figure_files_written_under_redirected_folder(store: Path, logged: dict) -> None:
    assert logged["figure_paths"] == [
        store / "figures" / NOTEBOOK / "curve.pdf",
        store / "figures" / NOTEBOOK / "curve.png",
    ]
    assert all(path.stat().st_size > 0 for path in logged["figure_paths"])


def test_fractional_steps_use_row_position(store: Path) -> None:
    history = pd.DataFrame({"epoch": [0.5, 1.0, 1.5], "test_accuracy": [0.1, 0.2, 0.3]})
    with tracking.notebook_run(NOTEBOOK, run_name="fractional", log_environment=False) as run:
        tracking.log_history(history)
    client = mlflow.MlflowClient()
    epochs = client.get_metric_history(run.info.run_id, "epoch")
    assert sorted((m.step, m.value) for m in epochs) == [(0, 0.5), (1, 1.0), (2, 1.5)]
    accuracy = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert sorted((m.step, m.value) for m in accuracy) == [(0, 0.1), (1, 0.2), (2, 0.3)]


def test_failed_body_marks_run_failed(store: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with tracking.notebook_run(NOTEBOOK, run_name="broken", log_environment=False) as run:
            1 / 0  # noqa: B018
    assert mlflow.active_run() is None
    assert mlflow.get_run(run.info.run_id).info.status == "FAILED"


def test_logging_without_active_run_raises(store: Path) -> None:
    assert mlflow.active_run() is None
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        with tracking.child_run("orphan"):
            pass
    with pytest.raises(RuntimeError):
        tracking.log_history(HISTORY)


def test_default_paths_are_absolute_and_env_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/db.sqlite")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/db.sqlite"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLW_MLFLOW_DIR", str(tmp_path / "m"))
    monkeypatch.chdir(tmp_path.parent)
    assert tracking.tracking_uri() == f"sqlite:///{(tmp_path / 'm' / 'mlflow.db').as_posix()}"
    assert tracking.artifact_root() == tmp_path / "m" / "artifacts"
    assert tracking.artifact_root().is_dir()
    monkeypatch.delenv("MLW_MLFLOW_DIR")
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path / "runs"))  # keep the repository clean
    assert tracking.artifact_root() == tmp_path / "runs" / "mlflow" / "artifacts"
    assert tracking.tracking_uri() == f"sqlite:///{(tmp_path / 'runs/mlflow/mlflow.db').as_posix()}"


def test_experiment_name_and_ui_command() -> None:
    assert tracking.experiment_name("01_mlp_mnist") == "01-mlp-mnist"
    command = mlflow_ui.mlflow_ui_command()
    assert f"ui --backend-store-uri {tracking.tracking_uri()} " in command
    assert "--host 127.0.0.1 " in command  # never listens beyond this machine


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_info_commit_and_dirty_state(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    assert git_info(tmp_path) == {"git_commit": "unknown", "git_dirty": "unknown"}
    git("init", "-q")
    (tmp_path / "a.txt").write_text("a\n")
    assert git_info(tmp_path) == {"git_commit": "unknown", "git_dirty": "true"}
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_info(tmp_path) == {"git_commit": sha, "git_dirty": "false"}
    (tmp_path / "a.txt").write_text("b\n")
    assert git_info(tmp_path) == {"git_commit": sha, "git_dirty": "true"}


def test_git_info_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert git_info() == {"git_commit": "unknown", "git_dirty": "unknown"}


def test_a_second_store_is_used_after_the_first(tmp_path: Path, monkeypatch) -> None:
    # MLflow exports the URI it is given; the next MLW_MLFLOW_DIR must still win.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("first", "second"):
        monkeypatch.setenv("MLW_MLFLOW_DIR", str(tmp_path / name))
        with tracking.notebook_run("99_stores", log_environment=False):
            pass
        assert (tmp_path / name / "mlflow.db").is_file()
    assert "MLFLOW_TRACKING_URI" not in os.environ
