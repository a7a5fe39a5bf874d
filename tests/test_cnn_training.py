"""Training conv nets (issue 3): augmentation in the batch stream, channels_last, the coarse
networks as classifiers, the model registry and the merged-channel figure. Generated images:
these tests are about mechanics."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch

from mlw_lib.data import Augment
from mlw_lib.models import MLP, ConvNet, MgNet, ResNet, build_cnn, parameter_count
from mlw_lib.multilevel import MultilevelConfig, restrict_params
from mlw_lib.multilevel.hierarchy import is_channels_last
from mlw_lib.reproducibility import seed_everything
from mlw_lib.training import (
    BatchStream,
    TrainConfig,
    evaluate_levels,
    restricted_hierarchy,
    train,
)
from mlw_lib.viz import first_normalized_layer, plot_merged_channels

matplotlib.use("Agg")


def image_data(n=192, size=8, channels=3, classes=4, seed=0):
    """Images whose class is the brightest channel quadrant: learnable, not trivial."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    half = size // 2
    for k in range(classes):
        rows, cols = divmod(k, 2)
        x[y == k, :, rows * half : (rows + 1) * half, cols * half : (cols + 1) * half] += 1.5
    return SimpleNamespace(x_train=x[: n - 64], y_train=y[: n - 64], x_test=x[-64:], y_test=y[-64:])


def draw(stream: BatchStream, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [stream.next() for _ in range(count)]


def test_augmented_stream_is_seeded_resumable_and_keeps_the_batch_order():
    data = image_data()
    plain = draw(BatchStream(data.x_train, data.y_train, 16, seed=3), 12)
    augmented = BatchStream(data.x_train, data.y_train, 16, seed=3, transform=Augment())
    first = draw(augmented, 5)
    state = augmented.state_dict()
    rest = draw(augmented, 7)
    again = draw(BatchStream(data.x_train, data.y_train, 16, seed=3, transform=Augment()), 12)
    resumed = BatchStream(data.x_train, data.y_train, 16, seed=99, transform=Augment())
    resumed.load_state_dict(state)
    for (x, y), (xa, ya), (xb, _) in zip(plain, first + rest, again, strict=True):
        assert torch.equal(y, ya), "augmentation must not change which examples are drawn"
        assert not torch.equal(x, xa), "the batch was not augmented"
        assert torch.equal(xa, xb), "same seed, same augmentation"
    for (x, _), (xr, _) in zip(rest, draw(resumed, 7), strict=True):
        assert torch.equal(x, xr), "a resumed stream continues the same augmentations"


def test_channels_last_trains_like_the_default_layout():
    data = image_data()
    results = []
    for channels_last in (False, True):
        seed_everything(0)
        config = TrainConfig(epochs=2, batch_size=16, channels_last=channels_last, augment=True)
        results.append(
            train(ResNet([6, 8], [1, 1], num_classes=4), data, config, MultilevelConfig(levels=2))
        )
    default, nhwc = results
    assert is_channels_last(nhwc.model) and not is_channels_last(default.model)
    assert is_channels_last(nhwc.cycle.levels[1].model), "coarse nets follow the fine layout"
    np.testing.assert_allclose(
        default.history["train_loss"], nhwc.history["train_loss"], rtol=2e-3, atol=2e-3
    )


def test_channels_last_and_augmentation_reject_flat_data():
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match="channels_last needs image data"):
        train(MLP(12, [8], 3), data, TrainConfig(batch_size=16, channels_last=True))
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\)"):
        train(MLP(12, [8], 3), data, TrainConfig(batch_size=16, augment=True))
    with pytest.raises(ValueError, match="crop_padding"):
        TrainConfig(augment=True, crop_padding=-1)


@pytest.mark.parametrize("levels", [2, 3])
def test_restricted_hierarchy_gives_each_level_a_calibrated_classifier(levels):
    data = image_data()
    seed_everything(0)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05)
    result = train(
        ConvNet([8, 8], num_classes=4, image_size=8), data, config, MultilevelConfig(levels=levels)
    )
    batches = [(data.x_train[i : i + 32], data.y_train[i : i + 32]) for i in range(0, 96, 32)]
    nets = restricted_hierarchy(result, batches)
    assert len(nets) == levels and nets[0] is result.model
    for fine, coarse, transition in zip(nets[:-1], nets[1:], result.cycle.transitions, strict=True):
        expected = restrict_params(
            dict(fine.named_parameters()), fine.param_layout(), transition.transfers, "sum_avg"
        )
        for name, p in coarse.named_parameters():
            torch.testing.assert_close(p, expected[name])
        bn = coarse.bns[0]
        with torch.no_grad():  # recalibrated: the running mean is the calibration batches' mean
            pre = torch.cat([coarse.convs[0](x) for x, _ in batches])
        torch.testing.assert_close(bn.running_mean, pre.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
        assert not coarse.training
    table = evaluate_levels(nets, data.x_test, data.y_test)
    assert list(table["level"]) == list(range(levels))
    assert table["parameters"].is_monotonic_decreasing and table["parameters"].nunique() == levels
    assert table.loc[0, "test_accuracy"] > 0.5, "the trained fine net learned the quadrants"


def test_build_cnn_names_every_model_and_rejects_unknown_ones():
    built = {name: build_cnn(name, [4, 8], 1, 10, 28) for name in ("plain", "resnet", "mgnet")}
    assert isinstance(built["plain"], ConvNet) and isinstance(built["mgnet"], MgNet)
    for model in built.values():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert parameter_count(model) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=r"unknown model 'vgg'.*plain.*resnet.*mgnet"):
        build_cnn("vgg", [4], 3, 10, 32)


def test_merged_channel_figure_shows_the_matched_channels():
    data = image_data()
    seed_everything(0)
    result = train(
        MgNet([1, 1], [8, 8], num_classes=4),
        data,
        TrainConfig(epochs=1, batch_size=16),
        MultilevelConfig(levels=2),
    )
    fine, coarse = restricted_hierarchy(result, [(data.x_train[:32], data.y_train[:32])])
    layer, group = first_normalized_layer(fine)
    assert (layer, group) == ("extract_bn", "grid0")
    transfer = result.cycle.transitions[0].transfers[group]
    fig = plot_merged_channels(fine, coarse, transfer, data.x_test[0], count=3)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    merged = [c for c in range(transfer.n_coarse) if int((transfer.assign == c).sum()) > 1]
    assert len(labels) == min(3, len(merged)) > 0
    assert labels[0].endswith(f"→ {merged[0]}")
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        first_normalized_layer(MLP(4, [4], 2))
