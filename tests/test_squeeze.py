"""The "squeeze" setting (DESIGN.md §4.5): the model of interest is a level below the fine net.

The wider levels help train it; what is evaluated and returned is R^m x, the fine net
restricted m levels down with the current operators (BN statistics recalibrated).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import toy_dataset

from mlw_lib.experiments import compare, minibatch_flops
from mlw_lib.models import MLP, ConvNet
from mlw_lib.multilevel import MultilevelConfig, restrict_params
from mlw_lib.reproducibility import seed_everything
from mlw_lib.training import (
    TrainConfig,
    calibration_batches,
    evaluate,
    restricted_hierarchy,
    train,
)


def run(build, data, multilevel, epochs=2.0, **kw):
    """Train `build()` (built after seeding: the same initial weights every time)."""
    seed_everything(0)
    config = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, eval_every=1.0)
    return train(build(), data, config, multilevel, **kw)


@pytest.mark.parametrize("model_level", [1, 2])
def test_the_product_is_the_fine_net_restricted_down_to_the_model_level(model_level):
    data = toy_dataset()
    result = run(
        lambda: MLP(12, [32, 16], 4), data, MultilevelConfig(levels=3, model_level=model_level)
    )
    product, fine = result.product, result.model
    assert product is not fine and not product.training
    assert product.group_sizes() == result.cycle.levels[model_level].model.group_sizes()
    expected = dict(fine.named_parameters())
    for level, transition in enumerate(result.cycle.transitions[:model_level]):
        layout = result.cycle.levels[level].model.param_layout()
        expected = restrict_params(expected, layout, transition.transfers, "sum_avg")
    for name, p in product.named_parameters():
        torch.testing.assert_close(p, expected[name])
    # The history reports the product; the fine net's metrics sit beside them.
    last = result.history.iloc[-1]
    assert last["test_accuracy"] == evaluate(product, data.x_test, data.y_test, 4096)[1]
    assert last["fine_test_accuracy"] == evaluate(fine, data.x_test, data.y_test, 4096)[1]
    assert last["flops"] == pytest.approx(last["work_units"] * result.meter.flops_per_wu)


def test_model_level_zero_is_the_fine_net_and_changes_nothing():
    data = toy_dataset()
    plain = run(lambda: MLP(12, [32, 16], 4, dropout=0.1), data, MultilevelConfig(levels=2))
    assert plain.product is plain.model
    assert "fine_test_accuracy" not in plain.history.columns
    squeezed = run(
        lambda: MLP(12, [32, 16], 4, dropout=0.1), data, MultilevelConfig(levels=2, model_level=1)
    )
    # Same training (same seed, batches and cycles): only what is evaluated differs.
    for p, q in zip(plain.model.parameters(), squeezed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert list(squeezed.history["fine_test_accuracy"]) == list(plain.history["test_accuracy"])


def test_a_squeezed_conv_net_is_evaluated_with_recalibrated_batchnorm():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (160,), generator=g)
    data = SimpleNamespace(x_train=x[:128], y_train=y[:128], x_test=x[128:], y_test=y[128:])
    result = run(
        lambda: ConvNet([8, 8], num_classes=4, image_size=8),
        data,
        MultilevelConfig(levels=2, model_level=1),
    )
    batches = calibration_batches(data.x_train, data.y_train, 32)
    assert len(batches) == 4  # the 128 training images, as fixed minibatches
    fine, coarse = restricted_hierarchy(result, batches)
    for name, buffer in result.product.named_buffers():
        torch.testing.assert_close(buffer, dict(coarse.named_buffers())[name])
    accuracy = evaluate(result.product, data.x_test, data.y_test, 4096)[1]
    assert result.history.iloc[-1]["test_accuracy"] == accuracy


def test_squeeze_resumes_to_the_same_metrics(tmp_path):
    data = toy_dataset()
    multilevel = MultilevelConfig(levels=3, model_level=1)
    path = tmp_path / "ckpt.pt"

    def mlp():
        return MLP(12, [32, 16], 4)

    def resume():
        return run(mlp, data, multilevel, epochs=3.0, checkpoint_path=path, resume=True)

    whole = run(mlp, data, multilevel, epochs=3.0)
    run(mlp, data, multilevel, epochs=1.0, checkpoint_path=path)
    resumed = resume()
    cols = ["work_units", "test_loss", "test_accuracy", "fine_test_accuracy"]
    assert resumed.history[cols].equals(whole.history[cols])
    # Resuming a finished run trains nothing and still returns the product.
    again = resume()
    for p, q in zip(again.product.parameters(), whole.product.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(("levels", "model_level"), [(1, 1), (3, 3), (2, -1)])
def test_a_model_level_outside_the_hierarchy_is_refused(levels, model_level):
    with pytest.raises(ValueError, match="model_level"):
        MultilevelConfig(levels=levels, model_level=model_level)


def test_compare_gives_a_wider_fine_net_the_same_flops_and_one_work_axis():
    data = toy_dataset()
    methods = {
        "single-level": MultilevelConfig(),
        "squeeze": MultilevelConfig(levels=2, model_level=1, batches_per_phase=2),
    }
    config = TrainConfig(epochs=2.0, batch_size=32, lr=0.05)
    comparison = compare(
        lambda: MLP(12, [16, 8], 4),
        data,
        config,
        methods,
        seeds=[0],
        models={"squeeze": lambda: MLP(12, [32, 16], 4)},
    )
    final = comparison.final().set_index("method")
    reference = minibatch_flops(MLP(12, [16, 8], 4), data, 32)
    wide = minibatch_flops(MLP(12, [32, 16], 4), data, 32)
    assert wide > 2 * reference
    budget = 2.0 * (len(data.x_train) // 32)  # WU of the 16/8 net
    squeezed = final.loc["squeeze"]
    # Its WU are counted in minibatches of the 16/8 net: FLOPs / reference.
    assert squeezed["work_units"] == pytest.approx(squeezed["flops"] / reference)
    assert squeezed["epoch"] == pytest.approx(squeezed["work_units"] / (budget / 2.0))
    cycle_wu = (2 * 2 + 2 * 0.5) * wide / reference  # at most one cycle past the budget
    assert budget - 1e-6 <= squeezed["work_units"] <= budget + cycle_wu
    assert final.loc["single-level", "work_units"] == pytest.approx(budget)
    product = comparison.results[("squeeze", 0)].product
    widths = product.group_sizes()  # half the wide net, or a pair or two short of it
    assert 16 <= widths["hidden0"] <= 18 and 8 <= widths["hidden1"] <= 10
    with pytest.raises(ValueError, match=r"models for unknown methods \['typo'\]"):
        compare(lambda: MLP(12, [16, 8], 4), data, config, methods, [0], models={"typo": MLP})
