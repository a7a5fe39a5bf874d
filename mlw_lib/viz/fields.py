"""Maps of 2-D fields on a grid, row by row: e.g. the worst test samples of a PDE regression
problem with their coefficient, true solution and each method's error (notebook 07)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

ERROR_WORD = "error"  # columns whose title contains it share one symmetric colour range per row


def plot_field_rows(
    rows: Sequence[Mapping[str, np.ndarray]],
    labels: Sequence[str],
    title: str | None = None,
    same_scale: str | None = None,
) -> Figure:
    """One row of maps per entry of `rows` ({column title: field (n, n), [iy, ix] with y up}),
    each row labelled by `labels[i]`. Error columns (title containing "error") share a
    symmetric diverging colour range within their row; other maps use viridis, one range per
    row for the columns whose title contains `same_scale` (e.g. a truth and predictions)."""
    if len(rows) != len(labels) or not rows:
        raise ValueError(
            f"need one label per row and at least one row: {len(rows)} rows, {len(labels)} labels"
        )
    columns = max(len(row) for row in rows)
    fig = plt.figure(figsize=(2.7 * columns, 2.6 * len(rows) + 0.5), layout="constrained")
    for subfigure, row, label in zip(
        np.atleast_1d(fig.subfigures(len(rows), 1)), rows, labels, strict=True
    ):
        axes = subfigure.subplots(1, columns, squeeze=False)[0]
        errors = [np.abs(field).max() for name, field in row.items() if ERROR_WORD in name]
        limit = max(errors, default=0.0) or 1.0
        shared = [f for name, f in row.items() if same_scale and same_scale in name]
        for ax, (name, field) in zip(axes, row.items(), strict=False):
            style = {"cmap": "viridis"}
            if ERROR_WORD in name:
                style = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
            elif same_scale and same_scale in name:
                style |= {
                    "vmin": min(f.min() for f in shared),
                    "vmax": max(f.max() for f in shared),
                }
            image = ax.imshow(field, origin="lower", extent=(0, 1, 0, 1), **style)
            subfigure.colorbar(image, ax=ax, shrink=0.8)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[len(row) :]:
            ax.set_visible(False)
        subfigure.suptitle(label, fontsize=9)
    if title is not None:
        fig.suptitle(title)
    return fig
