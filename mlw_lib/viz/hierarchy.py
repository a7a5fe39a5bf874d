"""Width hierarchy of a multilevel network: unit-group widths per level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

HIERARCHY_COLUMNS = ("level", "group", "width", "ratio")


def hierarchy_frame(widths: Mapping[str, Sequence[int]] | pd.DataFrame) -> pd.DataFrame:
    """Tidy table (level, group, width, ratio) from `{group: [width at level 0, 1, ...]}`.

    Level 0 is the finest. `ratio` is width[level] / width[level - 1] (1.0 at level 0). A
    DataFrame input must have columns level, group, width; a missing `ratio` is computed.
    """
    if isinstance(widths, pd.DataFrame):
        missing = [c for c in ("level", "group", "width") if c not in widths.columns]
        if missing:
            raise KeyError(f"hierarchy table lacks columns {missing}")
        frame = widths.reset_index(drop=True)
        if "ratio" not in frame.columns:
            ordered = frame.sort_values(["group", "level"], kind="stable")
            previous = ordered.groupby("group", sort=False)["width"].shift(1)
            frame["ratio"] = (ordered["width"] / previous).fillna(1.0)  # aligned on the index
        return frame[list(HIERARCHY_COLUMNS)].reset_index(drop=True)
    rows = []
    for group, group_widths in widths.items():
        for level, width in enumerate(group_widths):
            ratio = 1.0 if level == 0 else width / group_widths[level - 1]
            rows.append({"level": level, "group": group, "width": int(width), "ratio": ratio})
    return pd.DataFrame(rows, columns=list(HIERARCHY_COLUMNS))


def plot_hierarchy_widths(
    widths: Mapping[str, Sequence[int]] | pd.DataFrame, title: str | None = None
) -> Figure:
    """Grouped bars: one group of bars per unit group, one bar per level (finest first).

    Each bar is labelled with its width and, below the finest level, the achieved coarsening
    ratio to the next finer level (e.g. "32 (×0.50)").
    """
    frame = hierarchy_frame(widths)
    groups = list(pd.unique(frame["group"]))
    levels = sorted(pd.unique(frame["level"]))
    colors = sns.color_palette("crest", n_colors=len(levels))
    bar_width = 0.8 / len(levels)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.35 * len(groups) * len(levels)), 3.6))
    positions = np.arange(len(groups), dtype=float)
    for offset, level in enumerate(levels):
        at_level = frame[frame["level"] == level].set_index("group")
        present = [g for g in groups if g in at_level.index]
        shift = (offset - (len(levels) - 1) / 2) * bar_width
        x = positions[[groups.index(g) for g in present]] + shift
        heights = at_level.loc[present, "width"].to_numpy()
        ratios = at_level.loc[present, "ratio"].to_numpy()
        bars = ax.bar(x, heights, width=bar_width, color=colors[offset], label=str(level))
        labels = [
            f"{int(h)}" if level == levels[0] else f"{int(h)} (×{r:.2f})"
            for h, r in zip(heights, ratios, strict=True)
        ]
        ax.bar_label(
            bars, labels=labels, padding=2, fontsize=7, rotation=90 if len(levels) > 3 else 0
        )
    ax.set_xticks(positions, groups)
    ax.set_xlabel("unit group")
    ax.set_ylabel("width (units)")
    ax.margins(y=0.2)
    ax.legend(title="level", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title is not None:
        ax.set_title(title)
    return fig
