"""What heavy-edge matching did: the matching as a graph across levels, a similarity matrix
ordered by the matching, the receptive fields of merged units, the stability of the pairs over
training, and what each level's net knows.

`assigns[l]` is the (n_l,) coarse index (at level l + 1) of every unit of one group at level l,
e.g. `transition.transfers[group].assign` of every transition of a hierarchy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from mlw_lib.multilevel.matching import coarse_members, merged_pairs, pairs_kept


def unit_order(assigns: Sequence[torch.Tensor]) -> list[list[int]]:
    """Per level (finest first), its units in an order that keeps the members of every coarse
    unit together, built from the coarsest level down: deterministic, no layout search."""
    orders = [list(range(int(assigns[-1].max()) + 1))]
    for assign in reversed(assigns):
        members = coarse_members(assign)
        orders.insert(0, [unit for coarse in orders[0] for unit in members[coarse]])
    return orders


def plot_matching_graph(
    assigns: Sequence[torch.Tensor],
    similarities: Sequence[torch.Tensor] | None = None,
    unit: str = "unit",
    title: str | None = None,
) -> Figure:
    """Units of one group as dots in one column per level, each joined to the coarse unit it
    became; a merged pair's edges are coloured by its similarity (`similarities[l]`: (n_l,
    n_l)), a singleton's edge is grey and dashed, a singleton's dot hollow."""
    orders = unit_order(assigns)
    height = max(3.0, 0.12 * len(orders[0]))
    fig, ax = plt.subplots(figsize=(2.2 + 1.8 * len(orders), height))
    y = [{u: 1 - (i + 0.5) / len(order) for i, u in enumerate(order)} for order in orders]
    cmap, segments, colors, dashed = plt.get_cmap("viridis"), [], [], []
    for level, assign in enumerate(assigns):
        pairs = merged_pairs(assign)
        paired = {u for pair in pairs for u in pair}
        for u, coarse in enumerate(assign.tolist()):
            line = [(level, y[level][u]), (level + 1, y[level + 1][coarse])]
            if u not in paired:
                dashed.append(line)
                continue
            partner = next(j if i == u else i for i, j in pairs if u in (i, j))
            value = float(similarities[level][u, partner]) if similarities else 1.0
            segments.append(line)
            colors.append(cmap((value + 1) / 2))
        singles = [u for u in range(len(assign)) if u not in paired]
        ax.scatter([level] * len(paired), [y[level][u] for u in paired], s=14, color="black")
        ax.scatter(
            [level] * len(singles),
            [y[level][u] for u in singles],
            s=14,
            facecolors="white",
            edgecolors="black",
        )
    last = len(orders) - 1
    ax.scatter([last] * len(orders[-1]), list(y[-1].values()), s=14, color="black")
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=1.2))
    ax.add_collection(LineCollection(dashed, colors="0.6", linewidths=0.8, linestyles="--"))
    if similarities:
        mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-1, 1))
        fig.colorbar(mappable, ax=ax, label="similarity of the merged pair")
    ax.set_xticks(
        range(len(orders)), [f"level {l}\n{len(o)} {unit}s" for l, o in enumerate(orders)]
    )
    ax.set_yticks([])
    ax.set_xlim(-0.3, last + 0.3)
    ax.grid(False)
    if title:
        ax.set_title(title)
    return fig


def plot_similarity_ordered(
    similarity: torch.Tensor,
    assign: torch.Tensor,
    weights: torch.Tensor,
    unit: str = "unit",
    title: str | None = None,
) -> Figure:
    """Three panels for one group: the (n, n) similarity matrix ordered by the matching (each
    merged pair a 2 x 2 block on the diagonal), the similarities of merged pairs against all
    other pairs, and the unit weights omega (n,) in the same order."""
    order = unit_order([assign])[0]
    values = similarity.double()[order][:, order].clone()
    values.fill_diagonal_(float("nan"))
    pairs = merged_pairs(assign)
    upper = torch.triu_indices(len(assign), len(assign), offset=1).T.tolist()
    matched = [float(similarity[i, j]) for i, j in pairs]
    others = [float(similarity[i, j]) for i, j in upper if (i, j) not in pairs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    sns.heatmap(
        values.numpy(),
        ax=axes[0],
        cmap="vlag",
        vmin=-1,
        vmax=1,
        square=True,
        xticklabels=False,
        yticklabels=False,
        cbar_kws={"label": "similarity"},
    )
    axes[0].set_title(f"{unit}s ordered by the matching")
    bins = np.linspace(-1, 1, 41)
    axes[1].hist(others, bins=bins, density=True, alpha=0.6, label=f"other pairs ({len(others)})")
    axes[1].hist(matched, bins=bins, density=True, alpha=0.8, label=f"merged ({len(matched)})")
    axes[1].set_xlabel("similarity")
    axes[1].set_ylabel("density")
    axes[1].legend(fontsize=8)
    axes[2].bar(range(len(order)), weights.double()[order].numpy(), width=1.0)
    axes[2].set_xlabel(f"{unit} (matching order)")
    axes[2].set_ylabel("unit weight ω")
    if title:
        fig.suptitle(title)
    return fig


def plot_merged_receptive_fields(
    fine_rows: torch.Tensor,
    coarse_rows: torch.Tensor,
    assign: torch.Tensor,
    shape: tuple[int, ...],
    max_pairs: int = 6,
    title: str | None = None,
) -> Figure:
    """Incoming weights of merged units as images: per pair (the first `max_pairs`), the two
    fine units' rows `fine_rows` (n, prod(shape)) and the coarse unit's row `coarse_rows`
    (n_c, prod(shape)) it became, reshaped to `shape` (e.g. (28, 28)); one symmetric colour
    range per row of panels."""
    pairs = [(c, m) for c, m in enumerate(coarse_members(assign)) if len(m) == 2]
    shown = pairs[:max_pairs]
    if not shown:
        raise ValueError("no two units were merged: nothing to show")
    fig, axes = plt.subplots(len(shown), 3, figsize=(6, 2 * len(shown)), squeeze=False)
    for row, (c, (i, j)) in zip(axes, shown, strict=True):
        images = [fine_rows[i], fine_rows[j], coarse_rows[c]]
        limit = float(max(image.abs().max() for image in images))
        for ax, image, label in zip(
            row, images, (f"fine {i}", f"fine {j}", f"coarse {c}"), strict=True
        ):
            ax.imshow(
                image.reshape(shape).numpy(),
                cmap="RdBu_r",
                vmin=-limit,
                vmax=limit,
                interpolation="nearest",
            )
            ax.set_title(label, fontsize=8)
            ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def stability_frame(log: Sequence[Mapping], level: int = 0) -> pd.DataFrame:
    """One row per re-matching of `level` and group in `log` (a `FASCycle.matchings_log`):
    cycle, group, achieved ratio n_coarse / n_fine, and the share of the previous matching's
    pairs formed again (NaN for the first)."""
    entries = [entry for entry in log if entry["level"] == level]
    rows = []
    for group in entries[0]["assign"] if entries else []:
        assigns = [entry["assign"][group] for entry in entries]
        kept = [float("nan"), *pairs_kept(assigns)]
        for entry, assign, share in zip(entries, assigns, kept, strict=True):
            ratio = (int(assign.max()) + 1) / len(assign)
            rows.append({"cycle": entry["cycle"], "group": group, "ratio": ratio, "kept": share})
    return pd.DataFrame(rows, columns=["cycle", "group", "ratio", "kept"])


def plot_matching_stability(frame: pd.DataFrame, title: str | None = None) -> Figure:
    """Two panels against the cycle of each re-matching (`stability_frame`), one line per
    group: the share of pairs kept, and the achieved coarsening ratio."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharex=True)
    for ax, column, label in zip(
        axes,
        ("kept", "ratio"),
        ("pairs kept from the previous matching", "n_coarse / n_fine"),
        strict=True,
    ):
        sns.lineplot(frame, x="cycle", y=column, hue="group", marker="o", ax=ax)
        ax.set_ylabel(label)
        ax.set_xlabel("cycle of the re-matching")
    axes[0].set_ylim(-0.05, 1.05)
    if title:
        fig.suptitle(title)
    return fig


def plot_level_knowledge(frame: pd.DataFrame, title: str | None = None) -> Figure:
    """What each level's net knows: test accuracy per level, one panel per model, each bar
    labelled with the net's parameter count. `frame`: columns model, level, parameters,
    test_accuracy (rows of `evaluate_levels`, several seeds allowed: mean, with spread)."""
    models = list(pd.unique(frame["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = frame[frame["model"] == model]
        sns.barplot(rows, x="level", y="test_accuracy", ax=ax, errorbar="sd", color="C0")
        counts = rows.groupby("level")["parameters"].mean()
        for patch, count in zip(ax.patches, counts, strict=False):
            ax.annotate(
                f"{count:,.0f}",
                (patch.get_x() + patch.get_width() / 2, 0.02),
                ha="center",
                fontsize=7,
                rotation=90,
                color="white",
            )
        ax.set_title(model, fontsize=9)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test accuracy (bar label: parameters)")
    if title:
        fig.suptitle(title)
    return fig
