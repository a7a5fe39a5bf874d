"""The training loop: reproducibility, checkpoint/resume, budgets, bad input, NaN handling."""

from __future__ import annotations

import pickle
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import make_cycle, toy_data, toy_dataset

from mlw_lib.models import MLP
from mlw_lib.modes import in_mode
from mlw_lib.multilevel import CoarseningError, FASCycle, MultilevelConfig, prolong
from mlw_lib.multilevel.hierarchy import detached_params
from mlw_lib.reproducibility import seed_everything
from mlw_lib.training import NonFiniteLossError, TrainConfig, load_checkpoint, train
from mlw_lib.training.checkpoint import ResumeMismatchError


def _run(multilevel, epochs=3.0, seed=0, **kw):
    seed_everything(seed)
    model = MLP(12, [16, 8], 4, dropout=0.1)
    return train(
        model,
        toy_dataset(),
        TrainConfig(epochs=epochs, batch_size=32, lr=0.05, seed=seed),
        multilevel,
        **kw,
    )


METRICS = ["work_units", "test_loss", "test_accuracy", "train_loss", "data_epochs"]


@pytest.mark.parametrize("levels", [1, 3])
def test_same_seed_same_metrics(levels):
    config = MultilevelConfig(levels=levels, matching="greedy")
    a, b = _run(config).history, _run(config).history
    assert a[METRICS].equals(b[METRICS])
    c = _run(config, seed=1).history
    assert not a["test_loss"].equals(c["test_loss"])


def test_equal_work_budget():
    single = _run(MultilevelConfig(levels=1)).history
    multi = _run(MultilevelConfig(levels=2)).history
    assert single["work_units"].iloc[-1] == pytest.approx(3 * 8)  # 3 epochs x 256/32 batches
    budget = 3 * 8
    assert budget <= multi["work_units"].iloc[-1] < budget + 8  # overshoot < one cycle
    assert multi["level1_loss"].iloc[1:].notna().all()  # row 0: the initial net, no steps


@pytest.mark.parametrize("levels", [1, 2])
def test_resume_gives_the_same_final_metrics(tmp_path, levels):
    config = MultilevelConfig(levels=levels, rematch_every=2)
    full = _run(config, epochs=4.0).history
    path = tmp_path / "ckpt.pt"
    _run(config, epochs=2.0, checkpoint_path=path)  # interrupted after two epochs
    saved = load_checkpoint(path)
    assert len(saved["history"]) == 3 and saved["config"]["multilevel"]["levels"] == levels
    resumed = _run(config, epochs=4.0, checkpoint_path=path, resume=True).history
    assert len(resumed) == len(full)
    assert resumed[METRICS].equals(full[METRICS])


def _nan_inputs():
    data = toy_dataset()
    data.x_train[::2] = float("nan")  # every minibatch sees NaN inputs
    return data


def test_nan_loss_keeps_this_runs_last_checkpoint_and_says_so(tmp_path, refusals):
    path = tmp_path / "ckpt.pt"
    config = MultilevelConfig(levels=2)
    _run(config, epochs=1.0, checkpoint_path=path)
    before = path.read_bytes()
    seed_everything(0)
    with refusals.error(
        "NaN inputs after a checkpoint was written (resumed run)",
        NonFiniteLossError,
        r"loss at epoch 1\.\d+ on level 0.*last good checkpoint \(epoch 1\.\d+\) is kept",
    ):
        train(
            MLP(12, [16, 8], 4, dropout=0.1),
            _nan_inputs(),
            TrainConfig(epochs=3.0, batch_size=32),
            config,
            checkpoint_path=path,
            resume=True,
        )
    assert path.read_bytes() == before


def test_nan_loss_before_any_checkpoint_says_none_was_written(tmp_path, refusals):
    path = tmp_path / "ckpt.pt"
    _run(MultilevelConfig(levels=2), epochs=1.0, checkpoint_path=path)  # another run's file
    before = path.read_bytes()
    seed_everything(0)
    what = "NaN inputs before this run wrote a checkpoint (another run's file is there)"
    with refusals.error(what, NonFiniteLossError, r"epoch 0\.\d+ on level 0.*wrote no checkpoint"):
        train(
            MLP(12, [16, 8], 4),
            _nan_inputs(),
            TrainConfig(epochs=3.0, batch_size=32),
            MultilevelConfig(levels=2),
            checkpoint_path=path,
        )
    assert path.read_bytes() == before


def test_a_net_that_evaluates_to_nan_is_never_checkpointed(tmp_path, refusals):
    data = toy_dataset()
    data.x_test[0] = float("nan")
    path = tmp_path / "ckpt.pt"
    what = "an evaluation that gives NaN (a NaN test input)"
    with refusals.error(what, NonFiniteLossError, r"evaluation \(test_loss = nan\) at epoch 1"):
        train(MLP(12, [8], 4), data, TrainConfig(epochs=2.0, batch_size=32), checkpoint_path=path)
    assert not path.exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 0.1}, "train.lr 0.05 (checkpoint) vs 0.1 (now)"),
        ({"seed": 1}, "train.seed 0 (checkpoint) vs 1 (now)"),
        ({"levels": 3}, "multilevel.levels 2 (checkpoint) vs 3 (now)"),
        ({"hidden": [16, 4]}, "model.hidden [16, 8] (checkpoint) vs [16, 4] (now)"),
    ],
)
def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, change, named, refusals):
    path = tmp_path / "ckpt.pt"
    _run(MultilevelConfig(levels=2), epochs=1.0, checkpoint_path=path)
    before = path.read_bytes()
    levels = change.get("levels", 2)
    train_config = TrainConfig(
        epochs=2.0, batch_size=32, lr=change.get("lr", 0.05), seed=change.get("seed", 0)
    )
    what = f"train(..., resume=True) from a checkpoint written with other settings ({change})"
    with refusals.error(what, ResumeMismatchError, re.escape(named)):
        train(
            MLP(12, change.get("hidden", [16, 8]), 4, dropout=0.1),
            toy_dataset(),
            train_config,
            MultilevelConfig(levels=levels),
            checkpoint_path=path,
            resume=True,
        )
    assert path.read_bytes() == before


def test_resume_of_a_missing_checkpoint_is_an_error(tmp_path, refusals):
    what = "train(..., checkpoint_path=<mistyped>, resume=True)"
    with refusals.error(what, FileNotFoundError, "no checkpoint at .*resume=False to start"):
        _run(MultilevelConfig(), epochs=1.0, checkpoint_path=tmp_path / "typo.pt", resume=True)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("MLP(12, [16, 0], 4)", "positive integers"),
        ("MLP(12, [16, 2.5], 4)", "positive integers"),
        ("MLP(12, 16, 4)", "list of positive integers"),
        ('MLP(12, [16], 4, activation="swish")', "unknown activation"),
        ('MultilevelConfig(convention="sum_sum")', "unknown convention"),
        ('MultilevelConfig(cycle="X")', "unknown cycle"),
        ("MultilevelConfig(ratio=1.0)", r"ratio must be a finite number in \[0.25, 1\)"),
        (
            "MultilevelConfig(coarse_batch_multiple=0)",
            r"coarse_batch_multiple must be a positive integer, got 0",
        ),
        ("MultilevelConfig(ratio=0.0)", r"ratio must be a finite number in \[0.25, 1\)"),
        ("MultilevelConfig(levels=0)", "levels must be a positive integer"),
        ('TrainConfig(optimizer="lbfgs")', "unknown optimizer"),
        ("TrainConfig(lr=[0.1, 0.2]).level_lrs(3)", "one per level"),
    ],
)
def test_bad_input_gets_a_clear_error(code, message, refusals):
    names = {"MLP": MLP, "MultilevelConfig": MultilevelConfig, "TrainConfig": TrainConfig}
    with refusals.error(code, ValueError, message):
        eval(code, names)  # the code a user would write


def test_more_levels_than_coarsening_can_produce():
    with pytest.raises(CoarseningError, match="levels"):
        train(
            MLP(12, [4, 8], 4),
            toy_dataset(),
            TrainConfig(epochs=1.0, batch_size=32),
            MultilevelConfig(levels=4),
        )


@pytest.mark.parametrize("cycle", ["W", "F"])
def test_w_and_f_cycles_train(cycle):
    seed_everything(0)
    config = TrainConfig(epochs=8.0, batch_size=32, lr=0.1)
    history = train(
        MLP(12, [16, 8], 4), toy_dataset(), config, MultilevelConfig(levels=3, cycle=cycle)
    ).history
    accuracy = history["test_accuracy"]  # learnable labels, 4 classes: chance is 0.25
    assert accuracy.iloc[-1] > max(0.5, accuracy.iloc[0] + 0.2)
    assert history["work_units"].iloc[-1] >= 64


def test_adam_multilevel_trains():
    seed_everything(0)
    result = train(
        MLP(12, [16, 8], 4),
        toy_dataset(),
        TrainConfig(epochs=3.0, batch_size=32, lr=1e-2, optimizer="adam"),
        MultilevelConfig(levels=2),
    )
    history = result.history
    assert torch.isfinite(torch.tensor(history["train_loss"].iloc[1:].to_numpy())).all()
    assert history["test_accuracy"].iloc[-1] > max(0.6, history["test_accuracy"].iloc[0] + 0.2)


def test_a_layout_that_disagrees_with_the_parameters_is_rejected():
    class WrongLayout(MLP):
        def param_layout(self):
            layout = super().param_layout()
            layout["linears.1.weight"] = layout["linears.0.weight"]  # rows are hidden1, not hidden0
            return layout

    with pytest.raises(ValueError, match=r"linears\.1\.weight: axis 0 should have 16 units"):
        train(
            WrongLayout(12, [16, 8], 4),
            toy_dataset(),
            TrainConfig(epochs=1.0, batch_size=32),
            MultilevelConfig(levels=2),
        )


@pytest.mark.parametrize("kind", ["norm", "uniform"])
def test_unit_weights_between_matchings(kind):
    """omega = ||feature|| is recomputed from the current parameters; uniform stays ones."""
    from mlw_lib.multilevel.hierarchy import match_model, reweight

    model = MLP(12, [16, 8], 4)
    config = MultilevelConfig(levels=2, unit_weights=kind)
    first = match_model(model, config, level=0, seed=0)
    with torch.no_grad():
        model.linears[0].weight.mul_(3.0)
    second = reweight(first, model, config)
    before, after = first.transfers["hidden0"].weights, second.transfers["hidden0"].weights
    assert torch.equal(second.transfers["hidden0"].assign, first.transfers["hidden0"].assign)
    if kind == "uniform":
        assert torch.equal(after, torch.ones(16, dtype=torch.float64))
        assert torch.equal(second.transfers["hidden1"].weights, first.transfers["hidden1"].weights)
    else:
        expected = model.unit_features("hidden0").norm(dim=1).double()
        torch.testing.assert_close(after, expected)
        assert bool((after > before).all())


def test_counting_a_new_coarse_size_is_timed_as_accounting():
    """The FLOP count of a coarse size seen for the first time is bookkeeping: its time goes
    to the phase `accounting`, not to `transfer`."""
    x, y = toy_data(64, 12, 4, seed=0, dtype=torch.float32)
    cycle = make_cycle(MLP(12, [16, 8], 4), MultilevelConfig(levels=2), x, y)
    count = cycle.work_of
    pause = 0.3

    def slow_count(model):
        time.sleep(pause)
        return count(model)

    cycle.work_of = slow_count
    cycle.run_cycle()
    assert cycle.meter.seconds["accounting"] >= pause
    assert cycle.meter.seconds["transfer"] < pause
    cycle.run_cycle()  # same coarse sizes: no new count
    assert cycle.meter.seconds["accounting"] < 2 * pause


@pytest.mark.parametrize("levels", [1, 2])
def test_wall_time_is_the_real_training_time(monkeypatch, levels):
    """Slow minibatch drawing counts: wall_time covers it, and the phases (with "data" and
    "other") add up to wall_time."""
    from mlw_lib.training.batches import BatchStream

    draw, pause, drawn = BatchStream.next, 0.01, []

    def slow_next(self):
        time.sleep(pause)
        drawn.append(1)
        return draw(self)

    monkeypatch.setattr(BatchStream, "next", slow_next)
    history = _run(MultilevelConfig(levels=levels), epochs=1.0).history
    last = history.iloc[-1]
    assert last["wall_time"] >= len(drawn) * pause
    assert last["time_data"] >= len(drawn) * pause
    phases = [c for c in history.columns if c.startswith("time_")]
    assert "time_other" in phases
    assert last[phases].sum() == pytest.approx(last["wall_time"])


class _Payload:
    """Pickles into a call of `Path.touch(marker)`: what a crafted checkpoint could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_cannot_run_code_on_resume(tmp_path, refusals):
    marker, path = tmp_path / "code-ran", tmp_path / "ckpt.pt"
    torch.save({"model": _Payload(marker)}, path)
    what = "train(..., resume=True) of a crafted checkpoint that runs code when unpickled"
    with refusals.error(what, pickle.UnpicklingError, "Weights only load failed"):
        _run(MultilevelConfig(), epochs=1.0, checkpoint_path=path, resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("training", [True, False])
def test_in_mode_switches_every_submodule_and_restores_the_mode_after_an_error(training):
    model = MLP(12, [8], 4).train(not training)
    with pytest.raises(RuntimeError, match="inside"), in_mode(model, training=training):
        assert all(m.training == training for m in model.modules())
        raise RuntimeError("inside")
    assert all(m.training == (not training) for m in model.modules())


def _with_validation(n: int = 64) -> SimpleNamespace:
    data, extra = toy_dataset(), toy_dataset(seed=5, n=n)
    return SimpleNamespace(**vars(data), x_val=extra.x_train, y_val=extra.y_train)


def test_monitor_corrections_records_each_corrections_gain_and_the_steps_per_level():
    config = TrainConfig(epochs=2.0, batch_size=32, lr=[0.05, 0.05], eval_every=1.0)
    multilevel = MultilevelConfig(levels=2, batches_per_phase=2, monitor_corrections=True)
    result = train(MLP(12, [16, 8], 4), _with_validation(), config, multilevel)
    corrections = result.cycle.corrections
    assert len(corrections) == result.cycle.cycles_done > 0
    assert all(c["level"] == 0 and c["after"] != c["before"] for c in corrections)
    row = result.history.iloc[1]  # the first evaluation after training started
    first = [c["after"] - c["before"] for c in corrections if c["cycle"] < row["cycles"]]
    assert row["correction_gain"] == pytest.approx(sum(first) / len(first))
    last, cycles = result.history.iloc[-1], result.cycle.cycles_done
    assert (last["level0_steps"], last["level1_steps"]) == (4 * cycles, 2 * cycles)  # 2+2, 2
    assert result.meter.breakdown()["monitor"] > 0


def test_a_correction_of_length_zero_gains_exactly_nothing():
    config = TrainConfig(epochs=1.0, batch_size=32, lr=[0.05, 0.05], eval_every=1.0)
    multilevel = MultilevelConfig(
        levels=2, batches_per_phase=2, monitor_corrections=True, correction_damping=0.0
    )
    result = train(MLP(12, [16, 8], 4), _with_validation(), config, multilevel)
    assert all(c["after"] == c["before"] for c in result.cycle.corrections)


def test_monitoring_is_off_by_default_and_needs_a_validation_split():
    config = TrainConfig(epochs=1.0, batch_size=32, lr=[0.05, 0.05])
    result = train(MLP(12, [16, 8], 4), toy_dataset(), config, MultilevelConfig(levels=2))
    assert not result.cycle.corrections and "correction_gain" not in result.history
    monitored = MultilevelConfig(levels=2, monitor_corrections=True)
    with pytest.raises(ValueError, match=r"need a validation split .* data.hold_out\(n\)"):
        train(MLP(12, [16, 8], 4), toy_dataset(), config, monitored)


def test_correction_search_never_lets_a_correction_raise_the_held_out_loss():
    config = TrainConfig(epochs=4.0, batch_size=32, lr=[0.05, 0.05], eval_every=1.0)
    overshoot = dict(
        levels=2, batches_per_phase=2, monitor_corrections=True, correction_damping=8.0
    )
    cycles = {}
    for search in (False, True):
        seed_everything(0)
        multilevel = MultilevelConfig(**overshoot, correction_search=search)
        cycles[search] = train(MLP(12, [16, 8], 4), _with_validation(), config, multilevel).cycle
    plain, searched = cycles[False].corrections, cycles[True].corrections
    assert any(c["after"] > c["before"] for c in plain)  # 8x corrections overshoot...
    assert all(c["after"] <= c["before"] for c in searched)  # ...the search never does
    assert {c["length"] for c in searched} <= {0.0, 0.25, 0.5, 1.0}
    assert any(c["length"] < 1 for c in searched) and all(c["length"] == 1 for c in plain)
    # four forward passes of the fine net per correction: before, and at 1, 1/2 and 1/4
    monitor = cycles[True].meter.work_by_phase["monitor"]
    assert monitor == pytest.approx(len(searched) * 4 / 3)


def test_coarse_first_spends_its_share_of_the_budget_on_each_coarse_level_coarsest_first():
    config = MultilevelConfig(levels=3, coarse_first=0.5, coarse_first_then="fine", ratio=0.5)
    result = _run(config, epochs=4.0)
    works = [level.work for level in result.cycle.levels]
    last = result.history.iloc[-1]
    coarse = [last[f"level{l}_steps"] * works[l] for l in (1, 2)]
    budget = 4.0 * 8
    for spent in coarse:  # half the budget, split equally; a phase (one step) may overshoot
        assert budget / 4 <= spent < budget / 4 + works[1] + 1e-9
    assert last["level0_steps"] == pytest.approx(budget - sum(coarse), abs=1)  # then fine only
    assert result.cycle.coarse_stage.root == 0 and not result.cycle.corrections
    cycles = _run(MultilevelConfig(levels=3, coarse_first=0.5), epochs=4.0).history.iloc[-1]
    assert cycles["level1_steps"] * works[1] > coarse[0] + works[1]  # cycles visit coarse too


def test_during_coarse_first_the_curve_follows_the_coarse_net_being_trained():
    """The fine net is untouched until the stage ends, so the curve reports the coarse net
    (test_accuracy) next to the fine one (fine_test_accuracy, constant till then)."""
    seed_everything(0)
    config = TrainConfig(epochs=4.0, batch_size=32, lr=0.05, eval_every=0.5)
    multilevel = MultilevelConfig(levels=2, coarse_first=0.5, coarse_first_then="fine")
    history = train(MLP(12, [16, 8], 4), toy_dataset(), config, multilevel).history
    stage = history[history["fine_test_accuracy"].notna()]  # rows where the coarse net leads
    assert len(stage) >= 2 and (stage["level0_steps"] == 0).all()
    assert (stage["fine_test_accuracy"] == history["test_accuracy"].iloc[0]).all()
    assert stage["test_accuracy"].iloc[-1] > history["test_accuracy"].iloc[0] + 0.2
    assert history[history["level0_steps"] > 0]["fine_test_accuracy"].isna().all()


@pytest.mark.parametrize("blend", [0.0, 0.5, 1.0])
def test_prolong_blend_interpolates_the_fine_weights_with_the_prolonged_coarse_ones(blend):
    x, y = toy_data(64, 12, 4, seed=3)
    config = MultilevelConfig(levels=2, coarse_first=0.5, prolong_blend=blend, fmg_noise=0.0)
    cycle = make_cycle(MLP(12, [16, 8], 4).double(), config, x, y)
    cycle._restrict(0, batches=None)
    fine, coarse = cycle.levels[0].model, cycle.levels[1].model
    with torch.no_grad():
        for p in coarse.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in fine.named_parameters()}
    layout, transfers = fine.param_layout(), cycle.transitions[0].transfers
    prolonged = prolong(detached_params(coarse), layout, transfers, config.convention)
    cycle._prolong_solution(1, torch.Generator().manual_seed(0))
    for name, p in fine.named_parameters():
        expected = (1 - blend) * before[name] + blend * prolonged[name]
        torch.testing.assert_close(p.detach(), expected)


def test_a_run_interrupted_during_coarse_first_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    config = MultilevelConfig(levels=3, coarse_first=0.5)
    kw = dict(epochs=4.0)
    full = _run(config, **kw).history
    path, run_cycle, calls = tmp_path / "ckpt.pt", FASCycle.run_cycle, [0]

    def interrupted(self):
        calls[0] += 1
        if calls[0] == 40:  # in the coarsest level's stage
            raise KeyboardInterrupt
        run_cycle(self)

    monkeypatch.setattr(FASCycle, "run_cycle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(config, checkpoint_path=path, **kw)
    monkeypatch.setattr(FASCycle, "run_cycle", run_cycle)
    assert load_checkpoint(path)["multilevel"]["coarse_first"]["root"] == 2
    resumed = _run(config, checkpoint_path=path, resume=True, **kw).history
    assert resumed[METRICS].equals(full[METRICS])


@pytest.mark.parametrize(("threshold", "reason"), [(0.5, "stalled"), (0.0, "budget")])
def test_adaptive_switching_moves_up_when_the_rate_falls_and_passes_the_budget_on(
    monkeypatch, threshold, reason
):
    x, y = toy_data(64, 12, 4, seed=3)
    config = MultilevelConfig(
        levels=3, coarse_first=0.5, switch_threshold=threshold, switch_every=2
    )
    cycle = make_cycle(MLP(12, [16, 8], 4).double(), config, x, y)
    cycle.monitor_batch = (x[:8], y[:8])
    losses = iter([1.0, 0.5, 0.45])  # probes after phases 2, 4, 6: the rate drops to a tenth
    monkeypatch.setattr(cycle, "_monitor_loss", lambda level: next(losses))
    cycle.coarse_stage.budget = 1e9
    cycle.run_cycle()  # builds the coarse levels: now their work per step is known
    work = cycle.levels[2].work
    if not threshold:
        cycle.coarse_stage.budget = 2 * 6 * work  # the coarsest level's share: 6 steps
    for phase in range(2, 7):
        assert not cycle.coarse_stage.switches, phase
        cycle.run_cycle()
    [switch] = cycle.coarse_stage.switches
    assert (switch["level"], switch["reason"]) == (2, reason)
    assert switch["spent"] == pytest.approx(6 * work) and cycle.coarse_stage.root == 1
    if threshold:  # what the coarsest level did not spend goes to the next one
        assert cycle.coarse_stage.carry == pytest.approx(1e9 / 2 - 6 * work)
    else:  # fixed shares never probe the loss
        assert cycle.coarse_stage.carry == pytest.approx(0.0) and next(losses) == 1.0


def test_adaptive_switching_is_recorded_logged_and_resumable(tmp_path, monkeypatch):
    config = TrainConfig(epochs=4.0, batch_size=32, lr=[0.05, 0.05, 0.05], eval_every=0.25)
    multilevel = MultilevelConfig(levels=3, coarse_first=0.5, switch_threshold=0.9, switch_every=2)

    def run(**kw):
        seed_everything(0)
        return train(MLP(12, [16, 8], 4), _with_validation(), config, multilevel, **kw)

    full = run()
    assert [s["level"] for s in full.cycle.coarse_stage.switches] == [2, 1]
    assert full.meter.breakdown()["monitor"] > 0
    path, run_cycle, calls = tmp_path / "ckpt.pt", FASCycle.run_cycle, [0]

    def interrupted(self):
        calls[0] += 1
        if calls[0] == 8:  # on level 1, after a checkpoint written mid-stage
            raise KeyboardInterrupt
        run_cycle(self)

    monkeypatch.setattr(FASCycle, "run_cycle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_path=path)
    monkeypatch.setattr(FASCycle, "run_cycle", run_cycle)
    saved = load_checkpoint(path)["multilevel"]
    assert saved["coarse_first"]["root"] == 1 and len(saved["coarse_first"]["switches"]) == 1
    resumed = run(checkpoint_path=path, resume=True)
    assert resumed.history[METRICS].equals(full.history[METRICS])
    assert resumed.cycle.coarse_stage.switches == full.cycle.coarse_stage.switches


def test_coarse_first_needs_coarse_levels_and_is_not_an_f_cycle():
    for fields in (dict(levels=1), dict(levels=2, cycle="F")):
        with pytest.raises(ValueError, match="coarse_first needs coarse levels"):
            MultilevelConfig(coarse_first=0.3, **fields)
    with pytest.raises(ValueError, match="coarse_first is 0; set coarse_first"):
        MultilevelConfig(levels=2, switch_threshold=0.5)
