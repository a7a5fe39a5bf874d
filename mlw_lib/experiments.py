"""Side-by-side comparisons: methods x seeds at equal work, tracked in MLflow.

Each (method, seed) trains the same fine model from the same initialisation and batch order
under one work budget (a squeeze method: its own wider fine net, at the same FLOPs), as a
nested MLflow run of the notebook's parent run. Runs are interleaved (seed by seed, the method
order alternating) and each records how busy the machine was (`load_average`,
`other_cores`). Results come back as one tidy DataFrame (one row per method, seed and
evaluation).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import distributed, tracking
from .checks import integer, number
from .frontier import final_rows, higher_is_better
from .multilevel import MultilevelConfig, WidthModel, forward_backward_flops
from .notebooks.executions import CHECKPOINT_ENV
from .reproducibility import CpuContention, seed_everything
from .training import LOSSES, TrainConfig, TrainResult, train


def method_name(config: MultilevelConfig) -> str:
    """'single-level', e.g. 'V-cycle, 3 levels', or for a squeeze run e.g.
    'V-cycle squeeze, level 1 of 2'."""
    if config.levels == 1:
        return "single-level"
    if config.model_level:
        return f"{config.cycle}-cycle squeeze, level {config.model_level} of {config.levels}"
    return f"{config.cycle}-cycle, {config.levels} levels"


def check_plan(
    train_config: TrainConfig, methods: Mapping[str, MultilevelConfig], seeds: Sequence[int]
) -> None:
    """Refuse a comparison that would fail part-way, before any method trains: `seeds` must
    be distinct non-negative ints, every method must take optimizer steps and needs its
    learning rates (`lr` of at least
    its number of levels), and the device must exist. Raises ValueError naming the fix."""
    if not isinstance(seeds, list | tuple) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for seed in seeds:
        integer("each seed", seed, 0)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    if not methods:
        raise ValueError("no methods to compare (e.g. levels is empty); give at least one")
    for name, config in methods.items():
        try:
            config.check_takes_steps()
            train_config.level_lrs(config.levels)
        except ValueError as error:
            raise ValueError(f"method {name!r}: {error}") from None
    device = torch.device(train_config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but this machine has no CUDA device; set device to 'cpu'"
        )


@dataclass
class Comparison:
    """Tidy history of every run, and each method's hierarchy (widths per level)."""

    history: pd.DataFrame
    hierarchies: dict[str, pd.DataFrame]
    results: dict[tuple[str, int], TrainResult]
    run_ids: dict[tuple[str, int], str] = field(default_factory=dict)  # MLflow, when tracked

    def final(self) -> pd.DataFrame:
        """Last evaluation of every (method, seed)."""
        return final_rows(self.history)

    def at_equal_time(self, metric: str = "test_accuracy") -> pd.DataFrame:
        """`metric` of every run at one wall-clock time: the shortest run's final time T.

        Each run's curve (its evaluations against `wall_time`, starting with the initial net
        at time 0) is read at T by linear interpolation, so every run gets a value (NaN only
        for a run with no evaluation at or before T, e.g. a squeeze run's first product).
        """
        budget = self.final()["wall_time"].min()
        rows = []
        for (method, seed), run in self.history.groupby(["method", "seed"], sort=False):
            curve = run[run[metric].notna()]
            times, values = curve["wall_time"].to_numpy(), curve[metric].to_numpy()
            value = (
                np.interp(budget, times, values) if len(times) and times[0] <= budget else np.nan
            )
            rows.append({"method": method, "seed": seed, "wall_time": budget, metric: value})
        return pd.DataFrame(rows)

    def phase_seconds(self) -> pd.DataFrame:
        """Mean over seeds of each method's final wall_time and its split by phase (s)."""
        columns = ["wall_time", *(c for c in self.history.columns if c.startswith("time_"))]
        return self.final().groupby("method", sort=False)[columns].mean().round(2)

    def report(
        self, metric: str = "test_accuracy", baseline: str = "single-level"
    ) -> dict[str, object]:
        """The comparison's results as titled sections (tables and the verdict against the
        method `baseline`), for `viz.save_results`."""
        from .viz import results_table

        load = ["load_average", "other_cores"]
        return {
            "At equal work (mean ± std over seeds)": results_table(
                self.final(), metrics=(metric, "wall_time", "work_units")
            ),
            "At equal wall-clock (each run's curve read at the shortest run's final time)": (
                results_table(self.at_equal_time(metric), metrics=(metric, "wall_time"))
            ),
            "Verdict": verdict(self, metric, baseline),
            "Seconds per phase (mean over seeds)": self.phase_seconds(),
            "Machine load during the runs (mean over seeds; other_cores: CPU used by other "
            "processes, in cores)": self.final()
            .groupby("method", sort=False)[load]
            .mean()
            .round(2),
        }


def compare(
    make_model: Callable[[], WidthModel],
    data,
    train_config: TrainConfig,
    methods: Mapping[str, MultilevelConfig],
    seeds: Sequence[int],
    log_checkpoints: bool = True,
    models: Mapping[str, Callable[[], WidthModel]] | None = None,
    checkpoint_dir: str | Path | None = None,
    budgets: Mapping[str, float] | None = None,
    parent_run_id: str | None = None,
    train_settings: Mapping[str, Mapping[str, object]] | None = None,
) -> Comparison:
    """Train every method for every seed; log each run as a nested MLflow run when a parent
    run is active. The model is built after `seed_everything(seed)`, so all methods of one
    seed start from the same initial weights and see the same batch order.

    `models` gives a method its own fine net (e.g. the wider net of a squeeze run). Such a
    method gets the same FLOPs as the others: its epochs are scaled by the ratio of one
    minibatch's FLOPs of `make_model()` to its own, and its history's `work_units` and
    `epoch` are re-expressed in `make_model()`'s minibatches, so all methods share one axis.

    `budgets` gives a method a fraction of the work budget (e.g. the single-level runs of
    `frontier.frontier_methods`): its epochs, and so its schedule, end there.

    `checkpoint_dir` (default `$MLW_CHECKPOINT_DIR`, set for headless executions) keeps one
    checkpoint per (method, seed), written at every evaluation; a run whose checkpoint is
    there resumes from it (a finished one trains nothing), so a killed comparison re-run with
    the same settings ends with the same metrics.

    `train_settings` gives a method its own TrainConfig fields, e.g. {"coarse-to-fine":
    {"depth_doublings": 2}} (checked, like every run's settings, before any training).

    `parent_run_id` logs the runs under that MLflow run instead of the active one (e.g. a
    notebook's run, from a torchrun job it launched). Each run logs its history as
    `history.csv`.
    """
    check_plan(train_config, methods, seeds)
    checkpoint_dir = checkpoint_dir or os.environ.get(CHECKPOINT_ENV) or None
    models, budgets = dict(models or {}), dict(budgets or {})
    settings = dict(train_settings or {})
    for what, given in (("models", models), ("budgets", budgets), ("train_settings", settings)):
        unknown = sorted(set(given) - set(methods))
        if unknown:
            raise ValueError(f"{what} for unknown methods {unknown}; methods are {list(methods)}")
    for name, fraction in budgets.items():
        number(f"budget of {name!r}", fraction, 0, 1, open_low=True)
    known = {f.name for f in fields(TrainConfig)} - {"seed"}
    for name, values in settings.items():
        if set(values) - known:
            raise ValueError(
                f"train_settings of {name!r}: {sorted(set(values) - known)} are not TrainConfig "
                f"fields that a method may set; choose from {sorted(known)}"
            )
    configs = {name: replace(train_config, **settings.get(name, {})) for name in methods}
    batch, loss = train_config.batch_size, train_config.loss
    reference = minibatch_flops(make_model(), data, batch, loss) if models else 0.0
    flops = {name: minibatch_flops(build(), data, batch, loss) for name, build in models.items()}
    frames, hierarchies, results = [], {}, {}
    runs = interleaved(list(methods), seeds)
    tracked = parent_run_id is not None or mlflow.active_run() is not None
    run_ids = {}
    for name, seed in tqdm(runs, desc="runs", unit="run", **distributed.progress_options()):
        config = replace(configs[name], seed=seed)
        config = replace(config, epochs=config.epochs * budgets.get(name, 1.0))
        if name in models:  # its own fine net: the same FLOPs as make_model()'s runs
            config = replace(config, epochs=config.epochs * reference / flops[name])
        multilevel = replace(methods[name], seed=seed)
        params = {
            **{f"train.{k}": v for k, v in asdict(config).items()},
            **{f"multilevel.{k}": v for k, v in multilevel.to_dict().items()},
            "method": name,
            "seed": seed,
        }
        seed_everything(seed)
        model = models.get(name, make_model)()
        run = (
            tracking.child_run(
                f"{name} / seed {seed}",
                params=params,
                tags=getattr(data, "info", None) and data.info.as_tags(),
                parent_run_id=parent_run_id,
            )
            if tracked
            else contextlib.nullcontext()
        )
        with run as active:
            path = Path(checkpoint_dir, f"{slug(name)}__seed{seed}.pt") if checkpoint_dir else None
            with CpuContention() as load:
                result = train(
                    model,
                    data,
                    config,
                    multilevel,
                    checkpoint_path=path,
                    resume=bool(path and path.is_file()),
                    description=f"{name} s{seed}",
                )
            history = result.history.assign(**load.record())
            if name in models:  # work in make_model()'s minibatches
                factor = flops[name] / reference
                history = history.assign(
                    work_units=history["work_units"] * factor, epoch=history["epoch"] * factor
                )
            if tracked:
                run_ids[(name, seed)] = active.info.run_id
                mlflow.log_metrics(load.record())
                tracking.log_history(history)
                mlflow.log_text(history.to_csv(index=False), "history.csv")
                tracking.log_correction_gains(result.cycle.corrections)
                tracking.log_switches(result.cycle.coarse_stage.switches)
                if log_checkpoints:
                    tracking.log_checkpoint(
                        result.model.state_dict(), {"model": getattr(model, "config", {}), **params}
                    )
                    if result.cycle.matchings_log:  # which units merged, at every re-matching
                        log = {"log": result.cycle.matchings_log}
                        tracking.log_checkpoint(log, {"method": name, "seed": seed}, "matchings")
        frames.append(history.assign(method=name, seed=seed))
        hierarchies.setdefault(name, result.hierarchy())
        results[(name, seed)] = result
    history = pd.concat(frames, ignore_index=True)
    return Comparison(history, hierarchies, results, run_ids)


def load_trained(
    run_id: str, model_class: type[WidthModel], data=None, **inputs
) -> tuple[WidthModel, list[dict] | None]:
    """The trained fine net of a (method, seed) run logged by `compare`, built as
    `model_class(**its logged model config, **inputs)` (e.g. a transformer's `probe`), and the
    matchings log of its training (None for a single-level run: nothing was matched).
    With `data`, the run must have been trained on the same dataset and tokenizer."""
    tracking.use_store()
    client = mlflow.MlflowClient()
    logged = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    if "checkpoints/checkpoint.pt" not in logged:
        raise ValueError(
            f"run {run_id} has no logged checkpoint; give the id of a method / seed run of a "
            "notebook (a child run, e.g. 'single-level / seed 0'), not of its parent run"
        )
    if data is not None:
        tags, here = client.get_run(run_id).data.tags, data.info.as_tags()
        differ = [
            f"{key}: run {tags.get(key)!r}, here {here.get(key)!r}"
            for key in ("data_name", "data_tokenizer")
            if tags.get(key) != here.get(key)
        ]
        if differ:
            raise ValueError(
                f"run {run_id} was trained on other data ({'; '.join(differ)}); "
                "set this notebook's data parameters to the run's"
            )
    state, saved = tracking.load_logged_checkpoint(run_id)
    model = model_class(**saved["model"], **inputs)
    model.load_state_dict(state)
    if "checkpoints/matchings.pt" not in logged:
        return model, None
    return model, tracking.load_logged_checkpoint(run_id, "matchings")[0]["log"]


def slug(name: str) -> str:
    """A method name as a file name: 'V-cycle, 3 levels' -> 'V-cycle-3-levels'."""
    return re.sub(r"[^A-Za-z0-9.+=-]+", "-", name).strip("-")


def interleaved(methods: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """(method, seed) in run order: seed by seed, the method order reversed every other seed,
    so that a slow spell of a shared machine does not fall on one method only."""
    order = []
    for index, seed in enumerate(seeds):
        names = methods if index % 2 == 0 else list(reversed(methods))
        order.extend((name, seed) for name in names)
    return order


def minibatch_flops(model: WidthModel, data, batch_size: int, loss: str = "cross_entropy") -> float:
    """FLOPs of one forward + backward pass (with `LOSSES[loss]`) of `model` on the first
    training minibatch."""
    x, y = data.x_train[:batch_size], data.y_train[:batch_size]
    return float(forward_backward_flops(model.to(x.device), (x, y), LOSSES[loss]))


def verdict(
    comparison: Comparison, metric: str = "test_accuracy", baseline: str = "single-level"
) -> str:
    """Plain sentences comparing every method with `baseline` at equal work and equal time.

    A difference counts as "better"/"worse" (higher accuracy, lower loss or error) only when
    it exceeds two standard errors of the difference of the means (sqrt(s1^2/n1 + s2^2/n2),
    seeds as samples); otherwise it is "no clear difference". With one seed per method
    nothing is called better or worse.
    """
    lines = []
    for label, table in (
        ("equal work", comparison.final()),
        ("equal wall-clock", comparison.at_equal_time(metric)),
    ):
        stats = table.groupby("method", sort=False)[metric].agg(["mean", "std", "count"])
        if baseline not in stats.index:
            return f"no {baseline!r} runs to compare with"
        base = stats.loc[baseline]
        for method, row in stats.drop(index=baseline).iterrows():
            diff = row["mean"] - base["mean"]
            if min(row["count"], base["count"]) < 2:
                error, word = float("nan"), "too few seeds to tell"
            else:
                error = (row["std"] ** 2 / row["count"] + base["std"] ** 2 / base["count"]) ** 0.5
                word = (
                    "no clear difference"
                    if abs(diff) <= 2 * error
                    else "better"
                    if (diff > 0) == higher_is_better(metric)
                    else "worse"
                )
            lines.append(
                f"At {label}, {method}: {metric} {row['mean']:.4f} vs {baseline} "
                f"{base['mean']:.4f} ({diff:+.4f}; standard error {error:.4f}; "
                f"n={int(row['count'])} vs {int(base['count'])}) -> {word}."
            )
    return "\n".join(lines)
