"""Interval evaluation of sympy expressions with outward rounding (mpmath's ``iv`` context).

Every operation encloses its exact result, so the enclosure of an expression is sound even
where the expression is not monotone in its arguments (no endpoint plugging). Symbols carry
their sympy assumptions into the evaluation: a ``nonnegative`` (``positive``) symbol's interval
that straddles 0 is intersected with [0, ∞), which is how a quantity that is ≥ 0 mathematically
(s², a squared norm) survives a rounding-widened interval that dips below 0. An interval lying
wholly below 0 is never clipped: it raises :class:`AssumptionError` (the
assumption is false of the measurement). Whether a straddling interval may be intersected at
all is the caller's decision: a theorem's symbols go through :func:`assumption_failure` first
(see :mod:`boundcheck.core.verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mpmath
import sympy
from mpmath import iv

PRECISION_BITS = 113


class IntervalDomainError(ValueError):
    """An interval left the domain of a function (e.g. sqrt of an interval below 0)."""


class AssumptionError(ValueError):
    """A symbol's interval lies wholly outside the domain its sympy assumptions declare."""


def declared_sign(s: sympy.Symbol) -> str | None:
    """"positive", "nonnegative" or None: the sign a symbol's assumptions declare."""
    if s.is_positive:
        return "positive"
    if s.is_nonnegative:
        return "nonnegative"
    return None


def assumption_failure(s: sympy.Symbol, value: float, lo: float, hi: float,
                       rounding_only: bool) -> str | None:
    """Why the measured ``value ∈ [lo, hi]`` may not stand for ``s``, or None.

    The rule (issue 12): a symbol's declared sign is a precondition on the quantity bound to
    it, never a licence to clip. It fails when the measured value itself breaks it (``value <
    0`` for nonnegative, ``value ≤ 0`` for positive) or when the whole interval lies outside
    the domain. An interval that straddles the boundary while the value satisfies it may be
    intersected with the domain only when ``rounding_only`` (the interval is a floating-point
    rounding allowance around an exactly computed value, an ``exact`` estimate): then only
    rounding puts part of it outside. A statistical or certified interval that straddles the
    boundary leaves the precondition undecided (:func:`assumption_undecided`).
    """
    sign = declared_sign(s)
    if sign is None:
        return None
    outside = (lambda v: v <= 0) if sign == "positive" else (lambda v: v < 0)
    if outside(value) or outside(hi):
        return f"symbol {s} is declared {sign} but measured {value:.6g} in [{lo:.6g}, {hi:.6g}]"
    return None


def assumption_undecided(s: sympy.Symbol, lo: float, rounding_only: bool) -> str | None:
    """Why a straddling interval leaves a symbol's declared sign undecided, or None (see
    :func:`assumption_failure`, which is checked first)."""
    sign = declared_sign(s)
    if sign is None or rounding_only or (lo > 0 if sign == "positive" else lo >= 0):
        return None
    return (f"symbol {s} is declared {sign}, but its measured interval reaches {lo:.6g} (an "
            "estimate, not a rounding allowance): the precondition is not confirmed")


def evaluate(expr: sympy.Expr, bounds: Mapping[sympy.Symbol, tuple[float, float]]) -> tuple[
    float, float
]:
    """Enclose ``expr`` over the box ``bounds`` (symbol -> (lower, upper)); floats, rounded out."""
    saved = iv.prec
    iv.prec = PRECISION_BITS
    try:
        boxes = {s: _symbol_interval(s, lo, hi) for s, lo, hi in _items(bounds)}
        result = _eval(sympy.sympify(expr), boxes)
        lo_raw, hi_raw = result._mpi_
        return _round_down(mpmath.mp.make_mpf(lo_raw)), _round_up(mpmath.mp.make_mpf(hi_raw))
    finally:
        iv.prec = saved


def point_value(expr: sympy.Expr, values: Mapping[sympy.Symbol, float]) -> float:
    """Evaluate at a point in high precision; nan where undefined (e.g. 0/0)."""
    subs = {s: sympy.Float(v, 30) if math.isfinite(v) else sympy.sympify(v) for s, v in
            values.items()}
    try:
        out = sympy.sympify(expr).xreplace(subs).evalf(30)
    except (ZeroDivisionError, TypeError, ValueError):
        return math.nan
    if out in (sympy.zoo, sympy.nan) or out.is_extended_real is False:
        return math.nan
    try:
        return float(out)
    except TypeError:
        return math.nan


def _items(bounds):
    for s, (lo, hi) in bounds.items():
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(f"invalid interval for {s}: [{lo}, {hi}]")
        yield s, lo, hi


def _symbol_interval(s: sympy.Symbol, lo: float, hi: float):
    sign = declared_sign(s)
    if sign is not None:
        if hi < 0:
            raise AssumptionError(f"symbol {s} is declared {sign} but its interval is "
                                  f"[{lo:.6g}, {hi:.6g}]")
        lo = max(lo, 0.0)
    return iv.mpf([lo, hi])


def _round_down(x: mpmath.mpf) -> float:
    """The largest float ≤ x (x an exact mpf; comparisons between mpfs are exact)."""
    if mpmath.isinf(x):
        return float(x)
    f = float(x)
    return math.nextafter(f, -math.inf) if mpmath.mpf(f) > x else f


def _round_up(x: mpmath.mpf) -> float:
    """The smallest float ≥ x."""
    if mpmath.isinf(x):
        return float(x)
    f = float(x)
    return math.nextafter(f, math.inf) if mpmath.mpf(f) < x else f


def _contains_nonpositive(x) -> bool:
    return x.a <= 0


def _eval(e: sympy.Basic, boxes):
    if e.is_Symbol:
        if e not in boxes:
            raise KeyError(f"no interval given for symbol {e}")
        return boxes[e]
    if e.is_Integer or e.is_Rational:
        return iv.mpf(e.p) / iv.mpf(e.q)
    if e.is_Float:
        return iv.mpf(str(e))
    if e is sympy.pi:
        return iv.pi
    if e is sympy.E:
        return iv.e
    if e is sympy.oo:
        return iv.mpf("inf")
    if e.is_Add:
        out = iv.mpf(0)
        for a in e.args:
            out = out + _eval(a, boxes)
        return out
    if e.is_Mul:
        out = iv.mpf(1)
        for a in e.args:
            out = out * _eval(a, boxes)
        return out
    if e.is_Pow:
        return _pow(_eval(e.base, boxes), e.exp, boxes)
    if isinstance(e, sympy.log):
        x = _eval(e.args[0], boxes)
        if x.b < 0:
            raise IntervalDomainError(f"log of an interval below 0: {x}")
        if x.a <= 0:
            return iv.mpf(["-inf", iv.log(iv.mpf(x.b)).b]) if x.b > 0 else iv.mpf(["-inf",
                                                                                    "-inf"])
        return iv.log(x)
    if isinstance(e, sympy.exp):
        return iv.exp(_eval(e.args[0], boxes))
    if isinstance(e, sympy.Abs):
        return abs(_eval(e.args[0], boxes))
    if isinstance(e, (sympy.Max, sympy.Min)):
        parts = [_eval(a, boxes) for a in e.args]
        pick = max if isinstance(e, sympy.Max) else min
        return iv.mpf([pick(p.a for p in parts), pick(p.b for p in parts)])
    raise NotImplementedError(f"interval evaluation of {type(e).__name__} ({e}) is not supported")


def _pow(base, exponent: sympy.Expr, boxes):
    if exponent.is_Integer:
        k = int(exponent)
        if k >= 0:
            return base**k
        if _contains_nonpositive(base) and base.b >= 0:
            raise IntervalDomainError(f"negative power of an interval containing 0: {base}")
        return iv.mpf(1) / base ** (-k)
    if exponent.is_Rational:
        if base.b < 0:
            raise IntervalDomainError(f"fractional power of a negative interval: {base}")
        if base.a < 0:
            base = iv.mpf([0, base.b])
        num, den = int(exponent.p), int(exponent.q)
        if den == 2:
            root = iv.sqrt(base)
        else:
            root = iv.exp(iv.log(base) / den) if base.a > 0 else iv.mpf(
                [0, iv.exp(iv.log(iv.mpf(base.b)) / den).b])
        if num >= 0:
            return root**num
        if root.a <= 0:
            raise IntervalDomainError(f"negative power of an interval containing 0: {base}")
        return iv.mpf(1) / root ** (-num)
    ex = _eval(exponent, boxes)
    if base.a <= 0:
        raise IntervalDomainError(f"real power of an interval not > 0: {base}")
    return iv.exp(ex * iv.log(base))
