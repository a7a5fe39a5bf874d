"""The FAS cycle in width: V, W and F (nested iteration), any number of levels.

Mirrors DESIGN.md §4.5. With levels l = 0 (fine) ... L-1 (coarsest):

    cycle(l):
        pre-smooth:   nu_pre passes over k minibatches B              x_l  <- steps on F_l
        if l == L-1:  return
        restrict:     operators (match every M-th visit, else re-weight)  A, omega -> R, P
                      x_c0 = R x_l,  m_c0 = R m_l  (or reset)          (the coarse start)
                      BatchNorm statistics: recalibrated on B, restricted, or kept
        tau:          v_{l+1} = s (grad loss_{l+1}(x_c0; B) - P^T grad F_l(x_l; B))
                      (tau="last_step": B = the last pre-smoothing minibatch, and the
                      gradient that step took)
        recurse:      gamma times cycle(l + 1)    (gamma = 1 V, 2 W; its minibatches are B,
                      or fresh ones with coarse_batches="fresh"; coarse_batches_per_phase
                      of them, and coarse_passes passes on the coarsest level; every
                      coarse_batch_multiple of them joined into one larger batch)
        correct:      x_l += alpha P(x_c - x_c0),  m_l += beta P(m_c - m_c0)
                      (optionally recalibrate the fine BatchNorm statistics on B;
                      monitor_corrections: the loss on a held-out batch before and after;
                      correction_search: the length of 1, 1/2, 1/4 or 0 that lowers it most)
        post-smooth:  nu_post passes over k fresh minibatches

The variants (tau, BatchNorm statistics, optimizer-state transfer) are policy objects chosen
once from the config. One level (L = 1, nu_pre = 1) is plain training, step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import distributed
from ..modes import in_mode
from .batchnorm import batchnorm_layers, recalibrate, statistics_policy
from .coarse_first import CoarseFirstStage
from .config import MultilevelConfig
from .groups import WidthModel, check_layout
from .hierarchy import (
    Transition,
    assign_params,
    build_model,
    check_depth,
    detached_params,
    match_model,
    reweight,
)
from .objective import Level, LossFn, Tensors, no_tau, objective_backward
from .operators import GroupTransfer
from .state import NamedState, state_policy
from .tau import tau_policy
from .transfer import prolong, restrict_params
from .work import WorkMeter, matching_flops, transfer_flops

SEARCH_LENGTHS = (1.0, 0.5, 0.25)  # fractions of the correction tried by correction_search
OptimizerFactory = Callable[[list[torch.nn.Parameter], float], torch.optim.Optimizer]
Work = Callable[[WidthModel], float]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; `level` says where."""

    def __init__(self, message: str, level: int) -> None:
        super().__init__(message)
        self.level = level


@dataclass
class CoarseStart:
    """Where a coarse solve starts: x_c0 = R x, m_c0 = R m, and the batches B it used."""

    params: Tensors
    state: NamedState
    batches: list[tuple]


class FASCycle:
    """Runs cycles of the Full Approximation Scheme over a width hierarchy of `model`.

    `make_optimizer(params, lr)` builds each level's optimizer; `lrs[l]` is level l's
    learning rate; `next_batch()` draws a fresh minibatch; `work_of(model)` is the WU cost of
    one forward+backward minibatch of `model`; `loss_fn(model, batch)` is the loss;
    `make_runner(model)` is what each level's optimizer steps call (default: under torchrun
    the model in DistributedDataParallel, else the model itself).
    """

    def __init__(
        self,
        model: WidthModel,
        config: MultilevelConfig,
        make_optimizer: OptimizerFactory,
        lrs: Sequence[float],
        loss_fn: LossFn,
        next_batch: Callable[[], tuple],
        meter: WorkMeter,
        work_of: Work,
        make_runner: Callable[[WidthModel], torch.nn.Module] = distributed.replicate,
    ) -> None:
        if len(lrs) != config.levels:
            raise ValueError(f"need one learning rate per level ({config.levels}), got {len(lrs)}")
        check_layout(model)
        check_depth(model.group_sizes(), config.levels, config.ratio)
        self.config = config
        self.make_optimizer = make_optimizer
        self.loss_fn = loss_fn
        self.next_batch = next_batch
        self.meter = meter
        self.work_of = work_of
        self.make_runner = make_runner
        self.tau = tau_policy(config.tau, config.tau_scale, config.convention, loss_fn)
        self.statistics = statistics_policy(config.batchnorm, config.convention, loss_fn)
        self.state_transfer = state_policy(
            config.state_transfer, config.convention, config.state_damping
        )
        self.lr_factor = 1.0  # schedule factor, set by the trainer from the fine-level work
        self.levels = [
            Level(
                0,
                model,
                make_optimizer(list(model.parameters()), lrs[0]),
                lrs[0],
                work_of(model),  # 1 WU, unless the net is not the model of interest (depth)
                runner=make_runner(model),
            )
        ]
        self._lrs = list(lrs)
        self.transitions: list[Transition | None] = [None] * (config.levels - 1)
        self.visits = [0] * (config.levels - 1)
        self.cycles_done = 0
        # One entry per matching: {"cycle", "level", "assign": {group: (n_fine,) int64}}.
        self.matchings_log: list[dict] = []
        self.steps = [0] * config.levels  # optimizer steps taken on each level
        # With a monitor batch (x, y): one entry per correction, {"cycle", "level", "before",
        # "after"}: level l's plain loss on it just before and after x_l += alpha P(...).
        self.monitor_batch: tuple | None = None
        self.corrections: list[dict] = []
        self._gains_read = 0  # corrections already summarised by `pop_correction_gain`
        self.coarse_stage = CoarseFirstStage()  # coarse-first: its budget is set by the trainer

    @property
    def leading_model(self) -> WidthModel:
        """The net that holds training's progress: during a coarse-first stage the coarse level
        being trained (the fine net is still its initial one), else the fine net."""
        return self.levels[self.coarse_stage.root or 0].model  # root: None before, 0 after

    # ----------------------------------------------------------------------------- cycles
    def run_cycle(self) -> None:
        """One cycle from the fine level (the first F-cycle starts with nested iteration);
        with `coarse_first`, first one phase of coarse-first training per call, and after it
        plain fine steps if `coarse_first_then` is "fine"."""
        if self.config.coarse_first and not self.coarse_stage.over:
            self._coarse_first_phase()
        elif self.config.coarse_first and self.config.coarse_first_then == "fine":
            self._smooth(self.levels[0], self._batches(None, 0), 1)
        else:
            if self.config.cycle == "F" and self.cycles_done == 0 and self.config.levels > 1:
                self._nested_iteration()
            self._cycle(0, inherited=None)
        self.cycles_done += 1

    def _cycle(self, l: int, inherited: Sequence[tuple] | None) -> None:
        fine = self.levels[l]
        batches = self._batches(inherited, l)
        if l == self.config.levels - 1:  # the coarsest level: smoothing only
            self._smooth(fine, batches, self.config.coarse_passes or self.config.nu_pre)
            return
        self._smooth(fine, batches, self.config.nu_pre, keep_last=self.tau.needs_last_step)
        start = self._restrict(l, batches)
        coarse, transfers = self.levels[l + 1], self.transitions[l].transfers
        with self.meter.phase("tau"):
            coarse.tau = self.tau.linear_term(fine, coarse, batches, transfers, self.meter)
        for _ in range(self.config.gamma):
            self._cycle(l + 1, inherited=batches)
        self._correct(l, start)
        self._smooth(fine, self._batches(inherited, l), self.config.nu_post)

    def _batches(self, inherited: Sequence[tuple] | None, l: int) -> list[tuple]:
        """Level l's minibatches for one phase: k (`coarse_batches_per_phase` on a coarse
        level), led by the parent's tau batches when coarse steps reuse them, fresh else; on
        a coarse level every `coarse_batch_multiple` of them are joined into one batch."""
        count = self.config.batches_per_phase
        if l > 0 and self.config.coarse_batches_per_phase:
            count = self.config.coarse_batches_per_phase
        multiple = self._batch_multiple(l)
        count *= multiple
        reused = []
        if inherited is not None and self.config.coarse_batches == "reuse":
            reused = list(inherited)[:count]
        with self.meter.phase("data"):
            drawn = reused + [self.next_batch() for _ in range(count - len(reused))]
            if multiple == 1:
                return drawn
            return [
                tuple(torch.cat(parts) for parts in zip(*drawn[i : i + multiple], strict=True))
                for i in range(0, count, multiple)
            ]

    def _batch_multiple(self, l: int) -> int:
        """Minibatches per optimizer step on level l: 1 on the fine level."""
        return self.config.coarse_batch_multiple if l > 0 else 1

    def _smooth(
        self, level: Level, batches: Sequence[tuple], passes: int, keep_last: bool = False
    ) -> None:
        """`passes` optimizer passes over `batches` on the level objective F_l; `keep_last`:
        keep the last step's minibatch and gradient in `level.last_step`."""
        phase = "smooth" if level.index == 0 else "coarse"
        lr = level.lr * self.lr_factor
        for group in level.optimizer.param_groups:
            group["lr"] = lr
        with self.meter.phase(phase):
            last = (passes - 1, len(batches) - 1) if keep_last else None
            for pass_index in range(passes):
                for index, batch in enumerate(batches):
                    level.optimizer.zero_grad(set_to_none=True)
                    plain = objective_backward(level, batch, self.loss_fn)
                    if (pass_index, index) == last:
                        level.last_step = (batch, self._gradient_copy(level))
                    level.optimizer.step()
                    level.record_loss(plain)
                    self.meter.charge(level.work * self._batch_multiple(level.index), phase)
                    self.steps[level.index] += 1
        if level.loss_sum is not None and not bool(torch.isfinite(level.loss_sum)):
            raise NonFiniteLossError(f"non-finite loss on level {level.index}", level.index)

    @staticmethod
    def _gradient_copy(level: Level) -> Tensors:
        """{name: p.grad} of the level's parameters, copied (zeros where there is none)."""
        return {
            name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            for name, p in level.named_parameters
        }

    # -------------------------------------------------------------------- down and up
    def _restrict(self, l: int, batches: list[tuple] | None) -> CoarseStart:
        """Operators, x_c0 = R x, m_c0 = R m, the coarse BN statistics; the coarse start."""
        fine = self.levels[l]
        with self.meter.phase("matching"):
            transition = self._transition(l)
        transfers = transition.transfers
        with self.meter.phase("transfer"):
            coarse = self._coarse_level(l, transition)
            layout = fine.model.param_layout()
            x_c0 = restrict_params(
                detached_params(fine.model), layout, transfers, self.config.convention
            )
            assign_params(coarse.model, x_c0)
            m_c0 = self.state_transfer.start(fine, coarse, transfers)
            self.meter.charge_flops(2 * transfer_flops(x_c0))
        batches = list(batches or [])
        if batchnorm_layers(coarse.model):
            if not batches and self.statistics.needs_batches:  # nested iteration
                batches = self._batches(None, l)
            self.statistics.coarse_statistics(fine, coarse, transfers, batches, self.meter)
        return CoarseStart(x_c0, m_c0, batches)

    def _correct(self, l: int, start: CoarseStart) -> None:
        """x_l += alpha P(x_c - x_c0) (with `correction_search`, a fraction of it, or none);
        optimizer state likewise with beta."""
        fine, coarse = self.levels[l], self.levels[l + 1]
        transfers = self.transitions[l].transfers
        before = self._monitor_loss(fine)
        with self.meter.phase("transfer"), torch.no_grad():
            delta = {name: p - start.params[name] for name, p in coarse.model.named_parameters()}
            fine_delta = prolong(
                delta, fine.model.param_layout(), transfers, self.config.convention
            )
            self.meter.charge_flops(2 * transfer_flops(fine_delta))
        length, after = 1.0, None
        if self.config.correction_search:
            length, after = self._correction_length(fine, fine_delta, before)
        with self.meter.phase("transfer"), torch.no_grad():
            for name, p in fine.model.named_parameters():
                p.add_(fine_delta[name], alpha=length * self.config.correction_damping)
            if length > 0:
                self.state_transfer.correct(fine, coarse, start.state, transfers)
        if before is not None:
            after = self._monitor_loss(fine) if after is None else after
            self.corrections.append(
                {
                    "cycle": self.cycles_done,
                    "level": l,
                    "before": before,
                    "after": after,
                    "length": length,
                }
            )
        if self.config.recalibrate_fine and start.batches and batchnorm_layers(fine.model):
            with self.meter.phase("recalibration"):
                recalibrate(fine.model, start.batches, self.loss_fn)
                self.meter.charge_forward(fine.work, len(start.batches))

    def pop_correction_gain(self) -> float:
        """Mean gain (loss after - before; < 0 helps) of the fine-level corrections since the
        last call; NaN if there were none."""
        new = self.corrections[self._gains_read :]
        self._gains_read = len(self.corrections)
        gains = [c["after"] - c["before"] for c in new if c["level"] == 0]
        return sum(gains) / len(gains) if gains else float("nan")

    def _correction_length(
        self, fine: Level, fine_delta: Tensors, before: float | None
    ) -> tuple[float, float]:
        """(fraction of SEARCH_LENGTHS, or 0: rejected; the fine loss there) with the lowest
        loss on the monitor batch; the fine net is left as it was."""
        if before is None:
            raise ValueError("correction_search needs a monitor batch (a validation split)")
        best = (0.0, before)
        params = dict(fine.model.named_parameters())
        with torch.no_grad():
            start = {name: p.detach().clone() for name, p in params.items()}
            for length in SEARCH_LENGTHS:
                step = length * self.config.correction_damping
                for name, p in params.items():
                    p.copy_(start[name] + step * fine_delta[name])
                loss = self._monitor_loss(fine)
                if loss < best[1]:
                    best = (length, loss)
            for name, p in params.items():
                p.copy_(start[name])
        return best

    def _monitor_loss(self, level: Level) -> float | None:
        """Level's plain loss on the monitor batch (eval mode), or None without one."""
        if self.monitor_batch is None:
            return None
        with self.meter.phase("monitor"), torch.no_grad(), in_mode(level.model, training=False):
            distributed.average_buffers(level.model)  # every rank measures the same net
            loss = float(self.loss_fn(level.model, self.monitor_batch))
            self.meter.charge_forward(level.work, 1)
        return loss

    # ------------------------------------------------------------- hierarchy upkeep
    def _transition(self, l: int) -> Transition:
        """Match every `rematch_every`-th visit of this transition; otherwise re-weight."""
        fine = self.levels[l].model
        previous = self.transitions[l]
        if previous is None or self.visits[l] % self.config.rematch_every == 0:
            seed = self.config.seed + 7919 * self.visits[l] + 104729 * l
            transition = match_model(fine, self.config, l, seed)
            assign = {group: m.assign.cpu() for group, m in transition.matchings.items()}
            self.matchings_log.append({"cycle": self.cycles_done, "level": l, "assign": assign})
            for group, n in fine.group_sizes().items():
                self.meter.charge_flops(matching_flops(n, transition.feature_dims[group]))
            if previous is not None and transition.coarse_sizes() != previous.coarse_sizes():
                for deeper in range(l + 1, len(self.transitions)):
                    self.transitions[deeper] = None  # coarse shapes changed below
        else:
            transition = reweight(previous, fine, self.config)
        if distributed.active():  # every rank transfers with rank 0's operators
            device = next(fine.parameters()).device
            transition.transfers = {
                group: GroupTransfer.from_state_dict(saved).to(device)
                for group, saved in distributed.from_main(transition.state_dict()).items()
            }
        self.transitions[l] = transition
        self.visits[l] += 1
        return transition

    def _coarse_level(self, l: int, transition: Transition) -> Level:
        """Level l + 1, (re)built when the coarse sizes changed."""
        sizes = transition.coarse_sizes()
        if len(self.levels) > l + 1 and self.levels[l + 1].model.group_sizes() == sizes:
            return self.levels[l + 1]
        model = build_model(self.levels[l].model, sizes)
        with self.meter.phase("accounting"):
            work = self.work_of(model)
        lr = self._lrs[l + 1]
        optimizer = self.make_optimizer(list(model.parameters()), lr)
        level = Level(l + 1, model, optimizer, lr, work, runner=self.make_runner(model))
        if len(self.levels) > l + 1:
            self.levels[l + 1] = level
        else:
            self.levels.append(level)
        return level

    def _nested_iteration(self) -> None:
        """F-cycle start: restrict the initial net down, then from the coarsest level upward
        run `fmg_cycles` cycles and prolong the solution (plus symmetry-breaking noise)."""
        for l in range(self.config.levels - 1):
            self._restrict(l, batches=None)
        generator = torch.Generator().manual_seed(self.config.seed)
        for root in range(self.config.levels - 1, 0, -1):
            self.levels[root].tau = no_tau
            for _ in range(self.config.fmg_cycles):
                self._cycle(root, inherited=None)
            self._prolong_solution(root, generator)

    def _coarse_first_phase(self) -> None:
        """k steps on the coarse level being trained (the first call restricts the initial net
        down every level); once it hands over (`CoarseFirstStage`), prolong its solution one
        level up, which is trained next (the fine net ends the stage)."""
        stage = self.coarse_stage
        if stage.root is None:
            for l in range(self.config.levels - 1):
                self._restrict(l, batches=None)
            stage.root = self.config.levels - 1
        level = self.levels[stage.root]
        level.tau = no_tau
        before = self.meter.work_units
        self._smooth(level, self._batches(None, stage.root), 1)
        stage.count_phase(self.meter.work_units - before)
        stalled = stage.stalled(
            lambda: self._monitor_loss(level),
            self.meter.work_units,
            self.config.switch_threshold,
            self.config.switch_every,
        )
        if stage.hands_over(stalled, self.config.levels - 1, self.meter.work_units):
            generator = torch.Generator().manual_seed(self.config.seed + stage.root)
            self._prolong_solution(stage.root, generator)
            stage.next_level()

    def _prolong_solution(self, coarse_index: int, generator: torch.Generator) -> None:
        """x_f <- (1 - a) x_f + a (P x_c + noise) with a = `prolong_blend`; fine optimizer
        state reset."""
        fine, coarse = self.levels[coarse_index - 1], self.levels[coarse_index]
        transfers = self.transitions[coarse_index - 1].transfers
        with self.meter.phase("transfer"), torch.no_grad():
            x_f = prolong(
                detached_params(coarse.model),
                fine.model.param_layout(),
                transfers,
                self.config.convention,
            )
            blend = self.config.prolong_blend
            for name, p in fine.model.named_parameters():
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                target = x_f[name] + self.config.fmg_noise * x_f[name].std().nan_to_num(0) * noise
                if blend == 1:
                    p.copy_(target)
                else:
                    p.lerp_(target, blend)
            fine.optimizer.state.clear()

    # -------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        return {
            "transitions": [None if t is None else t.state_dict() for t in self.transitions],
            "visits": list(self.visits),
            "cycles_done": self.cycles_done,
            "matchings_log": self.matchings_log,
            "steps": list(self.steps),
            "corrections": self.corrections,
            "coarse_first": self._coarse_first_state(),
        }

    def _coarse_first_state(self) -> dict:
        """The coarse-first stage; mid-stage also every coarse level's weights and optimizer
        state (they are the solution being built)."""
        state = self.coarse_stage.state_dict()
        if self.coarse_stage.root:  # started and not over
            state["levels"] = [
                {"model": level.model.state_dict(), "optimizer": level.optimizer.state_dict()}
                for level in self.levels[1:]
            ]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore operators and counters (coarse models are rebuilt from the sizes)."""
        self.visits = list(state["visits"])
        self.cycles_done = int(state["cycles_done"])
        self.matchings_log = list(state.get("matchings_log", []))
        self.steps = list(state.get("steps", self.steps))
        self.corrections = list(state.get("corrections", []))
        self._gains_read = len(self.corrections)
        device = next(self.levels[0].model.parameters()).device
        for l, saved in enumerate(state["transitions"]):
            if saved is None:
                self.transitions[l] = None
                continue
            transfers = {g: GroupTransfer.from_state_dict(s).to(device) for g, s in saved.items()}
            self.transitions[l] = Transition(transfers, matchings={})
            self._coarse_level(l, self.transitions[l])
        stage = state.get("coarse_first") or {}
        self.coarse_stage.load_state_dict(stage)
        for level, saved in zip(self.levels[1:], stage.get("levels", []), strict=False):
            level.model.load_state_dict(saved["model"])
            level.optimizer.load_state_dict(saved["optimizer"])
