"""Heavy-edge matching of units on a similarity graph (DESIGN.md §4.2).

Units are paired; pairs with similarity <= 0 are never formed; a target ratio
n_coarse / n_fine caps the merging at n_coarse >= n_fine - floor(n_fine * (1 - ratio)).
Unpaired units stay singletons. A ratio >= 0.5 is one round of pairing (at most n_fine // 2
pairs); a ratio in [0.25, 0.5) adds a second round that pairs the coarse units of the first
(their features summed), so a coarse unit holds up to four fine units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MATCHING_METHODS = ("mutual_best", "greedy")
MIN_RATIO = 0.25  # two rounds of pairing: coarse units of up to four fine units
SIMILARITIES = ("cosine", "rbf")


@dataclass
class Matching:
    """Result of matching one group. `assign`: (n_fine,) coarse index of every fine unit."""

    assign: torch.Tensor
    n_coarse: int
    pairs: torch.Tensor  # (n_pairs, 2) fine indices paired in the first round

    @property
    def n_fine(self) -> int:
        return int(self.assign.numel())

    @property
    def ratio(self) -> float:
        """Achieved coarsening ratio n_coarse / n_fine."""
        return self.n_coarse / self.n_fine


def similarity_matrix(features: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Pairwise unit similarity, (n, f) -> (n, n), diagonal set to -inf; computed in the
    features' precision (at least float32)."""
    feats = features.detach()
    if feats.dtype not in (torch.float32, torch.float64):
        feats = feats.float()
    if kind == "cosine":
        unit = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = unit @ unit.T
    elif kind == "rbf":
        dist2 = torch.cdist(feats, feats).pow(2)
        off_diag = dist2[~torch.eye(len(feats), dtype=torch.bool, device=feats.device)]
        scale = off_diag.median().clamp_min(1e-12) if off_diag.numel() else torch.tensor(1.0)
        sim = torch.exp(-dist2 / scale)
    else:
        raise ValueError(f"unknown similarity {kind!r}; choose one of {SIMILARITIES}")
    sim.fill_diagonal_(float("-inf"))
    return sim


def check_ratio(ratio: float) -> None:
    """ValueError unless `ratio` lies in [MIN_RATIO, 1)."""
    if not MIN_RATIO <= ratio < 1.0:
        raise ValueError(
            f"coarsening ratio must lie in [{MIN_RATIO}, 1) (a coarse unit holds at most four "
            f"fine units), got {ratio}; for stronger coarsening add levels"
        )


def coarse_target(n_fine: int, ratio: float) -> int:
    """The width `ratio` asks for: n_fine - floor(n_fine * (1 - ratio))."""
    check_ratio(ratio)
    return n_fine - int(np.floor(n_fine * (1.0 - ratio) + 1e-9))


def narrowest_width(n_fine: int, ratio: float) -> int:
    """The coarse width a matching reaches when it finds every pair it looks for."""
    n = n_fine
    for _ in range(pairing_rounds(ratio)):
        n -= min(n // 2, n - coarse_target(n_fine, ratio))
    return max(n, coarse_target(n_fine, ratio))


def pairing_rounds(ratio: float) -> int:
    """1 for ratio >= 0.5, else 2 (groups of up to four units)."""
    check_ratio(ratio)
    return 1 if ratio >= 0.5 else 2


def max_pairs_for(n_fine: int, ratio: float) -> int:
    """Pairs the first round may form: enough for `ratio`, capped at n_fine // 2."""
    return min(n_fine // 2, n_fine - coarse_target(n_fine, ratio))


def mutual_best_pairs(sim: torch.Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Deterministic: pair i, j when each is the other's best free neighbour; repeat.

    Each round works on the similarity among the still-free units only (a submatrix that
    shrinks with every round) and commits all its mutual pairs at once (they are disjoint),
    strongest first, up to `max_pairs`.
    """
    free = torch.arange(sim.shape[0], device=sim.device)  # global indices, increasing
    sub = sim  # similarity among the free units, (len(free), len(free))
    found_i, found_j = [], []
    n_pairs = 0
    while n_pairs < max_pairs and free.numel() >= 2:
        best_sim, best = sub.max(dim=1)
        local = torch.arange(free.numel(), device=sim.device)
        mutual = (best[best] == local) & (local < best) & (best_sim > 0)
        found = local[mutual]
        if found.numel() == 0:
            break
        order = torch.argsort(best_sim[found], descending=True, stable=True)
        take = found[order][: max_pairs - n_pairs]
        found_i.append(free[take])
        found_j.append(free[best[take]])
        n_pairs += take.numel()
        keep = torch.ones_like(free, dtype=torch.bool)
        keep[take] = False
        keep[best[take]] = False
        kept = keep.nonzero().squeeze(1)
        free = free[kept]
        sub = sub.index_select(0, kept).index_select(1, kept)
    if not found_i:
        return []
    return list(zip(torch.cat(found_i).tolist(), torch.cat(found_j).tolist(), strict=True))


def greedy_pairs(sim: torch.Tensor, max_pairs: int, seed: int) -> list[tuple[int, int]]:
    """Classic HEM: visit units in a seeded random order, pair with the heaviest free neighbour."""
    s = sim.cpu().numpy().copy()
    n = s.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    free = np.ones(n, dtype=bool)
    pairs: list[tuple[int, int]] = []
    for i in order:
        if len(pairs) >= max_pairs:
            break
        if not free[i]:
            continue
        row = np.where(free, s[i], -np.inf)
        row[i] = -np.inf
        j = int(np.argmax(row))
        if row[j] > 0:
            pairs.append((int(i), j))
            free[i] = free[j] = False
    return pairs


def assignment_from_pairs(n_fine: int, pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, int]:
    """Coarse index of every fine unit, numbered in order of each coarse unit's first member."""
    partner = np.full(n_fine, -1)
    for i, j in pairs:
        partner[i], partner[j] = j, i
    assign = np.full(n_fine, -1)
    n_coarse = 0
    for i in range(n_fine):
        if assign[i] < 0:
            assign[i] = n_coarse
            if partner[i] >= 0:
                assign[partner[i]] = n_coarse
            n_coarse += 1
    return torch.as_tensor(assign, dtype=torch.int64), n_coarse


def match_units(
    features: torch.Tensor,
    ratio: float = 0.5,
    method: str = "mutual_best",
    similarity: str = "cosine",
    seed: int = 0,
) -> Matching:
    """Match the units whose feature vectors are the rows of `features` (n, f): one round of
    pairing, or two when `ratio` < 0.5 (the second pairs the first's coarse units, each
    described by the sum of its members' features)."""
    if method not in MATCHING_METHODS:
        raise ValueError(f"unknown matching method {method!r}; choose one of {MATCHING_METHODS}")
    n = features.shape[0]
    target = coarse_target(n, ratio)
    assign = torch.arange(n, device=features.device)
    current, width, first_pairs = features, n, None
    for round_index in range(pairing_rounds(ratio)):
        max_pairs = min(width // 2, width - target)
        sim = similarity_matrix(current, similarity)
        pairs = (
            mutual_best_pairs(sim, max_pairs)
            if method == "mutual_best"
            else greedy_pairs(sim, max_pairs, seed + round_index)
        )
        step, width_after = assignment_from_pairs(width, pairs)
        step = step.to(features.device)
        first_pairs = pairs if first_pairs is None else first_pairs
        assign = step.index_select(0, assign)
        current = current.new_zeros(width_after, current.shape[1]).index_add_(0, step, current)
        if width_after == width or width_after <= target:
            width = width_after
            break
        width = width_after
    pair_tensor = torch.tensor(first_pairs, dtype=torch.int64).reshape(-1, 2)
    return Matching(assign, width, pair_tensor)


def merge_counts(assignments: list[torch.Tensor]) -> torch.Tensor:
    """How often each two units were merged: (n, n) int64 counts over `assignments`, each an
    (n,) coarse index per unit (e.g. one group's assignments at every re-matching); the
    diagonal is 0."""
    n = int(assignments[0].numel()) if assignments else 0
    counts = torch.zeros(n, n, dtype=torch.int64)
    for assign in assignments:
        if assign.numel() != n:
            raise ValueError(f"assignments of {assign.numel()} and {n} units cannot be combined")
        counts += (assign[:, None] == assign[None, :]).long()
    return counts.fill_diagonal_(0)


def coarse_members(assign: torch.Tensor) -> list[list[int]]:
    """The fine units of every coarse unit, in coarse order: [[i, j], [k], ...] from the
    (n_fine,) coarse index of every fine unit."""
    members: dict[int, list[int]] = {}
    for unit, coarse in enumerate(assign.tolist()):
        members.setdefault(coarse, []).append(unit)
    return [members[c] for c in sorted(members)]


def merged_pairs(assign: torch.Tensor) -> set[tuple[int, int]]:
    """The pairs (i, j), i < j, of units merged into one coarse unit, from (n,) `assign`."""
    return {(m[0], m[1]) for m in coarse_members(assign) if len(m) == 2}


def pairs_kept(assignments: list[torch.Tensor]) -> list[float]:
    """For each re-matching after the first: the share of the previous matching's pairs that
    it formed again (NaN when the previous one had no pairs). `assignments`: (n,) each."""
    shares = []
    for before, after in zip(assignments[:-1], assignments[1:], strict=True):
        old = merged_pairs(before)
        shares.append(len(old & merged_pairs(after)) / len(old) if old else float("nan"))
    return shares
