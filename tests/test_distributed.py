"""Data parallelism under torchrun (CPU, gloo, 2 processes, tiny sizes): the same training as
one process, operators identical on every rank, rank 0 alone logging, a dead rank failing the
launch and the same command resuming, and the launcher's bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import torch
from distributed_worker import METHODS, train_all
from helpers import REPO, free_port, torchrun

from mlw_lib import distributed, tracking
from mlw_lib.distributed import launch as launcher
from mlw_lib.distributed.__main__ import main

TINY_RUN = [
    *("-p", "width", "32", "-p", "train_subset", "512", "-p", "test_subset", "256"),
    *("-p", "batch_size", "64", "-p", "lr", "0.05"),
]


def test_two_processes_train_as_one_process_with_the_global_batch(tmp_path: Path) -> None:
    launch = torchrun(2, str(REPO / "tests" / "distributed_worker.py"), str(tmp_path))
    out, err = launch.communicate(timeout=300)
    assert launch.returncode == 0, err[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    one = train_all()  # one process, no process group, the whole minibatch
    for method in METHODS:
        for name, reference in one[method]["params"].items():
            assert torch.equal(ranks[0][method]["params"][name], ranks[1][method]["params"][name])
            # float64: only the summation order differs (half-batch means, then their mean)
            torch.testing.assert_close(
                ranks[0][method]["params"][name], reference, rtol=0, atol=1e-12
            )
        for rank in ranks:
            assert rank[method]["test_accuracy"] == one[method]["test_accuracy"]
            torch.testing.assert_close(
                rank[method]["train_loss"], one[method]["train_loss"], equal_nan=True
            )
            # each rank trained on its half of every minibatch
            assert rank[method]["examples_seen"] < 0.6 * one[method]["examples_seen"]
        # the operators of every transition: the same on both ranks and in one process
        first, *others = [r[method]["operators"] for r in (*ranks, one)]
        assert len(first) == (0 if method == "single-level" else 1)
        for index, transition in enumerate(first):
            assert transition, "no group was coarsened"
            for other in others:
                for group, saved in transition.items():
                    assert torch.equal(other[index][group]["assign"], saved["assign"])
                    assert torch.equal(other[index][group]["weights"], saved["weights"])
    assert (
        one["V-cycle with tau"]["test_accuracy"][-1] > one["V-cycle with tau"]["test_accuracy"][0]
    )


def test_a_dead_rank_fails_the_launch_and_the_same_command_resumes(
    root: Path, tmp_path: Path, refusals
) -> None:
    env = {"MLW_RUNS_DIR": str(tmp_path / "runs"), "MLW_MLFLOW_DIR": str(tmp_path / "mlflow")}
    args = ["-m", "mlw_lib.distributed", *TINY_RUN, "-p", "epochs", "200", "-p", "eval_every", "20"]
    checkpoint = tmp_path / "runs" / "distributed" / "mlp_mnist" / "fas-2-levels__seed0.pt"
    launch = torchrun(2, *args, env=env)
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and launch.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launch.poll() is None, "the run ended before a rank could be killed"
    ranks = [
        p
        for p in psutil.Process(launch.pid).children(recursive=True)
        if p.environ().get("RANK") == "1"
    ]
    assert len(ranks) == 1
    ranks[0].kill()
    out, err = launch.communicate(timeout=120)
    assert launch.returncode != 0
    assert "mlw_lib.distributed FAILED" in err and "rank      : 1" in err, err[-3000:]
    refusals.behaviour(
        "a rank killed (SIGKILL) during a 2-process torchrun run",
        "torchrun fails, naming the failed rank and its signal; the same command resumes "
        "from rank 0's last checkpoint and completes",
    )
    again = torchrun(2, *args, env=env)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert f"resuming from {checkpoint}" in out
    assert "test accuracy" in out and out.count("test accuracy") == 1  # rank 0 alone prints
    os.environ["MLW_MLFLOW_DIR"] = env["MLW_MLFLOW_DIR"]
    try:
        tracking.use_store()
        experiment = mlflow.get_experiment_by_name("distributed")
        runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    finally:
        del os.environ["MLW_MLFLOW_DIR"]
    children = [r for r in runs if r.info.run_name == "fas, 2 levels / seed 0"]
    assert len(children) == 2  # one per launch: rank 0's only
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.metrics["work_units"] >= 200 * 8
    parent = next(r for r in runs if r.info.run_id == finished[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["world_size"] == "2"


def test_a_batch_that_does_not_split_over_the_processes_is_refused(
    tmp_path: Path, refusals
) -> None:
    env = {"MLW_RUNS_DIR": str(tmp_path / "runs"), "MLW_MLFLOW_DIR": str(tmp_path / "mlflow")}
    launch = torchrun(2, "-m", "mlw_lib.distributed", *TINY_RUN, "-p", "batch_size", "63", env=env)
    out, err = launch.communicate(timeout=300)
    assert launch.returncode != 0
    assert "batch_size 63 does not split evenly over 2 processes" in err
    assert "multiple of 2 (e.g. 62)" in err
    refusals.seen(
        "torchrun --nproc-per-node 2 -m mlw_lib.distributed -p batch_size 63",
        next(line for line in err.splitlines() if "error:" in line),
    )


def test_more_processes_than_examples_per_minibatch_are_refused(
    monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 8)
    with refusals.error(
        "8 processes for a global minibatch of 4", ValueError, "too small for 8 processes"
    ):
        distributed.check_batch_size(4)
    distributed.check_batch_size(16)


@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")  # pytest owns stderr
def test_a_process_started_without_torchrun_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys, refusals
) -> None:
    for name in distributed.LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert main(["-p", "method", "fas"]) == 2
    error = capsys.readouterr().err
    assert "without torchrun's environment" in error and "torchrun --nproc-per-node N" in error
    refusals.seen("python -m mlw_lib.distributed (no torchrun)", error.strip())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_nccl_on_a_machine_without_gpus_is_refused(
    monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    launcher = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**launcher, "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with refusals.error("backend nccl on a machine without GPUs", ValueError, "use backend 'gloo'"):
        distributed.start("nccl", "cpu")


@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")  # pytest owns stderr
def test_every_launcher_parameter_reaches_the_run(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    launcher = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    folder = tmp_path / "my checkpoints"
    given = {
        "method": "safeguarded",
        "levels": 3,
        "seed": 3,
        "width": 48,
        "validation": 64,
        "train_subset": 576,
        "test_subset": 96,
        "experiment": "my-experiment",
        "checkpoint_dir": str(folder),
        "epochs": 1,
        "batch_size": 64,
    }
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert main([item for k, v in given.items() for item in ("-p", k, str(v))]) == 0
    assert "safeguarded, 3 levels, seed 3: 1 processes (gloo)" in capsys.readouterr().out
    assert (folder / "safeguarded-3-levels__seed3.pt").is_file()
    experiment = mlflow.get_experiment_by_name("my-experiment")
    (child,) = mlflow.search_runs(
        [experiment.experiment_id],
        "tags.mlflow.runName = 'safeguarded, 3 levels / seed 3'",
        output_format="list",
    )
    assert child.data.params["multilevel.correction_search"] == "True"
    assert child.data.params["multilevel.levels"] == "3"
    assert child.data.tags["n_train"] == "512"  # 576 - 64 held out
    assert child.data.tags["n_test"] == "96"
    assert child.data.tags["data_validation"].endswith("held out (64)")
    assert "correction_gain" in child.data.metrics  # measured on the held-out batch
    state, saved = tracking.load_logged_checkpoint(child.info.run_id)
    assert saved["model"]["hidden"] == [48, 24]
    # a frontier run (budget) logged under another process's run (parent_run)
    parent = child.data.tags["mlflow.parentRunId"]
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    again = {**given, "method": "single-level", "budget": 0.5, "parent_run": parent}
    assert main([item for k, v in again.items() for item in ("-p", k, str(v))]) == 0
    (frontier,) = mlflow.search_runs(
        [experiment.experiment_id],
        "tags.mlflow.runName = 'single-level, 0.5 budget / seed 3'",
        output_format="list",
    )
    assert frontier.data.tags["mlflow.parentRunId"] == parent
    assert frontier.data.metrics["work_units"] == 4  # half of 1 epoch of 8 minibatches


def test_notebook_06_with_nproc_trains_every_run_under_torchrun(root: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MLW_RUNS_DIR": str(tmp_path / "runs"),
        "MLW_FIGURES_DIR": str(tmp_path / "figures"),
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MLW_MLFLOW_DIR", None)
    command = [sys.executable, "-m", "mlw_lib", "run", "06", "-f", "params/ci/06_what_pays.yaml"]
    command += ["-p", "nproc", "2", "-p", "seeds", "[0]", "-p", "frontier", "[1.0]"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    os.environ["MLW_RUNS_DIR"] = env["MLW_RUNS_DIR"]
    try:
        tracking.use_store()
        experiment = mlflow.get_experiment_by_name(tracking.experiment_name("06_what_pays"))
        runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    finally:
        del os.environ["MLW_RUNS_DIR"]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    names = sorted(r.info.run_name for r in children)
    assert names == ["adaptive, 2 levels / seed 0", "single-level / seed 0"]
    assert all(r.data.tags["world_size"] == "2" for r in children)  # trained under torchrun
    assert all(r.info.status == "FINISHED" for r in (parent, *children))
    assert (tmp_path / "figures" / "06_what_pays" / "mlp_mnist" / "results.md").is_file()


def test_launch_runs_the_entry_point_under_torchrun_or_as_one_plain_process(monkeypatch):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="mlflow run abc123\n", stderr="")

    monkeypatch.setattr(launcher.subprocess, "run", fake_run)
    job = {"method": "backprop", "threads": 2}
    assert launcher.launch(job, 2, "mlw_lib.parallel") == "abc123"
    assert launcher.launch(job, 1, "mlw_lib.parallel", torchrun=False) == "abc123"
    under_torchrun, plain = commands
    assert under_torchrun[0].endswith("torchrun") and "--nproc-per-node=2" in under_torchrun
    assert plain[:3] == [sys.executable, "-m", "mlw_lib.parallel"]
    assert plain[3:] == ["-p", "method", '"backprop"', "-p", "threads", "2"]
    with pytest.raises(ValueError, match="2 processes need torchrun"):
        launcher.launch(job, 2, "mlw_lib.parallel", torchrun=False)
