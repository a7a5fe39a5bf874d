"""Each option of MultilevelConfig and TrainConfig changes what it says (fails if ignored)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_cycle, toy_data, toy_dataset

from mlw_lib.models import MLP
from mlw_lib.multilevel import MultilevelConfig, prolong
from mlw_lib.multilevel.hierarchy import detached_params
from mlw_lib.reproducibility import seed_everything
from mlw_lib.training import BatchStream, TrainConfig, classification_loss, train
from mlw_lib.training.trainer import schedule_factor


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _cycled(config: MultilevelConfig, cycles: int = 3, seed: int = 0):
    x, y = toy_data(160, 8, 3, seed=7)
    torch.manual_seed(seed)
    model = MLP(8, [12, 8], 3).double()
    cycle = make_cycle(model, config, x, y)
    for _ in range(cycles):
        cycle.run_cycle()
    return cycle, _params(model)


def test_zero_damping_is_smoothing_alone():
    """alpha = beta = 0: the fine net follows plain training over the same batch stream."""
    frozen = MultilevelConfig(levels=2, correction_damping=0.0, state_damping=0.0)
    _, damped = _cycled(frozen, cycles=3)
    _, plain = _cycled(MultilevelConfig(levels=1), cycles=6)  # 2 fine batches per V-cycle
    assert all(torch.equal(damped[n], plain[n]) for n in plain)
    _, state_only = _cycled(MultilevelConfig(levels=2, correction_damping=0.0), cycles=3)
    assert any(not torch.equal(state_only[n], plain[n]) for n in plain)  # beta acts
    _, full = _cycled(MultilevelConfig(levels=2, state_damping=0.0), cycles=3)
    assert any(not torch.equal(full[n], plain[n]) for n in plain)  # alpha acts


def test_w_cycle_charges_twice_the_coarse_work_of_a_v_cycle():
    v, _ = _cycled(MultilevelConfig(levels=2), cycles=1)
    w, _ = _cycled(MultilevelConfig(levels=2, cycle="W"), cycles=1)
    coarse = v.meter.work_by_phase["coarse"]
    assert coarse > 0 and w.meter.work_by_phase["coarse"] == pytest.approx(2 * coarse)
    assert w.meter.work_by_phase["smooth"] == v.meter.work_by_phase["smooth"]


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_f_cycle_starts_at_the_prolonged_coarse_solution(noise):
    x, y = toy_data(160, 8, 3, seed=7)
    torch.manual_seed(0)
    model = MLP(8, [12, 8], 3).double()
    config = MultilevelConfig(levels=2, cycle="F", fmg_noise=noise)
    cycle = make_cycle(model, config, x, y)
    cycle._nested_iteration()
    coarse = cycle.levels[1].model
    expected = prolong(
        detached_params(coarse), model.param_layout(), cycle.transitions[0].transfers, "sum_avg"
    )
    exact = all(torch.equal(p, expected[n]) for n, p in model.named_parameters())
    assert exact == (noise == 0.0)


def test_fmg_cycles_sets_the_coarse_cycles_of_nested_iteration():
    steps = {}
    for fmg_cycles in (1, 3):
        x, y = toy_data(160, 8, 3, seed=7)
        torch.manual_seed(0)
        config = MultilevelConfig(levels=2, cycle="F", fmg_cycles=fmg_cycles)
        cycle = make_cycle(MLP(8, [12, 8], 3).double(), config, x, y)
        cycle._nested_iteration()
        steps[fmg_cycles] = cycle.levels[1].steps
    assert steps[3] == 3 * steps[1] > 0


def test_reset_leaves_the_coarse_optimizer_state_empty():
    for mode, empty in (("reset", True), ("restrict", False)):
        cycle, _ = _cycled(MultilevelConfig(levels=2, state_transfer=mode), cycles=1)
        start = cycle._restrict(0, None)
        assert (not cycle.levels[1].optimizer.state) == empty
        assert (not start.state) == empty


def test_fresh_coarse_batches_differ_from_the_tau_batches():
    def recorded(mode: str, **options) -> list[list[torch.Tensor]]:
        x, y = toy_data(160, 8, 3, seed=7)
        torch.manual_seed(0)
        config = MultilevelConfig(levels=2, coarse_batches=mode, batches_per_phase=2, **options)
        cycle = make_cycle(MLP(8, [12, 8], 3).double(), config, x, y)
        calls, smooth = [], cycle._smooth

        def spy(level, batches, passes, **options):
            calls.append([b[0] for b in batches])
            smooth(level, batches, passes, **options)

        cycle._smooth = spy
        cycle.run_cycle()
        return calls[:2]  # the fine pre-smoothing (tau) batches, then the coarse ones

    pre, coarse = recorded("reuse")
    assert all(torch.equal(a, b) for a, b in zip(pre, coarse, strict=True))
    pre, coarse = recorded("fresh")
    assert not any(torch.equal(a, b) for a in pre for b in coarse)
    pre, coarse = recorded("reuse", coarse_batches_per_phase=4)  # the tau batches, then fresh
    assert len(coarse) == 4 and all(torch.equal(a, b) for a, b in zip(pre, coarse[:2], strict=True))
    assert not any(torch.equal(a, b) for a in pre for b in coarse[2:])
    pre, coarse = recorded("reuse", coarse_batch_multiple=2)  # both tau batches, then 2 fresh
    assert [len(b) for b in coarse] == [2 * len(pre[0])] * 2
    assert torch.equal(coarse[0], torch.cat(pre))


def test_a_coarse_batch_multiple_is_charged_as_that_many_minibatches():
    x, y = toy_data(160, 8, 3, seed=7)
    work = []
    for multiple in (1, 3):
        config = MultilevelConfig(levels=2, batches_per_phase=2, coarse_batch_multiple=multiple)
        torch.manual_seed(0)  # the same net, matching and coarse widths for both
        cycle = make_cycle(MLP(8, [12, 8], 3).double(), config, x, y)
        cycle.run_cycle()
        assert cycle.steps == [4, 2]  # one step per joined batch
        work.append(cycle.meter.work_by_phase["coarse"])
    assert work[1] == pytest.approx(3 * work[0])


@pytest.mark.parametrize(
    ("options", "coarse_steps"),
    [
        ({}, 2),
        ({"coarse_passes": 3}, 6),
        ({"coarse_batches_per_phase": 5}, 5),
        ({"coarse_batches_per_phase": 5, "coarse_passes": 2, "coarse_batches": "fresh"}, 10),
    ],
)
def test_coarse_heavy_cycles_take_more_steps_on_the_coarsest_level(options, coarse_steps):
    x, y = toy_data(160, 8, 3, seed=7)
    config = MultilevelConfig(levels=2, batches_per_phase=2, **options)
    cycle = make_cycle(MLP(8, [12, 8], 3).double(), config, x, y)
    cycle.run_cycle()
    assert cycle.steps == [4, coarse_steps]  # 2 pre- and 2 post-smoothing steps on the fine


def _trained(train_config: TrainConfig, levels: int = 2):
    seed_everything(0)
    model = MLP(12, [16, 8], 4)
    return train(model, toy_dataset(), train_config, MultilevelConfig(levels=levels))


def test_cosine_schedule_scales_every_levels_learning_rate():
    result = _trained(TrainConfig(epochs=2.0, batch_size=32, lr=[0.05, 0.2], schedule="cosine"))
    factor = result.cycle.lr_factor
    assert 0 < factor < 0.5  # near the end of the budget
    for level in result.cycle.levels:
        for group in level.optimizer.param_groups:
            assert group["lr"] == pytest.approx(level.lr * factor)
    constant = _trained(TrainConfig(epochs=2.0, batch_size=32, lr=[0.05, 0.2]))
    assert [lv.optimizer.param_groups[0]["lr"] for lv in constant.cycle.levels] == [0.05, 0.2]


def test_warmup_ramps_the_learning_rate_up_first():
    def weights(warmup: float) -> torch.Tensor:
        config = TrainConfig(epochs=2.0, batch_size=32, lr=0.05, warmup=warmup)
        return torch.cat([p.flatten() for p in _trained(config, levels=1).model.parameters()])

    assert not torch.equal(weights(0.5), weights(0.0))
    factors = [schedule_factor("cosine", p, warmup=0.2, step=0.01) for p in (0, 0.1, 0.2, 0.6, 1)]
    assert factors == pytest.approx([0.05, 0.55, 1.0, 0.5, 0.0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_weight_decay_shrinks_the_weights(optimizer):
    def norm(decay: float) -> float:
        config = TrainConfig(epochs=2.0, batch_size=32, lr=0.01, optimizer=optimizer)
        config.weight_decay = decay
        return sum(p.square().sum() for p in _trained(config).model.parameters()).item()

    assert norm(0.5) < norm(0.0)


def test_adamw_decays_decoupled_from_adam():
    def run(optimizer):
        config = TrainConfig(epochs=1.0, batch_size=32, lr=0.01, optimizer=optimizer)
        config.weight_decay = 0.1
        result = _trained(config)
        return result.cycle.levels[0].optimizer, _params(result.model)

    adamw, adamw_params = run("adamw")
    adam, adam_params = run("adam")
    assert isinstance(adamw, torch.optim.AdamW) and not isinstance(adam, torch.optim.AdamW)
    assert any(not torch.equal(adamw_params[n], adam_params[n]) for n in adam_params)


def test_one_level_train_is_a_plain_fused_sgd_loop_bit_for_bit():
    data = toy_dataset()
    config = TrainConfig(epochs=2.0, batch_size=32, lr=0.05, momentum=0.9, seed=3)
    seed_everything(0)
    model = MLP(12, [16, 8], 4)
    plain = copy.deepcopy(model)
    train(model, data, config, MultilevelConfig(levels=1))
    stream = BatchStream(data.x_train, data.y_train, config.batch_size, config.seed)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, fused=True)
    for _ in range(2 * stream.batches_per_epoch):
        optimizer.zero_grad(set_to_none=True)
        classification_loss(plain, stream.next()).backward()
        optimizer.step()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q), name
