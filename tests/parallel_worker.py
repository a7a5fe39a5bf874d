"""PVD and synthetic gradients for tests/test_parallel.py: under `torchrun --nproc-per-node 2`
(`python parallel_worker.py OUT` writes OUT/rank<r>.pt) and in one process (`run_all(serial=
True)`, the reference): float64 Hamiltonian nets on a small ellipses set, a few iterations."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from mlw_lib import distributed
from mlw_lib.data import load_dataset
from mlw_lib.models.stable import StableNet
from mlw_lib.parallel import PVD, PVDConfig, SyntheticConfig, SyntheticGradients


def small_data() -> SimpleNamespace:
    """32 / 8 / 8 points per class, inputs float64."""
    data = load_dataset("ellipses", seed=0, n_train=32, n_val=8, n_test=8)
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return SimpleNamespace(
        **{k: getattr(data, k).double() if k[0] == "x" else getattr(data, k) for k in names}
    )


def net() -> StableNet:
    torch.manual_seed(0)
    return StableNet("hamiltonian", 2, 2, depth=4, h=0.5, width=4).double()


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run_all(serial: bool, oracle: bool = True) -> dict[str, dict]:
    """{"pvd": params and chosen blocks, "synthetic": params and M's errors, "oracle": params
    (2 processes only)} after a few iterations."""
    data, results = small_data(), {}
    model = net()
    pvd = PVD(model, data, PVDConfig(blocks=2, local_steps=3, batch_size=8, holdout=8), serial)
    for _ in range(3):
        pvd.iterate()
    results["pvd"] = {"params": parameters(model), "chosen": pvd.chosen}
    for method in ("synthetic", "oracle") if oracle else ("synthetic",):
        model = net()
        config = SyntheticConfig(batch_size=8, lr=0.1, sg_lr=0.05)
        sg = SyntheticGradients(model, data, config, serial=serial, oracle=method == "oracle")
        for _ in range(6):
            sg.step()
        sg.finish()
        sg.gather_model()
        results[method] = {"params": parameters(model), "errors": list(sg.errors)}
    return results


if __name__ == "__main__":
    distributed.start("gloo", "cpu")
    torch.set_num_threads(1)
    out = run_all(serial=False)
    torch.save(out, Path(sys.argv[1]) / f"rank{distributed.rank()}.pt")
    distributed.stop()
