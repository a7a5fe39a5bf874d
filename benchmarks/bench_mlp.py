"""Speed and memory of the MLP 784-512-256-10 on MNIST: single-level and V-cycle training.

Prints, and writes as JSON to `runs/benchmarks/bench_mlp.json`:

(a) one full-MNIST single-level epoch through `mlw_lib.training.train` against the FLOP lower
    bound (FLOPs of the epoch / fp32 GEMM rate measured in the same run on the MLP's own GEMM
    shapes; the large-square peak is shown too), and against a bare hand-written PyTorch loop
    (same model, SGD momentum, same batches) timed in the same run;
(b) the time per phase of 2- and 3-level V-cycles (batches_per_phase k=4, tau="cycle" and, to
    isolate the transfer machinery, tau="none"; two variants with k=8), the share of all but
    the steps (transfer + tau + matching + accounting) and of the machinery (transfer + tau +
    matching), and the cost of a coarse step relative to its FLOP ratio (from the run's
    WorkMeter, plus a per-level step microbenchmark with a bare PyTorch step alongside);
(c) peak resident memory of a single-level and a 3-level epoch, each in its own subprocess.

A summary table lists every figure with its target and PASS/MISS. Timings are the best (min)
of several repeats after a warm-up, with the median next to it: other processes on a shared
machine only ever add time, so the minimum is the least disturbed estimate. The CPU time that
other processes used during each section is printed, so a disturbed run is visible.

Run: `make benchmark` or `.venv/bin/python benchmarks/bench_mlp.py [--quick] [--device cuda]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench_common import (  # first: sets the environment before torch is imported
    REPO_ROOT,
    Gemm,
    GemmRates,
    OtherCpu,
    base_parser,
    best_and_median,
    describe_contention,
    describe_machine,
    describe_mode,
    finish,
    machine_info,
    memory_section,
    phase_table,
    print_gemm_rates,
    print_phase_table,
    report_child_memory,
    row,
    run_memory_children,
    share_row,
    timed,
    verdict,
    write_results,
)

# isort: split
import torch

DEFAULT_OUTPUT = REPO_ROOT / "runs" / "benchmarks" / "bench_mlp.json"
SIZES = [784, 512, 256, 10]  # MLP in, hidden..., out
BATCH_SIZE = 128
LR = 0.05
PHASES = ("smooth", "coarse", "tau_gradient", "tau", "transfer", "matching", "accounting")
# The target as written: everything that is not a smoothing or coarse step (including the
# FLOP count of each new coarse size, phase "accounting").
OVERHEAD_PHASES = ("transfer", "tau_gradient", "tau", "matching", "accounting")
# The multilevel machinery: transfer + tau + matching, without tau's forward+backward passes,
# which are charged work units like any step (their share is fixed by the algorithm, not by
# the code), and without the bookkeeping.
MACHINERY_PHASES = ("transfer", "tau", "matching")

# Targets (figure <= target unless stated).
TARGET_EPOCH_RATIO = 1.5  # measured epoch / FLOP lower bound
TARGET_OVERHEAD_SHARE = 0.10  # (transfer + tau + matching) / total V-cycle time
TARGET_COARSE_FACTOR = 1.3  # coarse step time ratio within this factor of its FLOP ratio
TARGET_PEAK_MIB = 2048.0  # peak resident memory, 2 GB
TARGET_MEMORY_RATIO = 1.3  # multilevel peak / single-level peak

K_DEFAULT = 4  # batches_per_phase of the notebooks
VCYCLES = (  # (name, levels, tau mode, k = batches_per_phase)
    ("2-level, tau per cycle", 2, "cycle", K_DEFAULT),
    ("2-level, no tau", 2, "none", K_DEFAULT),
    ("3-level, tau per cycle", 3, "cycle", K_DEFAULT),
    ("3-level, no tau", 3, "none", K_DEFAULT),
    # Longer cycles: the machinery's cost per cycle is fixed, tau's gradients scale with k.
    ("2-level, tau per cycle, k=8", 2, "cycle", 8),
    ("3-level, no tau, k=8", 3, "none", 8),
)


# ------------------------------------------------------------------------ (a) GEMM rates
def mlp_gemms(batch: int) -> list[Gemm]:
    """The GEMMs of one forward+backward of the MLP: (label, kind, m, k, n), m x k @ k x n.

    Forward y = x W^T per layer; backward dW = g^T x per layer and dx = g W for every layer
    but the first (the input needs no gradient).
    """
    out = []
    for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        out.append(Gemm(f"fwd  y=xW^T  layer {i}", "fwd", batch, fan_in, fan_out))
        out.append(Gemm(f"bwd  dW=g^Tx layer {i}", "dw", fan_out, batch, fan_in))
        if i > 0:
            out.append(Gemm(f"bwd  dx=gW   layer {i}", "dx", batch, fan_out, fan_in))
    return out


# ------------------------------------------------------------------- (a) single-level epoch
def new_model(seed: int = 0):
    from mlw_lib.models import MLP

    torch.manual_seed(seed)
    return MLP(SIZES[0], SIZES[1:-1], SIZES[-1])


def train_run(
    data,
    device: torch.device,
    epochs: float,
    levels: int = 1,
    tau: str = "cycle",
    k: int = K_DEFAULT,
):
    """(wall seconds of the whole train() call, TrainResult); k = batches_per_phase."""
    from mlw_lib.multilevel import MultilevelConfig
    from mlw_lib.training import TrainConfig, train

    model = new_model()
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, device=str(device))
    if levels == 1:
        multilevel = MultilevelConfig(levels=1)
    else:
        multilevel = MultilevelConfig(levels=levels, batches_per_phase=k, tau=tau)
    return timed(lambda: train(model, data, config, multilevel), device)


def bare_loop(data, device: torch.device, epochs: float = 1.0) -> tuple[float, torch.nn.Module]:
    """Hand-written loop: same model and init, SGD momentum, the same seeded batches as
    BatchStream (a seeded permutation, index_select per minibatch). (seconds, model)."""
    model = new_model().to(device).train()
    optimizer = bare_sgd(model)
    x, y = data.x_train.to(device), data.y_train.to(device)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    steps = int(epochs * (len(x) // BATCH_SIZE))

    def run() -> None:
        for b in range(steps):
            idx = perm[b * BATCH_SIZE : (b + 1) * BATCH_SIZE].to(device)
            bare_step(model, optimizer, (x.index_select(0, idx), y.index_select(0, idx)))

    seconds, _ = timed(run, device)
    return seconds, model


def bare_sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD momentum as `TrainConfig` builds it (fused kernels), for the hand-written baselines."""
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, fused=True)


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple) -> None:
    """One hand-written training step: cross-entropy, backward, optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    optimizer.step()


@torch.no_grad()
def max_param_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def bench_single_level(data, device: torch.device, repeats: int, quick: bool) -> tuple[dict, dict]:
    """(GEMM rates, epoch figures): GEMM rounds, train() epochs and bare-loop epochs
    interleaved (alternating order), so that slow phases of the machine hit all of them."""
    rates = GemmRates(mlp_gemms(BATCH_SIZE), device, quick, rate_key="mlp_gemm_gflops")
    train_run(data, device, epochs=0.25)  # warm-up (allocator, kernels, FLOP counter)
    bare_loop(data, device, epochs=0.25)
    rates.round()
    whole, steps, bare, accuracy = [], [], [], []
    result = bare_model = None
    for r in range(repeats):
        rates.round()
        order = ("train", "bare") if r % 2 == 0 else ("bare", "train")
        for which in order:
            if which == "train":
                seconds, result = train_run(data, device, epochs=1.0)
                whole.append(seconds)
                steps.append(result.meter.wall_time)
                accuracy.append(float(result.history["test_accuracy"].iloc[-1]))
            else:
                seconds, bare_model = bare_loop(data, device)
                bare.append(seconds)
    rates.round()
    matmul = rates.result()
    meter = result.meter
    batches = len(data.x_train) // BATCH_SIZE
    epoch_flops = meter.flops_per_wu * batches
    bound = epoch_flops / (matmul["mlp_gemm_gflops"] * 1e9)
    bound_peak = epoch_flops / (matmul["square_gflops_best"] * 1e9)
    whole_s, steps_s, bare_s = (best_and_median(v) for v in (whole, steps, bare))
    out = {
        "flops_per_wu": meter.flops_per_wu,
        "batches_per_epoch": batches,
        "epoch_flops": epoch_flops,
        "bound_s": bound,
        "bound_at_square_peak_s": bound_peak,
        "train_call_s": whole_s,
        "train_steps_s": steps_s,
        "bare_loop_s": bare_s,
        "ratio_call_to_bound": whole_s["best"] / bound,
        "ratio_steps_to_bound": steps_s["best"] / bound,
        "ratio_call_to_bound_median": whole_s["median"] / bound,
        "ratio_steps_to_bound_median": steps_s["median"] / bound,
        "ratio_call_to_square_peak_bound": whole_s["best"] / bound_peak,
        "overhead_steps_vs_bare": steps_s["best"] / bare_s["best"],
        "overhead_steps_vs_bare_median": steps_s["median"] / bare_s["median"],
        "overhead_call_vs_bare": whole_s["best"] / bare_s["best"],
        "outside_steps_s": whole_s["best"] - steps_s["best"],
        "test_accuracy": accuracy[-1],
        "max_param_diff_vs_bare": max_param_difference(result.model, bare_model),
        # Faster than its own lower bound is impossible: the GEMM rates were disturbed.
        "bound_valid": steps_s["best"] >= bound,
    }
    return matmul, out


def print_single_level(matmul: dict, res: dict, device: torch.device) -> None:
    print(
        f"  fp32 GEMM rates, the MLP's own GEMMs at batch 128 (best / median of "
        f"{matmul['rounds']} rounds spread over this section):"
    )
    print_gemm_rates(matmul)
    same = "=" if res["flops_per_wu"] == matmul["step_gemm_flops"] else "!="
    print(
        f"  FLOPs of one minibatch (meter.flops_per_wu, FlopCounterMode): "
        f"{res['flops_per_wu'] / 1e6:.2f} MFLOP ({same} the GEMMs listed)"
    )
    print(
        f"  one epoch = {res['batches_per_epoch']} batches = {res['epoch_flops'] / 1e9:.2f} GFLOP"
        f" -> lower bound {res['bound_s']:.3f} s at the MLP-GEMM rate, "
        f"{res['bound_at_square_peak_s']:.3f} s at the square peak"
    )
    call, steps, bare = res["train_call_s"], res["train_steps_s"], res["bare_loop_s"]

    def runs(v: dict) -> str:
        return ", ".join(f"{x:.3f}" for x in v["runs"])

    print(
        f"  train() epoch, whole call   [{runs(call)}] s: best {call['best']:.3f} s, median "
        f"{call['median']:.3f} s -> {res['ratio_call_to_bound']:.2f}x the bound (median "
        f"{res['ratio_call_to_bound_median']:.2f}x; {res['ratio_call_to_square_peak_bound']:.2f}x"
        f" the square-peak bound)  target <= {TARGET_EPOCH_RATIO}x"
    )
    print(
        f"    of which training steps (WorkMeter) [{runs(steps)}] s: best {steps['best']:.3f} s"
        f" -> {res['ratio_steps_to_bound']:.2f}x the bound (median "
        f"{res['ratio_steps_to_bound_median']:.2f}x)"
    )
    print(
        f"    outside the steps (setup, FLOP count, final test-set evaluation): "
        f"{res['outside_steps_s']:.3f} s"
    )
    print(
        f"  bare PyTorch loop (same model/init, SGD momentum, same batches) [{runs(bare)}] s: "
        f"best {bare['best']:.3f} s, median {bare['median']:.3f} s"
    )
    print(
        f"  framework overhead: train() steps / bare loop = {res['overhead_steps_vs_bare']:.3f}x"
        f" (median {res['overhead_steps_vs_bare_median']:.3f}x); whole train() call / bare loop"
        f" = {res['overhead_call_vs_bare']:.3f}x"
    )
    print(
        f"  same computation: max |param difference| train() vs bare loop after one epoch = "
        f"{res['max_param_diff_vs_bare']:.3g}; test accuracy {res['test_accuracy']:.4f}"
    )
    if not res["bound_valid"]:
        print(
            "  WARNING: the epoch ran faster than its own lower bound, so the GEMM rates were "
            "measured while the machine was disturbed; the ratios above are not valid."
        )
    if device.type == "cuda":
        print("  (cuda: the device is synchronized around every timed region)")


# ----------------------------------------------------------------------- (b) V-cycles
def bench_vcycles(data, device: torch.device, repeats: int) -> tuple[dict, object]:
    train_run(data, device, epochs=0.1, levels=3)  # warm-up: coarse FLOP counts, matching
    results, keep = {}, None
    for name, levels, tau, k in VCYCLES:
        best = None
        for _ in range(repeats):
            _, result = train_run(data, device, epochs=1.0, levels=levels, tau=tau, k=k)
            if best is None or result.meter.wall_time < best.meter.wall_time:
                best = result
        results[name] = phase_table(best, PHASES, OVERHEAD_PHASES, MACHINERY_PHASES)
        results[name].update(levels=levels, tau=tau, k=k, repeats=repeats)
        if levels == 3 and tau == "cycle" and k == K_DEFAULT:
            keep = best  # its hierarchy (with its tau) feeds the step microbenchmark
    return results, keep


def print_vcycle(name: str, res: dict) -> None:
    print_phase_table(name, res, PHASES)
    share, machinery = res["overhead_time_share"], res["machinery_time_share"]
    print(
        f"    all but the steps (transfer, tau incl. its gradients, matching, accounting): "
        f"{100 * share:.1f}% of the time "
        f"(target <= {100 * TARGET_OVERHEAD_SHARE:.0f}%: "
        f"{verdict(share <= TARGET_OVERHEAD_SHARE)}), {100 * res['overhead_work_share']:.1f}% "
        f"of the charged work"
    )
    print(
        f"    machinery (transfer + tau without its gradient passes + matching): "
        f"{100 * machinery:.1f}% of the time ({verdict(machinery <= TARGET_OVERHEAD_SHARE)})"
    )
    factor = res["coarse_cost_factor"]
    if "coarse_time_ratio" in res:
        print(
            f"    coarse step {1e3 * res['coarse_step_s']:.3f} ms / fine step "
            f"{1e3 * res['fine_step_s']:.3f} ms = {res['coarse_time_ratio']:.3f} vs FLOP ratio "
            f"{res['level_work'][1]:.3f} -> {factor:.2f}x (target within "
            f"{TARGET_COARSE_FACTOR}x: {verdict(within(factor))})"
        )
    else:
        print(
            f"    coarse levels' seconds per WU / fine level's = {factor:.2f}x (1.00 = time "
            f"proportional to FLOPs; target within {TARGET_COARSE_FACTOR}x: "
            f"{verdict(within(factor))})"
        )


def within(factor: float, limit: float = TARGET_COARSE_FACTOR) -> bool:
    return 1.0 / limit <= factor <= limit


def step_microbenchmark(result, data, device: torch.device, quick: bool) -> dict:
    """Seconds per optimizer step on each level of a trained hierarchy, as FASCycle._smooth
    does it (`objective_backward`: loss, backward, grad -= v; step; loss record), interleaved
    across levels in rounds, best round. Also the same step without the tau linear term, and
    with the linear term -<v, x> backpropagated as a loss term (same gradient)."""
    from mlw_lib.multilevel.objective import no_tau, objective, objective_backward
    from mlw_lib.training import classification_loss

    levels = result.cycle.levels
    x, y = data.x_train.to(device), data.y_train.to(device)
    batches = [
        (x[i * BATCH_SIZE : (i + 1) * BATCH_SIZE], y[i * BATCH_SIZE : (i + 1) * BATCH_SIZE])
        for i in range(8)
    ]

    def library_step(level, batch) -> None:
        level.optimizer.zero_grad(set_to_none=True)
        plain = objective_backward(level, batch, classification_loss)
        level.optimizer.step()
        level.record_loss(plain)

    def no_tau_step(level, batch) -> None:
        tau, level.tau = level.tau, no_tau
        try:
            library_step(level, batch)
        finally:
            level.tau = tau

    def loss_term_step(level, batch) -> None:
        level.optimizer.zero_grad(set_to_none=True)
        total, plain = objective(level, batch, classification_loss)
        total.backward()
        level.optimizer.step()
        level.record_loss(plain)

    bare = {level.index: bare_copy(level.model, device) for level in levels}
    variants = {
        "library": library_step,
        "no_tau": no_tau_step,
        "loss_term": loss_term_step,
        "bare": lambda level, batch: bare_step(*bare[level.index], batch),
    }
    steps, rounds = (5, 8) if quick else (5, 40)  # short samples: more chances of a quiet one
    times = {(l.index, v): [] for l in levels for v in variants}
    for _ in range(rounds):
        for level in levels:
            for vname, fn in variants.items():
                if level.index == 0 and vname not in ("library", "bare"):
                    continue

                def run(level=level, fn=fn) -> None:
                    for i in range(steps):
                        fn(level, batches[i % len(batches)])

                seconds, _ = timed(run, device)
                times[(level.index, vname)].append(seconds / steps)
    out = {}
    for level in levels:
        row = {"widths": level.model.group_sizes(), "flop_ratio": float(level.work)}
        for vname in variants:
            if times[(level.index, vname)]:
                # the bare step is compared with the bare fine step, the others with ours
                fine = min(times[(0, "bare" if vname == "bare" else "library")])
                best = min(times[(level.index, vname)])
                row[f"{vname}_step_s"] = best
                row[f"{vname}_time_ratio"] = best / fine
                row[f"{vname}_factor"] = best / fine / level.work
        out[level.index] = row
    return out


def bare_copy(model, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The MLP `model` (ReLU) as a plain nn.Sequential with the same weights, and its own
    `bare_sgd`: the floor a hand-written PyTorch step has at these widths."""
    layers: list[torch.nn.Module] = []
    for i, linear in enumerate(model.linears):
        copy = torch.nn.Linear(linear.in_features, linear.out_features).to(device)
        copy.load_state_dict(linear.state_dict())
        layers += [copy] if i == len(model.linears) - 1 else [copy, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).train()
    return net, bare_sgd(net)


def print_microbenchmark(micro: dict) -> None:
    print(
        "  step microbenchmark on the 3-level hierarchy (tau on all k; best of interleaved "
        "rounds, 8 fixed batches):"
    )
    print(
        f"    {'level':<6} {'widths':<10} {'FLOP ratio':>10} {'ms/step':>8} {'time ratio':>10}"
        f" {'factor':>7}   {'no-tau term':>11} {'factor':>7}   {'tau as loss term':>16} "
        f"{'factor':>7}   {'bare PyTorch':>11} {'factor':>7}"
    )

    def variant(entry: dict, name: str, width: int) -> str:
        """'<ms> ms <factor>x' of one variant, or blanks of the same width (fine level)."""
        if f"{name}_step_s" not in entry:
            return " " * (width + 11)  # " ms " + the 6-wide factor + "x"
        return f"{1e3 * entry[name + '_step_s']:{width}.3f} ms {entry[name + '_factor']:6.2f}x"

    for index, entry in micro.items():
        widths = "x".join(str(w) for w in entry["widths"].values())
        line = (
            f"    {index:<6} {widths:<10} {entry['flop_ratio']:10.3f} "
            f"{1e3 * entry['library_step_s']:8.3f} {entry['library_time_ratio']:10.3f} "
            f"{entry['library_factor']:6.2f}x"
            f"   {variant(entry, 'no_tau', 8)}   {variant(entry, 'loss_term', 13)}"
            f"   {variant(entry, 'bare', 8)}"
        )
        print(line)
    print(
        "    factor = (s per step on the level / s per fine step) / FLOP ratio; target within "
        f"{TARGET_COARSE_FACTOR}x. 'no-tau term' drops -<v,x> from the objective (wrong maths, "
        "shows its cost); 'tau as loss term' backpropagates -<v,x> instead of grad -= v; "
        "'bare PyTorch' is nn.Sequential + fused SGD at the same widths and weights, against "
        "its own fine step: the floor of a hand-written step."
    )


# ------------------------------------------------------------------------- (c) memory
def child_memory(kind: str, device: torch.device, quick: bool) -> None:
    """Runs in a subprocess: load MNIST, one single-level or 3-level epoch, print peak RSS
    figures as JSON (see `bench_common.report_child_memory`)."""
    from mlw_lib.data import load_mnist

    levels = 1 if kind == "single" else 3

    def load():
        subset = {"train_subset": 6000, "test_subset": 1000} if quick else {}
        return load_mnist(**subset)

    def run_epoch(data) -> dict:
        seconds, result = train_run(data, device, epochs=1.0, levels=levels)
        return {
            "levels": levels,
            "train_call_s": seconds,
            "work_units": result.meter.work_units,
            "test_accuracy": float(result.history["test_accuracy"].iloc[-1]),
        }

    report_child_memory(kind, load, run_epoch, device)


def bench_memory(args: argparse.Namespace) -> dict:
    child_args = ["--device", args.device] + (["--quick"] if args.quick else [])
    if args.threads:
        child_args += ["--threads", str(args.threads)]
    return run_memory_children(Path(__file__), child_args)


# ------------------------------------------------------------------------------- summary
def summary_rows(single: dict, vcycles: dict, micro: dict, mem: dict) -> list[dict]:
    epoch = f"<= {TARGET_EPOCH_RATIO}x"
    valid = single["bound_valid"]

    def epoch_status(ratio: float) -> str:
        return verdict(ratio <= TARGET_EPOCH_RATIO) if valid else "INVALID (GEMM rate disturbed)"

    ratio_call, ratio_steps = single["ratio_call_to_bound"], single["ratio_steps_to_bound"]
    rows = [
        row(
            "(a) train() call incl. set-up and test eval / FLOP bound",
            f"{ratio_call:.2f}x",
            "-",
            "info",
        ),
        row(
            "(a) one epoch (train() training steps) / FLOP bound",
            f"{ratio_steps:.2f}x",
            epoch,
            epoch_status(ratio_steps),
        ),
        row(
            "(a) train() epoch, whole call / bound at square-GEMM peak",
            f"{single['ratio_call_to_square_peak_bound']:.2f}x",
            "-",
            "info",
        ),
        row(
            "(a) framework overhead: train() steps / bare PyTorch loop",
            f"{single['overhead_steps_vs_bare']:.3f}x",
            "-",
            "info",
        ),
    ]
    for name, res in vcycles.items():
        for key, what in (
            ("overhead_time_share", "all but the steps"),
            ("machinery_time_share", "machinery: transfer+tau+matching"),
        ):
            figure = f"(b) {name}: {what} time share"
            rows.append(share_row(figure, res[key], TARGET_OVERHEAD_SHARE))
    coarse_target = f"within {TARGET_COARSE_FACTOR}x"
    for name, res in vcycles.items():
        factor = res["coarse_cost_factor"]
        what = (
            "coarse/fine step time / FLOP ratio"
            if res["levels"] == 2
            else "coarse/fine seconds per WU"
        )
        rows.append(
            row(f"(b) {name}: {what}", f"{factor:.2f}x", coarse_target, verdict(within(factor)))
        )
    for index, entry in micro.items():
        if index > 0:
            factor = entry["library_factor"]
            rows.append(
                row(
                    f"(b) step microbenchmark, level {index}: time ratio / FLOP ratio",
                    f"{factor:.2f}x",
                    coarse_target,
                    verdict(within(factor)),
                )
            )
            rows.append(
                row(
                    f"(b) the same for a bare PyTorch step, level {index} (floor)",
                    f"{entry['bare_factor']:.2f}x",
                    "-",
                    "info",
                )
            )
    for kind, label in (("single", "single-level"), ("multilevel", "3-level")):
        peak = mem[kind]["process_peak_rss_mib"]
        rows.append(
            row(
                f"(c) peak RSS of the process, {label} epoch",
                f"{peak:.0f} MiB",
                f"<= {TARGET_PEAK_MIB:.0f} MiB",
                verdict(peak <= TARGET_PEAK_MIB),
            )
        )
    ratio = mem["epoch_peak_ratio"]
    rows.append(
        row(
            "(c) peak RSS ratio multilevel / single (data + epoch)",
            f"{ratio:.3f}",
            f"<= {TARGET_MEMORY_RATIO}",
            verdict(ratio <= TARGET_MEMORY_RATIO),
        )
    )
    return rows


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = base_parser(
        __doc__,
        "smoke test: 6000/1000-example MNIST subset, fewer repeats",
        "timed single-level epochs (default 3, quick 2); V-cycle runs use max(1, repeats - 1)",
        DEFAULT_OUTPUT,
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for, but torch sees no CUDA device")
    if args.child_memory:
        child_memory(args.child_memory, device, args.quick)
        return

    started = time.perf_counter()
    machine = machine_info(device)
    print("bench_mlp: MLP 784-512-256-10 on MNIST, batch 128, SGD(lr 0.05, momentum 0.9), fp32")
    print(describe_machine(machine))
    print(describe_mode(args.quick, args.repeats))

    import mlw_lib.data

    subset = {"train_subset": 6000, "test_subset": 1000} if args.quick else {}
    data = mlw_lib.data.load_mnist(**subset)
    print(f"data: {data.info.describe()}")

    print("\n(a) Single-level epoch vs the FLOP lower bound")
    contention = OtherCpu()
    matmul, single = bench_single_level(data, device, args.repeats, args.quick)
    print_single_level(matmul, single, device)
    single["contention"] = contention.report()
    print(describe_contention(single["contention"]))

    print(
        "\n(b) V-cycle time breakdown (k = batches_per_phase = 4 unless named, ~1 epoch of work; "
        f"per variant the fastest of {max(1, args.repeats - 1)} runs; seconds from the "
        "WorkMeter, test evaluation excluded)"
    )
    contention = OtherCpu()
    vcycles, hierarchy = bench_vcycles(data, device, max(1, args.repeats - 1))
    for name, res in vcycles.items():
        print_vcycle(name, res)
    micro = step_microbenchmark(hierarchy, data, device, args.quick)
    print_microbenchmark(micro)
    vcontention = contention.report()
    print(describe_contention(vcontention))

    mem = memory_section(
        "\n(c) Peak resident memory, each epoch in its own subprocess (VmHWM, see below)",
        lambda: bench_memory(args),
        "3-level epoch",
    )

    rows = summary_rows(single, vcycles, micro, mem)
    sections = {"(a)": single["contention"], "(b)": vcontention, "(c)": mem["contention"]}
    total = finish(rows, sections, args.threads, started, machine)

    results = {
        "machine": machine,
        "args": {
            "quick": args.quick,
            "device": args.device,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        "data": data.info.describe(),
        "matmul": matmul,
        "single_level": single,
        "vcycles": vcycles,
        "vcycle_contention": vcontention,
        "step_microbenchmark": {str(k): v for k, v in micro.items()},
        "memory": mem,
        "summary": rows,
        "total_seconds": total,
    }
    write_results(args.output, results)


if __name__ == "__main__":
    main()
