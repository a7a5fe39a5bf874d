"""Machinery shared by the benchmark scripts (`bench_mlp.py`, `bench_cnn.py`).

Importing this module first sets the environment (see `configure_environment`), then imports
torch. The scripts run as `python benchmarks/bench_x.py`, so this folder is on `sys.path`.

- machine: `machine_info`, `describe_machine`, `describe_mode`;
- contention: `OtherCpu` (CPU time other processes used), `describe_contention`,
  `warn_if_disturbed`;
- timing: `synchronize`, `timed`, `best_and_median`, `verdict`;
- rates: `Op`, `Rates` (any timed ops, sampled in rounds), `step_totals`, `print_rate_rows`;
  `Gemm`, `gemm_call`, `GemmRates` (a model's GEMMs + a large square), `print_gemm_rates`;
- V-cycle phases: `phase_table`, `print_phase_table`;
- peak memory: each epoch in a fresh subprocess (`run_memory_children` in the parent,
  `report_child_memory` in the child; peak = VmHWM, reset after the imports), `print_memory`;
- results: `row`, `print_summary`, `print_total`, `write_results`.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

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

CHILD_MARKER = "BENCH_CHILD_RESULT "
DISTURBED_SHARE = 0.15  # other processes above this share of the cores: warn


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


def describe_machine(machine: dict) -> str:
    """The 'machine: ...' line every script prints first."""
    return (
        f"machine: {machine['cpu_model']}, {machine['cpu_count']} cores "
        f"({machine['cpus_usable']} usable), torch {machine['torch_version']} with "
        f"{machine['torch_threads']} threads, Python {machine['python']}, device "
        f"{machine.get('gpu', machine['device'])}; load average at start "
        f"{machine['load_average_at_start']}"
    )


def describe_mode(quick: bool, repeats: int) -> str:
    return (
        f"mode: {'quick (subset, fewer repeats)' if quick else 'full'}; timings are best "
        f"(min) of {repeats} repeats after a warm-up, median shown next to it"
    )


# --------------------------------------------------------------------------- contention
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


def warn_if_disturbed(sections: dict[str, dict | None], threads: int) -> None:
    """A WARNING line when other processes used more than DISTURBED_SHARE of the cores during
    any section (`sections`: name -> OtherCpu report)."""
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
            + (" (or compare with --threads 1)." if threads != 1 else ".")
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


# ----------------------------------------------------------------------------- GEMM rates
class Op(NamedTuple):
    """A timed operation: `fn()` does `flops` FLOPs; a training step runs it `count` times."""

    label: str
    shape: str
    flops: int
    fn: Callable[[], object]
    count: int = 1


class Rates:
    """fp32 rates of `ops`, sampled in rounds (every op once per round, a loop of >=
    `min_seconds` each). Rounds are spread over a section, interleaved with the epochs, so
    that the rates and the epochs see the same machine. Per op the best round counts."""

    def __init__(self, ops: Sequence[Op], device: torch.device, quick: bool) -> None:
        self.ops, self.device = list(ops), device
        self.min_seconds = 0.02 if quick else 0.05
        self.calls = [self._calls_per_sample(op.fn) for op in self.ops]
        self.samples: list[list[float]] = [[] for _ in self.ops]

    def _calls_per_sample(self, fn: Callable[[], object]) -> int:
        for _ in range(3):  # warm-up
            fn()
        once, _ = timed(fn, self.device)
        return max(1, int(self.min_seconds / max(once, 1e-7)))

    def round(self) -> None:
        for op, calls, samples in zip(self.ops, self.calls, self.samples, strict=True):
            seconds, _ = timed(lambda fn=op.fn, n=calls: [fn() for _ in range(n)], self.device)
            samples.append(seconds / calls)

    def rows(self) -> list[dict]:
        """Per op: FLOPs, count, best and median seconds per call and their GFLOP/s."""
        out = []
        for op, samples in zip(self.ops, self.samples, strict=True):
            best, median = min(samples), statistics.median(samples)
            out.append(
                {
                    "gemm": op.label,
                    "shape": op.shape,
                    "flops": op.flops,
                    "count": op.count,
                    "best_s": best,
                    "median_s": median,
                    "gflops_best": op.flops / best / 1e9,
                    "gflops_median": op.flops / median / 1e9,
                    "rounds": len(samples),
                }
            )
        return out


def step_totals(rows: list[dict]) -> tuple[float, float, float]:
    """(FLOPs, best seconds, median seconds) of one training step's ops, counts included."""
    return (
        sum(r["flops"] * r["count"] for r in rows),
        sum(r["best_s"] * r["count"] for r in rows),
        sum(r["median_s"] * r["count"] for r in rows),
    )


class Gemm(NamedTuple):
    """One GEMM of a training step, m x k @ k x n, in the layout autograd uses (`kind`):
    "fwd" x (m,k) @ W (n,k)^T; "dw" g^T (m,k) @ x (k,n) with g stored (k,m); "dx" g (m,k) @
    W (k,n). `count`: how often a step runs it."""

    label: str
    kind: str
    m: int
    k: int
    n: int
    count: int = 1


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


def gemm_op(gemm: Gemm, device: torch.device) -> Op:
    shape = f"({gemm.m}x{gemm.k})@({gemm.k}x{gemm.n})"
    call = gemm_call(gemm.kind, gemm.m, gemm.k, gemm.n, device)
    return Op(gemm.label, shape, 2 * gemm.m * gemm.k * gemm.n, call, gemm.count)


class GemmRates(Rates):
    """fp32 GEMM rates on a model's own GEMMs (`gemms`) and on a large square matmul (the last
    op). `result()` gives the rate of one step's GEMMs (weighted by their counts) under
    `rate_key`."""

    def __init__(
        self,
        gemms: Sequence[Gemm],
        device: torch.device,
        quick: bool,
        rate_key: str = "model_gemm_gflops",
    ) -> None:
        self.rate_key = rate_key
        self.square = 8192 if device.type == "cuda" else (1024 if quick else 2048)
        n = self.square
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        square = Op("large square", f"({n}x{n})@({n}x{n})", 2 * n**3, lambda: torch.mm(a, b))
        super().__init__([gemm_op(g, device) for g in gemms] + [square], device, quick)

    def result(self) -> dict:
        rows = self.rows()
        gemms, square = rows[:-1], rows[-1]
        step_flops, step_seconds, step_median = step_totals(gemms)
        return {
            "gemms": gemms,
            "rounds": len(self.samples[0]),
            "step_gemm_flops": step_flops,
            "step_gemm_seconds": step_seconds,
            "step_gemm_seconds_median": step_median,
            self.rate_key: step_flops / step_seconds / 1e9,
            "square_n": self.square,
            "square_gflops_best": square["gflops_best"],
            "square_gflops_median": square["gflops_median"],
        }


def print_rate_rows(rows: list[dict], label_width: int = 24, shape_width: int = 18) -> None:
    """One line per op (its count in the label where > 1). A width of 0 fits the column to
    its longest entry."""
    labels = [r["gemm"] + (f" (x{r['count']})" if r["count"] > 1 else "") for r in rows]
    label_width = label_width or max(len(label) for label in labels)
    shape_width = shape_width or max(len(r["shape"]) for r in rows)
    for label, r in zip(labels, rows, strict=True):
        print(
            f"    {label:<{label_width}} {r['shape']:<{shape_width}} "
            f"{r['flops'] / 1e6:7.1f} MFLOP {r['best_s'] * 1e3:8.3f} ms  "
            f"{r['gflops_best']:7.1f} / {r['gflops_median']:6.1f} GFLOP/s"
        )


def print_gemm_rates(matmul: dict, label_width: int = 24, shape_width: int = 18) -> None:
    """The GEMM lines, the step total (the rate of the bound) and the square peak."""
    print_rate_rows(matmul["gemms"], label_width, shape_width)
    rate = matmul["step_gemm_flops"] / matmul["step_gemm_seconds"] / 1e9
    print(
        f"    all GEMMs of one step: {matmul['step_gemm_flops'] / 1e6:.1f} MFLOP in "
        f"{matmul['step_gemm_seconds'] * 1e3:.3f} ms -> {rate:.1f} GFLOP/s"
        "  <- rate used for the bound"
    )
    n = matmul["square_n"]
    print(
        f"    large square ({n}x{n})@({n}x{n}): {matmul['square_gflops_best']:.1f} / "
        f"{matmul['square_gflops_median']:.1f} GFLOP/s  <- peak"
    )


# ------------------------------------------------------------------------ V-cycle phases
def phase_table(
    result, phases: Sequence[str], overhead: Sequence[str], machinery: Sequence[str]
) -> dict:
    """Seconds and charged work per phase of a multilevel TrainResult, and their shares.

    `overhead`: the phases of the target as written (everything but smoothing and coarse
    steps); `machinery`: the same without tau's forward+backward passes, which are charged
    work units like any step (their share is fixed by the algorithm, not by the code).
    """
    meter, cycle = result.meter, result.cycle
    seconds = {p: float(meter.seconds.get(p, 0.0)) for p in phases}
    work = {p: float(meter.work_by_phase.get(p, 0.0)) for p in phases}
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
        "overhead_time_share": sum(seconds[p] for p in overhead) / total_s,
        "overhead_work_share": sum(work[p] for p in overhead) / total_wu,
        "machinery_time_share": sum(seconds[p] for p in machinery) / total_s,
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


def print_phase_table(name: str, res: dict, phases: Sequence[str]) -> None:
    """The run's headline (cycles, WU, widths, FLOP ratios) and one line per phase."""
    widths = " / ".join("x".join(str(w) for w in sizes.values()) for sizes in res["level_widths"])
    print(
        f"  {name}: {res['cycles']} cycles, {res['total_wu']:.1f} WU, widths {widths}, "
        f"FLOP ratio per level {', '.join(f'{w:.3f}' for w in res['level_work'])}, "
        f"test accuracy {res['test_accuracy']:.4f}"
    )
    name_width = max(12, *(len(p) for p in phases))
    print(
        f"    {'phase':<{name_width}} {'seconds':>8} {'time %':>7} {'WU':>8} {'WU %':>6} "
        f"{'ms/cycle':>9} {'ms/WU':>7}"
    )
    for p in phases:
        s, wu = res["seconds"][p], res["work_units"][p]
        per_wu = f"{1e3 * s / wu:7.2f}" if wu > 0 else f"{'-':>7}"
        print(
            f"    {p:<{name_width}} {s:8.3f} {100 * s / res['total_s']:6.1f}% {wu:8.2f} "
            f"{100 * wu / res['total_wu']:5.1f}% {1e3 * s / res['cycles']:9.2f} {per_wu}"
        )
    print(
        f"    {'total':<{name_width}} {res['total_s']:8.3f} {100.0:6.1f}% {res['total_wu']:8.2f} "
        f"{100.0:5.1f}% {1e3 * res['total_s'] / res['cycles']:9.2f}"
    )


# ------------------------------------------------------------------------- peak memory
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


def report_child_memory(
    kind: str,
    load_data: Callable[[], object],
    run_epoch: Callable[[object], dict],
    device: torch.device,
) -> None:
    """Runs in a subprocess: load the data, run one epoch, print peak RSS figures as JSON.

    The peak is read after the imports, reset, and read again at the end: the end value is the
    peak of data + epoch (with the imported libraries resident); the process peak is the
    larger of the two. `run_epoch(data)` returns its own figures (at least `train_call_s` and
    `work_units`), which are added to the report.
    """
    import mlw_lib  # noqa: F401  (what a user imports; part of the baseline)

    import_peak, after_import = peak_rss_mib(), proc_status_mib("VmRSS")
    was_reset = reset_peak_rss()
    data = load_data()
    after_data = proc_status_mib("VmRSS")
    epoch = run_epoch(data)
    epoch_peak = peak_rss_mib()
    out = {
        "kind": kind,
        "import_peak_mib": import_peak,
        "rss_after_import_mib": after_import,
        "rss_after_data_mib": after_data,
        "rss_at_end_mib": proc_status_mib("VmRSS"),
        "peak_was_reset_after_import": was_reset,
        "epoch_peak_rss_mib": epoch_peak,
        "process_peak_rss_mib": max(import_peak, epoch_peak),
        "ru_maxrss_at_end_mib": ru_maxrss_mib(),
        **epoch,
    }
    if device.type == "cuda":
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(CHILD_MARKER + json.dumps(out), flush=True)


def run_memory_children(script: Path, child_args: list[str]) -> dict:
    """Run `script --child-memory KIND *child_args` for KIND = single, multilevel, one after the
    other (no mixed peaks, no contention), and the ratios multilevel / single of their peaks."""
    out = {}
    for kind in ("single", "multilevel"):
        command = [sys.executable, str(Path(script).resolve()), "--child-memory", kind]
        done = subprocess.run(command + child_args, capture_output=True, text=True, check=False)
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


def print_memory(mem: dict, multilevel_label: str) -> None:
    """Both children's peaks and RSS milestones, and the ratios multilevel / single."""
    for kind, label in (("single", "single-level epoch"), ("multilevel", multilevel_label)):
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


# ------------------------------------------------------------------------------- results
def row(figure: str, value: str, target: str, status: str) -> dict:
    """One line of the summary table."""
    return {"figure": figure, "value": value, "target": target, "status": status}


def share_row(figure: str, share: float, limit: float) -> dict:
    """A summary row for a time share (a fraction) against `share <= limit`."""
    return row(figure, f"{100 * share:.1f}%", f"<= {100 * limit:.0f}%", verdict(share <= limit))


def print_summary(rows: list[dict]) -> None:
    width = max(len(r["figure"]) for r in rows)
    print(f"  {'figure':<{width}}  {'value':>9}  {'target':<12} status")
    for r in rows:
        print(f"  {r['figure']:<{width}}  {r['value']:>9}  {r['target']:<12} {r['status']}")
    counts = {k: sum(r["status"].startswith(k) for r in rows) for k in ("PASS", "MISS", "INVALID")}
    print("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "INVALID"))


def base_parser(
    doc: str, quick_help: str, repeats_help: str, output: Path
) -> argparse.ArgumentParser:
    """The options every benchmark has: --quick, --device, --threads, --repeats, --output
    (and the hidden --child-memory of the memory subprocesses)."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads (default 0: torch's own)"
    )
    parser.add_argument("--repeats", type=int, default=0, help=repeats_help)
    parser.add_argument("--output", type=Path, default=output, help="JSON results file")
    parser.add_argument("--child-memory", choices=("single", "multilevel"), help=argparse.SUPPRESS)
    return parser


def memory_section(heading: str, measure: Callable[[], dict], multilevel_label: str) -> dict:
    """Print `heading`, run `measure()` (peak-memory children), print its figures and the
    other processes' CPU use meanwhile; the result carries that under "contention"."""
    print(heading)
    contention = OtherCpu()
    mem = measure()
    print_memory(mem, multilevel_label=multilevel_label)
    mem["contention"] = contention.report()
    print(describe_contention(mem["contention"]))
    return mem


def finish(
    rows: list[dict], sections: dict[str, dict | None], threads: int, started: float, machine: dict
) -> float:
    """Print the summary table, a warning for disturbed sections and the total time
    (returned)."""
    print("\nSummary")
    print_summary(rows)
    warn_if_disturbed(sections, threads)
    return print_total(started, machine)


def print_total(started: float, machine: dict) -> float:
    """Print (and return) the benchmark's total seconds; adds the load average at the end to
    `machine`."""
    total = time.perf_counter() - started
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"total benchmark time {total:.1f} s; load average at end {machine['load_average_at_end']}"
    )
    return total


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results written to {path}")
