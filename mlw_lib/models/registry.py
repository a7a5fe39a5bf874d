"""Nets by name for notebooks and sweeps: `build_cnn("resnet", [16, 32, 64], ...)`, and the
reference nets of the PDE regression problems: `build_pde_net("darcy", "cnn", 400)`."""

from __future__ import annotations

from ..multilevel.groups import WidthModel
from .convnet import ConvNet
from .mgnet import MgNet
from .mlp import MLP
from .resnet import ResNet
from .strided import StridedConvNet

CNN_MODELS = ("plain", "resnet", "mgnet")
PDE_NETS = {"darcy": ("fc", "cnn"), "poisson": ("fc",)}


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


def build_pde_net(problem: str, net: str, width: int, grid: int = 32) -> WidthModel:
    """The LLNL reference net of `problem` on an n x n `grid`, at `width` (its paper width):

    darcy fc      MLP n^2 - w - w - w - 1                                  (w = 1024)
    darcy cnn     convs [w/4, w/2, w] (kernel 11 stride 2, 7, 3; ReLU), head
                  1024 - 1024 - 1                                            (w = 400)
    poisson fc    MLP 3 n^2 - w - w - n^2                                   (w = 400)
    """
    if problem not in PDE_NETS or net not in PDE_NETS[problem]:
        choices = ", ".join(f"{p} {n}" for p, nets in PDE_NETS.items() for n in nets)
        raise ValueError(f"no reference net {problem!r} {net!r}; choose one of: {choices}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 4:
        raise ValueError(f"width must be an integer >= 4, got {width!r}")
    if problem == "poisson":
        return MLP(3 * grid * grid, [width, width], grid * grid)
    if net == "fc":
        return MLP(grid * grid, [width] * 3, 1)
    widths = [max(1, width // 4), max(1, width // 2), width]
    return StridedConvNet(widths, [11, 7, 3], [2, 1, 1], [1024, 1024], image_size=grid)


def parameter_count(model: WidthModel) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
