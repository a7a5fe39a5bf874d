"""Trains under `torchrun` for tests/test_distributed.py, and in-process as its 1-process
reference: a float64 MLP on the toy teacher data, single-level and a 2-level V-cycle with tau,
batch 32 (the global minibatch). `python distributed_worker.py OUT` (under torchrun) writes
each rank's results to OUT/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from helpers import toy_dataset

from mlw_lib import distributed
from mlw_lib.models import MLP
from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.training import TrainConfig, train

METHODS = {
    "single-level": MultilevelConfig(),
    "V-cycle with tau": MultilevelConfig(levels=2, tau="cycle", rematch_every=2),
}


def train_all() -> dict[str, dict]:
    """{method: final parameters, operators of every transition, test metrics, and how many
    training examples the fine net's forward passes saw on this rank}."""
    toy = toy_dataset(n=256)
    data = SimpleNamespace(
        **{k: v.double() if v.is_floating_point() else v for k, v in vars(toy).items()}
    )
    config = TrainConfig(epochs=2.0, batch_size=32, lr=0.1, eval_every=1.0)
    results = {}
    for name, multilevel in METHODS.items():
        torch.manual_seed(0)
        model = MLP(12, [16, 8], 4).double()
        seen = [0]

        def count(module, args, seen=seen):
            seen[0] += len(args[0]) if module.training else 0

        model.register_forward_pre_hook(count)
        result = train(model, data, config, multilevel)
        results[name] = {
            "params": {k: v.clone() for k, v in model.state_dict().items()},
            "operators": [t.state_dict() for t in result.cycle.transitions if t is not None],
            "test_accuracy": result.history["test_accuracy"].tolist(),
            "train_loss": result.history["train_loss"].tolist(),
            "examples_seen": seen[0],
        }
    return results


if __name__ == "__main__":
    distributed.start("gloo", "cpu")
    try:
        results = train_all()
        torch.save(results, Path(sys.argv[1]) / f"rank{distributed.rank()}.pt")
    finally:
        distributed.stop()
