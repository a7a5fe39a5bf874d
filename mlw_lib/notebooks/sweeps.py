"""Run one notebook over the Cartesian product of a grid of parameter values."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlw_lib.notebooks.catalog import resolve_notebook
from mlw_lib.notebooks.parameters import merge_parameters, validate_parameters
from mlw_lib.notebooks.running import continue_notebook, run_notebook


def value_slug(value: Any) -> str:
    """A filesystem-safe rendering of a parameter value: `[64, 128]` -> `64-128`."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = re.sub(r"[\[\]{}\"']", "", text)
    text = re.sub(r"[^A-Za-z0-9.+=-]+", "-", text)
    return text or "empty"


def point_suffix(point: Mapping[str, Any]) -> str:
    """File-name suffix for one grid point, e.g. `lr=0.1_widths=64-128`."""
    return "_".join(f"{name}={value_slug(value)}" for name, value in point.items())


def grid_points(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of the grid, in the order given."""
    for name, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"grid entry {name!r} must be a non-empty list of values")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def sweep_suffixes(points: list[dict[str, Any]]) -> list[str]:
    """One distinct suffix per grid point (a short hash is appended where slugs collide)."""
    suffixes = [point_suffix(point) for point in points]
    if len(set(suffixes)) == len(suffixes):
        return suffixes
    digests = [
        hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:8] for point in points
    ]
    return [f"{suffix}_{digest}" for suffix, digest in zip(suffixes, digests, strict=True)]


def run_sweep(
    name: str | Path,
    grid: Mapping[str, list[Any]],
    parameters: Mapping[str, Any] | None = None,
    parameter_file: Path | None = None,
    resume: bool = False,
    **kw: Any,
) -> list[Path]:
    """Run the notebook once per point of the grid's Cartesian product; return the copies.

    Grid values override `parameters`, which override the file. Every point's names and
    value types are validated before anything runs. Copies are named
    `<key>__<name>=<value>_....ipynb`. `resume=True` continues an interrupted sweep: finished
    points are not run again (see `continue_notebook`).
    """
    run = continue_notebook if resume else run_notebook
    source = resolve_notebook(name)
    base = merge_parameters(parameter_file, parameters)
    points = grid_points(grid)
    for point in points:  # names and value types of every run, before the first one starts
        validate_parameters(source, {**base, **point})
    return [
        run(source, parameters={**base, **point}, suffix=suffix, **kw)
        for point, suffix in zip(points, sweep_suffixes(points), strict=True)
    ]
