"""Speed and memory of conv-net training: ResNet [16, 32, 64] on CIFAR-10 (issue 3 targets).

Prints, and writes as JSON to `runs/benchmarks/bench_cnn.json`:

(a) one single-level epoch through `mlw_lib.training.train` (augmentation on, channels_last)
    against the FLOP lower bound: FLOPs of the epoch / fp32 GEMM rate measured in the same run
    on the model's own conv-equivalent (im2col) GEMMs, and, stricter (conv kernels are not
    im2col GEMMs), / the rate of the model's own conv kernels; the large-square peak too;
(b) the same epoch in the default (NCHW) memory format, interleaved with (a): which layout is
    faster;
(c) the time per phase of a 2-level V-cycle (batches_per_phase=4, tau="cycle", and again with
    tau="none"; batchnorm="recalibrate", and tau="none" with batchnorm="keep", which trains
    identically), the share of all but the steps (transfer + tau + matching + recalibration +
    accounting) and of the machinery, and the cost of a coarse step relative to its FLOP ratio;
(d) peak resident memory of a single-level and a 2-level epoch, each in its own subprocess.

A summary table lists every figure with its target and PASS/MISS. Timings are best (min) of
several repeats after a warm-up, median next to it; see `benchmarks/README.md`.

Run: `make benchmark-cnn` or `.venv/bin/python benchmarks/bench_cnn.py [--quick]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from math import prod
from pathlib import Path

from bench_common import (  # first: sets the environment before torch is imported
    REPO_ROOT,
    Gemm,
    GemmRates,
    Op,
    OtherCpu,
    Rates,
    base_parser,
    best_and_median,
    describe_contention,
    describe_machine,
    describe_mode,
    finish,
    gemm_op,
    machine_info,
    memory_section,
    phase_table,
    print_gemm_rates,
    print_phase_table,
    print_rate_rows,
    report_child_memory,
    row,
    run_memory_children,
    share_row,
    step_totals,
    timed,
    verdict,
    write_results,
)

# isort: split
import torch
from torch import nn

from mlw_lib.multilevel.work import PHASES

DEFAULT_OUTPUT = REPO_ROOT / "runs" / "benchmarks" / "bench_cnn.json"
DATASETS = ("cifar10", "fashion_mnist")
WIDTHS = [16, 32, 64]  # channels per stage
BLOCKS = [1, 1, 1]  # residual blocks per stage
NUM_CLASSES = 10
BATCH_SIZE = 128
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# Training / test images: 40 batches per epoch (the mirror's CIFAR-10 subset holds 5,170);
# the same number on every dataset and variant, so runs compare and stay within minutes.
SUBSETS = (5120, 1000)
QUICK_SUBSETS = (1024, 256)
# Work of a V-cycle run in epochs (full, quick). A 2-level cycle of the ResNet is ~18 WU: the
# full run does ~10 cycles (one matching, as in a long run with rematch_every=10), quick one.
VCYCLE_EPOCHS = (4.0, 2.0)
LAYOUTS = ("channels_last", "default")  # memory formats of (a) and (b)
# The target as written: everything that is not a smoothing or coarse step (including the
# FLOP count of each new coarse size, phase "accounting").
OVERHEAD_PHASES = ("transfer", "tau_gradient", "tau", "matching", "recalibration", "accounting")
# The multilevel machinery: the same without tau's forward+backward passes (charged WU like
# any step; their share is fixed by the algorithm, not by the code) and the bookkeeping.
MACHINERY_PHASES = ("transfer", "tau", "matching", "recalibration")

# Targets (figure <= target).
TARGET_EPOCH_RATIO = 2.0  # single-level epoch (training steps) / FLOP lower bound, on CPU
TARGET_OVERHEAD_SHARE = 0.10  # (transfer + tau + matching + recalibration) / V-cycle time
TARGET_MEMORY_RATIO = 1.3  # 2-level peak / single-level peak


# ------------------------------------------------------------------------ set-up
def load_data(args: argparse.Namespace):
    """The dataset of `--dataset` (CIFAR-10 in the variant of `--variant`), on the CPU."""
    from mlw_lib.data import load_dataset

    options = {"train_subset": args.train_subset, "test_subset": args.test_subset}
    if args.dataset == "cifar10":
        options["variant"] = args.variant
    return load_dataset(args.dataset, **options)


@dataclass
class Bench:
    """What every measurement shares: the model's name, the data and the device."""

    model: str
    data: object
    device: torch.device

    def new_model(self, seed: int = 0) -> nn.Module:
        from mlw_lib.models import build_cnn

        torch.manual_seed(seed)
        _, channels, size, _ = self.data.x_train.shape
        return build_cnn(self.model, WIDTHS, channels, NUM_CLASSES, size, blocks=BLOCKS)

    def train(
        self,
        epochs: float,
        levels: int = 1,
        channels_last: bool = True,
        tau: str = "cycle",
        batchnorm: str = "recalibrate",
    ):
        """(wall seconds of the whole train() call, TrainResult) of a fresh model; augmentation
        on; evaluation only at the end; V-cycles with the given tau and BatchNorm modes."""
        from mlw_lib.multilevel import MultilevelConfig
        from mlw_lib.training import TrainConfig, train

        config = TrainConfig(
            epochs=epochs,
            batch_size=BATCH_SIZE,
            lr=LR,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
            device=str(self.device),
            eval_every=epochs,
            augment=True,
            crop_padding=4,
            flip=True,
            channels_last=channels_last,
        )
        multilevel = MultilevelConfig(levels=1)
        if levels > 1:
            multilevel = MultilevelConfig(
                levels=levels, batches_per_phase=4, tau=tau, batchnorm=batchnorm
            )
        model = self.new_model()
        return timed(lambda: train(model, self.data, config, multilevel), self.device)


# ------------------------------------------------------------------ (a) GEMMs and kernels
@dataclass(frozen=True)
class LayerCall:
    """One conv / linear call of a forward pass: the module, its input and output shapes, and
    whether its input needs a gradient (not so for the stem, which reads the data)."""

    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    needs_dx: bool

    def describe(self) -> str:
        if isinstance(self.module, nn.Linear):
            return f"linear {self.module.in_features}->{self.module.out_features}"
        (kh, kw), (_, c_out, h, w) = self.module.kernel_size, self.output_shape
        return f"conv{kh}x{kw} {self.input_shape[1]}->{c_out} s{self.module.stride[0]} out {h}x{w}"

    def im2col(self) -> tuple[int, int, int, int]:
        """(m, k, n, groups): the call is `groups` GEMMs m x k @ k x n."""
        if isinstance(self.module, nn.Linear):
            m = prod(self.input_shape) // self.module.in_features
            return m, self.module.in_features, self.module.out_features, 1
        groups, (kh, kw) = self.module.groups, self.module.kernel_size
        n, c_in = self.input_shape[:2]
        _, c_out, h, w = self.output_shape
        return n * h * w, c_in // groups * kh * kw, c_out // groups, groups


def layer_calls(model: nn.Module, example: torch.Tensor) -> list[LayerCall]:
    """The conv / linear calls of one forward pass of `model` on `example` (forward hooks)."""
    calls = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        calls.append(LayerCall(module, tuple(x.shape), tuple(output.shape), x.requires_grad))

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls


GEMM_NAMES = {"fwd": "fwd", "dw": "dW", "dx": "dX"}  # Gemm.kind -> label


def model_gemms(calls: list[LayerCall]) -> list[Gemm]:
    """The GEMMs of one forward+backward, conv as im2col: forward (N·Ho·Wo x Cin·k²) @ (Cin·k²
    x Cout), weight gradient (Cout x N·Ho·Wo) @ (N·Ho·Wo x Cin·k²), input gradient (N·Ho·Wo x
    Cout) @ (Cout x Cin·k²) where the input needs one; identical shapes merged (`count`)."""
    merged: dict[tuple, list] = {}  # (kind, m, k, n) -> [label, count]
    for call in calls:
        m, k, n, groups = call.im2col()
        passes = [("fwd", m, k, n), ("dw", n, m, k)] + ([("dx", m, n, k)] if call.needs_dx else [])
        for key in passes:
            label = f"{GEMM_NAMES[key[0]]:<3}  {call.describe()}"
            merged.setdefault(key, [label, 0])[1] += groups
    return [Gemm(label, kind, m, k, n, count) for (kind, m, k, n), (label, count) in merged.items()]


def conv_kernels(call: LayerCall, device: torch.device) -> list[Op]:
    """The kernels PyTorch runs for one conv call in training, channels_last, on random
    operands: forward `conv2d` and `convolution_backward` (weight and, where needed, input
    gradient)."""
    conv = call.module
    m, k, n, groups = call.im2col()
    flops = 2 * m * k * n * groups
    cl = torch.channels_last
    x = torch.randn(call.input_shape, device=device).contiguous(memory_format=cl)
    w = conv.weight.detach().to(device).clone().contiguous(memory_format=cl)
    g = torch.randn(call.output_shape, device=device).contiguous(memory_format=cl)
    options = (conv.stride, conv.padding, conv.dilation)
    mask = [call.needs_dx, True, False]
    shape = f"{tuple(call.input_shape)}->{tuple(call.output_shape)}"
    return [
        Op(
            f"{'fwd':<5}  {call.describe()}",
            shape,
            flops,
            lambda: torch.nn.functional.conv2d(x, w, None, *options, groups),
        ),
        Op(
            f"{'dW+dX' if call.needs_dx else 'dW':<5}  {call.describe()}",
            shape,
            flops * sum(mask),
            lambda: torch.ops.aten.convolution_backward(
                g, x, w, None, *options, False, [0, 0], groups, mask
            ),
        ),
    ]


def kernel_ops(calls: list[LayerCall], device: torch.device) -> list[Op]:
    """The model's own compute kernels of one training step: per distinct conv call (counted)
    its forward and backward kernels, per linear call its GEMMs."""
    merged: dict[tuple, list] = {}  # (input shape, output shape, module config) -> [call, count]
    for call in calls:
        layer = call.module
        config = ("linear", call.needs_dx)
        if isinstance(layer, nn.Conv2d):
            config = (layer.kernel_size, layer.stride, layer.padding, layer.groups, call.needs_dx)
        merged.setdefault((call.input_shape, call.output_shape, config), [call, 0])[1] += 1
    ops = []
    for call, count in merged.values():
        if isinstance(call.module, nn.Linear):
            ops += [gemm_op(gemm._replace(count=count), device) for gemm in model_gemms([call])]
        else:
            ops += [op._replace(count=count) for op in conv_kernels(call, device)]
    return ops


# -------------------------------------------------------------- (a)+(b) single-level epochs
def bench_single_level(bench: Bench, repeats: int, quick: bool) -> tuple[dict, dict, dict]:
    """(GEMM rates, kernel rates, epoch figures): rounds of both rates and the epochs of both
    memory formats interleaved (alternating order), so that slow phases of the machine hit all
    of them."""
    example = bench.data.x_train[:BATCH_SIZE].to(bench.device)
    calls = layer_calls(bench.new_model().to(bench.device), example)
    rates = GemmRates(model_gemms(calls), bench.device, quick)
    kernels = Rates(kernel_ops(calls, bench.device), bench.device, quick)

    def sample_rates() -> None:
        rates.round()
        kernels.round()

    for layout in LAYOUTS:  # warm-up (allocator, kernels, FLOP counter)
        bench.train(0.25, channels_last=layout == "channels_last")
    sample_rates()
    whole = {layout: [] for layout in LAYOUTS}
    steps = {layout: [] for layout in LAYOUTS}
    results = {}
    for r in range(repeats):
        sample_rates()
        for layout in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:
            seconds, results[layout] = bench.train(1.0, channels_last=layout == "channels_last")
            whole[layout].append(seconds)
            steps[layout].append(results[layout].meter.wall_time)
    sample_rates()
    matmul, kernel = rates.result(), kernel_result(kernels)
    meter = results["channels_last"].meter
    batches = len(bench.data.x_train) // BATCH_SIZE
    epoch_flops = meter.flops_per_wu * batches
    out = {
        "flops_per_wu": meter.flops_per_wu,
        "batches_per_epoch": batches,
        "epoch_flops": epoch_flops,
        "bound_s": epoch_flops / (matmul["model_gemm_gflops"] * 1e9),
        "bound_at_kernels_s": epoch_flops / (kernel["gflops"] * 1e9),
        "bound_at_square_peak_s": epoch_flops / (matmul["square_gflops_best"] * 1e9),
    }
    out["layouts"] = {
        layout: layout_figures(whole[layout], steps[layout], results[layout], out)
        for layout in LAYOUTS
    }
    nhwc, nchw = (out["layouts"][k]["train_steps_s"] for k in LAYOUTS)
    out["default_over_channels_last"] = nchw["best"] / nhwc["best"]
    out["default_over_channels_last_median"] = nchw["median"] / nhwc["median"]
    out["faster_layout"] = "channels_last" if nhwc["best"] <= nchw["best"] else "default"
    # The channels_last epoch runs the very kernels timed for `bound_at_kernels_s`; faster
    # than those alone is impossible: then the rates were measured on a disturbed machine.
    out["bound_valid"] = nhwc["best"] >= out["bound_at_kernels_s"]
    return matmul, kernel, out


def kernel_result(kernels: Rates) -> dict:
    rows = kernels.rows()
    flops, seconds, median = step_totals(rows)
    return {
        "kernels": rows,
        "rounds": len(kernels.samples[0]),
        "step_flops": flops,
        "step_seconds": seconds,
        "step_seconds_median": median,
        "gflops": flops / seconds / 1e9,
    }


def layout_figures(whole: list[float], steps: list[float], result, bounds: dict) -> dict:
    """Epoch times of one memory format and their ratios to the bounds in `bounds`."""
    call, train_steps = best_and_median(whole), best_and_median(steps)
    best, median = train_steps["best"], train_steps["median"]
    return {
        "train_call_s": call,
        "train_steps_s": train_steps,
        "ratio_steps_to_bound": best / bounds["bound_s"],
        "ratio_steps_to_bound_median": median / bounds["bound_s"],
        "ratio_call_to_bound": call["best"] / bounds["bound_s"],
        "ratio_steps_to_kernel_bound": best / bounds["bound_at_kernels_s"],
        "ratio_steps_to_kernel_bound_median": median / bounds["bound_at_kernels_s"],
        "ratio_steps_to_square_peak_bound": best / bounds["bound_at_square_peak_s"],
        "outside_steps_s": call["best"] - best,
        "test_accuracy": float(result.history["test_accuracy"].iloc[-1]),
    }


def runs(values: dict) -> str:
    return ", ".join(f"{x:.3f}" for x in values["runs"])


def print_single_level(matmul: dict, kernel: dict, res: dict, device: torch.device) -> None:
    print(
        f"  fp32 GEMM rates, the model's conv-equivalent (im2col) GEMMs at batch {BATCH_SIZE} "
        f"(best / median of {matmul['rounds']} rounds spread over (a) and (b)):"
    )
    print_gemm_rates(matmul, label_width=0, shape_width=0)
    print(
        "  the model's own kernels as training runs them (channels_last conv2d and "
        "convolution_backward, linear GEMMs; same rounds):"
    )
    print_rate_rows(kernel["kernels"], label_width=0, shape_width=0)
    print(
        f"    all kernels of one step: {kernel['step_flops'] / 1e6:.1f} MFLOP in "
        f"{kernel['step_seconds'] * 1e3:.3f} ms -> {kernel['gflops']:.1f} GFLOP/s"
    )
    same = "=" if res["flops_per_wu"] == matmul["step_gemm_flops"] == kernel["step_flops"] else "!="
    print(
        f"  FLOPs of one minibatch (meter.flops_per_wu, FlopCounterMode): "
        f"{res['flops_per_wu'] / 1e9:.3f} GFLOP ({same} the GEMMs and kernels listed)"
    )
    print(
        f"  one epoch = {res['batches_per_epoch']} batches = {res['epoch_flops'] / 1e9:.1f} GFLOP"
        f" -> lower bound {res['bound_s']:.3f} s at the im2col-GEMM rate (the target's), "
        f"{res['bound_at_kernels_s']:.3f} s at the kernels' rate, "
        f"{res['bound_at_square_peak_s']:.3f} s at the square peak"
    )
    fig = res["layouts"]["channels_last"]
    call, steps = fig["train_call_s"], fig["train_steps_s"]
    print(
        f"  channels_last epoch, training steps (WorkMeter) [{runs(steps)}] s: best "
        f"{steps['best']:.3f} s -> {fig['ratio_steps_to_bound']:.2f}x the im2col-GEMM bound "
        f"(median {fig['ratio_steps_to_bound_median']:.2f}x)  target <= {TARGET_EPOCH_RATIO}x: "
        f"{epoch_status(fig['ratio_steps_to_bound'], res, device)}"
    )
    print(
        f"    {fig['ratio_steps_to_kernel_bound']:.2f}x the kernel bound (median "
        f"{fig['ratio_steps_to_kernel_bound_median']:.2f}x): "
        f"{epoch_status(fig['ratio_steps_to_kernel_bound'], res, device)}; "
        f"{fig['ratio_steps_to_square_peak_bound']:.2f}x the square-peak bound"
    )
    print(
        f"    whole train() call [{runs(call)}] s: best {call['best']:.3f} s -> "
        f"{fig['ratio_call_to_bound']:.2f}x the im2col-GEMM bound; outside the steps (setup, "
        f"FLOP count, final test-set evaluation) {fig['outside_steps_s']:.3f} s; test accuracy "
        f"{fig['test_accuracy']:.4f}"
    )
    if res["bound_at_kernels_s"] < res["bound_s"]:
        print(
            "  NOTE: the conv kernels run the step's FLOPs faster than the same FLOPs as im2col "
            "GEMMs, so the im2col-GEMM bound is no lower bound here; the kernel bound is the "
            "stricter figure (epoch / kernel bound = time in everything but the convolutions "
            "and GEMMs, relative)."
        )
    if not res["bound_valid"]:
        print(
            "  WARNING: the epoch ran faster than its own kernels alone, so the rates were "
            "measured while the machine was disturbed; the ratios above are not valid."
        )


def print_layouts(res: dict) -> None:
    for layout in LAYOUTS:
        fig = res["layouts"][layout]
        steps = fig["train_steps_s"]
        print(
            f"  {layout:<13} training steps [{runs(steps)}] s: best {steps['best']:.3f} s, "
            f"median {steps['median']:.3f} s ({fig['ratio_steps_to_bound']:.2f}x the im2col-GEMM "
            f"bound, {fig['ratio_steps_to_kernel_bound']:.2f}x the (channels_last) kernel bound)"
        )
    ratio, median = res["default_over_channels_last"], res["default_over_channels_last_median"]
    faster = "channels_last" if res["faster_layout"] == "channels_last" else "the default layout"
    print(
        f"  default / channels_last = {ratio:.3f}x (median {median:.3f}x): {faster} is faster "
        "(information)"
    )


# ------------------------------------------------------------------------ (c) V-cycle
def bench_vcycle(
    bench: Bench, epochs: float, repeats: int, tau: str, batchnorm: str = "recalibrate"
) -> dict:
    """Phase table of the fastest of `repeats` 2-level runs (after a one-cycle warm-up)."""
    modes = {"tau": tau, "batchnorm": batchnorm}
    bench.train(0.1, levels=2, **modes)  # warm-up: coarse FLOP count, matching, recalibration
    best = None
    for _ in range(repeats):
        _, result = bench.train(epochs, levels=2, **modes)
        if best is None or result.meter.wall_time < best.meter.wall_time:
            best = result
    out = phase_table(best, PHASES, OVERHEAD_PHASES, MACHINERY_PHASES)
    out.update(levels=2, epochs=epochs, repeats=repeats, **modes)
    return out


def print_vcycle(name: str, res: dict) -> None:
    print_phase_table(name, res, PHASES)
    share, machinery = res["overhead_time_share"], res["machinery_time_share"]
    print(
        f"    all but the steps (transfer, tau incl. its gradients, matching, recalibration, "
        f"accounting): {100 * share:.1f}% "
        f"of the time (target <= {100 * TARGET_OVERHEAD_SHARE:.0f}%: "
        f"{verdict(share <= TARGET_OVERHEAD_SHARE)}), {100 * res['overhead_work_share']:.1f}% "
        f"of the charged work"
    )
    print(
        f"    machinery (the same without tau's gradient passes): {100 * machinery:.1f}% of the "
        f"time ({verdict(machinery <= TARGET_OVERHEAD_SHARE)})"
    )
    print(
        f"    coarse step {1e3 * res['coarse_step_s']:.2f} ms / fine step "
        f"{1e3 * res['fine_step_s']:.2f} ms = {res['coarse_time_ratio']:.3f} vs FLOP ratio "
        f"{res['level_work'][1]:.3f} -> {res['coarse_cost_factor']:.2f}x (information; 1.00 = "
        "time proportional to FLOPs)"
    )


# ------------------------------------------------------------------------- (d) memory
def child_memory(kind: str, args: argparse.Namespace, device: torch.device) -> None:
    """Runs in a subprocess: one single-level or 2-level epoch (channels_last), print peak RSS
    figures as JSON (see `bench_common.report_child_memory`)."""
    levels = 1 if kind == "single" else 2

    def run_epoch(data) -> dict:
        seconds, result = Bench(args.model, data, device).train(1.0, levels=levels)
        return {
            "levels": levels,
            "train_call_s": seconds,
            "work_units": result.meter.work_units,
            "test_accuracy": float(result.history["test_accuracy"].iloc[-1]),
        }

    report_child_memory(kind, lambda: load_data(args), run_epoch, device)


def bench_memory(args: argparse.Namespace) -> dict:
    child_args = ["--device", args.device, "--dataset", args.dataset, "--variant", args.variant]
    child_args += ["--model", args.model, "--train-subset", str(args.train_subset or 0)]
    child_args += ["--test-subset", str(args.test_subset or 0)]
    if args.threads:
        child_args += ["--threads", str(args.threads)]
    return run_memory_children(Path(__file__), child_args)


# ------------------------------------------------------------------------------- summary
def epoch_status(ratio: float, single: dict, device: torch.device) -> str:
    if not single["bound_valid"]:
        return "INVALID (GEMM rate disturbed)"
    return verdict(ratio <= TARGET_EPOCH_RATIO) if device.type == "cpu" else "info (CPU target)"


def summary_rows(
    single: dict, vcycle: dict, no_tau: dict, keep: dict, mem: dict, device: torch.device
) -> list[dict]:
    nhwc = single["layouts"]["channels_last"]
    shares = (
        (": all but the steps, time share", vcycle["overhead_time_share"]),
        (": machinery (no tau grads) time share", vcycle["machinery_time_share"]),
        (", no tau: all but the steps, time share", no_tau["overhead_time_share"]),
        (", no tau: machinery time share", no_tau["machinery_time_share"]),
        (", no tau, BN statistics kept: all but the steps", keep["overhead_time_share"]),
        (", no tau, BN statistics kept: machinery", keep["machinery_time_share"]),
    )
    ratio = mem["epoch_peak_ratio"]
    epoch_target = f"<= {TARGET_EPOCH_RATIO}x"
    return [
        row(
            "(a) one epoch (train() steps, channels_last) / im2col-GEMM bound",
            f"{nhwc['ratio_steps_to_bound']:.2f}x",
            epoch_target,
            epoch_status(nhwc["ratio_steps_to_bound"], single, device),
        ),
        row(
            "(a) the same / bound at the model's own kernels (stricter)",
            f"{nhwc['ratio_steps_to_kernel_bound']:.2f}x",
            epoch_target,
            epoch_status(nhwc["ratio_steps_to_kernel_bound"], single, device),
        ),
        row(
            "(a) train() call incl. set-up and test eval / im2col-GEMM bound",
            f"{nhwc['ratio_call_to_bound']:.2f}x",
            "-",
            "info",
        ),
        row(
            "(a) one epoch (train() steps) / bound at the square-GEMM peak",
            f"{nhwc['ratio_steps_to_square_peak_bound']:.2f}x",
            "-",
            "info",
        ),
        row(
            "(b) epoch time default layout / channels_last",
            f"{single['default_over_channels_last']:.3f}x",
            "-",
            "info",
        ),
        *(share_row(f"(c) 2-level{what}", share, TARGET_OVERHEAD_SHARE) for what, share in shares),
        row(
            "(c) 2-level: the same phases' share of charged work",
            f"{100 * vcycle['overhead_work_share']:.1f}%",
            "-",
            "info",
        ),
        row(
            "(c) 2-level: coarse/fine step time / FLOP ratio",
            f"{vcycle['coarse_cost_factor']:.2f}x",
            "-",
            "info",
        ),
        row(
            "(d) peak RSS of the process, single-level epoch",
            f"{mem['single']['process_peak_rss_mib']:.0f} MiB",
            "-",
            "info",
        ),
        row(
            "(d) peak RSS of the process, 2-level epoch",
            f"{mem['multilevel']['process_peak_rss_mib']:.0f} MiB",
            "-",
            "info",
        ),
        row(
            "(d) peak RSS ratio 2-level / single (data + epoch)",
            f"{ratio:.3f}",
            f"<= {TARGET_MEMORY_RATIO}",
            verdict(ratio <= TARGET_MEMORY_RATIO),
        ),
    ]


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mlw_lib.models import CNN_MODELS

    parser = base_parser(
        __doc__,
        f"smoke test: {QUICK_SUBSETS[0]}/{QUICK_SUBSETS[1]}-image subset, fewer repeats",
        "timed epochs per memory format (default 3, quick 2); V-cycle runs: max(1, N - 1)",
        DEFAULT_OUTPUT,
    )
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser.add_argument(
        "--variant",
        choices=("auto", "full", "subset"),
        default="auto",
        help="CIFAR-10 files: the official set if present, else the mirror's subset (auto)",
    )
    parser.add_argument("--model", choices=CNN_MODELS, default="resnet")
    for which, index in (("train", 0), ("test", 1)):
        parser.add_argument(
            f"--{which}-subset",
            type=int,
            default=None,
            help=f"first N {which} images, 0 = all (default {SUBSETS[index]}, quick "
            f"{QUICK_SUBSETS[index]})",
        )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    defaults = QUICK_SUBSETS if args.quick else SUBSETS
    args.train_subset = defaults[0] if args.train_subset is None else args.train_subset or None
    args.test_subset = defaults[1] if args.test_subset is None else args.test_subset or None
    return args


def print_header(args: argparse.Namespace, machine: dict, bench: Bench) -> None:
    from mlw_lib.models import parameter_count

    model = bench.new_model()
    print(
        f"bench_cnn: {args.model} {WIDTHS} (blocks {BLOCKS}), {parameter_count(model):,} "
        f"parameters, on {args.dataset}; batch {BATCH_SIZE}, SGD(lr {LR}, momentum {MOMENTUM}, "
        f"weight decay {WEIGHT_DECAY}), augmentation (crop 4 + flip), fp32"
    )
    print(describe_machine(machine))
    print(describe_mode(args.quick, args.repeats))
    print(f"data: {bench.data.info.describe()}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for, but torch sees no CUDA device")
    if args.child_memory:
        child_memory(args.child_memory, args, device)
        return

    started = time.perf_counter()
    machine = machine_info(device)
    bench = Bench(args.model, load_data(args), device)
    print_header(args, machine, bench)

    print("\n(a) Single-level epoch (augmentation, channels_last) vs the FLOP lower bound")
    contention = OtherCpu()
    matmul, kernel, single = bench_single_level(bench, args.repeats, args.quick)
    print_single_level(matmul, kernel, single, device)
    print("\n(b) Memory format: the same epoch in channels_last and the default (NCHW) layout")
    print_layouts(single)
    single["contention"] = contention.report()
    print(describe_contention(single["contention"]) + " [(a) and (b)]")

    vcycle_repeats = max(1, args.repeats - 1)
    vcycle_epochs = VCYCLE_EPOCHS[1] if args.quick else VCYCLE_EPOCHS[0]
    print(
        f"\n(c) 2-level V-cycle time breakdown (batches_per_phase=4; tau='cycle' and 'none' with "
        f"batchnorm='recalibrate', tau='none' with 'keep'; {vcycle_epochs:g} epochs of work; "
        f"the fastest of {vcycle_repeats} runs; seconds from the WorkMeter, test evaluation "
        "excluded)"
    )
    contention = OtherCpu()
    vcycle = bench_vcycle(bench, vcycle_epochs, vcycle_repeats, "cycle")
    print_vcycle("2-level, tau per cycle", vcycle)
    no_tau = bench_vcycle(bench, vcycle_epochs, vcycle_repeats, "none")
    print_vcycle("2-level, no tau", no_tau)
    keep = bench_vcycle(bench, vcycle_epochs, vcycle_repeats, "none", batchnorm="keep")
    print_vcycle("2-level, no tau, coarse BN statistics kept (same training)", keep)
    vcycle["contention"] = contention.report()
    print(describe_contention(vcycle["contention"]))

    mem = memory_section(
        "\n(d) Peak resident memory, each epoch in its own subprocess (VmHWM, see README)",
        lambda: bench_memory(args),
        "2-level epoch",
    )

    rows = summary_rows(single, vcycle, no_tau, keep, mem, device)
    sections = {
        "(a)/(b)": single["contention"],
        "(c)": vcycle["contention"],
        "(d)": mem["contention"],
    }
    total = finish(rows, sections, args.threads, started, machine)
    results = {
        "machine": machine,
        "args": {k: v for k, v in vars(args).items() if k != "child_memory"},
        "data": bench.data.info.describe(),
        "model": {"name": args.model, "widths": WIDTHS, "blocks": BLOCKS},
        "matmul": matmul,
        "kernels": kernel,
        "single_level": single,
        "vcycle": vcycle,
        "vcycle_no_tau": no_tau,
        "vcycle_no_tau_keep": keep,
        "memory": mem,
        "summary": rows,
        "total_seconds": total,
    }
    write_results(args.output, results)


if __name__ == "__main__":
    main()
