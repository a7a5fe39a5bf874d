"""Strided conv net with a fully connected head: the LLNL Darcy-flow CNN (DESIGN.md §4.6)."""

from __future__ import annotations

import torch
from torch import nn

from ..multilevel.groups import AxisBinding, Layout, Role, WidthModel
from .layout import bind, check_images
from .mlp import MLP, check_widths


class StridedConvNet(WidthModel):
    """x (N, in_channels, image_size, image_size) -> (N, outputs).

    One unpadded conv-ReLU per entry of `widths` with its own kernel size and stride (no
    BatchNorm, no pooling), flattened into an `MLP` head with hidden layers `hidden`. Groups
    "conv0", "conv1", ... (output channels) and the head's "hidden0", "hidden1", ... The
    head's input columns are coarsened by channel of the last conv, its pixels per unit.
    """

    def __init__(
        self,
        widths: list[int],
        kernels: list[int],
        strides: list[int],
        hidden: list[int],
        in_channels: int = 1,
        outputs: int = 1,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        widths, hidden = check_widths(widths, "conv widths"), check_widths(hidden)
        kernels, strides = check_widths(kernels, "kernels"), check_widths(strides, "strides")
        if not len(widths) == len(kernels) == len(strides):
            raise ValueError(
                f"give one kernel size and one stride per conv: {len(widths)} widths, "
                f"{len(kernels)} kernels, {len(strides)} strides"
            )
        size = image_size
        for kernel, stride in zip(kernels, strides, strict=True):
            if kernel > size:
                raise ValueError(
                    f"a {kernel}x{kernel} kernel does not fit the {size}x{size} maps of "
                    f"{image_size}x{image_size} inputs; use smaller kernels or strides"
                )
            size = (size - kernel) // stride + 1
        self.config = dict(
            widths=widths,
            kernels=kernels,
            strides=strides,
            hidden=hidden,
            in_channels=in_channels,
            outputs=outputs,
            image_size=image_size,
        )
        self.pixels = size * size  # per channel of the last conv's maps
        channels = [in_channels, *widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, k, stride=s)
            for a, b, k, s in zip(channels, widths, kernels, strides, strict=False)
        )
        self.head = MLP(widths[-1] * self.pixels, hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config["in_channels"], self.config["image_size"], "StridedConvNet")
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.flatten(1))

    def group_sizes(self) -> dict[str, int]:
        convs = {f"conv{i}": w for i, w in enumerate(self.config["widths"])}
        return convs | self.head.group_sizes()

    def param_layout(self) -> Layout:
        layout: Layout = {}
        for i in range(len(self.convs)):
            out = AxisBinding(f"conv{i}", 0, Role.OUT)
            bind(layout, f"convs.{i}.weight", out)
            bind(layout, f"convs.{i}.bias", out)
            if i:
                bind(layout, f"convs.{i}.weight", AxisBinding(f"conv{i - 1}", 1, Role.IN))
        layout |= {f"head.{name}": axes for name, axes in self.head.param_layout().items()}
        last = f"conv{len(self.convs) - 1}"
        bind(layout, "head.linears.0.weight", AxisBinding(last, 1, Role.IN, self.pixels))
        return layout

    def resized(self, sizes: dict[str, int]) -> StridedConvNet:
        widths = [sizes[f"conv{i}"] for i in range(len(self.convs))]
        hidden = [sizes[f"hidden{i}"] for i in range(len(self.config["hidden"]))]
        return StridedConvNet(**{**self.config, "widths": widths, "hidden": hidden})
