"""Attention in a width hierarchy: maps of merged heads, where a review is looked at, head
entropies, head similarities with the merged pairs, and how often heads merged.

Maps are `TransformerClassifier.attention_maps` outputs for one sequence: (heads, T, T), rows
= queries, columns = keys; `tokens` are its T token strings. Padding is left out by the
caller (slice to the real tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mlw_lib.multilevel.matching import coarse_members


def attention_entropy(maps: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy (nats) of each head's attention rows: (heads, T, T) -> (heads,), or
    (N, heads, T, T) with `pad` (N, T) (True at padding: those queries left out) ->
    (heads,). Low: a head looks at few tokens; log T: it spreads evenly."""
    p = maps.double()
    rows = -(p * p.clamp_min(1e-30).log()).sum(dim=-1)  # (..., heads, T)
    if pad is None:
        return rows.mean(dim=-1)
    real = (~pad).double()[:, None, :]  # (N, 1, T)
    return (rows * real).sum(dim=(0, 2)) / real.sum(dim=(0, 2))


def attention_received(maps: torch.Tensor) -> torch.Tensor:
    """Attention each token receives, averaged over heads and queries: (heads, T, T) -> (T,),
    summing to 1 (what the pooled representation mixes in, in the last block)."""
    return maps.double().mean(dim=(0, 1))


def plot_merged_head_maps(
    fine_maps: torch.Tensor,
    coarse_maps: torch.Tensor,
    assign: torch.Tensor,
    tokens: Sequence[str],
    title: str | None = None,
) -> Figure:
    """One row per coarse head that merged two fine heads: the fine heads' maps, then the
    coarse head's; one colour range for all. `fine_maps` (H_f, T, T), `coarse_maps`
    (H_c, T, T), `assign` (H_f,) coarse head of every fine head."""
    pairs = [(c, members) for c, members in enumerate(coarse_members(assign)) if len(members) > 1]
    if not pairs:
        raise ValueError("no two heads were merged: nothing to compare")
    vmax = float(max(fine_maps.max(), coarse_maps.max()))
    size = max(2.2, 0.16 * len(tokens))
    fig, axes = plt.subplots(
        len(pairs), 3, figsize=(3 * size + 1, size * len(pairs)), squeeze=False
    )
    for row, (coarse, (i, j)) in zip(axes, pairs, strict=True):
        panels = [(fine_maps[i], f"fine head {i}"), (fine_maps[j], f"fine head {j}")]
        panels.append((coarse_maps[coarse], f"coarse head {coarse}"))
        for ax, (values, label) in zip(row, panels, strict=True):
            image = ax.imshow(
                values.numpy(), vmin=0.0, vmax=vmax, cmap="viridis", interpolation="nearest"
            )
            ax.grid(False)
            ax.set_title(label, fontsize=9)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention probability")
    if title:
        fig.suptitle(title)
    return fig


def plot_token_attention(
    tokens: Sequence[str],
    weights: Mapping[str, torch.Tensor],
    per_line: int = 14,
    title: str | None = None,
) -> Figure:
    """The tokens as text, once per entry of `weights` ({label: (T,) weights}), each token
    on a background whose strength is its weight (one scale, from the smallest to the
    largest weight of all entries)."""
    low = min(float(w.min()) for w in weights.values())
    span = max(float(w.max()) for w in weights.values()) - low or 1.0
    lines = -(-len(tokens) // per_line)
    fig, axes = plt.subplots(
        len(weights), 1, figsize=(11, 0.32 * lines * len(weights) + 0.6), squeeze=False
    )
    cmap = plt.get_cmap("Oranges")
    for ax, (label, w) in zip(axes[:, 0], weights.items(), strict=True):
        ax.set_axis_off()
        ax.set_title(label, fontsize=9, loc="left")
        for index, token in enumerate(tokens):
            x, y = (index % per_line) / per_line, 1 - (index // per_line + 0.5) / lines
            color = cmap(0.85 * (float(w[index]) - low) / span)
            box = dict(boxstyle="round,pad=0.15", facecolor=color, edgecolor="none")
            ax.text(x, y, token, fontsize=8, va="center", bbox=box, transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def plot_head_entropy(entropies: Mapping[str, torch.Tensor], title: str | None = None) -> Figure:
    """Bars of every head's mean attention entropy, one panel per entry ({label: (heads,)}),
    e.g. {"fine": ..., "coarse": ...}; one y scale."""
    fig, axes = plt.subplots(1, len(entropies), figsize=(3.2 * len(entropies), 2.8), sharey=True)
    for ax, (label, values) in zip(np.atleast_1d(axes), entropies.items(), strict=True):
        ax.bar(range(len(values)), values.numpy(), color=sns.color_palette("crest", 1)[0])
        ax.set_xticks(range(len(values)))
        ax.set_xlabel("head")
        ax.set_title(label, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("attention entropy (nats)")
    if title:
        fig.suptitle(title)
    return fig


def plot_similarity_with_pairs(
    similarity: torch.Tensor, assign: torch.Tensor, unit: str = "head", title: str | None = None
) -> Figure:
    """The units' similarity matrix (n, n; diagonal blank), merged pairs outlined."""
    values = similarity.double().clone()
    values.fill_diagonal_(float("nan"))
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(values), 1.0 + 0.4 * len(values)))
    sns.heatmap(
        values.numpy(),
        ax=ax,
        cmap="vlag",
        vmin=-1,
        vmax=1,
        square=True,
        annot=True,
        fmt=".2f",
        annot_kws={"fontsize": 7},
        cbar_kws={"label": "cosine similarity"},
    )
    for members in coarse_members(assign):
        if len(members) == 2:
            for i, j in (members, members[::-1]):
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", lw=2))
    ax.set_xlabel(unit)
    ax.set_ylabel(unit)
    if title:
        ax.set_title(title)
    return fig


def plot_merge_counts(
    counts: torch.Tensor, matchings: int, unit: str = "head", title: str | None = None
) -> Figure:
    """How often each two units were merged, as a share of `matchings` re-matchings
    (`counts` (n, n) from `merge_counts`)."""
    share = counts.double() / max(matchings, 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(share), 1.0 + 0.4 * len(share)))
    sns.heatmap(
        share.numpy(),
        ax=ax,
        cmap="rocket_r",
        vmin=0,
        vmax=1,
        square=True,
        annot=True,
        fmt=".2f",
        annot_kws={"fontsize": 7},
        cbar_kws={"label": f"share of {matchings} matchings"},
    )
    ax.set_xlabel(unit)
    ax.set_ylabel(unit)
    if title:
        ax.set_title(title)
    return fig
