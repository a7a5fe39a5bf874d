"""Multilayer perceptron with one unit group per hidden layer (DESIGN.md §4.6)."""

from __future__ import annotations

import torch
from torch import nn

from ..multilevel.groups import AxisBinding, Layout, Role, WidthModel

ACTIVATIONS = {"relu": nn.functional.relu, "gelu": nn.functional.gelu, "tanh": torch.tanh}


def check_widths(widths: object, what: str = "hidden widths") -> list[int]:
    """Validate a list of layer widths: positive integers."""
    if isinstance(widths, int | str) or not hasattr(widths, "__iter__"):
        raise ValueError(f"{what} must be a list of positive integers, got {widths!r}")
    widths = list(widths)
    bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, int) or w < 1]
    if not widths or bad:
        raise ValueError(f"{what} must be a non-empty list of positive integers, got {widths!r}")
    return widths


class MLP(WidthModel):
    """x (N, in_features) -> logits (N, out_features); groups "hidden0", "hidden1", ...

    Input columns and output rows are never coarsened.
    """

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        out_features: int,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = check_widths(hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.config = dict(
            in_features=in_features,
            hidden=hidden,
            out_features=out_features,
            activation=activation,
            dropout=dropout,
        )
        sizes = [in_features, *hidden, out_features]
        self.linears = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activation = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.config["in_features"]:
            raise ValueError(
                f"MLP expects inputs of shape (N, {self.config['in_features']}), got "
                f"{tuple(x.shape)}; flatten images to (N, C*H*W) (e.g. load_mnist(flatten=True))"
                " or build the MLP with in_features to match"
            )
        *hidden, head = self.linears  # unpacking, not slicing: a slice builds a new ModuleList
        for linear in hidden:
            x = self.dropout(self.activation(linear(x)))
        return head(x)

    def group_sizes(self) -> dict[str, int]:
        return {f"hidden{i}": w for i, w in enumerate(self.config["hidden"])}

    def param_layout(self) -> Layout:
        layout: Layout = {}
        for i in range(len(self.config["hidden"])):
            out = AxisBinding(f"hidden{i}", 0, Role.OUT)
            layout[f"linears.{i}.weight"] = (out,)
            layout[f"linears.{i}.bias"] = (out,)
        for i in range(1, len(self.linears)):
            previous = AxisBinding(f"hidden{i - 1}", 1, Role.IN)
            layout[f"linears.{i}.weight"] = layout.get(f"linears.{i}.weight", ()) + (previous,)
        return layout

    def resized(self, sizes: dict[str, int]) -> MLP:
        hidden = [sizes[f"hidden{i}"] for i in range(len(self.config["hidden"]))]
        return MLP(**{**self.config, "hidden": hidden})
