"""MgNet (He & Xu 2019): a multigrid V-sweep whose smoothers are convolutions (DESIGN.md §4.6).

Groups: one channel group per grid, "grid{l}": the channels of both the solution u^l and the
data f^l on grid l. They are residual streams (u accumulates corrections, f is carried to the
next grid), so every conv + BN that writes into grid l and every conv that reads it share the
group, like ResNet's `coarsen_streams=True`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..multilevel.groups import Layout, WidthModel
from .layout import check_images, conv_bn, drop_absent, normalizes, reads_normalized
from .mlp import check_widths

SMOOTHERS = ("iteration", "grid")
NOTATION = re.compile(r"MgNet\[(\d+(?:,\d+)*)\]-(\d+(?:,\d+)*)")
NOTATION_FORM = "'MgNet[2,2,2,2]-64' (smoothing steps per grid, channels) or 'MgNet[2,2]-32,64'"


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


class Grid(nn.Module):
    """Grid l: u and f are (N, width, H_l, W_l); H_l = ceil(H_{l-1} / 2).

    `a` is the data-solution operator A^l, ONE conv used several times, each use with its
    own BN in `a_bns`: "enter" (A^l u^{l,0} added to f^l), "step{i}" (the residual of
    smoothing step i) and "leave" (the residual restricted to the next grid). `b` holds the
    smoothers B^{l,i}, one per step or one shared by the grid; `b_bns` one BN per step.
    `pi`/`r` (with `pi_bn`/`r_bn`) map the previous grid's u and residual to this grid.
    """

    def __init__(self, c_prev: int | None, width: int, steps: int, shared: bool, last: bool):
        super().__init__()
        uses = [f"step{i}" for i in range(steps)]
        if c_prev is None:  # grid 0: u^{0,0} = 0, so the first step skips A (A 0 = 0)
            uses = uses[1:]
        else:
            uses.insert(0, "enter")
            self.pi, self.pi_bn = conv3x3(c_prev, width, 2), nn.BatchNorm2d(width)
            self.r, self.r_bn = conv3x3(c_prev, width, 2), nn.BatchNorm2d(width)
        if not last:
            uses.append("leave")
        self.a = conv3x3(width, width) if uses else None
        self.a_bns = nn.ModuleDict({use: nn.BatchNorm2d(width) for use in uses})
        self.b = nn.ModuleList(conv3x3(width, width) for _ in range(1 if shared else steps))
        self.b_bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(steps))

    def residual(self, u: torch.Tensor | None, f: torch.Tensor, use: str) -> torch.Tensor:
        """f - BN_use(A u); u None stands for u = 0."""
        return f if u is None else f - self.a_bns[use](self.a(u))

    def smoother(self, step: int) -> nn.Conv2d:
        """The conv B^{l,step} (the same module at every step when shared)."""
        return self.b[step if len(self.b) > 1 else 0]

    def smooth(self, u: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        """u <- u + relu(BN(B relu(f - BN(A u)))) for every step; returns u."""
        for i, bn in enumerate(self.b_bns):
            r = torch.relu(self.residual(u, f, f"step{i}"))
            correction = torch.relu(bn(self.smoother(i)(r)))
            u = correction if u is None else u + correction
        return u

    def enter(self, u: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u^{l,0}, f^l) from the previous grid's u and its residual f - A u."""
        u = self.pi_bn(self.pi(u))
        return u, self.r_bn(self.r(residual)) + self.a_bns["enter"](self.a(u))


class MgNet(WidthModel):
    """x (N, in_channels, H, W) -> logits (N, num_classes).

    f^0 = relu(BN(conv3x3 x)) (widths[0] channels), u^{0,0} = 0. On grid l (widths[l]
    channels, H and W halved per grid) `iterations[l]` smoothing steps
        u <- u + relu(BN(B^{l,i}( relu(f^l - BN(A^l u)) ))),
    where the first step on grid 0 skips A (u = 0). Between grids (stride-2 convs Pi, R):
        u^{l+1,0} = BN(Pi^l u^l),  f^{l+1} = BN(R^l (f^l - BN(A^l u^l))) + BN(A^{l+1} u^{l+1,0}).
    Head: global average pooling of u on the last grid, linear. All convs 3x3 without bias,
    each followed by BN; A^l is one conv per grid with one BN per use, B^{l,i} one conv per
    step (`smoothers="iteration"`) or one per grid (`"grid"`), with one BN per step either way.
    """

    def __init__(
        self,
        iterations: list[int],
        widths: list[int] | int,
        in_channels: int = 3,
        num_classes: int = 10,
        smoothers: str = "iteration",
    ) -> None:
        super().__init__()
        iterations = check_widths(iterations, "MgNet iterations (smoothing steps per grid)")
        if isinstance(widths, int) and not isinstance(widths, bool):
            widths = [widths] * len(iterations)
        widths = check_widths(widths, "MgNet widths (channels per grid)")
        if len(widths) != len(iterations):
            raise ValueError(
                f"MgNet needs one width per grid: iterations {iterations} has {len(iterations)} "
                f"grids, widths {widths} has {len(widths)}; pass one width per grid or an int"
            )
        if smoothers not in SMOOTHERS:
            raise ValueError(f"unknown smoothers {smoothers!r}; choose one of {list(SMOOTHERS)}")
        self.config = dict(
            iterations=iterations,
            widths=widths,
            in_channels=in_channels,
            num_classes=num_classes,
            smoothers=smoothers,
        )
        self.extract = conv3x3(in_channels, widths[0])
        self.extract_bn = nn.BatchNorm2d(widths[0])
        last = len(widths) - 1
        self.grids = nn.ModuleList(
            Grid(widths[l - 1] if l else None, w, n, smoothers == "grid", l == last)
            for l, (w, n) in enumerate(zip(widths, iterations, strict=True))
        )
        self.head = nn.Linear(widths[-1], num_classes)

    @classmethod
    def from_notation(cls, notation: str, **kwargs) -> MgNet:
        """MgNet from the paper's notation: "MgNet[2,2,2,2]-64" (steps per grid, channels) or
        "MgNet[2,2]-32,64" (channels per grid); `kwargs` go to the constructor."""
        match = NOTATION.fullmatch(notation.replace(" ", ""))
        if match is None:
            raise ValueError(f"cannot parse MgNet notation {notation!r}; expected {NOTATION_FORM}")
        iterations, widths = ([int(n) for n in g.split(",")] for g in match.groups())
        return cls(iterations, widths[0] if len(widths) == 1 else widths, **kwargs)

    @property
    def notation(self) -> str:
        """E.g. "MgNet[2,2,2,2]-64" (one width when all grids share it)."""
        widths = self.config["widths"]
        shown = widths[:1] if len(set(widths)) == 1 else widths
        steps, channels = (",".join(map(str, ns)) for ns in (self.config["iterations"], shown))
        return f"MgNet[{steps}]-{channels}"

    def extra_repr(self) -> str:
        return f"{self.notation}, smoothers={self.config['smoothers']!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config["in_channels"], None, "MgNet")
        f = torch.relu(self.extract_bn(self.extract(x)))
        u = self.grids[0].smooth(None, f)
        for l in range(1, len(self.grids)):
            u, f = self.grids[l].enter(u, self.grids[l - 1].residual(u, f, "leave"))
            u = self.grids[l].smooth(u, f)
        return self.head(u.mean(dim=(2, 3)))

    # ------------------------------------------------------------------ unit groups
    def group_sizes(self) -> dict[str, int]:
        return {f"grid{l}": w for l, w in enumerate(self.config["widths"])}

    def _convs(self):
        """(conv, its BNs (one per use), grid it writes, grid it reads or None) per conv."""
        yield "extract", ["extract_bn"], 0, None
        for l, grid in enumerate(self.grids):
            p = f"grids.{l}"
            if l > 0:
                yield f"{p}.pi", [f"{p}.pi_bn"], l, l - 1
                yield f"{p}.r", [f"{p}.r_bn"], l, l - 1
            if grid.a is not None:
                yield f"{p}.a", [f"{p}.a_bns.{use}" for use in grid.a_bns], l, l
            bns = [f"{p}.b_bns.{i}" for i in range(len(grid.b_bns))]
            if len(grid.b) == 1:  # one (possibly shared) smoother for every step
                yield f"{p}.b.0", bns, l, l
            else:
                yield from ((f"{p}.b.{i}", [bn], l, l) for i, bn in enumerate(bns))

    def param_layout(self) -> Layout:
        layout: Layout = {}
        for conv, bns, writes, reads in self._convs():
            group = f"grid{writes}"
            conv_bn(layout, conv, bns[0], group, None if reads is None else f"grid{reads}")
            for bn in bns[1:]:  # further uses of a shared conv: only their BN is new
                normalizes(layout, bn, group)
        reads_normalized(layout, "head.weight", f"grid{len(self.grids) - 1}")
        return drop_absent(layout, self)

    def tied_axes(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """Every grid's channels: its writers' output axes (conv rows, BN gamma and beta) and
        its readers' input axes (conv and head columns)."""
        grids: dict[int, list[tuple[str, int]]] = {l: [] for l in range(len(self.grids))}
        for conv, bns, writes, reads in self._convs():
            grids[writes].append((f"{conv}.weight", 0))
            grids[writes].extend((f"{bn}.{p}", 0) for bn in bns for p in ("weight", "bias"))
            if reads is not None:
                grids[reads].append((f"{conv}.weight", 1))
        grids[len(self.grids) - 1].append(("head.weight", 1))
        return [(f"the u/f channels of grid {l}", axes) for l, axes in grids.items()]

    def resized(self, sizes: dict[str, int]) -> MgNet:
        widths = [sizes[f"grid{l}"] for l in range(len(self.grids))]
        return MgNet(**{**self.config, "widths": widths})
