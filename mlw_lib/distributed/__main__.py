"""Train one (method, seed) of a task with data parallelism over the processes of torchrun.

    torchrun --nproc-per-node 2 -m mlw_lib.distributed -p task mlp_mnist -p method fas
    torchrun --nnodes 2 --node-rank R --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m mlw_lib.distributed -f my_run.yaml

Parameters (`-f FILE` of `name: value`, then `-p NAME VALUE`, values read as YAML) are those of
`PARAMETERS` below and every field of `TrainConfig` and `MultilevelConfig` (`epochs`, `lr`,
`batch_size` = the global minibatch, split evenly over the processes, `tau`, ...). It is the
same `train()` loop as the notebooks'; rank 0 alone prints, logs the run to MLflow (experiment
`experiment`) and writes the checkpoint `checkpoint_dir/<method>__seed<seed>.pt`. Run the same
command again after a failure: it resumes from that checkpoint (on several nodes the folder
must be one that every node sees).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import mlflow
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from .. import distributed, tracking
from ..__main__ import collect_parameters
from ..experiments import check_plan, compare, slug
from ..frontier import budget_name
from ..multilevel import MultilevelConfig
from ..notebooks.parameters import load_parameter_file
from ..paths import runs_dir
from ..tasks import build_task_model, load_task_data
from ..training import TrainConfig
from ..variants import variant_methods

PARAMETERS: dict[str, tuple[Any, str]] = {  # name: (default, what it sets)
    "task": ("mlp_mnist", "mlp_mnist, resnet_fashion_mnist or transformer_imdb"),
    "width": (512, "fine width (mlw_lib/tasks.py)"),
    "method": ("fas", '"single-level" or a variant of mlw_lib/variants.py'),
    "budget": (1.0, "fraction of the epochs to train (a frontier run: schedule fitted to it)"),
    "levels": (2, "levels of a multilevel method"),
    "seed": (0, "initial weights and minibatch order"),
    "validation": (0, "training examples held out (safeguarded and adaptive need them)"),
    "train_subset": (0, "first N training examples (0: all)"),
    "test_subset": (0, "first N test examples (0: all)"),
    "vocab_size": (8000, "transformer_imdb only"),
    "max_len": (128, "transformer_imdb only"),
    "backend": ("gloo", 'gloo (CPU) or nccl (GPUs, with device "cuda")'),
    "experiment": ("distributed", "MLflow experiment (of a new parent run)"),
    "parent_run": ("", "MLflow run to log under instead (e.g. the notebook's that launched it)"),
    "checkpoint_dir": ("", "default: runs/distributed/<task>"),
}
ENTRY = "torchrun -m mlw_lib.distributed"
DEFAULTS = {name: default for name, (default, _) in PARAMETERS.items()}


def parameters(argv: list[str] | None) -> dict[str, Any]:
    """DEFAULTS, then the `-f` file, then every `-p NAME VALUE`."""
    parser = argparse.ArgumentParser(
        prog="torchrun ... -m mlw_lib.distributed",
        description=__doc__,
        epilog="parameters (default):\n"
        + "".join(f"  {k} ({d!r}): {text}\n" for k, (d, text) in PARAMETERS.items())
        + "  and every field of TrainConfig and MultilevelConfig (mlw_lib/training/trainer.py, "
        "mlw_lib/multilevel/config.py)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", "--parameter-file", type=Path, help="YAML file of name: value")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[]
    )
    args = parser.parse_args(argv)
    given = load_parameter_file(args.parameter_file) if args.parameter_file else {}
    return {**DEFAULTS, **given, **collect_parameters(args.parameter)}


def methods_of(params: dict[str, Any]) -> dict[str, MultilevelConfig]:
    """{method name: config} for the one method asked for."""
    if params["method"] == "single-level":
        return {budget_name(params["budget"]): MultilevelConfig()}
    base = MultilevelConfig.from_params(params, other=set(DEFAULTS), levels=params["levels"])
    return variant_methods([params["method"]], base)


def train_one(params: dict[str, Any]) -> None:
    """Join the process group, train, and (rank 0) log and report."""
    device = distributed.start(params["backend"], str(params.get("device", "cpu")))
    train_config = TrainConfig.from_params(params, other=set(DEFAULTS), device=str(device))
    methods = methods_of(params)
    seed = params["seed"]
    check_plan(train_config, methods, [seed])
    main = distributed.is_main()
    if not main:
        dist.barrier()  # rank 0 fills the data cache first
    data = load_task_data(
        params["task"],
        params["train_subset"] or None,
        params["test_subset"] or None,
        str(device),
        params["vocab_size"],
        params["max_len"],
    )
    if params["validation"]:
        data = data.hold_out(params["validation"])
    if main:
        dist.barrier()
    folder = Path(params["checkpoint_dir"] or runs_dir() / "distributed" / params["task"])
    name = next(iter(methods))
    checkpoint = folder / f"{slug(name)}__seed{seed}.pt"
    seen = distributed.gather(checkpoint.is_file())
    if len(set(seen)) > 1:
        raise ValueError(
            f"ranks disagree on whether {checkpoint} exists ({seen}, in rank order); put "
            "checkpoint_dir on a filesystem that every node shares"
        )
    if main:
        print(data.info.describe())
        print(
            f"{name}, seed {seed}: {distributed.world_size()} processes ({params['backend']}), "
            f"{train_config.batch_size // distributed.world_size()} examples each per minibatch"
            f"{'; resuming from ' + str(checkpoint) if seen[0] else ''}"
        )
    tags = {"world_size": distributed.world_size(), "backend": params["backend"]}
    own_run = main and not params["parent_run"]
    run = (
        tracking.notebook_run(
            params["experiment"],
            params=params,
            tags={**data.info.as_tags(), **tags, "task": params["task"], "notebook": ENTRY},
        )
        if own_run
        else contextlib.nullcontext()
    )
    with run:
        comparison = compare(
            lambda: build_task_model(params["task"], params["width"], data),
            data,
            train_config,
            methods,
            [seed],
            checkpoint_dir=folder,
            budgets={name: params["budget"]},
            parent_run_id=(params["parent_run"] or None) if main else None,
        )
    if main:
        run_id = comparison.run_ids[(name, seed)]
        mlflow.MlflowClient().set_tag(run_id, "world_size", distributed.world_size())
        mlflow.MlflowClient().set_tag(run_id, "backend", params["backend"])
        last = comparison.final().iloc[0]
        print(
            f"{name}, seed {seed}: test accuracy {last['test_accuracy']:.4f} after "
            f"{last['work_units']:.0f} WU, {last['wall_time']:.1f} s; checkpoint {checkpoint}"
        )
        print(f"mlflow run {run_id}")


@record
def main(argv: list[str] | None = None) -> int:
    """Entry point; a user error prints one line per rank to stderr and returns 2."""
    return distributed.run_entry_point(lambda: train_one(parameters(argv)), "mlw_lib.distributed")


if __name__ == "__main__":
    sys.exit(main())
