"""The worst-case claim of notebook 07: pairing by seed and the verdict (issue 20)."""

from __future__ import annotations

import pandas as pd

from mlw_lib.worst_case import claim_sentence, claim_verdict, paired_errors


def history(linf: dict[str, list[float]], l2: dict[str, list[float]]) -> pd.DataFrame:
    """Two evaluations per (method, seed); the last holds the given final errors."""
    rows = []
    for method, values in linf.items():
        for seed, (worst, mean) in enumerate(zip(values, l2[method], strict=True)):
            rows.append({"method": method, "seed": seed, "test_linf": 9.0, "test_rel_l2": 9.0})
            rows.append({"method": method, "seed": seed, "test_linf": worst, "test_rel_l2": mean})
    return pd.DataFrame(rows)


def test_the_claim_holds_only_in_seeds_with_a_lower_worst_case_and_an_equal_average():
    frame = history(
        {"single-level": [1.0] * 5, "ml": [0.7, 0.79, 0.81, 0.7, 0.5]},
        {"single-level": [0.1] * 5, "ml": [0.1, 0.105, 0.1, 0.2, 0.1]},
    )
    paired = paired_errors(frame)
    # seed 0: both; 1: both (at the limits); 2: L-inf only 19% lower; 3: L2 doubled; 4: both
    assert paired.set_index("seed")["holds"].tolist() == [True, True, False, False, True]
    verdict = claim_verdict(paired)
    assert verdict.loc["ml", "seeds_holding"] == 3 and not verdict.loc["ml", "claim_holds"]
    assert "holds in 3 of 5 seeds" in claim_sentence(verdict) and "not confirmed" in (
        claim_sentence(verdict)
    )
    assert claim_verdict(paired, seeds_needed=3).loc["ml", "claim_holds"]
    assert "L-inf <= 0.90x, L2 <= 1.10x" in claim_sentence(verdict, 4, 0.1, 0.1)


def test_pairing_needs_the_baseline(refusals):
    frame = history({"ml": [1.0]}, {"ml": [0.1]})
    with refusals.error("a claim without single-level runs", ValueError, "no 'single-level' runs"):
        paired_errors(frame)
