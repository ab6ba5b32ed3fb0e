"""Parameter checks shared by the channel modules: one message format everywhere.

A bad value raises :class:`ValueError` naming the parameter, the value and the allowed range,
e.g. ``length_km = -3: must be a number in [0, 5000] km``.
"""
from __future__ import annotations

import math

__all__ = ["check_range", "check_choice", "check_int"]


def check_range(name: str, value, lo: float, hi: float, unit: str = "", *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float, or ValueError if it is not a finite number in the interval."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    allowed = f"a number in {left}{lo:g}, {hi:g}{right}" + (f" {unit}" if unit else "")
    if isinstance(value, bool):
        raise ValueError(f"{name} = {value!r}: must be {allowed}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} = {value!r}: must be {allowed}") from None
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        raise ValueError(f"{name} = {value!r}: must be {allowed}")
    return v


def check_int(name: str, value, lo: int, hi: int, unit: str = "") -> int:
    """``value`` as an int, or ValueError if it is not an integer in [lo, hi]."""
    allowed = f"an integer in [{lo}, {hi}]" + (f" {unit}" if unit else "")
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            hasattr(value, "__index__") or (isinstance(value, float) and value.is_integer())):
        raise ValueError(f"{name} = {value!r}: must be {allowed}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} = {value!r}: must be {allowed}")
    return v


def check_choice(name: str, value, choices) -> object:
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} = {value!r}: must be one of " + ", ".join(repr(c) for c in choices))
    return value
