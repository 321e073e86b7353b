"""Deciding a theorem on a subject: interval-evaluate both sides, then HOLDS / VIOLATED /
INCONCLUSIVE / NOT_APPLICABLE, with the slack and its interval.

HOLDS iff ``upper(lhs) ≤ lower(rhs)``; VIOLATED iff ``lower(lhs) > upper(rhs)``, except for a
theorem one subject cannot refute (``Theorem.exceeded_reason``: it holds for almost every
initialisation, say), where that is INCONCLUSIVE with the theorem's explanation. The same test
is also applied to ``rhs − lhs`` evaluated as one expression (tighter when a symbol appears on
both sides); the decision uses whichever enclosure is narrower.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sympy

from boundcheck.core import intervals
from boundcheck.core.estimate import Estimate, combine_kind
from boundcheck.core.theorem import Theorem


class Verdict(str, enum.Enum):
    HOLDS = "HOLDS"
    VIOLATED = "VIOLATED"
    INCONCLUSIVE = "INCONCLUSIVE"
    NOT_APPLICABLE = "NOT_APPLICABLE"

    def __str__(self) -> str:
        return self.value


@dataclass
class Slack:
    """``rhs/lhs`` (kind "ratio") or ``rhs − lhs`` (kind "difference"), with an enclosure."""

    kind: str
    value: float
    lower: float
    upper: float

    @property
    def log_ratio(self) -> float:
        if self.kind != "ratio" or not self.value > 0:
            return math.nan
        return math.log(self.value)

    def to_dict(self) -> dict[str, Any]:
        from boundcheck.core.estimate import _json_float

        return {"kind": self.kind, "value": _json_float(self.value),
                "lower": _json_float(self.lower), "upper": _json_float(self.upper),
                "log_ratio": None if math.isnan(self.log_ratio) else self.log_ratio}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Slack:
        return cls(d["kind"], float(d["value"]), float(d["lower"]), float(d["upper"]))


@dataclass
class TheoremResult:
    theorem_id: str
    verdict: Verdict
    reason: str = ""
    lhs: Estimate | None = None
    rhs: Estimate | None = None
    slack: Slack | None = None
    quantities: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "theorem": self.theorem_id,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "lhs": self.lhs.to_dict() if self.lhs else None,
            "rhs": self.rhs.to_dict() if self.rhs else None,
            "slack": self.slack.to_dict() if self.slack else None,
            "quantities": {k: v.to_dict() for k, v in self.quantities.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TheoremResult:
        return cls(
            d["theorem"], Verdict(d["verdict"]), d.get("reason", ""),
            Estimate.from_dict(d["lhs"]) if d.get("lhs") else None,
            Estimate.from_dict(d["rhs"]) if d.get("rhs") else None,
            Slack.from_dict(d["slack"]) if d.get("slack") else None,
            {k: Estimate.from_dict(v) for k, v in d.get("quantities", {}).items()},
        )


def side_estimate(expr: sympy.Expr, theorem: Theorem, values: dict[str, Estimate],
                  label: str) -> Estimate:
    """Enclose one side of a theorem from the estimates of its quantities."""
    syms = sympy.sympify(expr).free_symbols
    used = [values[theorem.symbols[s]] for s in syms]
    bounds = {s: (values[theorem.symbols[s]].lower, values[theorem.symbols[s]].upper)
              for s in syms}
    lo, hi = intervals.evaluate(expr, bounds)
    point = intervals.point_value(expr, {s: values[theorem.symbols[s]].value for s in syms})
    if math.isnan(point):
        point = lo if math.isfinite(lo) else hi
    point = min(max(point, lo), hi)
    kind, confidence = combine_kind(used)
    return Estimate(point, lo, hi, kind, f"interval evaluation of the {label}", confidence)


def symbol_precondition(theorem: Theorem, values: dict[str, Estimate]
                        ) -> tuple[Verdict, str] | None:
    """NOT_APPLICABLE when a symbol's declared sign (sympy ``positive`` / ``nonnegative``) is
    contradicted by the quantity measured for it, INCONCLUSIVE when an estimated interval
    leaves it undecided, else None (rule: :func:`boundcheck.core.intervals.
    assumption_failure`; an ``exact`` estimate's straddle is rounding, anything else is not)."""
    items = sorted(theorem.symbols.items(), key=lambda kv: str(kv[0]))
    for s, name in items:
        e = values[name]
        why = intervals.assumption_failure(s, e.value, e.lower, e.upper, e.kind == "exact")
        if why:
            return Verdict.NOT_APPLICABLE, f"precondition: {why} (quantity {name})"
    for s, name in items:
        e = values[name]
        why = intervals.assumption_undecided(s, e.lower, e.kind == "exact")
        if why:
            return Verdict.INCONCLUSIVE, f"{why} (quantity {name})"
    return None


def decide(theorem: Theorem, values: dict[str, Estimate]) -> TheoremResult:
    """Verdict and slack from measured quantities (assumptions already checked).

    A symbol whose declared sign the measurement contradicts makes the theorem
    NOT_APPLICABLE, one an estimate leaves undecided INCONCLUSIVE (:func:`symbol_precondition`);
    it is never clipped into its domain."""
    failed = symbol_precondition(theorem, values)
    if failed:
        return TheoremResult(theorem.id, failed[0], failed[1], quantities=dict(values))
    try:
        lhs = side_estimate(theorem.lhs, theorem, values, "left side")
        rhs = side_estimate(theorem.rhs, theorem, values, "right side")
        if lhs.upper == -math.inf:  # −∞ ≤ anything, even a right side of −∞ (then no slack)
            slack = Slack("difference", math.inf, math.inf, math.inf) \
                if rhs.lower > -math.inf else None
            return TheoremResult(theorem.id, Verdict.HOLDS, "left side is −∞: holds trivially",
                                 lhs, rhs, slack, dict(values))
        gap_lo, gap_hi = intervals.evaluate(theorem.rhs - theorem.lhs, {
            s: (values[q].lower, values[q].upper) for s, q in theorem.symbols.items()})
    except intervals.IntervalDomainError as err:
        return TheoremResult(theorem.id, Verdict.INCONCLUSIVE,
                             f"a side is undefined on the measured intervals: {err}",
                             quantities=dict(values))
    gap_lo = max(gap_lo, rhs.lower - lhs.upper)
    gap_hi = min(gap_hi, rhs.upper - lhs.lower)
    slack = _slack(theorem, lhs, rhs, gap_lo, gap_hi)
    if gap_lo >= 0:
        verdict, reason = Verdict.HOLDS, ""
        if lhs.value == -math.inf:
            reason = "left side is −∞: holds trivially"
    elif gap_hi < 0 and theorem.exceeded_reason:
        verdict = Verdict.INCONCLUSIVE
        reason = f"lhs exceeds rhs by at least {-gap_hi:.3g}: {theorem.exceeded_reason}"
    elif gap_hi < 0:
        verdict, reason = Verdict.VIOLATED, f"lhs exceeds rhs by at least {-gap_hi:.3g}"
    else:
        verdict = Verdict.INCONCLUSIVE
        reason = (f"intervals overlap: rhs − lhs ∈ [{gap_lo:.3g}, {gap_hi:.3g}]"
                  + (" (the bound is tight within measurement error)"
                     if abs(rhs.value - lhs.value) <= max(lhs.width, rhs.width) else ""))
        stopped = [f"{name} {e.details['stopped']}" for name, e in values.items()
                   if e.details.get("stopped")]
        if stopped:
            reason += "; " + "; ".join(stopped)
    return TheoremResult(theorem.id, verdict, reason, lhs, rhs, slack, dict(values))


def _slack(theorem: Theorem, lhs: Estimate, rhs: Estimate, gap_lo: float,
           gap_hi: float) -> Slack:
    if theorem.slack == "difference" or not (lhs.lower > 0 and rhs.lower > 0):
        kind = "difference"
        value = rhs.value - lhs.value if math.isfinite(lhs.value) or math.isfinite(
            rhs.value) else math.nan
        if lhs.value == -math.inf and math.isfinite(rhs.value):
            value = math.inf
        value = min(max(value, gap_lo), gap_hi) if not math.isnan(value) else value
        return Slack(kind, value, gap_lo, gap_hi)
    return Slack("ratio", rhs.value / lhs.value, rhs.lower / lhs.upper, rhs.upper / lhs.lower)


_SOURCE_PREFIX = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)+: ")


def bare_reason(reason: str) -> str:
    """A reason without the leading ``quantity.name:`` that reported it."""
    return _SOURCE_PREFIX.sub("", reason, count=1)


def group_reasons(items: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, list[str]]]:
    """``(theorem id, verdict, reason)`` → ``(verdict, reason, [ids])`` with each distinct
    reason once, in first-seen order. Reasons that differ only in the leading
    ``quantity.name:`` that reported them are one group (shown without that prefix)."""
    groups: dict[tuple[str, str], tuple[set[str], list[str]]] = {}
    for theorem_id, verdict, reason in items:
        if not reason:
            continue
        key = (str(verdict), bare_reason(reason))
        full, ids = groups.setdefault(key, (set(), []))
        full.add(reason)
        ids.append(theorem_id)
    return [(v, next(iter(full)) if len(full) == 1 else bare, ids)
            for (v, bare), (full, ids) in groups.items()]
