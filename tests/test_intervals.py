"""Interval evaluation encloses every value of an expression over a box, including
non-monotone expressions where endpoint plugging fails."""

import math
import random

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

from boundcheck.core import intervals
from boundcheck.core.estimate import Estimate, combine_kind

x, y = sympy.symbols("x y", real=True)
p = sympy.Symbol("p", nonnegative=True)


def test_non_monotone_expression_is_enclosed():
    expr = x * (1 - x)
    lo, hi = intervals.evaluate(expr, {x: (0.0, 1.0)})
    # endpoint plugging would give [0, 0]; the true range is [0, 1/4]
    assert lo <= 0.0 and hi >= 0.25


@given(a=st.floats(-5, 5), w=st.floats(0, 3), b=st.floats(0.1, 5), v=st.floats(0, 2))
def test_enclosure_of_random_points(a, w, b, v):
    expr = (x - 1) ** 2 * sympy.sqrt(p) - x / (p + 1) + sympy.log(p + 2) * x * x
    box = {x: (a, a + w), p: (b, b + v)}
    lo, hi = intervals.evaluate(expr, box)
    f = sympy.lambdify([x, p], expr, "math")
    rng = random.Random(0)
    for _ in range(50):
        xv, pv = rng.uniform(a, a + w), rng.uniform(b, b + v)
        val = f(xv, pv)
        assert lo - 1e-12 * abs(val) <= val <= hi + 1e-12 * abs(val)


def test_outward_rounding():
    lo, hi = intervals.evaluate(sympy.Rational(1, 3) * x, {x: (1.0, 1.0)})
    assert lo < hi and lo <= 1 / 3 <= hi


def test_nonnegative_symbol_is_clipped_and_domains_are_checked():
    lo, hi = intervals.evaluate(sympy.sqrt(p), {p: (-1e-20, 4.0)})
    assert lo == 0.0 and hi >= 2.0
    with pytest.raises(intervals.IntervalDomainError):
        intervals.evaluate(sympy.sqrt(x), {x: (-2.0, -1.0)})
    lo, hi = intervals.evaluate(sympy.log(p), {p: (0.0, 1.0)})
    assert lo == -math.inf and hi >= 0.0


def test_point_value_undefined_is_nan():
    assert math.isnan(intervals.point_value(x / y, {x: 0.0, y: 0.0}))
    assert intervals.point_value(x / y, {x: 1.0, y: 4.0}) == 0.25


def test_estimate_validation_and_json_round_trip():
    e = Estimate(1.0, 0.5, 2.0, "statistical", "probe", confidence=0.95, details={"k": 3})
    assert Estimate.from_dict(e.to_dict()) == e
    inf = Estimate.exact(-math.inf, 0.0, "log det")
    assert Estimate.from_dict(inf.to_dict()).value == -math.inf
    with pytest.raises(ValueError):
        Estimate(1.0, 1.5, 2.0, "exact", "bad")
    with pytest.raises(ValueError):
        Estimate(1.0, 0.0, 2.0, "statistical", "no confidence")
    with pytest.raises(ValueError):
        Estimate(math.nan, 0.0, 2.0, "exact", "nan")


def test_union_bound_on_confidence():
    a = Estimate(1, 0, 2, "statistical", "a", confidence=0.99)
    b = Estimate(1, 0, 2, "statistical", "b", confidence=0.98)
    c = Estimate(1, 0, 2, "certified", "c")
    kind, conf = combine_kind([a, b, c])
    assert kind == "statistical" and conf == pytest.approx(0.97)
    assert combine_kind([c, Estimate.exact(1, 0, "e")]) == ("certified", None)


def test_results_round_trip_keeps_an_unregistered_theorems_statement(tmp_path):
    import numpy as np

    import boundcheck as bc
    from boundcheck.verification.results import Results

    t = bc.Theorem(id="tmp.user_bound", title="user", lhs=x, rhs=x + 1,
                   symbols={x: "hessian.trace"}, source="me", slack="difference")
    bc.register(t, replace=True)
    try:
        bc.verify(bc.MatrixSubject(np.eye(3)), [t.id]).save(tmp_path / "a.json")
    finally:
        bc.unregister(t.id)
    Results.load(tmp_path / "a.json").save(tmp_path / "b.json")
    again = Results.load(tmp_path / "b.json")
    assert again.theorem_info[t.id]["statement"] == "x <= x + 1"
    assert again[t.id].verdict == bc.Verdict.HOLDS
