"""Heavy-edge matching of units on a similarity graph (DESIGN.md §4.2).

Units are paired (never more than two per coarse unit); pairs with similarity <= 0 are never
formed; a target ratio n_coarse / n_fine in (0, 1) caps the number of pairs at
floor(n_fine * (1 - ratio)) (at most n_fine // 2). Unpaired units stay singletons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MATCHING_METHODS = ("mutual_best", "greedy")
SIMILARITIES = ("cosine", "rbf")


@dataclass
class Matching:
    """Result of matching one group. `assign`: (n_fine,) coarse index of every fine unit."""

    assign: torch.Tensor
    n_coarse: int
    pairs: torch.Tensor  # (n_pairs, 2) fine indices

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


def max_pairs_for(n_fine: int, ratio: float) -> int:
    """Pairs needed to reach `ratio` = n_coarse / n_fine, capped at n_fine // 2."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"coarsening ratio must lie in (0, 1), got {ratio}")
    return min(n_fine // 2, int(np.floor(n_fine * (1.0 - ratio) + 1e-9)))


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
    """Match the units whose feature vectors are the rows of `features` (n, f)."""
    if method not in MATCHING_METHODS:
        raise ValueError(f"unknown matching method {method!r}; choose one of {MATCHING_METHODS}")
    n = features.shape[0]
    max_pairs = max_pairs_for(n, ratio)
    sim = similarity_matrix(features, similarity)
    pairs = (
        mutual_best_pairs(sim, max_pairs)
        if method == "mutual_best"
        else greedy_pairs(sim, max_pairs, seed)
    )
    assign, n_coarse = assignment_from_pairs(n, pairs)
    pair_tensor = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)
    return Matching(assign.to(features.device), n_coarse, pair_tensor)


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
