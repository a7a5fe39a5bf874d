"""Work accounting (DESIGN.md §4.7): FLOP counts of a forward + backward pass."""

from __future__ import annotations

import pytest
import torch
from helpers import toy_data
from torch import nn

from mlw_lib.models import MLP, build_cnn
from mlw_lib.multilevel import forward_backward_flops
from mlw_lib.multilevel.work import _counted_flops
from mlw_lib.training import classification_loss


def test_mlp_flops_are_its_gemms():
    """Forward y = x W^T per layer; backward dW per layer and dx for all but the first."""
    sizes, batch = [12, 16, 8, 4], 32
    x, y = toy_data(batch, 12, 4, seed=0, dtype=torch.float32)
    expected = 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        expected += 2 * batch * fan_in * fan_out * (2 if i == 0 else 3)
    model = MLP(12, sizes[1:-1], 4)
    assert forward_backward_flops(model, (x, y), classification_loss) == expected


@pytest.mark.parametrize("name", ["plain", "resnet", "mgnet"])
def test_conv_flops_equal_the_count_on_the_whole_batch(name):
    """The count on 2 and 4 examples, scaled, is exact for conv nets."""
    torch.manual_seed(0)
    model = build_cnn(name, [4, 8, 8], 3, 5, 8)
    batch = (torch.randn(24, 3, 8, 8), torch.randint(0, 5, (24,)))
    assert forward_backward_flops(model, batch, classification_loss) == _counted_flops(
        model, batch, classification_loss
    )


class FixedCostNet(nn.Module):
    """A matmul whose FLOPs do not grow with the batch (W W^T every forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight @ self.weight.T)


def test_flops_not_proportional_to_the_batch_are_counted_on_the_whole_batch():
    model = FixedCostNet()
    x, y = toy_data(32, 6, 6, seed=1, dtype=torch.float32)
    whole = _counted_flops(model, (x, y), classification_loss)
    scaled = _counted_flops(model, (x[:2], y[:2]), classification_loss) * 16
    assert scaled != whole  # the shortcut would be wrong here...
    assert forward_backward_flops(model, (x, y), classification_loss) == whole  # ...so: not used


class TimeFirstNet(nn.Module):
    """Reads (time, batch, features) and averages over time: its batch is not batch-first."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).mean(dim=0)


def test_a_batch_that_is_not_batch_first_is_counted_whole():
    model = TimeFirstNet()
    x, y = torch.randn(7, 32, 6), torch.randint(0, 3, (32,))
    whole = _counted_flops(model, (x, y), classification_loss)
    assert forward_backward_flops(model, (x, y), classification_loss) == whole


def test_counting_leaves_batchnorm_statistics_and_the_rng_alone():
    torch.manual_seed(0)
    model = build_cnn("resnet", [4, 8, 8], 3, 5, 8).train()
    batch = (torch.randn(16, 3, 8, 8) + 3.0, torch.randint(0, 5, (16,)))
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    forward_backward_flops(model, batch, classification_loss)
    assert torch.equal(torch.get_rng_state(), rng)
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
