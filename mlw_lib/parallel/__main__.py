"""Train a stable net with PVD or synthetic gradients over torchrun's processes, or serially.

    torchrun --standalone --nproc-per-node 2 -m mlw_lib.parallel -p method pvd
    python -m mlw_lib.parallel -p method synthetic -p serial true
    python -m mlw_lib.parallel -p method backprop -p threads 2

Parameters (`-p NAME VALUE`, values read as YAML) are those of `PARAMETERS` below. Rank 0
alone prints, logs the run to MLflow (experiment `experiment`, or under `parent_run`) with its
history (`history.csv`: iteration, wall-clock, validation and test accuracy) and prints
`mlflow run <id>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import mlflow
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from .. import distributed, tracking
from ..__main__ import collect_parameters
from ..data import load_dataset
from ..models.stable import StableNet
from ..modes import in_mode
from ..reproducibility import seed_everything
from .backprop import Backprop
from .pvd import PVD, PVDConfig
from .synthetic import SyntheticConfig, SyntheticGradients
from .timing import timed_run

METHODS = ("pvd", "synthetic", "oracle", "backprop")
PARAMETERS: dict[str, tuple[Any, str]] = {  # name: (default, what it sets)
    "method": (
        "pvd",
        "pvd, synthetic, oracle (synthetic with the true gradient) or backprop (plain "
        "training in one process, the baseline)",
    ),
    "serial": (False, "true: every block (half) in this one process (backprop: always)"),
    "dataset": ("ellipses", "ellipses, swiss_roll or mnist"),
    "form": ("hamiltonian", "resnet, antisymmetric, hamiltonian or leapfrog"),
    "depth": (4, "layers"),
    "width": (0, "stream width (0: the input size, no lift)"),
    "h": (0.5, "step"),
    "iterations": (200, "PVD iterations or minibatches"),
    "eval_every": (20, "evaluate every this many iterations (off the clock)"),
    "blocks": (2, "PVD: blocks of layers (= processes)"),
    "local_steps": (10, "PVD: SGD steps per subproblem and iteration"),
    "lr": (0.05, "SGD step"),
    "momentum": (0.9, "synthetic, backprop: SGD momentum"),
    "sg_lr": (0.01, "synthetic: step of the synthetic-gradient module"),
    "batch_size": (50, "minibatch size"),
    "holdout": (200, "PVD: validation examples the candidates are compared on"),
    "validation": (5000, "mnist: training examples held out for validation"),
    "train_subset": (0, "mnist: first N training examples (0: all)"),
    "seed": (0, "initial weights and minibatch order"),
    "threads": (1, "torch threads per process"),
    "experiment": ("parallel", "MLflow experiment (of a new run)"),
    "parent_run": ("", "MLflow run to log under instead (e.g. a notebook's)"),
}
DEFAULTS = {name: default for name, (default, _) in PARAMETERS.items()}


def parameters(argv: list[str] | None) -> dict[str, Any]:
    """DEFAULTS, then every `-p NAME VALUE`; unknown names are refused."""
    parser = argparse.ArgumentParser(
        prog="python -m mlw_lib.parallel",
        description=__doc__,
        epilog="parameters (default):\n"
        + "".join(f"  {k} ({d!r}): {text}\n" for k, (d, text) in PARAMETERS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[]
    )
    given = collect_parameters(parser.parse_args(argv).parameter)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; known: {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **given}
    if params["method"] not in METHODS:
        raise ValueError(f"unknown method {params['method']!r}; choose one of {list(METHODS)}")
    return params


def load(params: dict[str, Any]):
    """The data set, flattened, with a validation split."""
    if params["dataset"] == "mnist":
        data = load_dataset("mnist", train_subset=params["train_subset"] or None, flatten=True)
        return data.hold_out(params["validation"])
    return load_dataset(params["dataset"], seed=0)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of (x, y) the model classifies right (this process alone, eval mode)."""
    with in_mode(model, training=False):
        right = sum(
            int((model(x[i : i + 4096]).argmax(1) == y[i : i + 4096]).sum())
            for i in range(0, len(x), 4096)
        )
    return right / len(x)


def run(params: dict[str, Any]) -> None:
    """Train as `params` say; rank 0 logs and prints."""
    torch.set_num_threads(params["threads"])
    serial = params["serial"] or params["method"] == "backprop"
    if params["method"] == "backprop" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "backprop trains in one process; launch it with plain python (or torchrun "
            "--nproc-per-node 1) and set its torch threads with -p threads N"
        )
    if not serial:
        distributed.start("gloo", "cpu")
    data = load(params)
    seed_everything(params["seed"])
    model = StableNet(
        params["form"],
        data.x_train.shape[1],
        len(data.classes) or int(data.y_train.max()) + 1,
        depth=params["depth"],
        h=params["h"],
        width=params["width"] or None,
    )
    if params["method"] == "pvd":
        keys = ("blocks", "local_steps", "lr", "batch_size", "holdout", "seed")
        trainer = PVD(model, data, PVDConfig(**{k: params[k] for k in keys}), serial=serial)
        step, settle = trainer.iterate, lambda: None
    elif params["method"] == "backprop":
        config = SyntheticConfig(**{k: params[k] for k in ("lr", "momentum", "batch_size", "seed")})
        trainer = Backprop(model, data, config)
        step, settle = trainer.step, lambda: None
    else:
        keys = ("lr", "momentum", "sg_lr", "batch_size", "seed")
        config = SyntheticConfig(**{k: params[k] for k in keys})
        trainer = SyntheticGradients(
            model, data, config, serial=serial, oracle=params["method"] == "oracle"
        )
        step, settle = trainer.step, trainer.finish
    main = distributed.is_main()
    fitted = [0]  # synthetic-gradient fits already reported

    def measure() -> dict[str, float]:
        """Validation and test accuracy (rank 0); for synthetic gradients also M's mean
        relative error against the true gradients since the last evaluation."""
        row = {}
        if params["method"] in ("synthetic", "oracle"):
            trainer.gather_model()
            new, fitted[0] = trainer.errors[fitted[0] :], len(trainer.errors)
            row["sg_error"] = sum(new) / len(new) if new else float("nan")
        if not main:
            return {}
        splits = {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}
        return row | {f"{n}_accuracy": accuracy(model, x, y) for n, (x, y) in splits.items()}

    history = timed_run(
        step, measure, params["iterations"], params["eval_every"], settle, params["method"]
    )
    if not main:
        return
    processes = 1 if serial else distributed.world_size()
    history = history.assign(processes=processes, threads=params["threads"])
    print(data.info.describe())
    own = not params["parent_run"]
    name = f"{params['method']} {'serial' if serial else f'{processes} processes'}"
    run_context = (
        tracking.notebook_run(params["experiment"], params=params, run_name=name)
        if own
        else tracking.child_run(name, params=params, parent_run_id=params["parent_run"])
    )
    with run_context as active:
        mlflow.set_tags({**data.info.as_tags(), "processes": processes})
        tracking.log_history(history, step_column="iteration")
        mlflow.log_text(history.to_csv(index=False), "history.csv")
        run_id = active.info.run_id
    last = history.iloc[-1]
    print(
        f"{name}: test accuracy {last['test_accuracy']:.4f} after {int(last['iteration'])} "
        f"iterations, {last['wall_time']:.2f} s"
    )
    print(f"mlflow run {run_id}")


@record
def main(argv: list[str] | None = None) -> int:
    """Entry point; a user error prints one line per rank to stderr and returns 2."""
    return distributed.run_entry_point(lambda: run(parameters(argv)), "mlw_lib.parallel")


if __name__ == "__main__":
    sys.exit(main())
