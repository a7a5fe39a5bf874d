"""Small shared builders for the tests (generated data: the tests are about mechanics)."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import torch

from mlw_lib.models import MLP
from mlw_lib.models.transformer import PAD_ID, TransformerClassifier
from mlw_lib.multilevel import (
    GroupTransfer,
    MultilevelConfig,
    WorkMeter,
    build_model,
    forward_backward_flops,
    match_model,
    prolong,
    restrict_gradients,
    restrict_params,
)
from mlw_lib.multilevel.batchnorm import recalibrate
from mlw_lib.multilevel.cycle import FASCycle
from mlw_lib.multilevel.hierarchy import assign_params, detached_params
from mlw_lib.multilevel.objective import Level, objective_gradient
from mlw_lib.multilevel.state import named_state
from mlw_lib.multilevel.tau import tau_policy
from mlw_lib.training import classification_loss

REPO = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("MLW_DATA_MIRROR") or REPO.parent / "shared" / "datasets").resolve()
TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(nproc: int, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """`torchrun --nproc-per-node nproc` on a free local port, one torch thread per rank."""
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(nproc), *args]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def random_pairing(n_coarse: int, n_fine: int, generator: torch.Generator) -> torch.Tensor:
    """A random assignment (n_fine,) of fine units to coarse units, 1 or 2 per coarse unit."""
    assert n_coarse <= n_fine <= 2 * n_coarse
    members = torch.cat(
        [torch.arange(n_coarse), torch.randperm(n_coarse, generator=generator)[: n_fine - n_coarse]]
    )
    return members[torch.randperm(n_fine, generator=generator)]


def random_transfer(n_coarse: int, n_fine: int, generator: torch.Generator) -> GroupTransfer:
    assign = random_pairing(n_coarse, n_fine, generator)
    weights = torch.rand(n_fine, generator=generator, dtype=torch.float64) + 0.1
    return GroupTransfer(assign, weights, n_coarse)


def toy_data(n: int, features: int, classes: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def toy_dataset(seed: int = 0, n: int = 256) -> SimpleNamespace:
    """A learnable dataset like `load_mnist`'s for `train`: n training and 128 test examples
    of 12 features, float32, labelled by one fixed random linear teacher into 4 classes."""
    teacher = torch.randn(12, 4, generator=torch.Generator().manual_seed(1234))
    x, _ = toy_data(n, 12, 4, seed, dtype=torch.float32)
    xt, _ = toy_data(128, 12, 4, seed + 1, dtype=torch.float32)
    return SimpleNamespace(
        x_train=x, y_train=(x @ teacher).argmax(1), x_test=xt, y_test=(xt @ teacher).argmax(1)
    )


def make_cycle(
    model: MLP, config: MultilevelConfig, x, y, batch_size=16, lr=0.05, optimizer="sgd"
) -> FASCycle:
    """A FASCycle over cycling slices of (x, y)."""
    position = [0]

    def next_batch():
        start = position[0] % (len(x) - batch_size + 1)
        position[0] += batch_size
        return x[start : start + batch_size], y[start : start + batch_size]

    def make_optimizer(params, lr):
        if optimizer == "adam":
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    example = (x[:batch_size], y[:batch_size])
    meter = WorkMeter(forward_backward_flops(model, example, classification_loss))
    return FASCycle(
        model,
        config,
        make_optimizer,
        [lr] * config.levels,
        classification_loss,
        next_batch,
        meter,
        lambda m: forward_backward_flops(m, example, classification_loss) / meter.flops_per_wu,
    )


def restricted_levels(
    fine_model, batches, convention: str, tau_mode: str, seed: int = 0, v_fine=None, last_step=None
):
    """(fine Level, coarse Level at x_c0 = R x with its tau on `batches`, transition, meter).

    `v_fine` gives the fine level a linear term of its own (a level that is itself coarse);
    `last_step` is its (minibatch, gradient) of a last pre-smoothing step (tau "last_step");
    BatchNorm statistics of the coarse net are recalibrated on `batches`.
    """
    meter = WorkMeter(1.0)
    fine = Level(0, fine_model, torch.optim.SGD(fine_model.parameters(), lr=0.1), 0.1, 1.0)
    fine.last_step = last_step
    if v_fine is not None:
        fine.tau = lambda batch: v_fine
    config = MultilevelConfig(levels=2, convention=convention, tau=tau_mode)
    transition = match_model(fine_model, config, level=0, seed=seed)
    coarse_model = build_model(fine_model, transition.coarse_sizes())
    layout = fine_model.param_layout()
    x_c0 = restrict_params(detached_params(fine_model), layout, transition.transfers, convention)
    assign_params(coarse_model, x_c0)
    recalibrate(coarse_model, batches, classification_loss)
    coarse = Level(1, coarse_model, torch.optim.SGD(coarse_model.parameters(), lr=0.1), 0.1, 0.5)
    policy = tau_policy(tau_mode, 1.0, convention, classification_loss)
    coarse.tau = policy.linear_term(fine, coarse, batches, transition.transfers, meter)
    return fine, coarse, transition, meter


def split_units(small, convention: str, generator: torch.Generator):
    """(fine, transfers): a net built from `small` by splitting every unit of every group in
    two (random pairs and weights) and prolonging its parameters; under `avg_sum` (or
    `sum_avg` with ReLU) the same function as `small`."""
    sizes = small.group_sizes()
    transfers = {group: random_transfer(n, 2 * n, generator) for group, n in sizes.items()}
    fine = small.resized({group: 2 * n for group, n in sizes.items()}).double()
    params = prolong(dict(small.named_parameters()), small.param_layout(), transfers, convention)
    assign_params(fine, params)
    return fine, transfers


def matched_coarse(fine, convention: str, seed: int):
    """(transition, coarse net at x_c = R x): `fine` matched for 2 levels and restricted."""
    config = MultilevelConfig(levels=2, convention=convention, seed=seed)
    transition = match_model(fine, config, level=0, seed=seed)
    coarse = build_model(fine, transition.coarse_sizes())
    layout = fine.param_layout()
    assign_params(
        coarse, restrict_params(detached_params(fine), layout, transition.transfers, convention)
    )
    return transition, coarse


def assert_round_trip(coarse, convention: str) -> None:
    """DESIGN.md §5.1 on a whole model: restrict(prolong(x_c)) = x_c for every parameter, the
    groups grown by random pairings (some units split, some not)."""
    g = torch.Generator().manual_seed(1)
    sizes = coarse.group_sizes()
    transfers = {group: random_transfer(n, n + n // 2 + 1, g) for group, n in sizes.items()}
    layout = coarse.param_layout()
    params = detached_params(coarse)
    back = restrict_params(
        prolong(params, layout, transfers, convention), layout, transfers, convention
    )
    for name, p in params.items():
        torch.testing.assert_close(back[name], p, rtol=0, atol=1e-12)


def assert_first_order_coherence(fine_model, batches, convention: str) -> None:
    """DESIGN.md §5.3: at x_c0 = R x with tau once per cycle on `batches`, the coarse
    objective's gradient equals the restricted fine gradient P^T grad F_f."""
    fine, coarse, transition, meter = restricted_levels(fine_model, batches, convention, "cycle")
    coarse_grad = objective_gradient(coarse, batches, classification_loss, meter)
    expected = restrict_gradients(
        objective_gradient(fine, batches, classification_loss, meter),
        fine_model.param_layout(),
        transition.transfers,
        convention,
    )
    for name in expected:
        torch.testing.assert_close(coarse_grad[name], expected[name], rtol=0, atol=1e-5)


def assert_zero_coarse_steps_change_nothing(
    model, x, y, optimizer: str = "sgd", **settings
) -> None:
    """DESIGN.md §5.4: a cycle with nu_pre = nu_post = 0 (after 3 single-level cycles that
    fill the optimizer state) leaves the fine parameters and optimizer state unchanged;
    `settings` go to the MultilevelConfig (levels=2 unless given)."""
    warm = make_cycle(model, MultilevelConfig(levels=1), x, y, optimizer=optimizer)
    for _ in range(3):
        warm.run_cycle()
    config = MultilevelConfig(**({"levels": 2} | settings), nu_pre=0, nu_post=0)
    cycle = make_cycle(model, config, x, y, optimizer=optimizer)
    cycle.levels[0].optimizer = warm.levels[0].optimizer
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = copy.deepcopy(named_state(warm.levels[0].optimizer, model))
    cycle.run_cycle()
    assert len(cycle.levels) == config.levels
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name]), name
    after = named_state(cycle.levels[0].optimizer, model)
    for name, entries in state.items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(after[name][key]), torch.as_tensor(value)), key


# Notebook code: a comparison of single-level training and a 2-level V-cycle of a 12-64-32-4
# MLP on generated data labelled by a fixed linear teacher (learnable), without checkpoints.
TOY_COMPARISON = """\
from types import SimpleNamespace

import torch

import mlw_lib as mlw

g = torch.Generator().manual_seed(0)
teacher = torch.randn(12, 4, generator=g)
x, xt = torch.randn(2048, 12, generator=g), torch.randn(256, 12, generator=g)
data = SimpleNamespace(
    x_train=x, y_train=(x @ teacher).argmax(1), x_test=xt, y_test=(xt @ teacher).argmax(1)
)
methods = {"single-level": mlw.multilevel.MultilevelConfig(),
           "V2": mlw.multilevel.MultilevelConfig(levels=2)}


def toy_comparison(config, seeds):
    return mlw.experiments.compare(
        lambda: mlw.models.MLP(12, [64, 32], 4), data, config, methods, seeds,
        log_checkpoints=False,
    )
"""


def code_cell(source: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    """A code cell, optionally tagged."""
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    return cell


def write_notebook(path: Path, cells: list[nbformat.NotebookNode]) -> Path:
    """Write a python3 notebook made of `cells` to `path`."""
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


VOCAB = 40


def tokens(n: int, length: int, seed: int, min_length: int = 3) -> torch.Tensor:
    """(n, length) ids in [1, VOCAB): random lengths >= min_length, right-padded with 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    lengths = torch.randint(min_length, length + 1, (n,), generator=g)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = PAD_ID
    return ids


def tiny_transformer(**kw) -> TransformerClassifier:
    """A tiny float64 transformer, no dropout."""
    settings = dict(d_model=8, layers=2, heads=2, head_dim=3, ffn=5, max_len=12, dropout=0.0)
    settings |= dict(attention_dropout=0.0, probe=tokens(6, 12, 99))
    return TransformerClassifier(VOCAB, 3, **(settings | kw)).double()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]
