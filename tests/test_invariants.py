"""The seven invariants of DESIGN.md §5, as property tests over random shapes and seeds."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (
    assert_zero_coarse_steps_change_nothing,
    make_cycle,
    random_transfer,
    restricted_levels,
    toy_data,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from mlw_lib.models import MLP
from mlw_lib.models.convnet import ConvNet
from mlw_lib.multilevel import (
    AxisBinding,
    CoarseningError,
    MultilevelConfig,
    Role,
    build_model,
    match_model,
    match_units,
    prolong,
    restrict_gradients,
    restrict_params,
)
from mlw_lib.multilevel.matching import (
    coarse_target,
    max_pairs_for,
    mutual_best_pairs,
    narrowest_width,
    similarity_matrix,
)
from mlw_lib.multilevel.objective import (
    Level,
    loss_gradient,
    objective,
    objective_backward,
    objective_gradient,
)
from mlw_lib.multilevel.operators import GroupTransfer
from mlw_lib.training import classification_loss

CONVENTIONS = ["sum_avg", "avg_sum"]
FAST = settings(max_examples=20, deadline=None)


# 1. restrict(prolong(y)) = y -----------------------------------------------------------
@FAST
@given(
    seed=st.integers(0, 10_000),
    n_coarse=st.integers(1, 12),
    extra=st.integers(0, 12),
    unit_size=st.integers(1, 3),
    role=st.sampled_from(list(Role)),
    convention=st.sampled_from(CONVENTIONS),
    axis=st.integers(0, 2),
)
def test_restrict_after_prolong_is_identity(
    seed, n_coarse, extra, unit_size, role, convention, axis
):
    g = torch.Generator().manual_seed(seed)
    transfer = random_transfer(n_coarse, n_coarse + min(extra, n_coarse), g)
    shape = [3, 4, 2]
    shape[axis] = n_coarse * unit_size
    y = torch.randn(shape, generator=g, dtype=torch.float64)
    layout = {"p": (AxisBinding("g", axis, role, unit_size),)}
    fine = prolong({"p": y}, layout, {"g": transfer}, convention)["p"]
    assert fine.shape[axis] == transfer.n_fine * unit_size
    back = restrict_params({"p": fine}, layout, {"g": transfer}, convention)["p"]
    torch.testing.assert_close(back, y, rtol=1e-12, atol=1e-12)


@FAST
@given(seed=st.integers(0, 10_000), convention=st.sampled_from(CONVENTIONS))
def test_round_trip_on_a_whole_mlp(seed, convention):
    g = torch.Generator().manual_seed(seed)
    coarse_sizes = [int(torch.randint(1, 9, (1,), generator=g)) for _ in range(2)]
    coarse = MLP(5, coarse_sizes, 3).double()
    transfers = {
        f"hidden{i}": random_transfer(n, n + int(torch.randint(0, n + 1, (1,), generator=g)), g)
        for i, n in enumerate(coarse_sizes)
    }
    layout = coarse.param_layout()
    y = {
        name: torch.randn(p.shape, generator=g, dtype=torch.float64)
        for name, p in coarse.named_parameters()
    }
    back = restrict_params(prolong(y, layout, transfers, convention), layout, transfers, convention)
    for name in y:
        torch.testing.assert_close(back[name], y[name], rtol=1e-12, atol=1e-12)


# 2. duplicate-unit networks: the coarse net computes the same function ----------------
@pytest.mark.parametrize(
    ("convention", "activation"),
    [("sum_avg", "relu"), ("avg_sum", "gelu"), ("avg_sum", "tanh"), ("avg_sum", "relu")],
)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("matching", ["mutual_best", "greedy"])
@pytest.mark.parametrize("copies", [2, 4])
def test_duplicate_unit_network_coarsens_exactly(convention, activation, seed, matching, copies):
    """Every unit of a small net split into `copies` units (1 or 2 with copies=2; exactly 4,
    found by two rounds of pairing at ratio 0.25, with copies=4)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    widths = [
        int(torch.randint(2, 10, (1,), generator=g))
        for _ in range(int(torch.randint(1, 4, (1,), generator=g)))
    ]
    small = MLP(6, widths, 4, activation).double()
    transfers = {
        f"hidden{i}": (random_transfer(n, 2 * n, g) if copies == 2 else four_copies_transfer(n, g))
        for i, n in enumerate(widths)
    }
    fine = small.resized({f"hidden{i}": copies * n for i, n in enumerate(widths)}).double()
    fine_params = prolong(
        dict(small.named_parameters()), small.param_layout(), transfers, convention
    )
    with torch.no_grad():
        for name, p in fine.named_parameters():
            p.copy_(fine_params[name])
    x = torch.randn(32, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fine(x), small(x), rtol=1e-9, atol=1e-9)  # exact construction

    config = MultilevelConfig(
        levels=2, convention=convention, matching=matching, seed=seed, ratio=1 / copies
    )
    transition = match_model(fine, config, level=0, seed=seed)
    coarse = build_model(fine, transition.coarse_sizes())
    assert coarse.group_sizes() == small.group_sizes()
    restricted = restrict_params(
        dict(fine.named_parameters()), fine.param_layout(), transition.transfers, convention
    )
    with torch.no_grad():
        for name, p in coarse.named_parameters():
            p.copy_(restricted[name])
    assert (coarse(x) - fine(x)).abs().max() <= 1e-5


def four_copies_transfer(n_coarse: int, generator: torch.Generator) -> GroupTransfer:
    """Every coarse unit split into exactly four fine units, in a random order."""
    assign = torch.arange(n_coarse).repeat(4)[torch.randperm(4 * n_coarse, generator=generator)]
    weights = torch.rand(4 * n_coarse, generator=generator, dtype=torch.float64) + 0.1
    return GroupTransfer(assign, weights, n_coarse)


# 3. first-order coherence --------------------------------------------------------------
def _coherence_setup(seed, convention, tau_mode, fine_has_tau):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    widths = [int(torch.randint(4, 12, (1,), generator=g)) for _ in range(2)]
    fine_model = MLP(7, widths, 3, "tanh").double()
    x, y = toy_data(48, 7, 3, seed)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in (0, 16, 32)]
    v_fine = None
    if fine_has_tau:  # a level that is itself coarse: F = loss - <v, x> with v != 0
        v_fine = {
            n: torch.randn(p.shape, generator=g, dtype=torch.float64)
            for n, p in fine_model.named_parameters()
        }
    fine, coarse, transition, meter = restricted_levels(
        fine_model, batches, convention, tau_mode, seed, v_fine
    )
    return fine, coarse, transition, batches, meter


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("fine_has_tau", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_first_order_coherence_cycle_tau(convention, fine_has_tau, seed):
    fine, coarse, transition, batches, meter = _coherence_setup(
        seed, convention, "cycle", fine_has_tau
    )
    coarse_grad = objective_gradient(coarse, batches, classification_loss, meter)
    fine_grad = objective_gradient(fine, batches, classification_loss, meter)
    expected = restrict_gradients(
        fine_grad, fine.model.param_layout(), transition.transfers, convention
    )
    for name in expected:
        torch.testing.assert_close(coarse_grad[name], expected[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_step_gradient_is_autograd_of_the_objective(convention):
    """The optimizer's gradient (objective_backward: grad loss, then -v fused) equals autograd
    of F_c = loss - <v, x> with the linear term as a loss term, and at x_c0 it is the
    restricted fine gradient (coherence of the gradient the coarse steps really use)."""
    fine, coarse, transition, batches, meter = _coherence_setup(1, convention, "minibatch", True)
    for batch in batches:
        total, _ = objective(coarse, batch, classification_loss)
        names, params = zip(*coarse.model.named_parameters(), strict=True)
        autograd = dict(zip(names, torch.autograd.grad(total, params), strict=True))
        coarse.model.zero_grad(set_to_none=True)
        objective_backward(coarse, batch, classification_loss)
        expected = restrict_gradients(
            objective_gradient(fine, [batch], classification_loss, meter),
            fine.model.param_layout(),
            transition.transfers,
            convention,
        )
        for name, p in coarse.model.named_parameters():
            torch.testing.assert_close(p.grad, autograd[name], rtol=0, atol=1e-9)
            torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_first_order_coherence_minibatch_tau(convention):
    fine, coarse, transition, batches, meter = _coherence_setup(3, convention, "minibatch", True)
    for batch in batches:
        coarse_grad = objective_gradient(coarse, [batch], classification_loss, meter)
        fine_grad = objective_gradient(fine, [batch], classification_loss, meter)
        expected = restrict_gradients(
            fine_grad, fine.model.param_layout(), transition.transfers, convention
        )
        for name in expected:
            torch.testing.assert_close(coarse_grad[name], expected[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_last_step_tau_tends_to_the_cycle_tau_on_its_minibatch_as_the_step_shrinks(convention):
    """tau='last_step' uses the gradient at the point before the last pre-smoothing step; the
    gap to the per-cycle tau (the gradient after it) is O(lr)."""
    x, y = toy_data(64, 12, 4, seed=3)
    batch = (x[:32], y[:32])
    gaps = []
    for lr in (1e-2, 1e-3, 1e-4):
        torch.manual_seed(0)
        model = MLP(12, [16, 8], 4, activation="tanh").double()
        fine = Level(0, model, torch.optim.SGD(model.parameters(), lr=lr), lr, 1.0)
        objective_backward(fine, batch, classification_loss)
        gradient = {name: p.grad.clone() for name, p in model.named_parameters()}
        fine.optimizer.step()
        _, last, *_ = restricted_levels(
            model, [batch], convention, "last_step", last_step=(batch, gradient)
        )
        _, cycle, *_ = restricted_levels(model, [batch], convention, "cycle")
        v_last, v_cycle = last.tau(batch), cycle.tau(batch)
        gaps.append(max(float((v_last[n] - v_cycle[n]).abs().max()) for n in v_cycle))
    assert gaps[0] > 1e-6  # the two differ at a finite step...
    assert gaps[1] < gaps[0] / 5 and gaps[2] < gaps[1] / 5  # ...by O(lr)


def test_last_step_tau_costs_one_coarse_pass_per_cycle():
    x, y = toy_data(256, 12, 4, seed=0)
    costs = {}
    for mode in ("cycle", "last_step"):
        torch.manual_seed(0)
        config = MultilevelConfig(levels=2, batches_per_phase=4, tau=mode)
        cycle = make_cycle(MLP(12, [16, 8], 4).double(), config, x, y)
        cycle.run_cycle()
        costs[mode] = cycle.meter.work_by_phase["tau_gradient"] / cycle.levels[1].work
    assert costs["last_step"] == pytest.approx(1.0)  # one coarse minibatch
    assert costs["cycle"] == pytest.approx(4 + 4 / cycle.levels[1].work)  # 4 coarse + 4 fine
    with pytest.raises(ValueError, match="tau='last_step' reuses .* set nu_pre >= 1"):
        MultilevelConfig(levels=2, tau="last_step", nu_pre=0)


def test_without_tau_the_gradients_disagree():
    """The coherence test can fail: with tau off, coarse and restricted fine gradients differ."""
    fine, coarse, transition, batches, meter = _coherence_setup(0, "sum_avg", "none", False)
    coarse_grad = loss_gradient(coarse.model, batches, classification_loss)
    expected = restrict_gradients(
        objective_gradient(fine, batches, classification_loss, meter),
        fine.model.param_layout(),
        transition.transfers,
        "sum_avg",
    )
    assert max((coarse_grad[n] - expected[n]).abs().max() for n in expected) > 1e-3


# 4. zero coarse steps: the correction is a no-op ----------------------------------------
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("levels", [2, 3])
def test_zero_coarse_steps_leave_fine_level_unchanged(convention, optimizer, levels):
    torch.manual_seed(levels)
    x, y = toy_data(64, 9, 3, seed=levels)
    model = MLP(9, [12, 8], 3).double()
    assert_zero_coarse_steps_change_nothing(
        model, x, y, optimizer, levels=levels, convention=convention
    )


# 5. matching validity -----------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    f=st.integers(1, 6),
    ratio=st.floats(0.5, 0.95),
    method=st.sampled_from(["mutual_best", "greedy"]),
    similarity=st.sampled_from(["cosine", "rbf"]),
)
def test_matching_is_valid(seed, n, f, ratio, method, similarity):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, f, generator=g)
    m = match_units(features, ratio, method, similarity, seed)
    sim = similarity_matrix(features, similarity)
    flat = m.pairs.flatten().tolist()
    assert len(flat) == len(set(flat))  # disjoint
    assert all(sim[i, j] > 0 for i, j in m.pairs.tolist())  # never non-positive similarity
    assert len(m.pairs) <= max_pairs_for(n, ratio)  # ratio honoured
    assert m.n_coarse == n - len(m.pairs) and m.ratio >= ratio - 1e-9
    counts = torch.bincount(m.assign, minlength=m.n_coarse)
    assert counts.min() >= 1 and counts.max() <= 2
    for i, j in m.pairs.tolist():
        assert m.assign[i] == m.assign[j]
    again = match_units(features, ratio, method, similarity, seed)
    assert torch.equal(again.assign, m.assign)  # deterministic / seeded


def reference_mutual_best(sim: torch.Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Mutual-best matching spelled out with Python lists: each round, every free unit's best
    free neighbour; mutual pairs with positive similarity are committed, strongest first."""
    s, free, pairs = sim.tolist(), list(range(sim.shape[0])), []
    while len(pairs) < max_pairs and len(free) >= 2:
        best = {i: max((j for j in free if j != i), key=lambda j, i=i: s[i][j]) for i in free}
        found = [(s[i][best[i]], i, best[i]) for i in free if best[best[i]] == i < best[i]]
        found = sorted((t for t in found if t[0] > 0), key=lambda t: -t[0])
        if not found:
            break
        committed = found[: max_pairs - len(pairs)]
        pairs += [(i, j) for _, i, j in committed]
        taken = {u for _, i, j in committed for u in (i, j)}
        free = [u for u in free if u not in taken]
    return pairs


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    ratio=st.floats(0.25, 0.4999),
    method=st.sampled_from(["mutual_best", "greedy"]),
)
def test_two_rounds_merge_at_most_four_units_and_honour_the_ratio(seed, n, ratio, method):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 4, generator=g) + 0.7 * torch.randn(1, 4, generator=g)
    m = match_units(features, ratio, method, seed=seed)
    counts = torch.bincount(m.assign, minlength=m.n_coarse)
    assert counts.min() >= 1 and counts.max() <= 4
    assert narrowest_width(n, ratio) <= m.n_coarse <= n
    assert m.n_coarse >= coarse_target(n, ratio)  # never coarser than asked
    once = match_units(features, 0.5, method, seed=seed)
    assert m.n_coarse <= once.n_coarse  # the second round only merges further
    assert torch.equal(match_units(features, ratio, method, seed=seed).assign, m.assign)


def test_ratio_below_a_quarter_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"\[0.25, 1\).*add levels"):
        match_units(torch.randn(8, 3), 0.2)
    with pytest.raises(ValueError, match=r"ratio must be a finite number in \[0.25, 1\)"):
        MultilevelConfig(ratio=0.2)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 48), ratio=st.floats(0.5, 0.95))
def test_mutual_best_matches_its_definition(seed, n, ratio):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 5, generator=g) + 0.5 * torch.randn(1, 5, generator=g)
    sim = similarity_matrix(features)
    max_pairs = max_pairs_for(n, ratio)
    assert mutual_best_pairs(sim, max_pairs) == reference_mutual_best(sim, max_pairs)


def test_units_with_only_negative_similarity_are_never_merged():
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    for method in ("mutual_best", "greedy"):
        assert match_units(features, 0.5, method).n_coarse == 2


# 6. tau scale 0 equals no tau ------------------------------------------------------------
def _mlp_with_dropout():
    return MLP(8, [10, 6], 3, dropout=0.2).double()


def _convnet_with_batchnorm():
    return ConvNet([8, 8], image_size=4, in_channels=2, num_classes=3).double()


def _inputs(model_name):
    x, y = toy_data(96, 32, 3, seed=5)
    return (x.view(96, 2, 4, 4), y) if model_name == "convnet" else (x[:, :8], y)


@pytest.mark.parametrize("mode", ["cycle", "minibatch"])
@pytest.mark.parametrize("model_name", ["mlp-dropout", "convnet"])
def test_tau_scale_zero_equals_no_tau(mode, model_name):
    """Same parameters, BN statistics, charged work and RNG stream: s = 0 runs no tau pass."""
    build = _convnet_with_batchnorm if model_name == "convnet" else _mlp_with_dropout
    x, y = _inputs(model_name)
    runs = []
    for tau, scale in ((mode, 0.0), ("none", 1.0), (mode, 1.0)):
        torch.manual_seed(0)
        model = build()
        cycle = make_cycle(model, MultilevelConfig(levels=3, tau=tau, tau_scale=scale), x, y)
        for _ in range(4):
            cycle.run_cycle()
        state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        runs.append((state, cycle.meter.work_units, torch.get_rng_state()))
    (zero, zero_work, zero_rng), (none, none_work, none_rng), (full, full_work, _) = runs
    assert all(torch.equal(zero[n], none[n]) for n in none)
    assert zero_work == none_work < full_work
    assert torch.equal(zero_rng, none_rng)
    assert any(not torch.allclose(full[n], none[n]) for n in none)  # tau does act


# 7. one level reproduces plain training bit for bit ----------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_level_is_plain_training(optimizer):
    x, y = toy_data(80, 8, 3, seed=11)
    torch.manual_seed(1)
    model = MLP(8, [10, 6], 3).double()
    plain = copy.deepcopy(model)
    cycle = make_cycle(model, MultilevelConfig(levels=1), x, y, optimizer=optimizer)
    opt = (
        torch.optim.Adam(plain.parameters(), lr=0.05)
        if optimizer == "adam"
        else torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    )
    position = 0
    for _ in range(10):
        cycle.run_cycle()
        start = position % (len(x) - 16 + 1)
        position += 16
        opt.zero_grad()
        classification_loss(plain, (x[start : start + 16], y[start : start + 16])).backward()
        opt.step()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_a_group_without_similar_units_keeps_its_width_and_the_others_coarsen(refusals):
    """Data-dependent: a group whose units are all dissimilar (cosine < 0) stays as it is at
    this transition instead of stopping training; only when no group can shrink is it an
    error."""
    torch.manual_seed(0)
    model = MLP(4, [2, 6], 3)
    with torch.no_grad():  # the two units of hidden0 point in opposite directions
        model.linears[0].weight[1] = -model.linears[0].weight[0]
        model.linears[0].bias[1] = -model.linears[0].bias[0]
    transition = match_model(model, MultilevelConfig(levels=2), level=0, seed=0)
    assert transition.coarse_sizes()["hidden0"] == 2
    assert transition.coarse_sizes()["hidden1"] < 6
    stuck = MLP(4, [2], 3)
    with torch.no_grad():
        stuck.linears[0].weight[1] = -stuck.linears[0].weight[0]
        stuck.linears[0].bias[1] = -stuck.linears[0].bias[0]
    what = "every group's units pairwise dissimilar at a re-matching"
    with refusals.error(what, CoarseningError, "cannot coarsen any group below level 0"):
        match_model(stuck, MultilevelConfig(levels=2), level=0, seed=0)
