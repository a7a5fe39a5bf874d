"""Conv nets by name for notebooks and sweeps: `build_cnn("resnet", [16, 32, 64], ...)`."""

from __future__ import annotations

from ..multilevel.groups import WidthModel
from .convnet import ConvNet
from .mgnet import MgNet
from .resnet import ResNet

CNN_MODELS = ("plain", "resnet", "mgnet")


def build_cnn(
    name: str,
    widths: list[int],
    in_channels: int,
    num_classes: int,
    image_size: int,
    blocks: list[int] | None = None,
    iterations: list[int] | None = None,
    coarsen_streams: bool = False,
    smoothers: str = "iteration",
) -> WidthModel:
    """A conv net for (N, in_channels, image_size, image_size) images.

    "plain": `ConvNet(widths)`; "resnet": `ResNet(widths, blocks)` (one block per stage by
    default; `coarsen_streams` coarsens the residual streams too); "mgnet": `MgNet(iterations,
    widths)` (two smoothing steps per grid by default; `smoothers` "iteration" or "grid")."""
    if name == "plain":
        return ConvNet(widths, in_channels, num_classes, image_size)
    if name == "resnet":
        blocks = blocks or [1] * len(widths)
        return ResNet(widths, blocks, in_channels, num_classes, coarsen_streams=coarsen_streams)
    if name == "mgnet":
        iterations = iterations or [2] * len(widths)
        return MgNet(iterations, widths, in_channels, num_classes, smoothers=smoothers)
    raise ValueError(f"unknown model {name!r}; choose one of {list(CNN_MODELS)}")


def parameter_count(model: WidthModel) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
