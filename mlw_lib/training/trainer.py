"""ONE training loop for single-level and multilevel training (single-level = one level).

The budget is counted in fine-level work: `epochs` = E means E x (batches per epoch) work
units, so single-level and multilevel runs with the same `epochs` do equal work. Metrics are
recorded every `eval_every` such work-epochs and at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..allocator import keep_freed_memory
from ..checks import choice, flag, integer, number
from ..data.augment import Augment
from ..modes import in_mode
from ..multilevel import FASCycle, MultilevelConfig, WidthModel, WorkMeter, forward_backward_flops
from ..multilevel.cycle import NonFiniteLossError
from ..reproducibility import torch_compile_deterministic
from .batches import BatchStream
from .checkpoint import TrainingState, check_resumable, load_checkpoint, save_checkpoint
from .depth import doublings_done, grow, shallow_start, switch_points
from .evaluation import LOSSES, calibration_batches, restricted_models, test_metrics

AUTOCASTS = ("none", "bf16")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
DEVICES = ("cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every level (learning rates may differ per level)."""

    epochs: float = 1.0  # budget: this many fine-level epochs of work (WU = epochs x batches/epoch)
    batch_size: int = 128  # minibatch size on every level
    optimizer: str = "sgd"  # "sgd" (momentum), "adam" or "adamw" (multilevel: experimental)
    lr: float | list[float] = 0.05  # learning rate, or one per level (a scalar broadcasts)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # L2 (sgd, adam) or decoupled (adamw) weight decay
    schedule: str = "constant"  # "constant" or "cosine", indexed by fine-level work
    warmup: float = 0.0  # linear learning-rate warm-up over this fraction of the work budget
    seed: int = 0  # seed of the minibatch order
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    eval_every: float = 1.0  # evaluate every this many work-epochs
    eval_batch_size: int = 4096  # minibatch size for evaluation
    augment: bool = False  # random crop + horizontal flip of every training batch (images)
    crop_padding: int = 4  # augmentation: crop offset of up to this many pixels (0 = no crop)
    flip: bool = True  # augmentation: mirror left-right with probability 1/2
    channels_last: bool = False  # store images and conv weights NHWC (often faster on CPU)
    autocast: str = "none"  # "bf16": training forwards in bfloat16 (weights, tau, transfers fp32)
    compile: str = "none"  # torch.compile backend of the training steps, e.g. "inductor"
    checkpoint_blocks: bool = False  # recompute block activations in backward: less memory
    sync_batchnorm: bool = False  # torchrun on GPUs: BN batch statistics over all ranks
    loss: str = "cross_entropy"  # "cross_entropy" (integer labels) or "mse" (float targets)
    depth_doublings: int = 0  # stable nets: start at depth N/2^d, double d times (see depth.py)
    depth_switch: list[float] | None = None  # budget fractions of the doublings (default even)

    def __post_init__(self) -> None:
        number("epochs", self.epochs, 0.0, open_low=True)
        number("eval_every", self.eval_every, 0.0, open_low=True)
        integer("batch_size", self.batch_size, 1)
        integer("eval_batch_size", self.eval_batch_size, 1)
        integer("seed", self.seed, 0)
        integer("crop_padding", self.crop_padding, 0)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("schedule", self.schedule, SCHEDULES)
        lrs = self.lr if isinstance(self.lr, list | tuple) and self.lr else [self.lr]
        for lr in lrs:
            number("lr (each entry)" if len(lrs) > 1 else "lr", lr, 0.0, open_low=True)
        number("momentum", self.momentum, 0.0, 1.0, open_high=True)
        number("weight_decay", self.weight_decay, 0.0)
        number("warmup", self.warmup, 0.0, 1.0, open_high=True)
        for name in ("augment", "flip", "channels_last", "checkpoint_blocks", "sync_batchnorm"):
            flag(name, getattr(self, name))
        choice("autocast", self.autocast, AUTOCASTS)
        choice("loss", self.loss, tuple(LOSSES))
        integer("depth_doublings", self.depth_doublings, 0)
        if self.depth_switch is not None:
            points = list(self.depth_switch)
            inside = all(isinstance(p, int | float) and 0 < p < 1 for p in points)
            if len(points) != self.depth_doublings or not inside or points != sorted(set(points)):
                raise ValueError(
                    f"depth_switch must be {self.depth_doublings} increasing fractions of the "
                    f"budget in (0, 1), one per doubling (depth_doublings), or None; got "
                    f"{self.depth_switch!r}"
                )
        if self.compile != "none":
            from torch import _dynamo  # only when asked for: slow to import

            if self.compile not in _dynamo.list_backends(exclude_tags=()):
                shown = ", ".join(["eager", "aot_eager", *_dynamo.list_backends()])
                raise ValueError(
                    f"compile must be 'none' or a torch.compile backend ({shown}), "
                    f"got {self.compile!r}"
                )
        try:
            known = isinstance(self.device, str) and torch.device(self.device).type in DEVICES
        except RuntimeError:
            known = False
        if not known:
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    @classmethod
    def from_params(
        cls, params: dict, *, other: tuple[str, ...] | set[str] = (), **overrides: object
    ) -> TrainConfig:
        """This config from a notebook's parameters: every field found in `params` (a mapping),
        then `overrides`. A key that is a field of neither TrainConfig nor MultilevelConfig and
        not named in `other` raises ValueError naming it (see `MultilevelConfig.from_params`)."""
        from ..multilevel.config import fields_from_params

        return cls(**fields_from_params(cls, params, other, overrides, MultilevelConfig))

    def batch_transform(self) -> Augment | None:
        """The per-batch augmentation, or None when `augment` is off."""
        return Augment(self.crop_padding, self.flip) if self.augment else None

    def place(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """x on `device`, NHWC when `channels_last` (then x must be images (N, C, H, W))."""
        x = x.to(device)
        if not self.channels_last:
            return x
        if x.dim() != 4:
            raise ValueError(
                f"channels_last needs image data (N, C, H, W), got shape {tuple(x.shape)}; "
                f"set channels_last=False for this model"
            )
        return x.contiguous(memory_format=torch.channels_last)

    def place_model(self, model: WidthModel, device: torch.device) -> WidthModel:
        """`model` on `device` in training mode, NHWC when `channels_last`."""
        model = model.to(device).train()
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def level_lrs(self, levels: int) -> list[float]:
        """Per-level learning rates: a scalar (or 1-list) broadcasts; a longer list is cut to
        its first `levels` entries (so one list serves runs with 1, 2, 3 levels)."""
        lrs = [self.lr] if isinstance(self.lr, int | float) else list(self.lr)
        if len(lrs) == 1:
            lrs = lrs * levels
        lrs = lrs[:levels]
        if len(lrs) != levels:  # each entry was checked when the config was made
            raise ValueError(
                f"lr must be a positive number or {levels} positive numbers (one "
                f"per level), got {self.lr!r}"
            )
        return [float(lr) for lr in lrs]

    def loss_function(self) -> Callable[[nn.Module, tuple], torch.Tensor]:
        """The training loss `LOSSES[loss]`, with `autocast` "bf16" its forward pass under
        bfloat16 autocast (parameters and their gradients stay fp32)."""
        plain = LOSSES[self.loss]
        if self.autocast == "none":
            return plain
        device_type = torch.device(self.device).type

        def loss(model: nn.Module, batch: tuple) -> torch.Tensor:
            with torch.autocast(device_type, dtype=torch.bfloat16):
                return plain(model, batch)

        return loss

    def runner_factory(self) -> Callable[[nn.Module], nn.Module]:
        """`make(model)`: what a level's optimizer steps call: the model (under torchrun in
        DistributedDataParallel), compiled with the `compile` backend unless "none". With
        `sync_batchnorm` the model's BatchNorm layers become `nn.SyncBatchNorm` first (in
        place: same parameters and buffers; alone in a process they act as plain BN)."""

        def make(model: nn.Module) -> nn.Module:
            if self.sync_batchnorm:
                nn.SyncBatchNorm.convert_sync_batchnorm(model)
            runner = distributed.replicate(model)
            if self.compile == "none":
                return runner
            torch_compile_deterministic()
            return torch.compile(runner, backend=self.compile)

        return make

    def optimizer_factory(self) -> Callable[[list[nn.Parameter], float], torch.optim.Optimizer]:
        """`make(params, lr)`; uses PyTorch's fused kernels (CPU and CUDA) for speed."""

        def make(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
            if self.optimizer == "sgd":
                return torch.optim.SGD(
                    params,
                    lr=lr,
                    momentum=self.momentum,
                    weight_decay=self.weight_decay,
                    fused=True,
                )
            cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
            return cls(params, lr=lr, weight_decay=self.weight_decay, fused=True)

        return make


def schedule_factor(kind: str, progress: float, warmup: float = 0.0, step: float = 0.0) -> float:
    """Learning-rate multiplier at `progress` in [0, 1] of the work budget: a linear warm-up
    to 1 over the first `warmup` of the budget (at `progress + step`, so that the first step's
    rate is not 0; `step`: one WU's share of the budget), then `kind` ("constant", or "cosine"
    from 1 to 0 over the rest)."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return min(1.0, (progress + step) / warmup)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / (1.0 - warmup)))
    return 1.0


@dataclass
class TrainResult:
    """History (one row per evaluation), the trained fine model, the hierarchy, and the model
    of interest: `product` is the fine model, or with `model_level` = m > 0 ("squeeze") the
    fine model restricted m levels down (R^m x, BN recalibrated)."""

    history: pd.DataFrame
    model: WidthModel
    cycle: FASCycle = field(repr=False)
    meter: WorkMeter = field(repr=False)
    product: WidthModel = field(repr=False)

    def hierarchy(self) -> pd.DataFrame:
        """Widths per level and group with the achieved ratio to the level above."""
        rows = []
        for level in self.cycle.levels:
            for group, width in level.model.group_sizes().items():
                above = (
                    self.cycle.levels[level.index - 1].model.group_sizes()[group]
                    if level.index
                    else width
                )
                rows.append(
                    {"level": level.index, "group": group, "width": width, "ratio": width / above}
                )
        return pd.DataFrame(rows)


def train(
    model: WidthModel,
    data,
    config: TrainConfig,
    multilevel: MultilevelConfig | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    description: str = "train",
) -> TrainResult:
    """Train `model` on `data` (x_train, y_train, x_test, y_test tensors) and return history.

    With `checkpoint_path`, a checkpoint is written at every evaluation; `resume=True`
    continues from it (same model config required) and ends with the same metrics as an
    uninterrupted run; it refuses a checkpoint written with other settings (see
    `check_resumable`) or a missing one. A NaN/inf loss or evaluation raises
    NonFiniteLossError; no checkpoint is written from such a state.

    Under torchrun (`mlw_lib.distributed`) every rank calls this with the same arguments:
    each trains on its share of every minibatch, and rank 0 alone writes the checkpoint.
    """
    multilevel = multilevel or MultilevelConfig()
    multilevel.check_takes_steps()
    keep_freed_memory()  # no page faults for each step's large tensors
    device = torch.device(config.device)
    model = config.place_model(model, device)
    if config.checkpoint_blocks:
        model.enable_checkpointing()
    final = model  # the model of interest; with depth_doublings trained from a shallow start
    if config.depth_doublings:
        if multilevel.model_level:
            raise ValueError(
                "depth_doublings does not combine with model_level > 0 (a squeeze run): the "
                "model of interest is the fine net; drop one of them"
            )
        model = config.place_model(shallow_start(final, config.depth_doublings), device)
    x_train, y_train = config.place(data.x_train, device), data.y_train.to(device)
    x_test, y_test = config.place(data.x_test, device), data.y_test.to(device)
    check_data(model, config.loss, (x_train, y_train), (x_test, y_test))
    distributed.check_batch_size(config.batch_size)
    if config.sync_batchnorm and distributed.active() and device.type != "cuda":
        raise ValueError(
            "sync_batchnorm needs GPUs: PyTorch's SyncBatchNorm runs on CUDA devices only; "
            "set sync_batchnorm=False for CPU processes (each rank then normalises its share)"
        )
    stream = BatchStream(x_train, y_train, config.batch_size, config.seed, config.batch_transform())
    example = (x_train[: config.batch_size], y_train[: config.batch_size])
    flops_cache: dict[tuple, float] = {}

    def flops_of(m: WidthModel) -> float:
        key = (repr(getattr(m, "config", None)), tuple(sorted(m.group_sizes().items())))
        if key not in flops_cache:
            flops_cache[key] = forward_backward_flops(m, example, LOSSES[config.loss])
        return flops_cache[key]

    meter = WorkMeter(flops_of(final), device)  # 1 WU: a minibatch of the model of interest

    def make_fas(net: WidthModel) -> FASCycle:
        """The cycle over `net`'s width hierarchy (each level charged by its FLOPs)."""
        built = FASCycle(
            net,
            multilevel,
            config.optimizer_factory(),
            config.level_lrs(multilevel.levels),
            config.loss_function(),
            lambda: distributed.shard(stream.next()),  # under torchrun: this rank's share
            meter,
            lambda m: flops_of(m) / meter.flops_per_wu,
            config.runner_factory(),
        )
        built.coarse_stage.budget = (
            multilevel.coarse_first * config.epochs * stream.batches_per_epoch
        )
        if (
            multilevel.monitor_corrections
            or multilevel.correction_search
            or multilevel.switch_threshold
        ):
            built.monitor_batch = monitor_batch(data, config, device)
        return built

    fas = make_fas(model)

    def double_depth_now() -> None:
        """The leading net doubled in depth (h / 2), a new cycle over it; the optimizer state
        restarts (the moments of the inserted layers would be guesses)."""
        nonlocal fas
        doublings.pop(0)
        grown = config.place_model(grow(fas.levels[0].model, final), device)
        old, fas = fas, make_fas(grown)
        fas.cycles_done, fas.steps, state.fas = old.cycles_done, old.steps, fas

    calibration = calibration_batches(x_train, y_train, config.batch_size)
    y_scale = getattr(data, "y_scale", None)

    def measure(net: WidthModel) -> dict[str, float]:
        """Test metrics of `net` (see `test_metrics`)."""
        return test_metrics(net, x_test, y_test, config.eval_batch_size, config.loss, y_scale)

    def model_of_interest() -> WidthModel:
        """The fine net (during a coarse-first stage the coarse net being trained, which holds
        all progress so far), or R^m x (BN recalibrated) with `model_level` = m > 0."""
        if multilevel.model_level == 0:
            return fas.leading_model
        return restricted_models(
            model, fas.transitions, multilevel.convention, calibration, multilevel.model_level
        )[-1]

    budget = config.epochs * stream.batches_per_epoch
    doublings = switch_points(config.depth_doublings, config.depth_switch, budget)
    eval_step = config.eval_every * stream.batches_per_epoch
    state = TrainingState(fas, stream, meter, next_eval=eval_step)
    run_config = {
        "train": asdict(config),
        "multilevel": multilevel.to_dict(),
        "model": getattr(model, "config", {}),
    }
    saved_at = None  # work units of the checkpoint on disk that belongs to this run
    if resume:
        if checkpoint_path is None or not Path(checkpoint_path).is_file():
            raise FileNotFoundError(
                f"resume=True but there is no checkpoint at {checkpoint_path}; check the "
                "path, or pass resume=False to start a fresh run"
            )
        saved = load_checkpoint(checkpoint_path)
        check_resumable(saved, run_config, checkpoint_path)
        for _ in range(doublings_done(saved["model"], model)):  # the saved net's depth
            double_depth_now()
        state.load_state_dict(saved)
        saved_at = meter.work_units
    product: WidthModel | None = None  # the model of interest at the last evaluation
    if not state.rows:  # the curve's start: the initial net, at zero work and zero time
        start = model if multilevel.model_level == 0 else None  # R^m x needs operators
        state.rows.append(_metrics_row(fas, meter, stream, start, measure))
    bar = tqdm(
        total=math.ceil(budget),
        initial=int(meter.work_units),
        unit="WU",
        desc=description,
        leave=False,
        **distributed.progress_options(),
    )
    with bar:
        while meter.work_units < budget - 1e-9:
            if doublings and meter.work_units >= doublings[0] - 1e-9:
                double_depth_now()
            done_before = meter.work_units
            try:
                with meter.running():  # the wall-clock: everything but evaluation and saving
                    fas.lr_factor = schedule_factor(
                        config.schedule, meter.work_units / budget, config.warmup, 1.0 / budget
                    )
                    fas.run_cycle()
            except NonFiniteLossError as error:
                stop = NonFiniteStop(fas, stream, meter, checkpoint_path, saved_at)
                stop.explain("loss", error.level, error)
            if meter.work_units <= done_before:  # a cycle must spend work, or this never ends
                raise RuntimeError(
                    f"a {multilevel.cycle}-cycle spent no work (configuration {multilevel}); "
                    "training would never end"
                )
            bar.update(int(meter.work_units) - int(done_before))  # whole WU shown
            finished = meter.work_units >= budget - 1e-9
            if meter.work_units < state.next_eval - 1e-9 and not finished:
                continue
            product = model_of_interest()
            row = _metrics_row(fas, meter, stream, product, measure)
            bad = [k for k in ("test_loss", "fine_test_loss") if not math.isfinite(row.get(k, 0))]
            if bad:  # a net that evaluates to NaN/inf is never checkpointed
                stop = NonFiniteStop(fas, stream, meter, checkpoint_path, saved_at)
                stop.explain(f"evaluation ({bad[0]} = {row[bad[0]]})", 0)
            state.rows.append(row)
            while state.next_eval <= meter.work_units + 1e-9:
                state.next_eval += eval_step
            if checkpoint_path is not None and distributed.is_main():
                save_checkpoint({**state.state_dict(), "config": run_config}, checkpoint_path)
                saved_at = meter.work_units
    if product is None:  # resumed from a finished run: no evaluation happened here
        product = model_of_interest()
    return TrainResult(pd.DataFrame(state.rows), final, fas, meter, product)


@torch.no_grad()
def check_data(model: nn.Module, loss: str, *splits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Refuse data the model cannot train on with `loss`, before any work: "cross_entropy"
    needs one integer label per input in 0 .. (the model's outputs - 1); "mse" needs float
    targets (N, outputs) shaped like the model's output. The model's forward on one input
    also checks the input shape (without randomness: eval mode)."""
    with in_mode(model, training=False):
        out = model(splits[0][0][:1])
    for name, (x, y) in zip(("train", "test"), splits, strict=False):
        if not len(y) or len(y) != len(x):
            raise ValueError(f"{name} split: {len(x)} inputs but {len(y)} targets")
        if loss == "mse":
            if not y.is_floating_point() or tuple(y.shape[1:]) != tuple(out.shape[1:]):
                raise ValueError(
                    f"loss 'mse' needs float targets shaped like the model's output "
                    f"(N, {', '.join(map(str, out.shape[1:]))}); the {name} targets have shape "
                    f"{tuple(y.shape)} and dtype {y.dtype}"
                    + (
                        "; integer class labels train with loss='cross_entropy'"
                        * (not y.is_floating_point())
                    )
                )
            continue
        if y.dim() != 1 or y.is_floating_point():
            raise ValueError(
                f"{name} labels must be one integer per input: {len(x)} inputs, labels of "
                f"shape {tuple(y.shape)} and dtype {y.dtype}"
                + ("; float regression targets train with loss='mse'" * y.is_floating_point())
            )
        classes = out.shape[-1]
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise ValueError(
                f"{name} labels run from {low} to {high}, but the model has {classes} outputs "
                f"(classes 0 to {classes - 1}); build the model with as many outputs as classes"
            )


def monitor_batch(data, config: TrainConfig, device: torch.device) -> tuple:
    """The first minibatch of the validation split: `monitor_corrections`,
    `correction_search` and `switch_threshold` measure on it."""
    if getattr(data, "x_val", None) is None:
        raise ValueError(
            "monitor_corrections, correction_search and switch_threshold need a validation "
            "split to measure on; "
            "hold one out of the training data with data = data.hold_out(n)"
        )
    x, y = data.x_val[: config.batch_size], data.y_val[: config.batch_size]
    return config.place(x, device), y.to(device)


def _metrics_row(
    fas: FASCycle,
    meter: WorkMeter,
    stream: BatchStream,
    product: WidthModel | None,
    measure: Callable[[WidthModel], dict[str, float]],
) -> dict:
    """One evaluation: work, time, test metrics (`measure`) of the model of interest (NaN
    when it does not exist yet) and of the fine net when that is another level, per-level
    training losses (NaN before the first step), seconds per phase."""
    nan = float("nan")
    row = {
        "epoch": meter.work_units / stream.batches_per_epoch,
        "work_units": meter.work_units,
        "flops": meter.work_units * meter.flops_per_wu,
        "wall_time": meter.wall_time,
        "data_epochs": stream.data_epochs,
        "cycles": fas.cycles_done,
    }
    fine = fas.levels[0].model
    fine_metrics = measure(fine)
    if product is fine:
        row |= {f"test_{name}": value for name, value in fine_metrics.items()}
    else:
        metrics = {k: nan for k in fine_metrics} if product is None else measure(product)
        row |= {f"test_{name}": value for name, value in metrics.items()}
        row |= {f"fine_test_{name}": value for name, value in fine_metrics.items()}
    for level in fas.levels:
        loss = level.pop_mean_loss()
        row[f"level{level.index}_loss"] = nan if loss is None else loss
    row["train_loss"] = row["level0_loss"]
    for index, steps in enumerate(fas.steps):
        row[f"level{index}_steps"] = steps
    if fas.monitor_batch is not None:
        row["correction_gain"] = fas.pop_correction_gain()
    for phase, seconds in meter.breakdown().items():
        row[f"time_{phase}"] = seconds
    return row


@dataclass
class NonFiniteStop:
    """Stops a run whose loss or evaluation is NaN/inf, saying truthfully what is on disk:
    `saved_at` is the work (WU) of this run's last checkpoint, None if it wrote none."""

    fas: FASCycle
    stream: BatchStream
    meter: WorkMeter
    checkpoint_path: str | Path | None
    saved_at: float | None

    def explain(self, what: str, level: int, cause: Exception | None = None) -> None:
        """Raise NonFiniteLossError: `what` went non-finite on `level`, and the fix."""
        per_epoch = self.stream.batches_per_epoch
        if self.checkpoint_path is None:
            kept = "No checkpoint was requested (checkpoint_path)."
        elif self.saved_at is None:
            kept = f"This run wrote no checkpoint before it failed ({self.checkpoint_path})."
        else:
            kept = (
                f"The last good checkpoint (epoch {self.saved_at / per_epoch:.2f}) is kept at "
                f"{self.checkpoint_path}."
            )
        widths = self.fas.levels[level].model.group_sizes()
        raise NonFiniteLossError(
            f"non-finite {what} at epoch {self.meter.work_units / per_epoch:.2f} on level "
            f"{level} (widths {widths}). {kept} Lower that level's learning rate (lr) or check "
            "the data for NaN/inf.",
            level,
        ) from cause
