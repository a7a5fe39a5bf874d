"""The timed loop of the parallel methods: `iterations` steps, an evaluation every
`eval_every` of them (and at the end) that the clock leaves out."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
from tqdm.auto import tqdm

from .. import distributed
from ..checks import integer


def timed_run(
    step: Callable[[], None],
    evaluate: Callable[[], dict[str, float]],
    iterations: int,
    eval_every: int,
    settle: Callable[[], None] = lambda: None,
    description: str = "train",
) -> pd.DataFrame:
    """One row per evaluation: `iteration`, `wall_time` (seconds of `step` and `settle`, the
    work that finishes pending messages before an evaluation) and `evaluate()`'s metrics
    (called on every rank; it returns {} where it does not measure)."""
    integer("iterations", iterations, 1)
    integer("eval_every", eval_every, 1)
    rows = [{"iteration": 0, "wall_time": 0.0, **evaluate()}]
    clock = 0.0
    for i in tqdm(range(1, iterations + 1), desc=description, **distributed.progress_options()):
        start = time.perf_counter()
        step()
        due = i % eval_every == 0 or i == iterations
        if due:
            settle()
        clock += time.perf_counter() - start
        if due:
            rows.append({"iteration": i, "wall_time": clock, **evaluate()})
    return pd.DataFrame(rows)
