"""Helpers that declare the unit-group layout of conv layers (DESIGN.md §4.6)."""

from __future__ import annotations

from torch import nn

from ..multilevel.groups import AxisBinding, Layout, Role


def bind(layout: Layout, name: str, binding: AxisBinding | None) -> None:
    """Append `binding` to parameter `name`'s bindings (None: that axis is not coarsened)."""
    if binding is not None:
        layout[name] = layout.get(name, ()) + (binding,)


def conv_bn(
    layout: Layout,
    conv: str,
    bn: str,
    out_group: str | None,
    in_group: str | None,
    in_unit_size: int = 1,
) -> None:
    """conv -> BatchNorm: the conv's rows (and bias, kept out of matching: BN removes it) are
    the units of `out_group`, BN's gamma/beta follow them; the conv's columns read the
    (normalised) units of `in_group`."""
    if out_group is not None:
        bind(layout, f"{conv}.weight", AxisBinding(out_group, 0, Role.OUT))
        bind(layout, f"{conv}.bias", AxisBinding(out_group, 0, Role.OUT, in_matching=False))
        normalizes(layout, bn, out_group)
    reads_normalized(layout, f"{conv}.weight", in_group, in_unit_size)


def normalizes(layout: Layout, bn: str, group: str) -> None:
    """BatchNorm `bn`'s gamma and beta follow the channels of `group` (averaged)."""
    for p in ("weight", "bias"):
        bind(layout, f"{bn}.{p}", AxisBinding(group, 0, Role.NORM))


def reads_normalized(layout: Layout, weight: str, group: str | None, unit_size: int = 1) -> None:
    """`weight`'s columns (axis 1) read the BatchNorm-normalised units of `group` (None: the
    input is not coarsened); `unit_size` entries per unit, e.g. pixels after a flatten."""
    if group is not None:
        bind(layout, weight, AxisBinding(group, 1, Role.IN_NORMALIZED, unit_size))


def drop_absent(layout: Layout, model: nn.Module) -> Layout:
    """The layout without entries for parameters the model does not have (convs without bias)."""
    names = {name for name, _ in model.named_parameters()}
    return {name: bindings for name, bindings in layout.items() if name in names}


def check_images(x, channels: int, size: int | None, model: str) -> None:
    """Raise ValueError unless x is (N, channels, size, size) (any size when `size` is None)."""
    shape = tuple(x.shape)
    ok = x.dim() == 4 and shape[1] == channels and (size is None or shape[2:] == (size, size))
    if not ok:
        spatial = "H, W" if size is None else f"{size}, {size}"
        raise ValueError(
            f"{model} expects images of shape (N, {channels}, {spatial}), got {shape}; "
            f"check the dataset (channels, image size) against the model's in_channels and "
            f"image_size"
        )
