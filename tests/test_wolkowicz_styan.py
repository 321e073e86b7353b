"""T1 (Wolkowicz–Styan) as a property over symmetric matrices, and its derivation."""

import math

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import boundcheck as bc
from derivations import wolkowicz_styan as ws

WS_IDS = ["hessian.ws_lambda_max", "hessian.ws_lambda_max_lower", "hessian.ws_lambda_min",
          "hessian.ws_lambda_min_upper"]


@st.composite
def spectra(draw, min_n=1, max_n=12):
    """Eigenvalues with repeats, mixed signs and scales from 1e-8 to 1e8."""
    n = draw(st.integers(min_n, max_n))
    scale = 10.0 ** draw(st.integers(-8, 8))
    pool = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=n))
    vals = [pool[draw(st.integers(0, len(pool) - 1))] for _ in range(n)]
    shift = draw(st.sampled_from([0.0, 0.0, 1.0, -3.0, 1e4]))
    return np.array([scale * (v + shift) for v in vals])


def symmetric_with_spectrum(eigs: np.ndarray, seed: int) -> np.ndarray:
    n = len(eigs)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    a = (q * eigs) @ q.T
    return 0.5 * (a + a.T)


def exact_sides(eigs) -> dict[str, tuple[mpmath.mpf, mpmath.mpf]]:
    """(lhs, rhs) of each bound from the eigenvalues, in 50-digit arithmetic."""
    with mpmath.workdps(50):
        lam = [mpmath.mpf(float(x)) for x in eigs]
        n = len(lam)
        m = mpmath.fsum(lam) / n
        s = mpmath.sqrt(mpmath.fsum((x - m) ** 2 for x in lam) / n)
        r = mpmath.sqrt(n - 1)
        return {
            "hessian.ws_lambda_max": (max(lam), m + s * r),
            "hessian.ws_lambda_max_lower": (m + s / r, max(lam)),
            "hessian.ws_lambda_min": (m - s * r, min(lam)),
            "hessian.ws_lambda_min_upper": (min(lam), m - s / r),
        }


@settings(max_examples=60)
@given(eigs=spectra(min_n=2), seed=st.integers(0, 2**31 - 1))
def test_bounds_hold_in_exact_arithmetic(eigs, seed):
    with mpmath.workdps(50):
        for tid, (lhs, rhs) in exact_sides(eigs).items():
            assert lhs <= rhs + mpmath.mpf(10) ** -40 * (1 + abs(rhs)), tid


@settings(max_examples=60)
@given(eigs=spectra(min_n=1), seed=st.integers(0, 2**31 - 1))
def test_verifier_never_reports_violation_and_holds_when_decidable(eigs, seed):
    a = symmetric_with_spectrum(eigs, seed)
    res = bc.verify(bc.MatrixSubject(a), "hessian.ws")
    if len(eigs) == 1:
        assert all(r.verdict == bc.Verdict.NOT_APPLICABLE for r in res)
        return
    exact = exact_sides(eigs)
    for r in res:
        assert r.verdict in (bc.Verdict.HOLDS, bc.Verdict.INCONCLUSIVE), (r.theorem_id, r.reason)
        lhs, rhs = exact[r.theorem_id]
        width = r.lhs.width + r.rhs.width
        # the true sides are enclosed, up to the rounding of building A from its spectrum
        tol = 1e-12 * len(eigs) * float(np.abs(eigs).max())
        assert r.lhs.lower - tol <= float(lhs) <= r.lhs.upper + tol
        assert r.rhs.lower - tol <= float(rhs) <= r.rhs.upper + tol
        if r.verdict == bc.Verdict.INCONCLUSIVE:
            # only when the true gap is within the measurement error
            assert float(rhs - lhs) <= 2 * width + 2 * tol, r.reason


def test_equality_at_n_equals_2():
    eigs = np.array([-0.3, 2.7])
    sides = exact_sides(eigs)
    for lhs, rhs in sides.values():
        assert mpmath.almosteq(lhs, rhs, 1e-40)


@pytest.mark.parametrize("n", [3, 7, 40])
def test_upper_bound_attained(n):
    m, s = 1.5, 0.25
    r = math.sqrt(n - 1)
    eigs = np.array([m + s * r] + [m - s / r] * (n - 1))
    res = bc.verify(bc.MatrixSubject(symmetric_with_spectrum(eigs, 0)), "hessian.ws_lambda_max")
    r0 = res["hessian.ws_lambda_max"]
    assert r0.verdict != bc.Verdict.VIOLATED
    assert abs(r0.lhs.value - r0.rhs.value) <= 1e-12 * n
    assert "tight" in r0.reason or r0.verdict == bc.Verdict.HOLDS


def test_cancellation_case_is_not_reported_violated():
    # tr(A²)/N − m² cancels to 0 here; the stable route and honest intervals must cope.
    a = 1e4 * np.eye(50) + 1e-5 * np.diag(np.linspace(-1, 1, 50))
    res = bc.verify(bc.MatrixSubject(a), "hessian.ws")
    assert all(r.verdict == bc.Verdict.HOLDS for r in res), [(r.theorem_id, r.reason)
                                                              for r in res]


def test_n_equals_1_is_not_applicable():
    res = bc.verify(bc.MatrixSubject(np.array([[2.0]])), "hessian.ws")
    assert {r.verdict for r in res} == {bc.Verdict.NOT_APPLICABLE}
    assert "N ≥ 2" in res["hessian.ws_lambda_max"].reason


def test_registered_with_statement_and_source():
    ids = {t.id for t in bc.theorems()}
    assert set(WS_IDS) <= ids
    t = bc.get("hessian.ws_lambda_max")
    assert t.latex() == r"\lambda_{\max} \le m + s \sqrt{N - 1}"
    assert "Wolkowicz" in t.source


@pytest.mark.parametrize("step", ws.DERIVATION.steps, ids=lambda s: s.name)
def test_derivation_step(step):
    assert step.verify()


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=30))
def test_cauchy_schwarz_step_for_any_length(devs):
    k = len(devs)
    assert math.fsum(devs) ** 2 <= k * math.fsum(d * d for d in devs) * (1 + 1e-12) + 1e-9


def test_derivation_step_failure_is_detected():
    from derivations.proof import Step, StepFailed

    wrong = Step("wrong", ws.s / sympy.sqrt(ws.N - 1), ws.s * sympy.sqrt(ws.N - 1), "==")
    with pytest.raises(StepFailed):
        wrong.verify()
