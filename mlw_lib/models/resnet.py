"""Small ResNet of basic blocks in stages (DESIGN.md §4.6).

Groups: the inner channels of every block, "s{stage}b{block}" (coarsened by default). With
`coarsen_streams=True` also one group per stage's residual stream, "stream{stage}", shared by
every conv, BN and shortcut that writes into the stream and every layer that reads it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..multilevel.groups import Layout, WidthModel
from .layout import check_images, conv_bn, drop_absent, reads_normalized
from .mlp import check_widths


class BasicBlock(nn.Module):
    """x (N, c_in, H, W) -> (N, c_out, H/stride, W/stride):
    relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut x), shortcut = 1x1 conv + BN when the
    shape changes, identity otherwise."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.projects = stride != 1 or c_in != c_out
        if self.projects:
            self.short_conv = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            self.short_bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        shortcut = self.short_bn(self.short_conv(x)) if self.projects else x
        return torch.relu(self.bn2(self.conv2(h)) + shortcut)


class ResNet(WidthModel):
    """x (N, in_channels, H, W) -> logits (N, num_classes).

    Stem conv3x3-BN-ReLU (widths[0] channels), then stage i: `blocks[i]` basic blocks with
    stream width widths[i] (stride 2 at the first block of every stage but the first),
    global average pooling, linear head. `inner[i][j]` is block j of stage i's inner width
    (default: the stage width).
    """

    has_blocks = True

    def __init__(
        self,
        widths: list[int],
        blocks: list[int],
        in_channels: int = 3,
        num_classes: int = 10,
        coarsen_streams: bool = False,
        inner: list[list[int]] | None = None,
    ) -> None:
        super().__init__()
        widths, blocks = check_widths(widths, "stage widths"), check_widths(blocks, "blocks")
        if len(widths) != len(blocks):
            raise ValueError(f"one block count per stage: widths {widths}, blocks {blocks}")
        inner = inner or [[w] * n for w, n in zip(widths, blocks, strict=True)]
        if [len(row) for row in inner] != blocks:
            raise ValueError(f"inner widths {inner} do not match blocks per stage {blocks}")
        for row in inner:
            check_widths(row, "inner widths")
        self.config = dict(
            widths=widths,
            blocks=blocks,
            in_channels=in_channels,
            num_classes=num_classes,
            coarsen_streams=coarsen_streams,
            inner=[list(row) for row in inner],
        )
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        stages, c_in = [], widths[0]
        for i, (width, row) in enumerate(zip(widths, inner, strict=True)):
            stage = [
                BasicBlock(c_in if j == 0 else width, w, width, 2 if i > 0 and j == 0 else 1)
                for j, w in enumerate(row)
            ]
            stages.append(nn.Sequential(*stage))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config["in_channels"], None, "ResNet")
        x = torch.relu(self.stem_bn(self.stem(x)))
        for stage in self.stages:
            for block in stage:
                x = self.run_block(block, x)
        return self.head(x.mean(dim=(2, 3)))

    # ------------------------------------------------------------------ unit groups
    def _stream(self, stage: int) -> str | None:
        return f"stream{stage}" if self.config["coarsen_streams"] else None

    def group_sizes(self) -> dict[str, int]:
        sizes = {
            f"s{i}b{j}": w for i, row in enumerate(self.config["inner"]) for j, w in enumerate(row)
        }
        if self.config["coarsen_streams"]:
            sizes.update({f"stream{i}": w for i, w in enumerate(self.config["widths"])})
        return sizes

    def _block_names(self):
        """(stage, block, module prefix, group of the stream it reads, of the one it writes)."""
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                reads = self._stream(i - 1 if i > 0 and j == 0 else i)
                yield i, j, f"stages.{i}.{j}", block, reads, self._stream(i)

    def param_layout(self) -> Layout:
        layout: Layout = {}
        conv_bn(layout, "stem", "stem_bn", self._stream(0), None)
        for i, j, prefix, block, reads, writes in self._block_names():
            conv_bn(layout, f"{prefix}.conv1", f"{prefix}.bn1", f"s{i}b{j}", reads)
            conv_bn(layout, f"{prefix}.conv2", f"{prefix}.bn2", writes, f"s{i}b{j}")
            if block.projects:
                conv_bn(layout, f"{prefix}.short_conv", f"{prefix}.short_bn", writes, reads)
        reads_normalized(layout, "head.weight", self._stream(len(self.stages) - 1))
        return drop_absent(layout, self)

    def tied_axes(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """Every stage's residual stream: its writers' output axes and its readers' inputs."""
        streams: dict[int, list[tuple[str, int]]] = {}

        def writes(stage: int, conv: str, bn: str) -> None:
            axes = [(f"{conv}.weight", 0), (f"{bn}.weight", 0), (f"{bn}.bias", 0)]
            streams.setdefault(stage, []).extend(axes)

        writes(0, "stem", "stem_bn")
        for i, j, prefix, block, _, _ in self._block_names():
            reads = i - 1 if i > 0 and j == 0 else i
            writes(i, f"{prefix}.conv2", f"{prefix}.bn2")
            streams[reads].append((f"{prefix}.conv1.weight", 1))
            if block.projects:
                writes(i, f"{prefix}.short_conv", f"{prefix}.short_bn")
                streams[reads].append((f"{prefix}.short_conv.weight", 1))
        streams[len(self.stages) - 1].append(("head.weight", 1))
        return [(f"the residual stream of stage {i}", axes) for i, axes in streams.items()]

    def resized(self, sizes: dict[str, int]) -> ResNet:
        inner = [
            [sizes[f"s{i}b{j}"] for j in range(n)] for i, n in enumerate(self.config["blocks"])
        ]
        widths = self.config["widths"]
        if self.config["coarsen_streams"]:
            widths = [sizes[f"stream{i}"] for i in range(len(widths))]
        return ResNet(**{**self.config, "widths": widths, "inner": inner})
