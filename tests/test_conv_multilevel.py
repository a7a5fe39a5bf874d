"""Multilevel in width on conv nets: channel groups, BatchNorm, residual streams (issue 3).

The invariants of DESIGN.md §5 on conv nets (duplicate channels with BN in eval mode,
first-order coherence, round trip, zero-step no-op), the residual-stream consistency check,
and short multilevel training runs. Generated data: these tests are about mechanics.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    assert_first_order_coherence,
    assert_round_trip,
    assert_zero_coarse_steps_change_nothing,
    make_cycle,
    matched_coarse,
    restricted_levels,
    split_units,
)

from mlw_lib.models import MLP, MgNet
from mlw_lib.models.convnet import ConvNet
from mlw_lib.models.resnet import ResNet
from mlw_lib.models.strided import StridedConvNet
from mlw_lib.multilevel import (
    MultilevelConfig,
)
from mlw_lib.multilevel.batchnorm import (
    batchnorm_layers,
    recalibrate,
    restrict_running_stats,
    statistics_binding,
)
from mlw_lib.multilevel.groups import check_layout
from mlw_lib.multilevel.transfer import transform_tensor

CONVENTIONS = ["sum_avg", "avg_sum"]
MODELS = {
    "convnet-pool": lambda: ConvNet([4, 6], image_size=8),
    "convnet-flatten": lambda: ConvNet([4, 6], image_size=8, head="flatten", conv_bias=True),
    "resnet": lambda: ResNet([4, 6], [1, 2], num_classes=5),
    "resnet-streams": lambda: ResNet([4, 6], [1, 2], num_classes=5, coarsen_streams=True),
    "mgnet": lambda: MgNet([2, 1], [4, 6], num_classes=5),
    "mgnet-shared": lambda: MgNet([2, 2], 4, num_classes=5, smoothers="grid"),
    "strided": lambda: StridedConvNet([4, 6], [3, 2], [1, 2], [5], 3, outputs=5, image_size=8),
}


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 5, (n,), generator=g)


def randomize_batchnorm(model: torch.nn.Module, g: torch.Generator) -> None:
    """Non-trivial BN affine parameters and running statistics (BN's default eps kept)."""
    with torch.no_grad():
        for bn in batchnorm_layers(model).values():
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


def prolong_running_stats(small, fine, transfers, convention) -> None:
    """Fine statistics consistent with prolonged conv rows: the mean and BN's normaliser
    sqrt(var + eps) prolong like the rows."""
    layout = small.param_layout()
    fine_layers = batchnorm_layers(fine)
    with torch.no_grad():
        for name, bn in batchnorm_layers(small).items():
            out = statistics_binding(layout, name)
            mean = transform_tensor(bn.running_mean, out, transfers, convention, "prolong")
            scale = (bn.running_var + bn.eps).sqrt()
            scale = transform_tensor(scale, out, transfers, convention, "prolong")
            fine_layers[name].running_mean.copy_(mean)
            fine_layers[name].running_var.copy_(scale.square() - fine_layers[name].eps)


def duplicated(small, convention, g):
    """A fine net built from `small` by splitting every coarsened channel in two (random
    pairing and weights), computing exactly the same function in eval mode."""
    fine, transfers = split_units(small, convention, g)
    prolong_running_stats(small, fine, transfers, convention)
    return fine.eval()


def coarsened(fine, convention, seed, batchnorm, x):
    transition, coarse = matched_coarse(fine, convention, seed)
    if batchnorm == "restrict":  # exact with BN's real eps
        restrict_running_stats(fine, coarse, fine.param_layout(), transition.transfers, convention)
    else:  # recalibrate both on the same images. Batch statistics of a channel scaled by c
        # normalise by sqrt(c^2 var + eps), not c sqrt(var + eps): only eps -> 0 is exact.
        for net in (fine, coarse):
            set_eps(net, 1e-14)
            recalibrate(net, [(x, None)], lambda m, b: m(b[0]))
            set_eps(net, 0.0)
    return transition, coarse.eval()


def set_eps(model: torch.nn.Module, eps: float) -> None:
    for bn in batchnorm_layers(model).values():
        bn.eps = eps


# 2. duplicate channels (BN in eval mode) ------------------------------------------------------
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("batchnorm", ["restrict", "recalibrate"])
@pytest.mark.parametrize("seed", range(2))
def test_duplicate_channel_network_coarsens_exactly(model_name, convention, batchnorm, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    small = MODELS[model_name]().double()
    randomize_batchnorm(small, g)
    small.eval()
    fine = duplicated(small, convention, g)
    x, _ = images(32, seed)
    torch.testing.assert_close(fine(x), small(x), rtol=1e-9, atol=1e-9)  # exact construction
    transition, coarse = coarsened(fine, convention, seed, batchnorm, x)
    assert coarse.group_sizes() == small.group_sizes()
    assert (coarse(x) - fine(x)).abs().max() <= 1e-9


def test_duplicate_channel_check_can_fail():
    """Negative control: without BN statistics for the coarse net the outputs differ."""
    g = torch.Generator().manual_seed(0)
    small = MODELS["convnet-pool"]().double()
    randomize_batchnorm(small, g)
    fine = duplicated(small.eval(), "sum_avg", g)
    x, _ = images(32, 0)
    _, coarse = coarsened(fine, "sum_avg", 0, "restrict", x)
    for bn in batchnorm_layers(coarse).values():
        bn.reset_running_stats()
    assert (coarse(x) - fine(x)).abs().max() > 1e-3


# 1. round trip on whole conv nets ---------------------------------------------------------------
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_round_trip_on_conv_nets(model_name, convention):
    assert_round_trip(MODELS[model_name]().double(), convention)


# 3. first-order coherence with BN in train mode -------------------------------------------------
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_first_order_coherence_on_conv_nets(model_name, convention):
    torch.manual_seed(3)
    fine_model = MODELS[model_name]().double().train()
    x, y = images(48, 3)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in (0, 16, 32)]
    assert_first_order_coherence(fine_model, batches, convention)


# 4. zero coarse steps: the correction is a no-op ------------------------------------------------
@pytest.mark.parametrize("model_name", ["convnet-flatten", "resnet-streams", "mgnet", "strided"])
@pytest.mark.parametrize("batchnorm", ["recalibrate", "restrict"])
def test_zero_coarse_steps_leave_conv_net_unchanged(model_name, batchnorm):
    torch.manual_seed(0)
    x, y = images(64, 0)
    model = MODELS[model_name]().double()
    assert_zero_coarse_steps_change_nothing(model, x, y, batchnorm=batchnorm)


# unit feature norms (the unit weights between re-matchings) -------------------------------------
@pytest.mark.parametrize("model_name", [*MODELS, "mlp"])
def test_unit_feature_norms_are_the_norms_of_the_features(model_name):
    torch.manual_seed(0)
    model = MLP(8, [10, 6], 3) if model_name == "mlp" else MODELS[model_name]()
    for group in model.group_sizes():
        expected = model.unit_features(group).norm(dim=1)
        torch.testing.assert_close(model.unit_feature_norms(group), expected)


def test_unit_feature_norms_follow_an_overridden_unit_features():
    class Doubled(MLP):
        def unit_features(self, group):
            return 2 * super().unit_features(group)

    torch.manual_seed(0)
    model = Doubled(8, [10, 6], 3)
    expected = 2 * MLP.unit_features(model, "hidden0").norm(dim=1)
    torch.testing.assert_close(model.unit_feature_norms("hidden0"), expected)


# residual streams: consistency check ------------------------------------------------------------
def test_inconsistent_residual_stream_is_named():
    model = MODELS["resnet-streams"]()
    check_layout(model)  # consistent as declared
    layout = model.param_layout()
    layout["stages.1.1.conv2.weight"] = tuple(
        b for b in layout["stages.1.1.conv2.weight"] if b.group != "stream1"
    )
    model.param_layout = lambda: layout
    with pytest.raises(ValueError, match="residual stream of stage 1") as error:
        check_layout(model)
    assert "stages.1.1.conv2.weight (axis 0): not coarsened" in str(error.value)
    x, y = images(32, 0)
    with pytest.raises(ValueError, match="stages.1.1.conv2.weight"):
        make_cycle(model, MultilevelConfig(levels=2), x.float(), y)


def test_images_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 3, 8, 8\)"):
        MODELS["convnet-pool"]()(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        MODELS["resnet"]()(torch.randn(2, 784))


# short multilevel runs ---------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("batchnorm", ["recalibrate", "restrict"])
def test_multilevel_training_runs_on_conv_nets(model_name, batchnorm):
    torch.manual_seed(0)
    x, y = images(96, 1)
    model = MODELS[model_name]().double()
    config = MultilevelConfig(
        levels=2, batches_per_phase=2, batchnorm=batchnorm, recalibrate_fine=True, rematch_every=2
    )
    cycle = make_cycle(model, config, x, y)
    for _ in range(4):
        cycle.run_cycle()
    losses = [level.pop_mean_loss() for level in cycle.levels]
    assert all(loss is not None and loss == loss for loss in losses)
    if batchnorm_layers(model):  # a net without BN has nothing to recalibrate
        assert cycle.meter.seconds["recalibration"] > 0
        if batchnorm == "recalibrate":
            assert cycle.meter.work_by_phase["recalibration"] > 0


@pytest.mark.parametrize("model_name", ["resnet", "mgnet", "convnet-pool"])
def test_keeping_coarse_statistics_trains_exactly_like_recalibrating(model_name):
    """Training runs BN in train mode (batch statistics), so the coarse running statistics are
    never read: "keep" must give the very same fine parameters without the recalibration."""
    x, y = images(96, 2)
    finals, cycles = {}, {}
    for mode in ("recalibrate", "keep"):
        torch.manual_seed(0)
        model = MODELS[model_name]().double()
        config = MultilevelConfig(levels=2, batches_per_phase=2, batchnorm=mode, rematch_every=2)
        cycles[mode] = make_cycle(model, config, x, y)
        for _ in range(4):
            cycles[mode].run_cycle()
        finals[mode] = {name: p.detach().clone() for name, p in model.named_parameters()}
    for name, value in finals["recalibrate"].items():
        assert torch.equal(value, finals["keep"][name]), name
    assert cycles["recalibrate"].meter.work_by_phase["recalibration"] > 0
    assert cycles["keep"].meter.work_by_phase["recalibration"] == 0
    assert cycles["keep"].meter.seconds["recalibration"] == 0


# MgNet -------------------------------------------------------------------------------------------
def mgnet_parameters(iterations, widths, in_channels, num_classes, shared):
    """Parameter count from the architecture: 3x3 convs without bias, 2 per BN channel."""

    def conv(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out

    total = conv(in_channels, widths[0]) + 2 * widths[0]  # data extraction
    for l, (steps, c) in enumerate(zip(iterations, widths, strict=True)):
        a_uses = steps - (l == 0) + (l > 0) + (l < len(widths) - 1)
        total += (conv(c, c) if a_uses else 0) + 2 * c * a_uses  # A^l, one BN per use
        total += conv(c, c) * (1 if shared else steps) + 2 * c * steps  # B^{l,i}
        if l > 0:
            total += 2 * (conv(widths[l - 1], c) + 2 * c)  # Pi^{l-1}, R^{l-1}
    return total + widths[-1] * num_classes + num_classes


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "notation", ["MgNet[2,2,2,2]-64", "MgNet[1]-8", "MgNet[2,2]-32,64", "MgNet[3,1,2]-4,6,8"]
)
def test_mgnet_notation_round_trip(notation):
    model = MgNet.from_notation(notation, in_channels=1, num_classes=7, smoothers="grid")
    assert model.notation == notation
    assert notation in repr(model)
    assert MgNet(**model.config).notation == notation
    assert model.config["smoothers"] == "grid" and model.config["num_classes"] == 7
    widths = MgNet.from_notation("MgNet[2,2,2]-16").config["widths"]
    assert widths == [16, 16, 16]


@pytest.mark.parametrize(
    "notation", ["MgNet[2,2]", "MgNet[]-64", "ResNet[2,2]-64", "MgNet[2,x]-64", "MgNet[2,2]-64,"]
)
def test_mgnet_bad_notation_shows_the_expected_form(notation):
    with pytest.raises(ValueError, match=r"expected 'MgNet\[2,2,2,2\]-64'"):
        MgNet.from_notation(notation)


def test_mgnet_notation_with_wrong_width_count_is_rejected():
    with pytest.raises(ValueError, match="one width per grid"):
        MgNet.from_notation("MgNet[2,2,2]-32,64")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(iterations=[2, 2], widths=[4, 6, 8]), "one width per grid"),
        (dict(iterations=[], widths=4), "iterations"),
        (dict(iterations=[2, 0], widths=4), "iterations"),
        (dict(iterations=2, widths=4), "iterations"),
        (dict(iterations=[2], widths=0), "widths"),
        (dict(iterations=[2, 2], widths=[4, -1]), "widths"),
        (dict(iterations=[2], widths=True), "widths"),
        (dict(iterations=[2], widths=4, smoothers="layer"), "unknown smoothers 'layer'"),
    ],
)
def test_mgnet_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MgNet(**kwargs)


def test_mgnet_grid_smoothers_share_one_conv_per_grid():
    per_step = MgNet([3, 2], [4, 6])
    shared = MgNet([3, 2], [4, 6], smoothers="grid")
    saved = 9 * (2 * 4 * 4 + 1 * 6 * 6)  # B convs beyond the first on each grid
    assert count(per_step) - count(shared) == saved
    calls = []
    for grid, steps in zip(shared.grids, [3, 2], strict=True):
        assert len({id(grid.smoother(i).weight) for i in range(steps)}) == 1
        grid.smoother(0).register_forward_hook(lambda module, *_: calls.append(module))
    shared(torch.randn(2, 3, 8, 8))
    assert calls == [shared.grids[0].b[0]] * 3 + [shared.grids[1].b[0]] * 2  # every step
    for grid in per_step.grids:
        assert len({id(grid.smoother(i).weight) for i in range(len(grid.b_bns))}) == len(grid.b)
    # a shared conv is one parameter in the layout; its BNs (one per step) follow the grid
    layout = shared.param_layout()
    assert [n for n in layout if ".b." in n] == ["grids.0.b.0.weight", "grids.1.b.0.weight"]
    assert all(layout[f"grids.0.b_bns.{i}.weight"][0].group == "grid0" for i in range(3))


@pytest.mark.parametrize(
    "iterations, widths, in_channels, num_classes, smoothers",
    [
        ([2, 2, 2, 2], [32] * 4, 1, 10, "iteration"),
        ([1, 1, 1], [16, 32, 64], 1, 10, "iteration"),
        ([1], [8], 3, 5, "iteration"),  # one grid, one step: A is never used, not built
        ([3, 1, 2], [4, 6, 8], 3, 5, "grid"),
    ],
)
def test_mgnet_parameter_count(iterations, widths, in_channels, num_classes, smoothers):
    model = MgNet(iterations, widths, in_channels, num_classes, smoothers)
    expected = mgnet_parameters(iterations, widths, in_channels, num_classes, smoothers == "grid")
    assert count(model) == expected
    check_layout(model)
    bound = {name for name, bindings in model.param_layout().items() if bindings}
    assert bound == {name for name, _ in model.named_parameters()} - {"head.bias"}


def test_mgnet_paper_sizes():
    assert count(MgNet.from_notation("MgNet[2,2,2,2]-32", in_channels=1)) == 168298
    assert count(MgNet([1, 1, 1], [16, 32, 64], in_channels=1)) == 144762


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32)])
def test_mgnet_output_shape(shape):
    model = MgNet([2, 2, 2, 2], [4, 6, 8, 8], in_channels=shape[1], num_classes=10)
    assert model(torch.randn(shape)).shape == (2, 10)
    with pytest.raises(ValueError, match=rf"MgNet expects images of shape \(N, {shape[1]}, H, W\)"):
        model(torch.randn(2, 4 - shape[1], 28, 28))


def test_inconsistent_grid_channels_are_named():
    model = MODELS["mgnet"]()
    layout = model.param_layout()
    layout["grids.1.a_bns.step0.weight"] = ()
    model.param_layout = lambda: layout
    with pytest.raises(ValueError, match="u/f channels of grid 1") as error:
        check_layout(model)
    assert "grids.1.a_bns.step0.weight (axis 0): not coarsened" in str(error.value)


# tau's gradient passes leave BatchNorm statistics alone ----------------------------------------
@pytest.mark.parametrize("tau_mode", ["cycle", "minibatch"])
def test_tau_passes_leave_batchnorm_statistics_unchanged(tau_mode):
    torch.manual_seed(4)
    fine_model = MODELS["resnet"]().double().train()
    x, y = images(48, 4)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in (0, 16, 32)]
    before = {n: b.clone() for n, b in fine_model.named_buffers()}
    fine, coarse, _, _ = restricted_levels(fine_model, batches, "sum_avg", "none")
    coarse_before = {n: b.clone() for n, b in coarse.model.named_buffers()}
    _, coarse, _, _ = restricted_levels(fine_model, batches, "sum_avg", tau_mode)
    coarse.tau(batches[0])  # minibatch tau computes its passes here
    for name, value in fine_model.named_buffers():
        assert torch.equal(value, before[name]), name
    for name, value in coarse.model.named_buffers():
        assert torch.equal(value, coarse_before[name]), name
