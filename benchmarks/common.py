"""The measurements the bench_*.py scripts share; each script describes its model in a `Bench`
and calls `run`, which reads top to bottom: (a), the script's own section, (y), (b1), (b2),
(c), report.

Imported first by every script: it points MLW_DATA_MIRROR at ../shared/datasets (when that
folder exists and the variable is unset) and turns progress bars off before torch loads.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if (ROOT.parent / "shared" / "datasets").is_dir():
    os.environ.setdefault("MLW_DATA_MIRROR", str(ROOT.parent / "shared" / "datasets"))
os.environ.setdefault("TQDM_DISABLE", "1")

import psutil  # noqa: E402
import torch  # noqa: E402
from torch.utils.benchmark import Timer  # noqa: E402

from mlw_lib import allocator  # noqa: E402
from mlw_lib.multilevel import MultilevelConfig, forward_backward_flops  # noqa: E402
from mlw_lib.multilevel.objective import Level, objective_backward  # noqa: E402
from mlw_lib.multilevel.work import PHASES  # noqa: E402
from mlw_lib.reproducibility import cpu_model  # noqa: E402
from mlw_lib.training import TrainConfig, classification_loss, train  # noqa: E402

# (b1) "machinery": the multilevel bookkeeping without tau's gradient passes
# ("tau_gradient": charged work, reported as their own share).
MACHINERY = ("matching", "transfer", "recalibration", "accounting", "tau")
# (levels, tau) of (b1); "last_step" is the near-free tau estimate
VARIANTS = tuple((lv, tau) for lv in (2, 3) for tau in ("cycle", "last_step", "none"))
K = 4  # batches_per_phase, the notebooks' setting
TARGET_MACHINERY = 0.10  # share of a V-cycle run's wall-clock
TARGET_STEP = 1.15  # our coarse step / a bare PyTorch step
TARGET_NEAR_FREE_TAU = 0.05  # tau's share (gradient passes + arithmetic) with tau="last_step"
TARGET_MEMORY_2 = 1.3  # (c) peak RSS of a 2-level run / a single-level run


@dataclass(frozen=True)
class Bench:
    """What a script measures: data, model, training settings and the bare PyTorch copy."""

    name: str  # output file stem
    title: str  # one line: model, data, optimizer
    load: Callable  # load(quick) -> dataset with x_train, y_train, x_test, y_test, info
    new_model: Callable  # new_model(data) -> WidthModel, the same initialisation every call
    config: Callable  # config(epochs, device) -> TrainConfig
    bare_copy: Callable  # bare_copy(model) -> a plain nn.Module with the same weights
    gemms: dict  # {label: (m, k, n)} matmuls of the model's own shapes, for the peak rate
    epoch_target: float | None  # (a) epoch / FLOP bound; None: information only
    epochs: tuple[float, float]  # work of each timed run in epochs: (full, quick)
    repeats: int  # timed runs per variant (full; quick: 1), the fastest counts
    memory_target: float = 1.10  # (c) peak RSS, 3 levels / 1 level
    extra: Callable | None = None  # extra(data, device, epochs) -> (figures, rows): "x"


def run(bench: Bench, doc: str, script: str) -> None:
    """Options, data; (a) epoch vs FLOP bound, (b1) V-cycle phase shares, (b2) coarse step vs
    bare step, (c) peak memory; print the summary and write JSON + Markdown."""
    args = parse_args(doc, bench.name)
    data = bench.load(args.quick)
    train_run = functools.partial(train_once, bench, data, args.device)
    if args.memory_run:  # a child process of memory_section: one epoch, then exit
        allocator._done.append(False)  # glibc's default malloc: RSS follows the live tensors
        train_run(args.memory_run, checkpointed=args.checkpointed, memory=True)
        return
    if args.glibc_malloc:  # a child process of allocator_section: print one run's seconds
        allocator._done.append(False)  # as if malloc could not be tuned: glibc's defaults
        train_run(1, epochs=0.1)
        print(train_run(1, epochs=args.glibc_malloc).meter.wall_time)
        return
    results = {"machine": machine(args.device), "data": data.info.describe()}
    print(f"{bench.title}\ndata: {results['data']}")
    train_run(3, epochs=0.1)  # warm-up: kernels, allocator, FLOP counter
    batches = minibatches(bench.config(1.0, args.device), data, args.device)
    epochs, repeats = (bench.epochs[1], 1) if args.quick else (bench.epochs[0], bench.repeats)
    clock = cpu_clock()
    rates, runs = timed_runs(bench.gemms, train_run, args.device, epochs, repeats)
    a = epoch_section(runs["1 level"], batches[0], rates, bench.epoch_target)
    results["a"], rows = show(a, clock)
    if bench.extra is not None:
        clock = cpu_clock()
        results["x"], x_rows = show(bench.extra(data, args.device, epochs), clock)
        rows += x_rows
    clock = cpu_clock()
    kept = runs["1 level"].meter.wall_time
    results["y"], y_rows = show(allocator_section(script, args, epochs, kept), clock)
    rows += y_rows
    results["b1"], b1_rows = show(vcycle_section(runs), clock)
    clock, levels = cpu_clock(), runs["3 levels, tau cycle"].cycle.levels
    step = step_section(levels, bench.bare_copy, batches, 2 if args.quick else 10)
    results["b2"], b2_rows = show(step, clock)
    clock = cpu_clock()
    blocks = bench.new_model(data).has_blocks
    results["c"], c_rows = show(memory_section(script, args, bench.memory_target, blocks), clock)
    title = f"(b1) Share of the wall-clock per phase ({epochs:g} epoch(s) of work per run):"
    tables = ["", title, *phase_table(runs)]
    report(args, bench.title, results, rows + b1_rows + b2_rows + c_rows, tables)


def show(section: tuple, started: tuple) -> tuple:
    """Print a section's summary rows, then the share of the CPUs that other processes used
    since `started` (a `cpu_clock()`), which is also added to its figures."""
    figures, rows = section
    for row in rows:
        print(f"  {row['figure']}: {row['value']} (target {row['target']}, {row['status']})")
    busy, own, wall = (now - then for now, then in zip(cpu_clock(), started, strict=True))
    figures = {"figures": figures, "others_cpu_share": max(busy - own, 0) / wall}
    print(f"  (other processes used {percent(figures['others_cpu_share'])} of the CPUs)")
    return figures, rows


def cpu_clock() -> tuple[float, float, float]:
    """(CPU-seconds of the whole machine, and of this process with its waited-for children,
    over the CPU count; wall seconds), from psutil."""
    cpu, own = psutil.cpu_times(), psutil.Process().cpu_times()
    busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq + getattr(cpu, "steal", 0)
    own_total = own.user + own.system + own.children_user + own.children_system
    return busy / psutil.cpu_count(), own_total / psutil.cpu_count(), time.perf_counter()


def minibatches(config: TrainConfig, data, device: torch.device, count: int = 8) -> list:
    """The first `count` training minibatches (x, y), placed as `train` places them."""
    n, size = count * config.batch_size, config.batch_size
    x, y = data.x_train[:n].split(size), data.y_train[:n].split(size)
    return [(config.place(xb, device), yb.to(device)) for xb, yb in zip(x, y, strict=True)]


def train_once(
    bench: Bench,
    data,
    device,
    levels: int,
    tau="cycle",
    epochs=1.0,
    checkpointed=False,
    memory=False,
):
    """A TrainResult of `epochs` fine-level epochs of work from the same initial model
    (`checkpointed`: with per-block gradient checkpointing; `memory`: evaluating in batches of
    the training batch size, so that the peak memory is training's)."""
    config = MultilevelConfig(levels=levels, batches_per_phase=K, tau=tau)
    train_config = replace(bench.config(epochs, device), checkpoint_blocks=checkpointed)
    if memory:
        train_config = replace(train_config, eval_batch_size=train_config.batch_size)
    return train(bench.new_model(data), data, train_config, config)


def parse_args(doc: str, name: str) -> argparse.Namespace:
    """--quick, --device, --threads, --output (and the internal --memory-run LEVELS)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: subset, few repeats")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (timings synchronize)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    default = ROOT / "results" / "benchmarks" / f"{name}.json"
    parser.add_argument("--output", type=Path, default=default, help="JSON; .md next to it")
    parser.add_argument("--memory-run", type=int, metavar="LEVELS", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--glibc-malloc", type=float, metavar="EPOCHS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    args.device = torch.device(args.device)
    return args


def machine(device: torch.device) -> dict:
    """CPU model and count, torch threads and version, device, load average (psutil)."""
    return {
        "cpu": cpu_model(),
        "logical_cpus": psutil.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "load_average_start": [round(x, 2) for x in psutil.getloadavg()],
    }


def seconds(fn: Callable[[], object], min_run_time: float) -> float:
    """Median seconds per call of fn() (torch.utils.benchmark; it synchronizes CUDA)."""
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def matmul_rates(shapes: dict, device: torch.device, min_run_time: float = 0.2) -> dict:
    """GFLOP/s of fp32 (m x k) @ (k x n) for each labelled shape and a large square one;
    "peak" is the fastest (it gives the strictest FLOP bound)."""
    square = 8192 if device.type == "cuda" else 2048
    rates = {}
    for label, (m, k, n) in {**shapes, f"square {square}": (square,) * 3}.items():
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        rates[label] = 2 * m * k * n / seconds(lambda a=a, b=b: a @ b, min_run_time) / 1e9
    rates["peak"] = max(rates.values())
    return rates


def epoch_section(result, batch: tuple, rates: dict, target: float | None) -> tuple[dict, list]:
    """(a) A single-level TrainResult's wall_time against its FLOPs / the peak matmul rate;
    `batch`: one (x, y) minibatch for forward_backward_flops."""
    flops = forward_backward_flops(result.model, batch, classification_loss)
    batches = round(result.meter.work_units)  # one WU per minibatch
    out = {"matmul_gflops": rates, "flops_per_batch": flops, "batches": batches}
    out |= {"epoch_s": result.meter.wall_time, "bound_s": flops * batches / rates["peak"] / 1e9}
    out["ratio"] = out["epoch_s"] / out["bound_s"]
    figure = (
        f"(a) single-level run, {batches} batches, {out['epoch_s']:.2f} s / FLOP bound "
        f"{out['bound_s']:.2f} s "
        f"({flops * batches / 1e9:.0f} GFLOP at {rates['peak']:.0f} GFLOP/s, the fastest of "
        + ", ".join(f"{label} {rate:.0f}" for label, rate in rates.items() if label != "peak")
        + ")"
    )
    rows = [graded(figure, out["ratio"], target) if target else info(figure, out["ratio"])]
    return out, rows


def phase_shares(meter) -> dict[str, float]:
    """Share of `meter.wall_time` per phase of PHASES (they sum to 1) plus "machinery"."""
    shares = {phase: s / meter.wall_time for phase, s in meter.breakdown().items()}
    shares["machinery"] = sum(shares[phase] for phase in MACHINERY)
    return shares


def timed_runs(gemms: dict, train_run: Callable, device, epochs: float, repeats: int):
    """Round-robin, `repeats` times: the matmul rates, then one run of `epochs` epochs of work
    per variant (1 level, then VARIANTS), so that a busy spell of the machine does not hit
    every repeat of one. Returns (fastest rate per label, {name: fastest TrainResult})."""
    rates, runs = {}, {}
    for _ in range(repeats):
        for label, rate in matmul_rates(gemms, device).items():
            rates[label] = max(rates.get(label, 0.0), rate)
        for levels, tau in ((1, "none"), *VARIANTS):
            name = f"{levels} levels, tau {tau}" if levels > 1 else "1 level"
            result = train_run(levels, tau, epochs=epochs)
            if name not in runs or result.meter.wall_time < runs[name].meter.wall_time:
                runs[name] = result
    return rates, runs


def vcycle_section(runs: dict) -> tuple[dict, list]:
    """(b1) Phase shares per run; rows: the machinery share of each V-cycle run, and its
    tau_gradient, data and other shares next to the single-level run's; (b3) tau's whole share
    (tau_gradient + tau) of each run with tau, graded for the near-free estimate."""
    shares = {name: phase_shares(r.meter) for name, r in runs.items()}
    one, rows = shares["1 level"], []
    for name, s in list(shares.items())[1:]:
        rows.append(graded(f"(b1) {name}: machinery share", s["machinery"], TARGET_MACHINERY, "%"))
        tau_share = s["tau_gradient"] + s["tau"]
        if name.endswith("last_step"):
            rows.append(graded(f"(b3) {name}: tau share", tau_share, TARGET_NEAR_FREE_TAU, "%"))
        elif not name.endswith("none"):
            rows.append(info(f"(b3) {name}: tau share", percent(tau_share)))
        rows.append(
            info(
                f"(b1) {name}: shares of tau_gradient / data / other (1 level: data "
                f"{percent(one['data'])}, other {percent(one['other'])})",
                " / ".join(percent(s[phase]) for phase in ("tau_gradient", "data", "other")),
            )
        )
    return shares, rows


def phase_table(runs: dict) -> list[str]:
    """Markdown: share of the wall-clock per phase (rows) and run (columns)."""
    shares = [phase_shares(r.meter) for r in runs.values()]
    body = [[phase, *(percent(s[phase]) for s in shares)] for phase in (*PHASES, "machinery")]
    body.append(["wall-clock (s)", *(f"{r.meter.wall_time:.2f}" for r in runs.values())])
    body.append(["cycles", *(str(r.cycle.cycles_done) for r in runs.values())])
    return table(["phase", *runs], body)


def step_section(levels: list[Level], bare_copy: Callable, batches, rounds: int):
    """(b2) Per level of a trained hierarchy: our step against a bare PyTorch step on
    `bare_copy(level.model)`. Returns (figures per level, summary rows)."""
    out, rows = [], []
    for level in levels:
        ours, bare = compare_steps(level, bare_copy(level.model), batches, rounds)
        widths = "x".join(str(w) for w in level.model.group_sizes().values())
        out.append({"level": level.index, "widths": widths, "ours_s": ours, "bare_s": bare})
        figure = (
            f"(b2) level {level.index} ({widths}) step {1e3 * ours:.3f} ms / bare PyTorch step "
            f"{1e3 * bare:.3f} ms"
        )
        ratio = ours / bare  # the fine level (no tau) is information only
        rows.append(graded(figure, ratio, TARGET_STEP) if level.index else info(figure, ratio))
    return out, rows


def compare_steps(level: Level, bare: torch.nn.Module, batches, rounds: int, min_run_time=0.1):
    """(ours, bare) seconds per step, each the best of `rounds` alternating Timer medians.
    Ours is FASCycle._smooth's step (zero_grad, objective_backward with the level's tau, step,
    record_loss); the bare one is cross-entropy, backward, and the same fused optimizer with
    the same settings."""
    kind = type(level.optimizer)
    accepted = set(inspect.signature(kind).parameters) - {"params"}  # groups hold more keys
    settings = {k: v for k, v in level.optimizer.param_groups[0].items() if k in accepted}
    optimizer = kind(bare.parameters(), **(settings | {"fused": True}))
    ours_batches, bare_batches = itertools.cycle(batches), itertools.cycle(batches)

    def ours() -> None:
        level.optimizer.zero_grad(set_to_none=True)
        plain = objective_backward(level, next(ours_batches), classification_loss)
        level.optimizer.step()
        level.record_loss(plain)

    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        x, y = next(bare_batches)
        torch.nn.functional.cross_entropy(bare(x), y).backward()
        optimizer.step()

    times = [(seconds(ours, min_run_time), seconds(plain, min_run_time)) for _ in range(rounds)]
    return min(t[0] for t in times), min(t[1] for t in times)


def child_argv(script: str, args: argparse.Namespace) -> list[str]:
    """`script` with this run's --device, --quick and --threads, for a fresh child process."""
    argv = [script, "--device", str(args.device)] + ["--quick"] * args.quick
    return argv + (["--threads", str(args.threads)] if args.threads else [])


def allocator_section(script: str, args: argparse.Namespace, epochs: float, kept: float):
    """(y) The single-level run of (a) again, in a fresh process with glibc's default malloc
    (mlw_lib.allocator not applied): its seconds over (a)'s, where freed memory is kept."""
    argv = [sys.executable, *child_argv(script, args), "--glibc-malloc", str(epochs)]
    default = float(
        subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[-1]
    )
    figure = (
        f"(y) single-level run with glibc's default malloc {default:.2f} s / with freed memory "
        f"kept (mlw_lib.allocator, as in (a)) {kept:.2f} s"
    )
    return {"default_s": default, "kept_s": kept}, [info(figure, f"{default / kept:.2f}x")]


def memory_section(
    script: str, args: argparse.Namespace, target: float, blocks: bool
) -> tuple[dict, list]:
    """(c) Peak RSS of one-epoch runs with 1, 2 and 3 levels, and (`blocks`) with 1 and 2
    levels with per-block gradient checkpointing, each in a fresh `script` process with glibc's
    default malloc (a heap that keeps freed memory, mlw_lib.allocator, peaks at its most
    fragmented state, which hides what checkpointing frees) and evaluating in training-sized
    batches (so that the peak is training's, not a large evaluation batch's)."""
    argv = [*child_argv(script, args), "--memory-run"]
    runs = {f"{n} level{'s' * (n > 1)}": [str(n)] for n in (1, 2, 3)}
    if blocks:
        runs |= {f"{name}, checkpointed": [*run, "--checkpointed"] for name, run in runs.items()}
        del runs["3 levels, checkpointed"]
    peaks = {name: peak_rss_mib([*argv, *run]) for name, run in runs.items()}

    def ratio(top: str, bottom: str, limit: float | None) -> dict:
        figure = f"(c) peak RSS {top} {peaks[top]:.0f} MiB / {bottom} {peaks[bottom]:.0f} MiB"
        value = peaks[top] / peaks[bottom]
        return info(figure, f"{value:.2f}x") if limit is None else graded(figure, value, limit)

    rows = [ratio("3 levels", "1 level", target), ratio("2 levels", "1 level", TARGET_MEMORY_2)]
    if blocks:
        rows += [ratio(f"{n}, checkpointed", n, None) for n in ("1 level", "2 levels")]
        rows.append(ratio("2 levels, checkpointed", "1 level, checkpointed", TARGET_MEMORY_2))
    return {"peak_rss_mib": peaks}, rows


def peak_rss_mib(argv: list[str]) -> float:
    """Peak resident memory in MiB of `python argv`, sampled with psutil every 10 ms."""
    child = psutil.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.Error:  # it exited between poll() and memory_info()
            break
        time.sleep(0.01)
    if child.wait():
        raise RuntimeError(f"memory run {argv} failed with exit code {child.returncode}")
    return peak / 2**20


def graded(figure: str, value: float, target: float, unit: str = "x") -> dict:
    """A summary row that passes when value <= target."""
    shown, limit = (
        (percent(value), percent(target)) if unit == "%" else (f"{value:.2f}x", f"{target:.2f}x")
    )
    status = "PASS" if value <= target else "MISS"
    return {"figure": figure, "value": shown, "target": f"<= {limit}", "status": status}


def info(figure: str, value: float | str) -> dict:
    """A summary row without a target."""
    shown = value if isinstance(value, str) else f"{value:.2f}x"
    return {"figure": figure, "value": shown, "target": "-", "status": "info"}


def percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def table(header: list[str], body: list[list[str]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def report(args, title: str, results: dict, rows: list[dict], extra: list[str]) -> None:
    """Print the summary and `extra`; write results + rows as JSON to args.output, and the
    summary and `extra` as Markdown next to it (.md)."""
    host = results["machine"]
    host["load_average_end"] = [round(x, 2) for x in psutil.getloadavg()]
    header = (
        f"{title}; {'quick' if args.quick else 'full'} run. Machine: {host['cpu']}, "
        f"{host['logical_cpus']} CPUs, torch {host['torch']} with {host['torch_threads']} "
        f"threads, device {host['device']}; load average {host['load_average_start']} at "
        f"start, {host['load_average_end']} at end. Other processes used "
        + ", ".join(
            f"{percent(results[k]['others_cpu_share'])} ({k})"
            for k in ("a", "x", "y", "b1", "b2", "c")
            if k in results
        )
        + " of the CPUs during the sections."
    )
    summary = table(["figure", "value", "target", "verdict"], [list(r.values()) for r in rows])
    lines = [header, "", *summary, *extra]
    print("\n" + "\n".join(lines))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({**results, "summary": rows}, indent=1) + "\n")
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {args.output} and {args.output.with_suffix('.md')}")
