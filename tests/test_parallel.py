"""PVD and synthetic gradients on torch.distributed (gloo, 2 processes, tiny): the same
arithmetic as their serial runs, identical parameters on every rank after a PVD
synchronisation, the oracle equal to backpropagation; the entry point; bad inputs."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
import torch
from helpers import REPO, free_port, torchrun
from parallel_worker import net, run_all, small_data

from mlw_lib import tracking
from mlw_lib.models.stable import StableNet
from mlw_lib.parallel import PVD, Backprop, PVDConfig, SyntheticConfig, SyntheticGradients
from mlw_lib.parallel import __main__ as entry
from mlw_lib.parallel.__main__ import main
from mlw_lib.training.batches import BatchStream


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("parallel")
    launch = torchrun(2, str(REPO / "tests" / "parallel_worker.py"), str(out))
    _, err = launch.communicate(timeout=300)
    assert launch.returncode == 0, err[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_pvd_ranks_hold_identical_parameters_equal_to_the_serial_run(two_ranks):
    serial = run_all(serial=True, oracle=False)
    for name, p in two_ranks[0]["pvd"]["params"].items():
        assert torch.equal(p, two_ranks[1]["pvd"]["params"][name]), name
        assert torch.equal(p, serial["pvd"]["params"][name]), name
    assert two_ranks[0]["pvd"]["chosen"] == two_ranks[1]["pvd"]["chosen"] == serial["pvd"]["chosen"]
    start = net()
    assert any(not torch.equal(p, serial["pvd"]["params"][n]) for n, p in start.named_parameters())


def test_synthetic_gradients_over_two_processes_equal_the_serial_run(two_ranks):
    serial = run_all(serial=True, oracle=False)["synthetic"]
    parallel = two_ranks[0]["synthetic"]
    for name, p in serial["params"].items():
        assert torch.equal(parallel["params"][name], p), name
    assert parallel["errors"] == serial["errors"] and len(serial["errors"]) == 6


def test_synthetic_gradients_with_the_true_gradient_are_backpropagation(two_ranks):
    data, model = small_data(), net()
    stream = BatchStream(data.x_train, data.y_train, 8, 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(6):
        x, y = stream.next()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    plain = net()  # the baseline trainer of the timings: the same arithmetic
    trainer = Backprop(plain, data, SyntheticConfig(batch_size=8, lr=0.1))
    for _ in range(6):
        trainer.step()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(two_ranks[0]["oracle"]["params"][name], p, rtol=0, atol=1e-12)
        assert torch.equal(q, p), name


def test_the_synthetic_gradient_module_learns_the_true_gradient():
    data = small_data()
    sg = SyntheticGradients(net(), data, SyntheticConfig(batch_size=8, sg_lr=0.05), serial=True)
    for _ in range(60):
        sg.step()
    sg.finish()
    assert sum(sg.errors[-10:]) / 10 < 0.8 * sg.errors[0]


def test_entry_point_runs_serially_and_logs_its_history(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    argv = ["-p", "method", "synthetic", "-p", "serial", "true", "-p", "iterations", "8"]
    assert main([*argv, "-p", "eval_every", "4", "-p", "width", "4"]) == 0
    out = capsys.readouterr().out
    assert "synthetic serial: test accuracy" in out and "mlflow run " in out
    tracking.use_store()
    run = mlflow.search_runs(experiment_names=["parallel"]).iloc[0]
    history = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="history.csv")
    )
    assert (
        history["iteration"].tolist() == [0, 4, 8] and history["wall_time"].is_monotonic_increasing
    )
    assert history["sg_error"].iloc[1:].notna().all() and (history["threads"] == 1).all()
    assert run["tags.processes"] == "1" and run["params.method"] == "synthetic"


@pytest.mark.parametrize(
    "what, build, message",
    [
        (
            "PVD: depth 4 in 3 blocks",
            lambda d: PVD(net(), d, PVDConfig(blocks=3), serial=True),
            "cannot be split into 3",
        ),
        (
            "PVD with 2 blocks in 1 process",
            lambda d: PVD(net(), d, PVDConfig()),
            "runs on 2 processes, this run has 1",
        ),
        (
            "PVD of a net with BatchNorm",
            lambda d: PVD(StableNet("resnet", 2, 2, width=4, conv=True), d, PVDConfig(), True),
            "without BatchNorm",
        ),
        (
            "PVD of a torch.nn.Linear",
            lambda d: PVD(torch.nn.Linear(2, 2), d, PVDConfig(), True),
            "StableNet",
        ),
        (
            "synthetic gradients in 1 process (not serial)",
            lambda d: SyntheticGradients(net(), d, SyntheticConfig()),
            "2 processes",
        ),
        (
            "synthetic gradients: serial with the oracle",
            lambda d: SyntheticGradients(net(), d, SyntheticConfig(), serial=True, oracle=True),
            "oracle",
        ),
        (
            "synthetic gradients of a 3-layer net",
            lambda d: SyntheticGradients(
                StableNet("resnet", 2, 2, depth=3), d, SyntheticConfig(), serial=True
            ),
            "even depth",
        ),
    ],
)
def test_bad_parallel_settings_are_refused(what, build, message, refusals):
    with refusals.error(what, ValueError, message):
        build(small_data())


def test_entry_point_refuses_unknown_parameters(capsys):
    assert main(["-p", "method", "magic", "-p", "serial", "true"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err


def _pvd_params(**settings):
    model = net()
    pvd = PVD(model, small_data(), PVDConfig(**{"batch_size": 8, **settings}), serial=True)
    pvd.iterate()
    return pvd, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize(
    "setting", [{"local_steps": 2}, {"lr": 0.2}, {"batch_size": 4}, {"seed": 3}, {"holdout": 3}]
)
def test_every_pvd_setting_acts(setting):
    pvd, changed = _pvd_params(**setting)
    _, default = _pvd_params()
    if "holdout" in setting:  # the winner may be the same: the held-out batch is what changes
        assert len(pvd.held_out[0]) == 3
    else:
        assert not torch.equal(changed, default)
    assert [len(names) for names in PVD(net(), small_data(), PVDConfig(blocks=4), True).blocks] == [
        4,  # the lift's weight and bias, and layer 0's
        2,
        2,
        2,
    ]


@pytest.mark.parametrize(
    "setting",
    [{"lr": 0.2}, {"momentum": 0.0}, {"sg_lr": 0.5}, {"batch_size": 4}, {"seed": 3}],
)
def test_every_synthetic_gradient_setting_acts(setting):
    def run(**settings):
        model = net()
        config = SyntheticConfig(**{"batch_size": 8, **settings})
        sg = SyntheticGradients(model, small_data(), config, serial=True)
        for _ in range(4):
            sg.step()
        sg.finish()
        return torch.cat([p.detach().flatten() for p in model.parameters()]), sg.errors

    changed, default = run(**setting), run()
    assert not torch.equal(changed[0], default[0]) or changed[1] != default[1]


def test_every_entry_point_parameter_reaches_the_run(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    seen = {}
    for name in ("PVD", "SyntheticGradients"):
        real = getattr(entry, name)

        def spy(model, data, config, serial, real=real, **more):
            seen.update(model=model.config, config=config, n_train=len(data.x_train), **more)
            return real(model, data, config, serial, **more)

        monkeypatch.setattr(entry, name, spy)
    threads = torch.get_num_threads()
    pvd = dict(method="pvd", serial=True, dataset="swiss_roll", form="leapfrog", depth=6)
    pvd |= dict(width=5, h=0.3, iterations=3, eval_every=2, blocks=3, local_steps=2, lr=0.07)
    pvd |= dict(batch_size=20, holdout=30, seed=4, threads=2, experiment="my-parallel")
    try:
        assert main([item for k, v in pvd.items() for item in ("-p", k, str(v))]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    model = {k: seen["model"][k] for k in ("form", "depth", "width", "h")}
    assert model == dict(form="leapfrog", depth=6, width=5, h=0.3)
    assert seen["config"] == PVDConfig(3, 2, 0.07, 20, 30, 4) and seen["n_train"] == 500
    tracking.use_store()
    (run,) = mlflow.search_runs(experiment_names=["my-parallel"], output_format="list")
    history = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="history.csv")
    )
    assert history["iteration"].tolist() == [0, 2, 3] and (history["threads"] == 2).all()
    synthetic = dict(method="synthetic", serial=True, dataset="mnist", train_subset=600)
    synthetic |= dict(validation=100, momentum=0.5, sg_lr=0.3, iterations=2, eval_every=1)
    synthetic |= dict(parent_run=run.info.run_id)
    assert main([item for k, v in synthetic.items() for item in ("-p", k, str(v))]) == 0
    assert seen["n_train"] == 500 and seen["model"]["inputs"] == 784 and not seen["oracle"]
    assert (seen["config"].momentum, seen["config"].sg_lr) == (0.5, 0.3)
    (child,) = mlflow.search_runs(
        experiment_names=["my-parallel"],
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
        output_format="list",
    )
    assert child.data.tags["data_name"] == "MNIST" and child.data.params["method"] == "synthetic"
    # method "oracle" asks for the true gradients, and those need two processes
    launcher = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**launcher, "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    oracle = {**synthetic, "method": "oracle", "serial": False}
    assert main([item for k, v in oracle.items() for item in ("-p", k, str(v))]) == 2
    assert "run on 2 processes (one per half), this run has 1" in capsys.readouterr().err
    assert seen["oracle"]


def test_the_backprop_baseline_trains_in_one_process_with_its_threads(
    root, tmp_path, monkeypatch, capsys, refusals
):
    monkeypatch.setenv("MLW_RUNS_DIR", str(tmp_path))
    monkeypatch.delenv("MLW_MLFLOW_DIR", raising=False)
    seen = {}

    def spy(model, data, config):
        seen.update(config=config, threads=torch.get_num_threads())
        return Backprop(model, data, config)

    monkeypatch.setattr(entry, "Backprop", spy)
    threads = torch.get_num_threads()
    job = dict(method="backprop", lr=0.2, momentum=0.5, batch_size=20, seed=3, threads=2)
    job |= dict(iterations=200, eval_every=100, experiment="baseline", width=8)
    try:
        assert main([item for k, v in job.items() for item in ("-p", k, str(v))]) == 0
    finally:
        torch.set_num_threads(threads)
    assert seen == {"config": SyntheticConfig(0.2, 0.5, batch_size=20, seed=3), "threads": 2}
    tracking.use_store()
    (run,) = mlflow.search_runs(experiment_names=["baseline"], output_format="list")
    history = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="history.csv")
    )
    assert history["val_accuracy"].iloc[-1] > history["val_accuracy"].iloc[0] + 0.2  # it learns
    assert (history["processes"] == 1).all() and (history["threads"] == 2).all()
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun --nproc-per-node 2
    assert main(["-p", "method", "backprop"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "backprop trains in one process" in line
    refusals.seen("`-m mlw_lib.parallel -p method backprop` on 2 processes", line)
