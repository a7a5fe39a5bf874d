"""Launching torchrun jobs from a notebook: each (method, seed) of a comparison trains under
`torchrun --standalone --nproc-per-node N -m mlw_lib.distributed` (or another entry point,
e.g. `mlw_lib.parallel`) and is read back from the MLflow run it logged (its `history.csv`),
nested under the notebook's run."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from tqdm.auto import tqdm

from .. import tracking
from ..checks import integer
from ..experiments import Comparison, interleaved
from ..notebooks.executions import CHECKPOINT_ENV
from ..paths import repo_root
from ..variants import variant_name

TORCHRUN = Path(sys.executable).with_name("torchrun")
NOT_JOB_PARAMETERS = ("variants", "frontier", "seeds", "nproc")  # what to run, not how


def launch(
    params: Mapping[str, Any],
    nproc: int,
    module: str = "mlw_lib.distributed",
    torchrun: bool = True,
) -> str:
    """Train one (method, seed) with `params` (those of `python -m module`) over `nproc` local
    processes under torchrun (`torchrun=False`: one plain `python -m module`, for an entry
    point that runs without torchrun's environment); the id of the MLflow run it logged.
    Raises RuntimeError with the job's last error lines if it fails."""
    integer("nproc", nproc, 1)
    if not torchrun and nproc != 1:
        raise ValueError(f"{nproc} processes need torchrun; set torchrun=True")
    command = [sys.executable, "-m", module]
    if torchrun:
        command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", "-m", module]
    for name, value in params.items():
        command += ["-p", name, json.dumps(value)]  # JSON is YAML: read back exactly
    done = subprocess.run(command, capture_output=True, text=True, cwd=repo_root())
    found = re.search(r"^mlflow run (\w+)$", done.stdout, re.MULTILINE)
    if done.returncode or not found:
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
        raise RuntimeError(
            f"the torchrun job ({nproc} processes, method {params.get('method')!r}, seed "
            f"{params.get('seed')}) failed with exit code {done.returncode}: "
            + (" | ".join(errors[-3:]) or done.stderr[-2000:])
        )
    return found.group(1)


def logged_history(run_id: str) -> pd.DataFrame:
    """The `history.csv` a launched job logged to its MLflow run `run_id`."""
    tracking.use_store()
    return pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/history.csv")))


def compare_launched(
    params: Mapping[str, Any],
    fractions: Mapping[str, float],
    variants: Sequence[str],
    seeds: Sequence[int],
    nproc: int,
    parent_run_id: str,
) -> Comparison:
    """Notebook 06's comparison with each run a torchrun job of `nproc` processes, logged
    under `parent_run_id`: the single-level frontier (`fractions`: {method name: budget}) and
    the `variants` at `params["levels"]` levels, for every seed, in `interleaved` order.
    `params`: the notebook's parameters (those that only say what to run are left out of the
    jobs'). The jobs' checkpoints go to `$MLW_CHECKPOINT_DIR` (a headless execution's: it
    resumes) or a temporary folder."""
    params = {k: v for k, v in params.items() if k not in NOT_JOB_PARAMETERS}
    jobs = {name: ("single-level", fraction) for name, fraction in fractions.items()}
    jobs |= {variant_name(v, params["levels"]): (v, 1.0) for v in variants}
    tracking.use_store()
    frames, run_ids = [], {}
    with tempfile.TemporaryDirectory(prefix="mlw-launched-") as scratch:
        folder = os.environ.get(CHECKPOINT_ENV) or scratch
        for name, seed in tqdm(interleaved(list(jobs), seeds), desc="runs", unit="run"):
            method, budget = jobs[name]
            job = {**params, "method": method, "budget": budget, "seed": seed}
            job |= {"parent_run": parent_run_id, "checkpoint_dir": folder}
            run_id = launch(job, nproc)
            frames.append(logged_history(run_id).assign(method=name, seed=seed))
            run_ids[(name, seed)] = run_id
    return Comparison(pd.concat(frames, ignore_index=True), {}, {}, run_ids)
