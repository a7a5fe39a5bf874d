"""Plain conv net: conv3x3-BN-ReLU-maxpool stages, then a linear head (DESIGN.md §4.6)."""

from __future__ import annotations

import torch
from torch import nn

from ..multilevel.groups import Layout, WidthModel
from .layout import check_images, conv_bn, drop_absent, reads_normalized
from .mlp import check_widths

HEADS = ("pool", "flatten")


class ConvNet(WidthModel):
    """x (N, in_channels, image_size, image_size) -> logits (N, num_classes).

    One conv3x3-BN-ReLU-maxpool(2) stage per entry of `widths`; groups "conv0", "conv1", ...
    (the output channels of each conv). Head: global average pooling then linear ("pool"), or
    flatten then linear ("flatten", its input axis coarsened by channel, pixels per unit).
    """

    def __init__(
        self,
        widths: list[int],
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        head: str = "pool",
        conv_bias: bool = False,
    ) -> None:
        super().__init__()
        widths = check_widths(widths, "conv widths")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {list(HEADS)}")
        final = image_size // 2 ** len(widths)
        if final < 1:
            raise ValueError(
                f"{len(widths)} pooling stages shrink {image_size}x{image_size} images below "
                f"1 pixel; use fewer widths or larger images"
            )
        self.config = dict(
            widths=widths,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            head=head,
            conv_bias=conv_bias,
        )
        channels = [in_channels, *widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1, bias=conv_bias)
            for a, b in zip(channels, widths, strict=False)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for w in widths)
        self.pixels = final * final if head == "flatten" else 1
        self.head = nn.Linear(widths[-1] * self.pixels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config["in_channels"], self.config["image_size"], "ConvNet")
        for conv, bn in zip(self.convs, self.bns, strict=True):
            x = nn.functional.max_pool2d(torch.relu(bn(conv(x))), 2)
        x = x.flatten(1) if self.config["head"] == "flatten" else x.mean(dim=(2, 3))
        return self.head(x)

    def group_sizes(self) -> dict[str, int]:
        return {f"conv{i}": w for i, w in enumerate(self.config["widths"])}

    def param_layout(self) -> Layout:
        layout: Layout = {}
        for i in range(len(self.convs)):
            conv_bn(layout, f"convs.{i}", f"bns.{i}", f"conv{i}", f"conv{i - 1}" if i else None)
        last = f"conv{len(self.convs) - 1}"
        reads_normalized(layout, "head.weight", last, self.pixels)
        return drop_absent(layout, self)

    def resized(self, sizes: dict[str, int]) -> ConvNet:
        widths = [sizes[f"conv{i}"] for i in range(len(self.convs))]
        return ConvNet(**{**self.config, "widths": widths})
