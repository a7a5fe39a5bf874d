"""Argument checks shared by the configs: each raises ValueError naming the field, the value
it got and what it accepts, so a bad setting is refused before any work starts."""

from __future__ import annotations

import math


def choice(name: str, value: object, allowed: tuple) -> None:
    """`value` is one of `allowed`."""
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(allowed)}")


def flag(name: str, value: object) -> None:
    """`value` is True or False (not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def integer(name: str, value: object, minimum: int) -> None:
    """`value` is an int >= `minimum` (a bool or a float such as 3.0 is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum)
        raise ValueError(f"{name} must be {what or f'an integer >= {minimum}'}, got {value!r}")


def number(
    name: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """`value` is a finite int or float in [low, high]; `open_low`/`open_high` exclude the
    bound itself."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok and (low < value or (value == low and not open_low)):
        if value < high or (value == high and not open_high):
            return
    bounds = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    raise ValueError(f"{name} must be a finite number in {bounds}, got {value!r}")
