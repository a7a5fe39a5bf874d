"""TrainConfig's memory and speed options do what they say (each test fails if its option is
ignored): bf16 autocast, torch.compile, per-block gradient checkpointing."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import tiny_transformer, tokens, toy_dataset

from mlw_lib import distributed
from mlw_lib.models import MLP, ResNet
from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.reproducibility import seed_everything
from mlw_lib.training import TrainConfig, classification_loss, train


def images(n: int = 64, seed: int = 0) -> SimpleNamespace:
    """Learnable 1-channel 8x8 images: the class is the brightest quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 4 * (c // 2) : 4 * (c // 2) + 4, 4 * (c % 2) : 4 * (c % 2) + 4] += 1.0
    return SimpleNamespace(
        x_train=x[: n // 2], y_train=y[: n // 2], x_test=x[n // 2 :], y_test=y[n // 2 :]
    )


def test_bf16_autocast_runs_the_training_forwards_in_bfloat16_and_keeps_fp32_weights():
    data = toy_dataset()
    histories, dtypes = [], []
    for autocast in ("none", "bf16"):
        seed_everything(0)
        model = MLP(12, [16, 8], 4)
        seen: list[torch.dtype] = []
        model.linears[-1].register_forward_hook(
            lambda m, inputs, out, seen=seen: seen.append(out.dtype) if m.training else None
        )
        config = TrainConfig(epochs=3, batch_size=32, lr=0.1, autocast=autocast)
        result = train(model, data, config, MultilevelConfig(levels=2))
        histories.append(result.history)
        dtypes.append(seen)
        assert all(p.dtype == torch.float32 for p in result.cycle.levels[1].model.parameters())
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.bfloat16 not in dtypes[0]
    assert dtypes[1].count(torch.bfloat16) > len(dtypes[1]) / 2  # the FLOP count runs in fp32
    fp32, bf16 = (h["test_accuracy"].to_numpy() for h in histories)
    assert bf16[-1] > bf16[0] + 0.15 and abs(bf16[-1] - fp32[-1]) <= 0.05  # learns as fp32 does
    assert not np.array_equal(histories[0]["train_loss"][1:], histories[1]["train_loss"][1:])


def test_compile_runs_every_levels_steps_through_torch_compile():
    data = toy_dataset()
    results = []
    for backend in ("none", "eager"):  # "eager": dynamo's capture without code generation
        seed_everything(0)
        config = TrainConfig(epochs=2, batch_size=32, lr=0.1, compile=backend)
        results.append(train(MLP(12, [16, 8], 4), data, config, MultilevelConfig(levels=2)))
    plain, compiled = results
    assert all(isinstance(level.runner, MLP) for level in plain.cycle.levels)
    assert all(
        isinstance(level.runner, torch._dynamo.eval_frame.OptimizedModule)
        for level in compiled.cycle.levels
    )
    np.testing.assert_allclose(
        plain.history["train_loss"], compiled.history["train_loss"], rtol=1e-5
    )


def test_an_unknown_compile_backend_is_refused(refusals):
    with refusals.error(
        "TrainConfig(compile='fast')", ValueError, "torch.compile backend.*inductor"
    ):
        TrainConfig(compile="fast")


def _block_calls(model: torch.nn.Module, blocks: list[torch.nn.Module], batch) -> tuple:
    """(forward calls of each block in one training step, the gradients, the buffers after)."""
    calls = [0] * len(blocks)  # pre-hooks: a recomputation may stop before the block's end
    hooks = [
        block.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(blocks)
    ]
    model.zero_grad()
    before = {n: b.clone() for n, b in model.named_buffers()}
    classification_loss(model, batch).backward()
    for hook in hooks:
        hook.remove()
    after = {n: b.clone() for n, b in model.named_buffers()}
    for name, buffer in before.items():  # restore the BN statistics: each step starts alike
        model.get_buffer(name).copy_(buffer)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return calls, grads, after


@pytest.mark.parametrize("kind", ["resnet", "transformer"])
def test_checkpointed_blocks_recompute_their_forward_and_give_the_same_gradients(kind):
    torch.manual_seed(0)
    if kind == "resnet":
        model = ResNet([6, 8], [1, 1], in_channels=1, num_classes=4).double()
        blocks = [block for stage in model.stages for block in stage]
        batch = (images().x_train.double(), images().y_train)
    else:
        model, batch = tiny_transformer(), (tokens(8, 12, 1), torch.randint(0, 3, (8,)))
        blocks = list(model.blocks)
    plain_calls, plain, plain_buffers = _block_calls(model, blocks, batch)
    model.enable_checkpointing()
    calls, checkpointed, buffers = _block_calls(model, blocks, batch)
    assert plain_calls == [1] * len(blocks) and calls == [2] * len(blocks)  # recomputed
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-10, atol=1e-12)
    for name, buffer in plain_buffers.items():  # BN statistics: each batch counts once
        torch.testing.assert_close(buffers[name], buffer, rtol=1e-12, atol=1e-14)


def test_checkpoint_blocks_reaches_every_level_and_refuses_a_net_without_blocks(refusals):
    data = images()
    seed_everything(0)
    config = TrainConfig(epochs=2, batch_size=8, checkpoint_blocks=True)
    model = ResNet([6, 8], [1, 1], in_channels=1, num_classes=4)
    result = train(model, data, config, MultilevelConfig(levels=2))
    assert all(level.model.checkpointing for level in result.cycle.levels)
    with refusals.error("checkpoint_blocks=True for an MLP", ValueError, "made of blocks"):
        train(MLP(12, [16, 8], 4), toy_dataset(), config)


def test_sync_batchnorm_swaps_every_levels_batchnorm_and_alone_trains_as_plain_batchnorm():
    data = images()
    results = []
    for sync in (False, True):
        seed_everything(0)
        config = TrainConfig(epochs=2, batch_size=8, sync_batchnorm=sync)
        model = ResNet([6, 8], [1, 1], in_channels=1, num_classes=4)
        results.append(train(model, data, config, MultilevelConfig(levels=2)))
    plain, synced = results
    for result, kind in ((plain, torch.nn.BatchNorm2d), (synced, torch.nn.SyncBatchNorm)):
        for level in result.cycle.levels:
            norms = [m for m in level.model.modules() if "BatchNorm" in type(m).__name__]
            assert norms and all(type(m) is kind for m in norms)
    np.testing.assert_allclose(plain.history["train_loss"], synced.history["train_loss"])
    np.testing.assert_allclose(plain.history["test_accuracy"], synced.history["test_accuracy"])


def test_sync_batchnorm_on_cpu_processes_is_refused(monkeypatch: pytest.MonkeyPatch, refusals):
    monkeypatch.setattr(distributed, "active", lambda: True)  # as under torchrun with gloo
    config = TrainConfig(epochs=1, batch_size=8, sync_batchnorm=True)
    model = ResNet([6, 8], [1, 1], in_channels=1, num_classes=4)
    with refusals.error("sync_batchnorm=True on CPU processes", ValueError, "needs GPUs"):
        train(model, images(), config)


def test_seeding_leaves_inductor_unimported_and_compiling_gives_it_the_deterministic_flag():
    code = """
import sys, torch
from mlw_lib.reproducibility import seed_everything
from mlw_lib.training import TrainConfig
seed_everything(0)
assert torch.are_deterministic_algorithms_enabled()
assert torch.is_deterministic_algorithms_warn_only_enabled()
assert "torch._inductor.config" not in sys.modules, "seeding imported TorchInductor"
TrainConfig(compile="eager").runner_factory()(torch.nn.Linear(2, 2))
import torch._inductor.config as inductor
assert inductor.deterministic, "compiling did not pass the flag on"
"""
    environment = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_DETERMINISTIC"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0, done.stderr[-2000:]
