"""Decision boundaries of two-class nets in the plane (notebook 08): each net's probability
of class 1 over a grid, its 0.5 contour, and the test points coloured by their label."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..modes import in_mode


@torch.no_grad()
def class_one_probability(net: nn.Module, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """softmax(net(points))[:, 1] on the grid xs x ys: (len(ys), len(xs))."""
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    device = next(net.parameters()).device
    with in_mode(net, training=False):
        p = net(points.to(device)).softmax(dim=1)[:, 1]
    return p.cpu().numpy().reshape(gy.shape)


def plot_decision_boundaries(
    rows: Sequence[tuple[str, Mapping[str, nn.Module], torch.Tensor, torch.Tensor]],
    resolution: int = 200,
) -> Figure:
    """One row per (label, {title: net}, x (N, 2), y (N,)): a panel per net with its class-1
    probability (blue to red), the 0.5 contour in black and the points (x, y) on top."""
    if not rows or any(not nets for _, nets, _, _ in rows):
        raise ValueError("need at least one row, each with at least one net")
    columns = max(len(nets) for _, nets, _, _ in rows)
    fig, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(2.8 * columns, 2.8 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for row_axes, (label, nets, x, y) in zip(axes, rows, strict=True):
        points, labels = x.cpu().numpy(), y.cpu().numpy()
        low, high = points.min(axis=0), points.max(axis=0)
        pad = 0.1 * (high - low)
        xs = np.linspace(low[0] - pad[0], high[0] + pad[0], resolution)
        ys = np.linspace(low[1] - pad[1], high[1] + pad[1], resolution)
        for ax, (title, net) in zip(row_axes, nets.items(), strict=False):
            p = class_one_probability(net, xs, ys)
            ax.contourf(xs, ys, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
            ax.contour(xs, ys, p, levels=[0.5], colors="black", linewidths=1)
            ax.scatter(*points.T, c=labels, cmap="RdBu_r", s=4, edgecolors="none", vmin=0, vmax=1)
            ax.set_title(f"{label}: {title}", fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row_axes[len(nets) :]:
            ax.set_visible(False)
    return fig
