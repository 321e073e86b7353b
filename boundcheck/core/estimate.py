"""Estimates: a measured scalar with an honest interval and a statement of how it was obtained.

Three kinds, from strongest to weakest:

* ``exact``: computed in closed form in floating point; the interval accounts for rounding
  (standard backward-error bounds, widened by any rounding noise measured on the way).
* ``certified``: a deterministic enclosure that is not a rounding of the exact value
  (e.g. a Lanczos Ritz value below λ_max and a residual bound above it).
* ``statistical``: an interval that covers the true value with probability ≥ ``confidence``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KINDS = ("exact", "certified", "statistical")
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}


@dataclass(frozen=True)
class Estimate:
    """A scalar quantity with an enclosure ``lower ≤ true value ≤ upper``."""

    value: float
    lower: float
    upper: float
    kind: str
    method: str
    confidence: float | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Estimate kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "statistical":
            if self.confidence is None or not 0.0 < self.confidence < 1.0:
                raise ValueError("a statistical Estimate needs a confidence in (0, 1)")
        elif self.confidence is not None:
            raise ValueError(f"an {self.kind} Estimate carries no confidence")
        for name in ("value", "lower", "upper"):
            if math.isnan(getattr(self, name)):
                raise ValueError(f"Estimate {name} is NaN ({self.method})")
        if not self.lower <= self.value <= self.upper:
            raise ValueError(
                f"Estimate interval [{self.lower!r}, {self.upper!r}] does not contain its value "
                f"{self.value!r} ({self.method})"
            )

    @classmethod
    def exact(cls, value: float, abs_error: float, method: str, **details: Any) -> Estimate:
        """An exact value whose float rounding error is at most ``abs_error``."""
        value = float(value)
        err = abs(float(abs_error))
        if math.isinf(value):
            return cls(value, value, value, "exact", method, details=details)
        return cls(value, value - err, value + err, "exact", method, details=details)

    @classmethod
    def integer(cls, value: int, method: str) -> Estimate:
        return cls(float(value), float(value), float(value), "exact", method)

    @property
    def width(self) -> float:
        return self.upper - self.lower

    @property
    def half_width(self) -> float:
        return 0.5 * (self.upper - self.lower)

    def contains(self, x: float) -> bool:
        return self.lower <= x <= self.upper

    def clamp_below(self, floor: float) -> Estimate:
        """Intersect with ``[floor, ∞)``: for quantities known to be ≥ floor mathematically."""
        if self.lower >= floor:
            return self
        return Estimate(
            max(self.value, floor),
            floor,
            max(self.upper, floor),
            self.kind,
            self.method,
            self.confidence,
            self.details,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "value": _json_float(self.value),
            "lower": _json_float(self.lower),
            "upper": _json_float(self.upper),
            "kind": self.kind,
            "method": self.method,
        }
        if self.confidence is not None:
            out["confidence"] = self.confidence
        if self.details:
            out["details"] = {k: _jsonable(v) for k, v in self.details.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        return cls(
            _from_json_float(d["value"]),
            _from_json_float(d["lower"]),
            _from_json_float(d["upper"]),
            d["kind"],
            d["method"],
            d.get("confidence"),
            d.get("details", {}),
        )

    def __str__(self) -> str:
        tag = self.kind if self.confidence is None else f"{self.kind} {self.confidence:g}"
        return f"{self.value:.6g} [{self.lower:.6g}, {self.upper:.6g}] ({tag})"


def combine_kind(estimates: list[Estimate]) -> tuple[str, float | None]:
    """Kind and confidence of a quantity computed from several estimates.

    Confidence follows the union bound over the distinct statistical inputs.
    """
    statistical = [e for e in estimates if e.kind == "statistical"]
    if statistical:
        failure = sum(1.0 - e.confidence for e in statistical)
        return "statistical", max(1e-12, 1.0 - failure)
    if any(e.kind == "certified" for e in estimates):
        return "certified", None
    return "exact", None


def _json_float(x: float) -> float | str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def _from_json_float(x: float | str) -> float:
    return float(x)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, (int, str, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
