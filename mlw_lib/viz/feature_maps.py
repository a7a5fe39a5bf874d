"""Feature maps of merged channels: the fine channels next to the coarse channel they became."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from mlw_lib.modes import in_mode
from mlw_lib.multilevel import GroupTransfer, WidthModel
from mlw_lib.multilevel.batchnorm import batchnorm_layers, normalized_group


def first_normalized_layer(model: WidthModel) -> tuple[str, str]:
    """(module name, group) of the first BatchNorm layer whose channels are a unit group."""
    layout = model.param_layout()
    for name in batchnorm_layers(model):
        group = normalized_group(layout, name)
        if group is not None:
            return name, group
    raise ValueError(f"{type(model).__name__} has no BatchNorm layer over a coarsened group")


@torch.no_grad()
def feature_maps(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """relu(output of module `layer`), eval mode: images (N, C, H, W) -> (N, channels, h, w)."""
    captured = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, out: captured.update(out=out))
    try:
        with in_mode(model, training=False):
            model(images)
    finally:
        handle.remove()
    return torch.relu(captured["out"]).float().contiguous()


def merged_channel_rows(transfer: GroupTransfer, count: int) -> list[tuple[list[int], int]]:
    """Up to `count` coarse channels that merged two or more fine ones: ([fine...], coarse)."""
    rows = []
    for coarse in range(transfer.n_coarse):
        members = torch.nonzero(transfer.assign == coarse).flatten().tolist()
        if len(members) > 1:
            rows.append((members, coarse))
        if len(rows) == count:
            break
    return rows


def plot_merged_channels(
    fine: WidthModel,
    coarse: WidthModel,
    transfer: GroupTransfer,
    image: torch.Tensor,
    layer: str | None = None,
    count: int = 6,
    title: str | None = None,
) -> Figure:
    """One row per merged coarse channel: the fine channels' feature maps, then the coarse
    channel's, on one real `image` (C, H, W); each map scaled to its own [0, 1] range.

    `layer` defaults to the first BN layer over a coarsened group; `transfer` is that group's
    operator between `fine` and `coarse`."""
    if layer is None:
        layer, _ = first_normalized_layer(fine)
    batch = image.unsqueeze(0)
    fine_maps, coarse_maps = (
        feature_maps(fine, layer, batch)[0],
        feature_maps(coarse, layer, batch)[0],
    )
    rows = merged_channel_rows(transfer, count)
    if not rows:
        raise ValueError("no coarse channel in this transfer merges two fine channels")
    width = max(len(members) for members, _ in rows) + 1
    tiles = []
    for members, c in rows:
        maps = [fine_maps[i] for i in members] + [torch.zeros_like(fine_maps[0])] * (
            width - 1 - len(members)
        )
        tiles.extend([*maps, coarse_maps[c]])
    stack = torch.stack(tiles).unsqueeze(1)  # (rows * width, 1, h, w)
    low = stack.amin(dim=(2, 3), keepdim=True)
    high = stack.amax(dim=(2, 3), keepdim=True)
    stack = (stack - low) / (high - low).clamp_min(1e-8)
    from torchvision.utils import make_grid  # slow to import: only when drawn

    grid = make_grid(stack, nrow=width, padding=2, pad_value=float("nan"))[0].cpu().numpy()

    fig, (ax_image, ax_grid) = plt.subplots(
        1, 2, figsize=(3.0 + 1.3 * width, 1.1 * len(rows) + 1.0), width_ratios=[1, width]
    )
    shown = image.float().cpu()
    shown = (shown - shown.min()) / (shown.max() - shown.min()).clamp_min(1e-8)
    ax_image.imshow(shown.permute(1, 2, 0).numpy().squeeze(), cmap="gray")
    ax_image.set_title("input")
    ax_grid.imshow(grid, cmap="magma")
    tile = grid.shape[0] / len(rows)
    ax_grid.set_yticks(np.arange(len(rows)) * tile + tile / 2)
    ax_grid.set_yticklabels([f"{'+'.join(map(str, m))} → {c}" for m, c in rows])
    ax_grid.set_xticks(np.arange(width) * grid.shape[1] / width + grid.shape[1] / width / 2)
    ax_grid.set_xticklabels([f"fine {i + 1}" for i in range(width - 1)] + ["coarse"])
    for ax in (ax_image, ax_grid):
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    ax_image.set_xticks([])
    ax_image.set_yticks([])
    fig.suptitle(
        title or f"{layer}: fine channels → the coarse channel they merged into", fontsize=10
    )
    fig.tight_layout()
    return fig
