"""The LLNL claim on regression (notebook 07): multilevel training gives a better worst-case
error at an equivalent average error.

Each multilevel run is paired with the single-level run of the same seed (same
initialisation and minibatch order, equal work). The claim holds for a seed when the
multilevel net's test L-infinity error is at least `linf_drop` lower than single-level's
and its mean relative L2 error is at most `l2_tolerance` higher; it holds for a method when
it holds in at least `seeds_needed` seeds.
"""

from __future__ import annotations

import pandas as pd

from .frontier import SINGLE, final_rows

LINF_DROP = 0.2  # the multilevel L-inf must be at least 20% lower ...
L2_TOLERANCE = 0.05  # ... with a mean relative L2 error at most 5% higher
SEEDS_NEEDED = 4  # ... in at least this many seeds (of 5)


def paired_errors(
    history: pd.DataFrame,
    baseline: str = SINGLE,
    linf: str = "test_linf",
    l2: str = "test_rel_l2",
    linf_drop: float = LINF_DROP,
    l2_tolerance: float = L2_TOLERANCE,
) -> pd.DataFrame:
    """One row per (method, seed) other than `baseline`: the final `linf` and `l2` errors,
    their ratios to the `baseline` run of the same seed, and whether the claim holds."""
    final = final_rows(history).set_index(["method", "seed"])
    if baseline not in final.index.get_level_values("method"):
        raise ValueError(f"no {baseline!r} runs to pair with; add it to the methods")
    rows = []
    for (method, seed), run in final.iterrows():
        if method == baseline or (baseline, seed) not in final.index:
            continue
        base = final.loc[(baseline, seed)]
        linf_ratio, l2_ratio = run[linf] / base[linf], run[l2] / base[l2]
        rows.append(
            {
                "method": method,
                "seed": seed,
                linf: run[linf],
                l2: run[l2],
                "linf_ratio": linf_ratio,
                "l2_ratio": l2_ratio,
                "holds": bool(linf_ratio <= 1 - linf_drop and l2_ratio <= 1 + l2_tolerance),
            }
        )
    paired = pd.DataFrame(rows)
    order = {method: i for i, method in enumerate(dict.fromkeys(paired["method"]))}
    return paired.sort_values(
        ["method", "seed"],
        key=lambda c: c.map(order) if c.name == "method" else c,
        ignore_index=True,
    )


def claim_verdict(paired: pd.DataFrame, seeds_needed: int = SEEDS_NEEDED) -> pd.DataFrame:
    """Per method: seeds paired, seeds where the claim holds, mean ratios, and `claim_holds`
    (at least `seeds_needed` seeds)."""
    table = paired.groupby("method", sort=False).agg(
        seeds=("seed", "nunique"),
        seeds_holding=("holds", "sum"),
        linf_ratio=("linf_ratio", "mean"),
        l2_ratio=("l2_ratio", "mean"),
    )
    table["claim_holds"] = table["seeds_holding"] >= seeds_needed
    return table


def claim_sentence(
    verdict: pd.DataFrame,
    seeds_needed: int = SEEDS_NEEDED,
    linf_drop: float = LINF_DROP,
    l2_tolerance: float = L2_TOLERANCE,
) -> str:
    """One sentence per method, e.g. 'fas, 2 levels: L-inf 0.93x and mean relative L2 1.01x
    of single-level (means over 5 seeds); the claim ... holds in 1 of 5 seeds -> not
    confirmed.' (the thresholds as given to `paired_errors` and `claim_verdict`)."""
    lines = []
    for method, row in verdict.iterrows():
        word = "confirmed" if row["claim_holds"] else "not confirmed"
        lines.append(
            f"{method}: L-inf {row['linf_ratio']:.2f}x and mean relative L2 "
            f"{row['l2_ratio']:.2f}x of single-level (means over {row['seeds']} seeds); the "
            f"claim (L-inf <= {1 - linf_drop:.2f}x, L2 <= {1 + l2_tolerance:.2f}x) holds in "
            f"{row['seeds_holding']} of {row['seeds']} seeds (needed: {seeds_needed}) -> {word}."
        )
    return "\n".join(lines)
