"""Checks of user-given settings: each returns the value or raises a one-line ``ValueError``
naming the setting, what was expected and what was given (``bool`` is never a number here,
though Python counts it as one)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def integer(value: Any, name: str, least: int | None = None) -> int:
    """An integer ≥ ``least`` (when given)."""
    if not is_int(value) or (least is not None and value < least):
        bound = f" ≥ {least}" if least is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return int(value)


def real(value: Any, name: str, *, above: float | None = None,
         at_least: float | None = None) -> float:
    """A finite number, ``> above`` / ``≥ at_least`` when given."""
    ok = is_real(value) and math.isfinite(value) \
        and (above is None or value > above) and (at_least is None or value >= at_least)
    if not ok:
        bound = f" > {above:g}" if above is not None else \
            f" ≥ {at_least:g}" if at_least is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def confidence(value: Any, name: str = "confidence") -> float:
    """The confidence of statistical intervals: strictly between 0 and 1 (0 and 1 give no
    usable interval; NaN compares false everywhere)."""
    if not is_real(value) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1 (e.g. 0.99), "
                         f"got {value!r}")
    return float(value)
