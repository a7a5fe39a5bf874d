"""House style and the method colour palette."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

STYLE_FILE = Path(__file__).with_name("mlw.mplstyle")

# The single-level baseline is always drawn in this neutral dark grey.
SINGLE_LEVEL_COLOR = "#3b3b3b"
# Okabe-Ito without black/yellow (colour-blind safe), then Tol "muted" extras and yellow.
_PREFERRED_COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9"]
_EXTRA_COLORS = ["#882255", "#44AA99", "#999933", "#F0E442"]
METHOD_COLORS = _PREFERRED_COLORS + _EXTRA_COLORS

_SINGLE_LEVEL_NAMES = {"singlelevel", "single", "sl", "baseline"}


def use_house_style() -> None:
    """Apply the mlw matplotlib style and seaborn theme (idempotent; the style file wins)."""
    plt.style.use(STYLE_FILE)
    sns.set_theme(style="ticks", context="notebook")
    plt.style.use(STYLE_FILE)


def is_single_level(method: str) -> bool:
    """True for names of the single-level baseline ("single-level", "single_level", ...)."""
    return re.sub(r"[^a-z0-9]", "", method.lower()) in _SINGLE_LEVEL_NAMES


def method_palette(methods: Iterable[str]) -> dict[str, str]:
    """Map each method name to a hex colour, deterministically.

    Single-level is always `SINGLE_LEVEL_COLOR`. Every other method has a preferred slot in
    the colour-blind-safe palette from a stable hash of its name, so it keeps its colour in
    any figure where it does not collide; collisions are resolved in sorted-name order (the
    result does not depend on the input order). More than 10 methods reuse colours.
    """
    unique = sorted(set(methods))
    palette = {name: SINGLE_LEVEL_COLOR for name in unique if is_single_level(name)}
    taken: set[int] = set()
    for name in unique:
        if name in palette:
            continue
        slot = zlib.crc32(name.encode("utf-8")) % len(_PREFERRED_COLORS)
        if len(taken) < len(METHOD_COLORS):
            while slot in taken:
                slot = (slot + 1) % len(METHOD_COLORS)
        taken.add(slot)
        palette[name] = METHOD_COLORS[slot]
    return palette
