"""Speed and memory of the MLP 784-512-256-10 on MNIST: single-level and V-cycle training.

Prints, and writes as JSON to `runs/benchmarks/bench_mlp.json`:

(a) one full-MNIST single-level epoch through `mlw_lib.training.train` against the FLOP lower
    bound (FLOPs of the epoch / fp32 GEMM rate measured in the same run on the MLP's own GEMM
    shapes; the large-square peak is shown too), and against a bare hand-written PyTorch loop
    (same model, SGD momentum, same batches) timed in the same run;
(b) the time per phase of 2- and 3-level V-cycles (batches_per_phase=4, tau="cycle" and, to
    isolate the transfer machinery, tau="none"), the share of transfer + tau + matching, and
    the cost of a coarse step relative to its FLOP ratio (from the run's WorkMeter, plus a
    per-level step microbenchmark);
(c) peak resident memory of a single-level and a 3-level epoch, each in its own subprocess.

A summary table lists every figure with its target and PASS/MISS. Timings are the best (min)
of several repeats after a warm-up, with the median next to it: other processes on a shared
machine only ever add time, so the minimum is the least disturbed estimate. The CPU time that
other processes used during each section is printed, so a disturbed run is visible.

Run: `make benchmark` or `.venv/bin/python benchmarks/bench_mlp.py [--quick] [--device cuda]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def configure_environment() -> None:
    """Defaults: the data mirror next to the repository (if present), no progress bars.

    Runs before `import torch`: torch imports tqdm, which reads TQDM_* at import time.
    """
    mirror = REPO_ROOT.parent / "shared" / "datasets"
    if mirror.is_dir():
        os.environ.setdefault("MLW_DATA_MIRROR", str(mirror))
    os.environ.setdefault("TQDM_DISABLE", "1")


configure_environment()

import torch  # noqa: E402  (after configure_environment, see there)

DEFAULT_OUTPUT = REPO_ROOT / "runs" / "benchmarks" / "bench_mlp.json"
SIZES = [784, 512, 256, 10]  # MLP in, hidden..., out
BATCH_SIZE = 128
LR = 0.05
CHILD_MARKER = "BENCH_MLP_CHILD_RESULT "
PHASES = ("smooth", "coarse", "tau_gradient", "tau", "transfer", "matching")
# The target as written: everything that is not a smoothing or coarse step.
OVERHEAD_PHASES = ("transfer", "tau_gradient", "tau", "matching")
# The multilevel machinery: the same without tau's forward+backward passes, which are charged
# work units like any step (their share is fixed by the algorithm, not by the code).
MACHINERY_PHASES = ("transfer", "tau", "matching")

# Targets (figure <= target unless stated).
TARGET_EPOCH_RATIO = 1.5  # measured epoch / FLOP lower bound
TARGET_OVERHEAD_SHARE = 0.10  # (transfer + tau + matching) / total V-cycle time
TARGET_COARSE_FACTOR = 1.3  # coarse step time ratio within this factor of its FLOP ratio
TARGET_PEAK_MIB = 2048.0  # peak resident memory, 2 GB
TARGET_MEMORY_RATIO = 1.3  # multilevel peak / single-level peak
DISTURBED_SHARE = 0.15  # other processes above this share of the cores: warn

VCYCLES = (  # (name, levels, tau mode); all with batches_per_phase=4
    ("2-level, tau per cycle", 2, "cycle"),
    ("2-level, no tau", 2, "none"),
    ("3-level, tau per cycle", 3, "cycle"),
    ("3-level, no tau", 3, "none"),
)


# ------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    from mlw_lib.reproducibility import cpu_model as library_cpu_model

    return library_cpu_model() or platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class OtherCpu:
    """CPU-seconds used by *other* processes since construction (Linux /proc/stat; else None).

    Busy time of the whole machine minus this process and its waited-for children.
    """

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="utf-8") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        own = sum(os.times()[:4])
        return (sum(fields[:8]) - idle) / self._tick, own, time.perf_counter()

    def report(self) -> dict | None:
        now = self._sample()
        if now is None or self._start is None:
            return None
        busy, own, wall = (now[i] - self._start[i] for i in range(3))
        others = max(busy - own, 0.0)
        cores = os.cpu_count() or 1
        return {
            "other_cpu_s": round(others, 2),
            "wall_s": round(wall, 2),
            "other_share_of_machine": round(others / max(wall * cores, 1e-9), 3),
        }


def describe_contention(report: dict | None) -> str:
    if report is None:
        return "  (other processes' CPU use: not measurable on this OS)"
    return (
        f"  other processes used {report['other_cpu_s']:.1f} CPU-s during these "
        f"{report['wall_s']:.1f} s ({100 * report['other_share_of_machine']:.0f}% of the "
        f"machine's cores)"
    )


# ---------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(seconds, result) of fn(), with the device synchronized before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def best_and_median(values: list[float]) -> dict:
    return {
        "runs": [round(v, 5) for v in values],
        "best": min(values),
        "median": statistics.median(values),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------------ (a) GEMM rates
def mlp_gemms(batch: int) -> list[tuple[str, str, int, int, int]]:
    """The GEMMs of one forward+backward of the MLP: (label, kind, m, k, n), m x k @ k x n.

    Forward y = x W^T per layer; backward dW = g^T x per layer and dx = g W for every layer
    but the first (the input needs no gradient).
    """
    out = []
    for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        out.append((f"fwd  y=xW^T  layer {i}", "fwd", batch, fan_in, fan_out))
        out.append((f"bwd  dW=g^Tx layer {i}", "dw", fan_out, batch, fan_in))
        if i > 0:
            out.append((f"bwd  dx=gW   layer {i}", "dx", batch, fan_out, fan_in))
    return out


def gemm_call(kind: str, m: int, k: int, n: int, device: torch.device) -> Callable[[], object]:
    """The call autograd makes for this GEMM, on random fp32 operands of the right layout."""
    if kind == "fwd":  # linear(x (m,k), W (n,k)) = x @ W^T
        x, w = torch.randn(m, k, device=device), torch.randn(n, k, device=device)
        return lambda: torch.nn.functional.linear(x, w)
    if kind == "dw":  # g^T (m = out, k = batch) @ x (batch, in)
        g, x = torch.randn(k, m, device=device), torch.randn(k, n, device=device)
        return lambda: torch.mm(g.t(), x)
    g, w = torch.randn(m, k, device=device), torch.randn(k, n, device=device)  # dx = g @ W
    return lambda: torch.mm(g, w)


class GemmRates:
    """fp32 GEMM rates on the MLP's own GEMMs and on a large square matmul.

    Sampled in rounds (every GEMM once per round, a loop of >= `min_seconds` each); rounds are
    spread over the single-level section, interleaved with the epochs, so that the bound and
    the epochs see the same machine. Per GEMM the best round counts.
    """

    def __init__(self, device: torch.device, quick: bool) -> None:
        self.device = device
        self.min_seconds = 0.02 if quick else 0.05
        self.ops = []  # (label, shape, flops, fn, calls per sample)
        for label, kind, m, k, n in mlp_gemms(BATCH_SIZE):
            self.ops.append(
                (label, f"({m}x{k})@({k}x{n})", 2 * m * k * n, gemm_call(kind, m, k, n, device))
            )
        self.square = 8192 if device.type == "cuda" else (1024 if quick else 2048)
        a = torch.randn(self.square, self.square, device=device)
        b = torch.randn(self.square, self.square, device=device)
        square = f"({self.square}x{self.square})@({self.square}x{self.square})"
        self.ops.append(("large square", square, 2 * self.square**3, lambda: torch.mm(a, b)))
        self.calls = []
        for *_, fn in self.ops:
            for _ in range(3):
                fn()
            once, _ = timed(fn, device)
            self.calls.append(max(1, int(self.min_seconds / max(once, 1e-7))))
        self.samples: list[list[float]] = [[] for _ in self.ops]

    def round(self) -> None:
        for (*_, fn), calls, samples in zip(self.ops, self.calls, self.samples, strict=True):
            seconds, _ = timed(lambda fn=fn, calls=calls: [fn() for _ in range(calls)], self.device)
            samples.append(seconds / calls)

    def result(self) -> dict:
        rows = []
        for (label, shape, flops, _), samples in zip(self.ops, self.samples, strict=True):
            best, median = min(samples), statistics.median(samples)
            rows.append(
                {
                    "gemm": label,
                    "shape": shape,
                    "flops": flops,
                    "best_s": best,
                    "median_s": median,
                    "gflops_best": flops / best / 1e9,
                    "gflops_median": flops / median / 1e9,
                    "rounds": len(samples),
                }
            )
        gemms, square = rows[:-1], rows[-1]
        step_flops = sum(r["flops"] for r in gemms)
        step_seconds = sum(r["best_s"] for r in gemms)
        return {
            "gemms": gemms,
            "rounds": len(self.samples[0]),
            "step_gemm_flops": step_flops,
            "step_gemm_seconds": step_seconds,
            "step_gemm_seconds_median": sum(r["median_s"] for r in gemms),
            "mlp_gemm_gflops": step_flops / step_seconds / 1e9,
            "square_n": self.square,
            "square_gflops_best": square["gflops_best"],
            "square_gflops_median": square["gflops_median"],
        }


# ------------------------------------------------------------------- (a) single-level epoch
def new_model(seed: int = 0):
    from mlw_lib.models import MLP

    torch.manual_seed(seed)
    return MLP(SIZES[0], SIZES[1:-1], SIZES[-1])


def train_run(data, device: torch.device, epochs: float, levels: int = 1, tau: str = "cycle"):
    """(wall seconds of the whole train() call, TrainResult)."""
    from mlw_lib.multilevel import MultilevelConfig
    from mlw_lib.training import TrainConfig, train

    model = new_model()
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, device=str(device))
    if levels == 1:
        multilevel = MultilevelConfig(levels=1)
    else:
        multilevel = MultilevelConfig(levels=levels, batches_per_phase=4, tau=tau)
    return timed(lambda: train(model, data, config, multilevel), device)


def bare_loop(data, device: torch.device, epochs: float = 1.0) -> tuple[float, torch.nn.Module]:
    """Hand-written loop: same model and init, SGD momentum, the same seeded batches as
    BatchStream (a seeded permutation, index_select per minibatch). (seconds, model)."""
    model = new_model().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, fused=True)
    x, y = data.x_train.to(device), data.y_train.to(device)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    steps = int(epochs * (len(x) // BATCH_SIZE))

    def run() -> None:
        for b in range(steps):
            idx = perm[b * BATCH_SIZE : (b + 1) * BATCH_SIZE].to(device)
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()

    seconds, _ = timed(run, device)
    return seconds, model


@torch.no_grad()
def max_param_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def bench_single_level(data, device: torch.device, repeats: int, quick: bool) -> tuple[dict, dict]:
    """(GEMM rates, epoch figures): GEMM rounds, train() epochs and bare-loop epochs
    interleaved (alternating order), so that slow phases of the machine hit all of them."""
    rates = GemmRates(device, quick)
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
    for row in matmul["gemms"]:
        print(
            f"    {row['gemm']:<24} {row['shape']:<18} {row['flops'] / 1e6:7.1f} MFLOP "
            f"{row['best_s'] * 1e3:8.3f} ms  {row['gflops_best']:7.1f} / "
            f"{row['gflops_median']:6.1f} GFLOP/s"
        )
    print(
        f"    all GEMMs of one step: {matmul['step_gemm_flops'] / 1e6:.1f} MFLOP in "
        f"{matmul['step_gemm_seconds'] * 1e3:.3f} ms -> {matmul['mlp_gemm_gflops']:.1f} GFLOP/s"
        "  <- rate used for the bound"
    )
    n = matmul["square_n"]
    print(
        f"    large square ({n}x{n})@({n}x{n}): {matmul['square_gflops_best']:.1f} / "
        f"{matmul['square_gflops_median']:.1f} GFLOP/s  <- peak"
    )
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
def phase_table(result) -> dict:
    meter, cycle = result.meter, result.cycle
    seconds = {p: float(meter.seconds.get(p, 0.0)) for p in PHASES}
    work = {p: float(meter.work_by_phase.get(p, 0.0)) for p in PHASES}
    total_s, total_wu = sum(seconds.values()), sum(work.values())
    fine_s_per_wu = seconds["smooth"] / work["smooth"]
    coarse_s_per_wu = seconds["coarse"] / work["coarse"]
    out = {
        "seconds": seconds,
        "work_units": work,
        "total_s": total_s,
        "total_wu": total_wu,
        "cycles": cycle.cycles_done,
        "level_work": [float(level.work) for level in cycle.levels],
        "level_widths": [level.model.group_sizes() for level in cycle.levels],
        "overhead_time_share": sum(seconds[p] for p in OVERHEAD_PHASES) / total_s,
        "overhead_work_share": sum(work[p] for p in OVERHEAD_PHASES) / total_wu,
        "machinery_time_share": sum(seconds[p] for p in MACHINERY_PHASES) / total_s,
        # Time per WU on the coarse levels relative to the fine level: 1.0 = a coarse step
        # costs exactly its FLOP ratio; for 2 levels this equals
        # (s per coarse step / s per fine step) / levels[1].work, with the step counts
        # taken from the meter (fine steps = smooth WU, coarse steps = coarse WU / work).
        "coarse_cost_factor": coarse_s_per_wu / fine_s_per_wu,
        "fine_step_s": fine_s_per_wu,
        "test_accuracy": float(result.history["test_accuracy"].iloc[-1]),
    }
    if len(cycle.levels) == 2:
        coarse_steps = work["coarse"] / cycle.levels[1].work
        out["coarse_step_s"] = seconds["coarse"] / coarse_steps
        out["coarse_time_ratio"] = out["coarse_step_s"] / fine_s_per_wu
    return out


def bench_vcycles(data, device: torch.device, repeats: int) -> tuple[dict, object]:
    train_run(data, device, epochs=0.1, levels=3)  # warm-up: coarse FLOP counts, matching
    results, keep = {}, None
    for name, levels, tau in VCYCLES:
        best = None
        for _ in range(repeats):
            _, result = train_run(data, device, epochs=1.0, levels=levels, tau=tau)
            if best is None or result.meter.wall_time < best.meter.wall_time:
                best = result
        results[name] = phase_table(best)
        results[name].update(levels=levels, tau=tau, repeats=repeats)
        if levels == 3 and tau == "cycle":
            keep = best  # its hierarchy (with its tau) feeds the step microbenchmark
    return results, keep


def print_vcycle(name: str, res: dict) -> None:
    widths = " / ".join("x".join(str(w) for w in sizes.values()) for sizes in res["level_widths"])
    print(
        f"  {name}: {res['cycles']} cycles, {res['total_wu']:.1f} WU, widths {widths}, "
        f"FLOP ratio per level {', '.join(f'{w:.3f}' for w in res['level_work'])}, "
        f"test accuracy {res['test_accuracy']:.4f}"
    )
    print(
        f"    {'phase':<12} {'seconds':>8} {'time %':>7} {'WU':>8} {'WU %':>6} "
        f"{'ms/cycle':>9} {'ms/WU':>7}"
    )
    for p in PHASES:
        s, wu = res["seconds"][p], res["work_units"][p]
        per_wu = f"{1e3 * s / wu:7.2f}" if wu > 0 else f"{'-':>7}"
        print(
            f"    {p:<12} {s:8.3f} {100 * s / res['total_s']:6.1f}% {wu:8.2f} "
            f"{100 * wu / res['total_wu']:5.1f}% {1e3 * s / res['cycles']:9.2f} {per_wu}"
        )
    print(
        f"    {'total':<12} {res['total_s']:8.3f} {100.0:6.1f}% {res['total_wu']:8.2f} "
        f"{100.0:5.1f}% {1e3 * res['total_s'] / res['cycles']:9.2f}"
    )
    share, machinery = res["overhead_time_share"], res["machinery_time_share"]
    print(
        f"    transfer + tau (incl. its gradients) + matching: {100 * share:.1f}% of the time "
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

    variants = {"library": library_step, "no_tau": no_tau_step, "loss_term": loss_term_step}
    steps, rounds = (5, 8) if quick else (5, 40)  # short samples: more chances of a quiet one
    times = {(l.index, v): [] for l in levels for v in variants}
    for _ in range(rounds):
        for level in levels:
            for vname, fn in variants.items():
                if level.index == 0 and vname != "library":
                    continue

                def run(level=level, fn=fn) -> None:
                    for i in range(steps):
                        fn(level, batches[i % len(batches)])

                seconds, _ = timed(run, device)
                times[(level.index, vname)].append(seconds / steps)
    fine = min(times[(0, "library")])
    out = {}
    for level in levels:
        row = {"widths": level.model.group_sizes(), "flop_ratio": float(level.work)}
        for vname in variants:
            if times[(level.index, vname)]:
                best = min(times[(level.index, vname)])
                row[f"{vname}_step_s"] = best
                row[f"{vname}_time_ratio"] = best / fine
                row[f"{vname}_factor"] = best / fine / level.work
        out[level.index] = row
    return out


def print_microbenchmark(micro: dict) -> None:
    print(
        "  step microbenchmark on the 3-level hierarchy (tau on all k; best of interleaved "
        "rounds, 8 fixed batches):"
    )
    print(
        f"    {'level':<6} {'widths':<10} {'FLOP ratio':>10} {'ms/step':>8} {'time ratio':>10}"
        f" {'factor':>7}   {'no-tau term':>11} {'factor':>7}   {'tau as loss term':>16} "
        f"{'factor':>7}"
    )
    for index, row in micro.items():
        widths = "x".join(str(w) for w in row["widths"].values())
        line = (
            f"    {index:<6} {widths:<10} {row['flop_ratio']:10.3f} "
            f"{1e3 * row['library_step_s']:8.3f} {row['library_time_ratio']:10.3f} "
            f"{row['library_factor']:6.2f}x"
        )
        if "no_tau_step_s" in row:
            line += (
                f"   {1e3 * row['no_tau_step_s']:8.3f} ms {row['no_tau_factor']:6.2f}x   "
                f"{1e3 * row['loss_term_step_s']:13.3f} ms {row['loss_term_factor']:6.2f}x"
            )
        print(line)
    print(
        "    factor = (s per step on the level / s per fine step) / FLOP ratio; target within "
        f"{TARGET_COARSE_FACTOR}x. 'no-tau term' drops -<v,x> from the objective (wrong maths, "
        "shows its cost); 'tau as loss term' backpropagates -<v,x> instead of grad -= v."
    )


# ------------------------------------------------------------------------- (c) memory
def proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS: current, VmHWM: peak) in MiB; None off
    Linux."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def ru_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM on Linux, else ru_maxrss.

    ru_maxrss of a child started by fork+exec also holds the *parent's* peak (Linux keeps the
    high-water mark of the replaced address space across execve), so it would report this
    script's own size instead of the child's; VmHWM is the child's address space only.
    """
    hwm = proc_status_mib("VmHWM")
    return hwm if hwm is not None else ru_maxrss_mib()


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0: write 5 to
    /proc/self/clear_refs). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def child_memory(kind: str, device: torch.device, quick: bool) -> None:
    """Runs in a subprocess: load MNIST, one epoch, print peak RSS figures as JSON.

    The peak is read after the imports, reset, and read again at the end: the end value is the
    peak of data + epoch (with the imported libraries resident); the process peak is the
    larger of the two.
    """
    import mlw_lib  # noqa: F401  (what a user imports; part of the baseline)
    from mlw_lib.data import load_mnist

    import_peak, after_import = peak_rss_mib(), proc_status_mib("VmRSS")
    was_reset = reset_peak_rss()
    subset = {"train_subset": 6000, "test_subset": 1000} if quick else {}
    data = load_mnist(**subset)
    after_data = proc_status_mib("VmRSS")
    levels = 1 if kind == "single" else 3
    seconds, result = train_run(data, device, epochs=1.0, levels=levels)
    epoch_peak = peak_rss_mib()
    out = {
        "kind": kind,
        "levels": levels,
        "import_peak_mib": import_peak,
        "rss_after_import_mib": after_import,
        "rss_after_data_mib": after_data,
        "rss_at_end_mib": proc_status_mib("VmRSS"),
        "peak_was_reset_after_import": was_reset,
        "epoch_peak_rss_mib": epoch_peak,
        "process_peak_rss_mib": max(import_peak, epoch_peak),
        "ru_maxrss_at_end_mib": ru_maxrss_mib(),
        "train_call_s": seconds,
        "work_units": result.meter.work_units,
        "test_accuracy": float(result.history["test_accuracy"].iloc[-1]),
    }
    if device.type == "cuda":
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(CHILD_MARKER + json.dumps(out), flush=True)


def bench_memory(args: argparse.Namespace) -> dict:
    out = {}
    for kind in ("single", "multilevel"):  # one after the other: no mixed peaks, no contention
        command = [sys.executable, str(Path(__file__).resolve()), "--child-memory", kind]
        command += ["--device", args.device] + (["--quick"] if args.quick else [])
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(CHILD_MARKER)]
        if done.returncode != 0 or not lines:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise RuntimeError(f"memory child {kind!r} failed (exit {done.returncode}):\n{tail}")
        out[kind] = json.loads(lines[-1][len(CHILD_MARKER) :])
    single, multi = out["single"], out["multilevel"]
    out["epoch_peak_ratio"] = multi["epoch_peak_rss_mib"] / single["epoch_peak_rss_mib"]
    out["process_peak_ratio"] = multi["process_peak_rss_mib"] / single["process_peak_rss_mib"]
    above = [m["epoch_peak_rss_mib"] - (m["rss_after_import_mib"] or 0.0) for m in (single, multi)]
    out["above_import_ratio"] = above[1] / above[0] if above[0] > 0 else float("nan")
    return out


def print_memory(mem: dict) -> None:
    for kind, label in (("single", "single-level epoch"), ("multilevel", "3-level epoch")):
        m = mem[kind]
        print(
            f"  {label}: process peak {m['process_peak_rss_mib']:.0f} MiB; peak during data + "
            f"epoch {m['epoch_peak_rss_mib']:.0f} MiB"
        )
        cuda = (
            f", CUDA peak allocated {m['cuda_peak_allocated_mib']:.0f} MiB"
            if "cuda_peak_allocated_mib" in m
            else ""
        )
        print(
            f"    import peak {m['import_peak_mib']:.0f} MiB, RSS after `import mlw_lib` "
            f"{m['rss_after_import_mib']:.0f} MiB, after loading data "
            f"{m['rss_after_data_mib']:.0f} MiB, at the end {m['rss_at_end_mib']:.0f} MiB; "
            f"epoch {m['train_call_s']:.2f} s, {m['work_units']:.1f} WU{cuda}"
        )
    if not mem["single"]["peak_was_reset_after_import"]:
        print("  (the peak could not be reset after the imports: both peaks are process peaks)")
    print(
        f"  (ru_maxrss at the children's end: {mem['single']['ru_maxrss_at_end_mib']:.0f} and "
        f"{mem['multilevel']['ru_maxrss_at_end_mib']:.0f} MiB, inflated by this script's own "
        f"RSS, which Linux carries over the exec; hence VmHWM)"
    )
    print(
        f"  ratio multilevel / single: data + epoch peak {mem['epoch_peak_ratio']:.3f}; process "
        f"peak {mem['process_peak_ratio']:.3f}; peak above the post-import RSS "
        f"{mem['above_import_ratio']:.3f}"
    )


# ------------------------------------------------------------------------------- summary
def row(figure: str, value: str, target: str, status: str) -> dict:
    return {"figure": figure, "value": value, "target": target, "status": status}


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
    share_target = f"<= {100 * TARGET_OVERHEAD_SHARE:.0f}%"
    for name, res in vcycles.items():
        for key, what in (
            ("overhead_time_share", "transfer+tau+matching"),
            ("machinery_time_share", "machinery (no tau grads)"),
        ):
            if key == "machinery_time_share" and res["tau"] == "none":
                continue  # identical to the row above
            share = res[key]
            rows.append(
                row(
                    f"(b) {name}: {what} time share",
                    f"{100 * share:.1f}%",
                    share_target,
                    verdict(share <= TARGET_OVERHEAD_SHARE),
                )
            )
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


def print_summary(rows: list[dict]) -> None:
    width = max(len(r["figure"]) for r in rows)
    print(f"  {'figure':<{width}}  {'value':>9}  {'target':<12} status")
    for r in rows:
        print(f"  {r['figure']:<{width}}  {r['value']:>9}  {r['target']:<12} {r['status']}")
    counts = {k: sum(r["status"].startswith(k) for r in rows) for k in ("PASS", "MISS", "INVALID")}
    print("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "INVALID"))


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 6000/1000-example MNIST subset, fewer repeats",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch.set_num_threads (default 0: leave torch's default)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="timed single-level epochs (default 3, quick 2); V-cycle runs use max(1, repeats - 1)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument("--child-memory", choices=("single", "multilevel"), help=argparse.SUPPRESS)
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
    print(
        f"machine: {machine['cpu_model']}, {machine['cpu_count']} cores "
        f"({machine['cpus_usable']} usable), torch {machine['torch_version']} with "
        f"{machine['torch_threads']} threads, Python {machine['python']}, device "
        f"{machine.get('gpu', machine['device'])}; load average at start "
        f"{machine['load_average_at_start']}"
    )
    print(
        f"mode: {'quick (subset, fewer repeats)' if args.quick else 'full'}; timings are best "
        f"(min) of {args.repeats} repeats after a warm-up, median shown next to it"
    )

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
        "\n(b) V-cycle time breakdown (batches_per_phase=4, tau='cycle', ~1 epoch of work; "
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

    print("\n(c) Peak resident memory, each epoch in its own subprocess (VmHWM, see below)")
    contention = OtherCpu()
    mem = bench_memory(args)
    print_memory(mem)
    mem["contention"] = contention.report()
    print(describe_contention(mem["contention"]))

    rows = summary_rows(single, vcycles, micro, mem)
    print("\nSummary")
    print_summary(rows)
    sections = {"(a)": single["contention"], "(b)": vcontention, "(c)": mem["contention"]}
    disturbed = [
        f"{name} {100 * c['other_share_of_machine']:.0f}%"
        for name, c in sections.items()
        if c is not None and c["other_share_of_machine"] > DISTURBED_SHARE
    ]
    if disturbed:
        print(
            "  WARNING: other processes used a large share of the machine's cores during the "
            f"timings ({', '.join(disturbed)}); timing figures are disturbed despite best-of-"
            "repeats. Rerun on a quiet machine"
            + (" (or compare with --threads 1)." if args.threads != 1 else ".")
        )
    total = time.perf_counter() - started
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"total benchmark time {total:.1f} s; load average at end {machine['load_average_at_end']}"
    )

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
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
