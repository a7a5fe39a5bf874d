"""Stable architectures (Haber & Ruthotto 2017), depth doubling and the toy problems (issue 21).

Each published property is a test: the four steps against their formulas, the antisymmetric
Jacobian's spectrum, the Verlet and leapfrog steps' exact inverses, the conv adjoint; the width
group through the invariants of DESIGN.md §5; first-order depth doubling.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    assert_first_order_coherence,
    assert_round_trip,
    assert_zero_coarse_steps_change_nothing,
    toy_data,
)

from mlw_lib.data import load_dataset
from mlw_lib.experiments import compare
from mlw_lib.models import MLP
from mlw_lib.models.stable import FORMS, StableLayer, StableNet, double_depth
from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.training import TrainConfig, load_checkpoint, train, trainer
from mlw_lib.training.depth import doublings_done

CONVENTIONS = ["sum_avg", "avg_sum"]


def fc_layer(form, width=5, h=0.3, gamma=0.0, activation="tanh", seed=0):
    torch.manual_seed(seed)
    layer = StableLayer(form, width, h, gamma, activation).double()
    with torch.no_grad():
        layer.bias.normal_()
    return layer


# the four steps as published ---------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fully_connected_steps_follow_the_published_formulas(form, activation):
    h, gamma = 0.3, 0.7
    layer = fc_layer(form, h=h, gamma=gamma, activation=activation)
    act = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    K, b = layer.weight.detach(), layer.bias.detach()
    g = torch.Generator().manual_seed(1)
    y, aux = torch.randn(7, 5, generator=g, dtype=torch.float64), None
    if form in ("hamiltonian", "leapfrog"):
        aux = torch.randn(7, 5, generator=g, dtype=torch.float64)
    # rows are samples: K y is y @ K.T, K^T y is y @ K
    if form == "resnet":
        expected = (y + h * act(y @ K.T + b), None)
    elif form == "antisymmetric":
        A = (K.T - K - gamma * torch.eye(5, dtype=torch.float64)) / 2
        expected = (y + h * act(y @ A.T + b), None)
    elif form == "hamiltonian":
        z = aux - h * act(y @ K + b)  # K^T in the Z stage
        expected = (y + h * act(z @ K.T + b), z)  # K in the Y stage
    else:
        expected = (2 * y - aux + h * h * act(-(y @ K.T) @ K + b), y)
    got = layer(y, aux)
    torch.testing.assert_close(got[0], expected[0])
    if expected[1] is not None:
        torch.testing.assert_close(got[1], expected[1])


def test_leapfrog_starts_from_rest_and_hamiltonian_from_zero_momentum():
    """x_{-1} = x_0 (leapfrog) and Z_0 = 0 (Verlet): the net's first step sees those."""
    x = torch.randn(4, 3, dtype=torch.float64)
    for form, aux in (("leapfrog", x), ("hamiltonian", torch.zeros_like(x))):
        torch.manual_seed(0)
        net = StableNet(form, 3, 2, depth=1, h=0.4).double()
        expected = net.head(net.layers[0](x, aux)[0])
        torch.testing.assert_close(net(x), expected)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
@pytest.mark.parametrize("conv", [False, True])
def test_antisymmetric_jacobian_has_eigenvalues_in_the_left_half_plane(gamma, conv):
    """The right-hand side f(Y) = tanh((K^T - K - gamma I) Y / 2 + b): every eigenvalue of
    its Jacobian has real part <= 0, and <= -gamma/2 * min tanh' < 0 when gamma > 0."""
    torch.manual_seed(1)
    layer = StableLayer("antisymmetric", 3, 1.0, gamma, kernel=3 if conv else None).double()
    with torch.no_grad():
        layer.bias.normal_()
    shape = (1, 3, 4, 4) if conv else (1, 3)
    y = torch.randn(shape, dtype=torch.float64)

    def rhs(v):
        return layer(v.view(shape), None)[0].flatten() - v  # h = 1: the step minus identity

    J = torch.autograd.functional.jacobian(rhs, y.flatten())
    real = torch.linalg.eigvals(J).real
    assert real.max() <= 1e-10
    if gamma:
        assert real.max() < -1e-3


def test_conv_adjoint_is_the_transposed_convolution():
    torch.manual_seed(2)
    layer = StableLayer("resnet", 4, 0.1, kernel=5).double()
    x, y = (
        torch.randn(2, 4, 7, 7, dtype=torch.float64),
        torch.randn(2, 4, 7, 7, dtype=torch.float64),
    )
    torch.testing.assert_close((layer.op(x) * y).sum(), (x * layer.adjoint(y)).sum())


@pytest.mark.parametrize("form", ["hamiltonian", "leapfrog"])
@pytest.mark.parametrize("conv", [False, True])
def test_verlet_and_leapfrog_stacks_reconstruct_their_input(form, conv):
    torch.manual_seed(3)
    net = StableNet(form, 2, 3, depth=4, h=0.5, width=4, conv=conv).double().eval()
    x = torch.randn(5, 2, 6, 6) if conv else torch.randn(5, 2)
    x = x.double()
    state = first = net.stream(x)
    for layer in net.layers:
        state = layer(*state)
    for layer in reversed(net.layers):
        state = layer.inverse(*state)
    torch.testing.assert_close(state[0], first[0], rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="no closed-form inverse"):
        fc_layer("resnet").inverse(x, x)


# options ------------------------------------------------------------------------------------------
def test_conv_options_shape_the_net():
    net = StableNet("resnet", 3, 7, depth=3, width=6, conv=True, kernel=5, pool=2)
    assert net.layers[0].weight.shape == (6, 6, 5, 5)
    assert net.lift.weight.shape == (6, 3, 5, 5)
    assert net.head.in_features == 6 * 2 * 2
    assert len(net.layers) == 3 and net(torch.randn(2, 3, 9, 9)).shape == (2, 7)
    assert all(len(layer.norms) == 1 and layer.bias is None for layer in net.layers)
    plain = StableNet("hamiltonian", 3, 7, width=6, conv=True, norm=False)
    assert all(not layer.norms and layer.bias is not None for layer in plain.layers)
    verlet = StableNet("hamiltonian", 3, 7, width=6, conv=True)
    assert all(len(layer.norms) == 2 for layer in verlet.layers)  # one per Verlet stage


def test_width_is_a_unit_group_only_when_the_input_is_lifted():
    square = StableNet("hamiltonian", 4, 3)
    assert square.group_sizes() == {} and square.lift is None
    assert square.layers[0].weight.shape == (4, 4)
    lifted = StableNet("hamiltonian", 4, 3, width=10)
    assert lifted.group_sizes() == {"width": 10}
    assert lifted.resized({"width": 6}).layers[2].weight.shape == (6, 6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(h=0.0), "step h must be a finite number in \\(0"),
        (dict(h=-0.1), "step h"),
        (dict(gamma=-1.0), "gamma must be"),
        (dict(form="euler"), "unknown stable form 'euler'"),
        (dict(conv=True), "needs a width"),
        (dict(conv=True, width=4, kernel=4), "kernel must be odd"),
        (dict(depth=0), "depth must be a positive integer"),
        (dict(activation="swish"), "unknown activation"),
    ],
)
def test_bad_settings_are_refused(kwargs, message, refusals):
    settings = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    with refusals.error(f"StableNet(..., {settings})", ValueError, message):
        StableNet(**{"form": "resnet", "inputs": 2, "num_classes": 2, **kwargs})


def test_inputs_of_the_wrong_shape_are_named():
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, 2\)"):
        StableNet("resnet", 2, 2)(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        StableNet("resnet", 1, 2, width=4, conv=True)(torch.randn(3, 784))


# width multilevel on stable nets (DESIGN.md §5) ------------------------------------------------
NETS = {
    "fc-verlet": lambda: StableNet("hamiltonian", 3, 4, depth=3, width=8),
    "fc-antisymmetric": lambda: StableNet("antisymmetric", 3, 4, depth=2, width=8, gamma=0.1),
    "conv-leapfrog": lambda: StableNet("leapfrog", 3, 4, depth=2, width=6, conv=True, pool=2),
    "conv-resnet": lambda: StableNet("resnet", 3, 4, depth=2, width=6, conv=True, pool=2),
}


def net_data(name, n, seed):
    x, y = toy_data(n, 3, 4, seed)
    if name.startswith("conv"):
        x = torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
        x = x.double()
    return x, y


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_width_group_round_trip_and_first_order_coherence(name, convention):
    torch.manual_seed(0)
    assert_round_trip(NETS[name]().double(), convention)
    x, y = net_data(name, 48, 1)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in (0, 16, 32)]
    assert_first_order_coherence(NETS[name]().double().train(), batches, convention)


@pytest.mark.parametrize("name", ["fc-verlet", "conv-leapfrog"])
def test_zero_coarse_steps_leave_a_stable_net_unchanged(name):
    torch.manual_seed(0)
    x, y = net_data(name, 64, 2)
    assert_zero_coarse_steps_change_nothing(NETS[name]().double(), x, y)


# depth doubling -----------------------------------------------------------------------------------
def test_double_depth_interleaves_averages_and_halves_h():
    torch.manual_seed(4)
    net = StableNet("hamiltonian", 2, 2, depth=3, h=0.2, width=4, conv=True)
    deeper = double_depth(net)
    assert len(deeper.layers) == 6 and deeper.config["h"] == 0.1
    assert all(layer.h == 0.1 for layer in deeper.layers)
    old = [layer.state_dict() for layer in net.layers]
    new = [layer.state_dict() for layer in deeper.layers]
    for key in old[0]:
        if not old[0][key].is_floating_point():
            continue
        torch.testing.assert_close(new[0][key], old[0][key])  # the first: its right neighbour
        for i in range(3):
            torch.testing.assert_close(new[2 * i + 1][key], old[i][key])
        for i in (1, 2):
            torch.testing.assert_close(new[2 * i][key], (old[i - 1][key] + old[i][key]) / 2)
    torch.testing.assert_close(deeper.head.weight, net.head.weight)
    torch.testing.assert_close(deeper.lift.weight, net.lift.weight)


@pytest.mark.parametrize("form", FORMS)
def test_double_depth_preserves_the_function_to_first_order_in_h(form):
    """The output change of a doubling shrinks in proportion to h (ratio ~1/2 per halving)."""
    x = torch.randn(64, 3, dtype=torch.float64)
    changes = []
    for h in (0.2, 0.1, 0.05):
        torch.manual_seed(5)
        net = StableNet(form, 3, 3, depth=4, h=h, width=6).double()
        with torch.no_grad():
            for layer in net.layers:
                layer.weight.mul_(4.0)  # layers that differ: the inserted averages matter
                layer.bias.normal_()
            changes.append((double_depth(net)(x) - net(x)).abs().max().item())
    assert changes[0] > 1e-4
    for big, small in zip(changes, changes[1:], strict=False):
        assert small < 0.65 * big


def test_double_depth_refuses_other_models(refusals):
    with refusals.error("double_depth(an MLP)", ValueError, "needs a StableNet"):
        double_depth(MLP(4, [8], 2))


# toy problems ---------------------------------------------------------------------------------
def test_ellipses_fill_the_inner_ellipse_and_the_ring():
    data = load_dataset("ellipses", seed=3)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1000, 200, 200)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert int(y.sum()) == len(y) // 2
        r = (x[:, 0] ** 2 + (2 * x[:, 1]) ** 2).sqrt()  # scaled radius: 1 on the inner boundary
        assert r[y == 0].max() < 1 and r[y == 1].min() >= 1 and r[y == 1].max() <= 2
        assert r[y == 1].max() > 1.9  # the ring reaches the outer ellipse
    assert "generated" in data.info.describe() and "verified" not in data.info.describe()


def test_swiss_roll_arms_lie_on_their_spirals():
    data = load_dataset("swiss_roll", seed=0, n_train=40, n_val=10, n_test=20)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (80, 20, 40)
    x, y = data.x_train.double(), data.y_train
    r, angle = x.norm(dim=1), torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    # r = 0.1 + 0.2 label + 0.4 t / 2pi with t = angle or angle + 2pi (two turns)
    turns = [
        (r - 0.1 - 0.2 * y - 0.4 * (angle + 2 * math.pi * k) / (2 * math.pi)).abs() for k in (0, 1)
    ]
    assert torch.minimum(*turns).max() < 1e-5
    assert r.max() > 0.9  # the second turn is there


def test_toy_data_are_seeded():
    a, b = load_dataset("swiss_roll", seed=1), load_dataset("swiss_roll", seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, load_dataset("swiss_roll", seed=2).x_train)
    assert not torch.equal(a.x_train, a.x_test)
    with pytest.raises(ValueError, match="unknown toy problem"):
        from mlw_lib.data.toy import load_toy

        load_toy("moons")
    with pytest.raises(ValueError, match="n_train must be a non-negative integer"):
        load_dataset("ellipses", n_train=-1)


# coarse-to-fine in depth: an option of the one training loop ---------------------------------
def small_ellipses():
    return load_dataset("ellipses", seed=0, n_train=32, n_val=4, n_test=16)


def depth_run(path=None, resume=False, **settings):
    torch.manual_seed(0)
    net = StableNet("hamiltonian", 2, 2, depth=4, h=0.2, width=4)
    config = TrainConfig(
        **{"epochs": 2.0, "batch_size": 16, "lr": 0.05, "eval_every": 1.0, **settings}
    )
    return net, train(net, small_ellipses(), config, checkpoint_path=path, resume=resume)


def test_coarse_to_fine_steps_cost_their_flops_and_end_in_the_model_of_interest():
    net, plain = depth_run()
    assert plain.history["level0_steps"].iloc[-1] == 8  # 2 epochs of 4 batches
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    net, grown = depth_run(depth_doublings=2)
    assert grown.model is net and len(net.layers) == 4 and net.layers[0].h == 0.2
    assert any(not torch.equal(v, initial[k]) for k, v in net.state_dict().items())
    steps = grown.history["level0_steps"].iloc[-1]
    assert 8 < steps < 3 * 8  # the depth-1 and depth-2 stages take cheaper steps
    assert grown.history["work_units"].iloc[-1] == pytest.approx(8, abs=1.0)
    _, late = depth_run(depth_doublings=1, depth_switch=[0.75])
    _, early = depth_run(depth_doublings=1, depth_switch=[0.25])
    assert late.history["level0_steps"].iloc[-1] > early.history["level0_steps"].iloc[-1]


@pytest.mark.parametrize(
    "model, settings, message",
    [
        (lambda: MLP(2, [4], 2), dict(depth_doublings=1), "needs a StableNet"),
        (lambda: StableNet("resnet", 2, 2, depth=4), dict(depth_doublings=3), "divisible by"),
        (
            lambda: StableNet("resnet", 2, 2),
            dict(depth_doublings=1, depth_switch=[1.0]),
            "depth_switch",
        ),
        (
            lambda: StableNet("resnet", 2, 2),
            dict(depth_doublings=2, depth_switch=[0.5]),
            "depth_switch",
        ),
    ],
)
def test_bad_depth_schedules_are_refused(model, settings, message, refusals):
    what = f"train({type(model()).__name__}, TrainConfig({settings}))"
    with refusals.error(what, ValueError, message):
        train(model(), small_ellipses(), TrainConfig(epochs=1.0, batch_size=16, **settings))


def test_a_depth_schedule_resumes_at_the_depth_it_was_saved(tmp_path, monkeypatch):
    """Killed after its third checkpoint (depth 2, one doubling done), the run resumes with
    the depth-2 net and ends exactly like the uninterrupted run."""
    _, full = depth_run(depth_doublings=2)
    path, saves = tmp_path / "c.pt", []
    real = trainer.save_checkpoint

    def save_then_stop(state, where):
        real(state, where)
        saves.append(len(state["history"]))
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        depth_run(depth_doublings=2, eval_every=0.25, path=path)
    monkeypatch.undo()
    assert doublings_done(load_checkpoint(path)["model"], StableNet("resnet", 2, 2, depth=1)) == 1
    net, resumed = depth_run(depth_doublings=2, eval_every=0.25, path=path, resume=True)
    _, uninterrupted = depth_run(depth_doublings=2, eval_every=0.25)
    metrics = ["work_units", "test_accuracy", "test_loss", "level0_steps"]
    assert resumed.history[metrics].equals(uninterrupted.history[metrics])
    assert len(net.layers) == 4 and len(full.history) < len(resumed.history)


def test_compare_gives_a_method_its_own_train_settings():
    methods = {"from scratch": MultilevelConfig(), "coarse-to-fine": MultilevelConfig()}

    def run(settings):
        return compare(
            lambda: StableNet("hamiltonian", 2, 2, depth=4, h=0.2, width=4),
            small_ellipses(),
            TrainConfig(epochs=1.0, batch_size=16, lr=0.05),
            methods,
            [0],
            log_checkpoints=False,
            train_settings=settings,
        )

    steps = run({"coarse-to-fine": {"depth_doublings": 1}}).final().set_index("method")
    assert steps.loc["coarse-to-fine", "level0_steps"] > steps.loc["from scratch", "level0_steps"]
    with pytest.raises(ValueError, match=r"\['depth'\] are not TrainConfig fields"):
        run({"coarse-to-fine": {"depth": 2}})
    with pytest.raises(ValueError, match="train_settings for unknown methods"):
        run({"deep": {"depth_doublings": 1}})
