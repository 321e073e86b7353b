"""T12: the k-moment λ_max bound — k = 2 is Wolkowicz–Styan, k = 3, 4 are at least as tight,
every bound is ≥ the true λ_max, and the certificate checks can fail."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import boundcheck as bc
from boundcheck.engines import moment_bound as mb
from derivations import trace_moments
from derivations.proof import Step, StepFailed


def ws_upper(lam: np.ndarray) -> float:
    with mpmath.workdps(40):
        xs = [mpmath.mpf(float(v)) for v in lam]
        m = mpmath.fsum(xs) / len(xs)
        s = mpmath.sqrt(mpmath.fsum((v - m) ** 2 for v in xs) / len(xs))
        return float(m + s * mpmath.sqrt(len(xs) - 1))


def wishart(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 2 * n))
    return np.linalg.eigvalsh(x @ x.T / (2 * n))


@pytest.fixture(scope="module")
def wishart_bounds():
    lam = wishart(20, 0)
    return lam, mb.lambda_max_bounds(mb.MomentBox.from_eigenvalues(lam, 1e-15, 4))


@pytest.mark.parametrize("step", trace_moments.DERIVATION.steps, ids=lambda s: s.name[:60])
def test_derivation_step(step):
    step.verify()


def test_k2_reproduces_wolkowicz_styan(wishart_bounds):
    lam, b = wishart_bounds
    ws = ws_upper(lam)
    assert abs(b[2].upper - ws) <= 1e-12 * abs(ws)
    assert abs(b[2].solver_value - ws) <= 1e-8 * abs(ws)  # the cvxpy bisection itself


def test_k3_k4_tighter_on_wishart(wishart_bounds):
    """N = 20 Wishart, standardized: T1 4.36 → k=3 ≈ 3.6–3.8 → k=4 ≈ 2.8–2.9, true ≈ 2.7."""
    lam, b = wishart_bounds
    m, s = lam.mean(), lam.std()

    def std(v):
        return (v - m) / s

    assert math.isclose(std(b[2].upper), math.sqrt(19), rel_tol=1e-9)
    assert std(lam.max()) <= std(b[4].upper) < std(b[3].upper) - 0.3
    assert std(b[3].upper) < std(b[2].upper) - 0.3
    for k in (3, 4):  # the raw (not min-ed) certified values are monotone too
        assert b[k].details["raw_upper"] <= b[k - 1].details["raw_upper"] * (1 + 1e-12)
        assert b[k].lower <= b[k].solver_value <= b[k].upper
        assert b[k].upper - b[k].solver_value <= 1e-3 * s  # certification costs little


@st.composite
def spectra(draw):
    n = draw(st.integers(2, 8))
    kind = draw(st.sampled_from(["normal", "lognormal", "few_values", "spike", "shifted"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if kind == "normal":
        return rng.standard_normal(n)
    if kind == "lognormal":
        return np.exp(2 * rng.standard_normal(n))
    if kind == "few_values":
        return rng.choice([-1.0, 0.0, 2.5], size=n)
    if kind == "spike":
        return np.r_[10 * rng.standard_normal(1), np.zeros(n - 1)]
    return 1e3 + 1e-2 * rng.standard_normal(n)


@pytest.mark.slow
@settings(max_examples=15)
@given(lam=spectra())
def test_bounds_are_never_below_the_true_lambda_max(lam):
    err = 1e-15 * max(1.0, float(np.abs(lam).max()))
    bounds = mb.lambda_max_bounds(mb.MomentBox.from_eigenvalues(lam, err, 4))
    ws = ws_upper(lam)
    for k, b in bounds.items():
        assert b.upper >= lam.max(), (k, b)
        assert b.upper <= ws * (1 + 1e-9) + 1e-9 * abs(ws) + 1e-12, (k, b, ws)
        assert b.lower <= b.upper


def test_certificate_cannot_certify_a_feasible_cell():
    """Below the true λ_max the relaxation is feasible: no dual answer may certify there."""
    lam = wishart(10, 1)
    box = mb.MomentBox.from_eigenvalues(lam, 1e-15, 4)
    inner, upper, ell = mb._ws_in_units(box)
    true_t = (lam.max() - box.shift) / box.scale
    program = mb._DualProgram(box, 4, ell)
    certifier = mb._Certifier(box, 4, ell)
    for t in (0.5 * (inner + true_t), true_t):
        for probe in (t, upper):  # a certificate from any t, tried on a cell holding true_t
            _, duals = program.solve(probe)
            polys = certifier.polynomials(duals)
            assert not certifier.cell_is_infeasible(polys, min(t, true_t), true_t)
    rng = np.random.default_rng(0)
    for _ in range(20):  # random PSD "certificates" either
        duals = [(lambda a: a @ a.T)(rng.standard_normal((len(m), len(m))))
                 for m in mb.constraint_matrices(4, 1.0, [1.0] * 5, box.n, ell)]
        assert not certifier.cell_is_infeasible(certifier.polynomials(duals), true_t, true_t)


def test_true_point_is_robustly_feasible_just_below():
    lam = wishart(12, 2)
    box = mb.MomentBox.from_eigenvalues(lam, 1e-15, 4)
    _, upper, ell = mb._ws_in_units(box)
    true_t = (lam.max() - box.shift) / box.scale
    assert mb.robustly_feasible(box, 4, ell, true_t - 1e-6)
    assert not mb.robustly_feasible(box, 2, ell, upper + 1e-6)


def test_raw_moments_give_the_same_bound():
    lam = wishart(9, 3)
    raw = [float(np.mean(lam**j)) for j in range(1, 5)]
    tol = [1e-13 * max(1.0, abs(v)) for v in raw]
    lower = [r - t for r, t in zip(raw, tol, strict=True)]
    upper = [r + t for r, t in zip(raw, tol, strict=True)]
    from_raw = mb.MomentBox.from_raw_moments(len(lam), lower, upper)
    direct = mb.MomentBox.from_eigenvalues(lam, 1e-15, 4)
    a, b = mb.lambda_max_bound(from_raw, 3), mb.lambda_max_bound(direct, 3)
    assert a.upper >= lam.max() and math.isclose(a.upper, b.upper, rel_tol=1e-6)


@pytest.mark.slow
def test_wider_moment_intervals_only_loosen():
    lam = wishart(9, 4)
    tight = mb.MomentBox.from_eigenvalues(lam, 1e-15, 4)
    loose = mb.MomentBox(tight.n, tight.shift, tight.scale,
                         tuple(v - 0.02 for v in tight.lower), tuple(v + 0.02 for v in tight.upper))
    assert mb.lambda_max_bound(loose, 4).upper >= mb.lambda_max_bound(tight, 4).upper
    assert mb.lambda_max_bound(loose, 4).upper >= lam.max()


def test_quantities_and_theorems_on_a_matrix():
    lam = wishart(15, 5)
    q, _ = np.linalg.qr(np.random.default_rng(6).standard_normal((15, 15)))
    a = (q * lam) @ q.T
    subject = bc.MatrixSubject(0.5 * (a + a.T))
    names = [f"hessian.moment_{j}" for j in range(1, 5)]
    est = bc.measure(subject, names + ["moment_bound.lambda_max_k2"])
    for j in range(1, 5):
        exact = float(mpmath.fsum(mpmath.mpf(float(v)) ** j for v in lam) / len(lam))
        e = est[f"hessian.moment_{j}"]
        assert abs(e.value - exact) <= 1e-12 * max(1.0, abs(exact)) and e.contains(exact)
    assert math.isclose(est["moment_bound.lambda_max_k2"].upper, ws_upper(lam), rel_tol=1e-9)
    res = {r.theorem_id: r for r in bc.verify(subject, "hessian.moments")}
    assert set(res) == {"hessian.moment_lambda_max_k3", "hessian.moment_lambda_max_k4"}
    for r in res.values():
        assert r.verdict == bc.Verdict.HOLDS, r.reason
        assert r.rhs.kind == "certified"


def test_a_planted_halved_bound_is_violated_not_held():
    subject = bc.MatrixSubject(np.diag(wishart(12, 7)))
    b4 = trace_moments.MOMENT_K4
    planted = bc.Theorem(id="planted.half_moment_bound", title="half of B_4", lhs=b4.lhs,
                         rhs=b4.rhs / 2, symbols=b4.symbols, source="planted")
    (r,) = bc.verify(subject, [planted])
    assert r.verdict == bc.Verdict.VIOLATED


def test_n_equal_one_is_not_applicable():
    (r,) = bc.verify(bc.MatrixSubject(torch.ones(1, 1)), ["hessian.moment_lambda_max_k3"])
    assert r.verdict == bc.Verdict.NOT_APPLICABLE


def test_a_broken_step_is_caught():
    step = next(s for s in trace_moments.DERIVATION.steps if s.name.startswith("k = 2, stand"))
    with pytest.raises(StepFailed):
        Step(step.name, step.lhs, step.rhs + 1).verify()


def test_estimated_moments_beyond_the_dense_budget():
    """P > max_dense_params: μ_j from Hutchinson on vᵀH^j v, T12 from the interval box."""
    import boundcheck as bc

    a = np.random.default_rng(0).standard_normal((300, 300))
    a = a @ a.T / 300
    lam = np.linalg.eigvalsh(a)
    budget = bc.Budget(max_dense_params=10, trace_rel_half_width=0.1, max_refinements=0)
    subject = bc.MatrixSubject(a)
    est = bc.measure(subject, [f"hessian.moment_{j}" for j in (1, 2, 3, 4)], budget=budget)
    for j in (1, 2, 3, 4):
        e = est[f"hessian.moment_{j}"]
        assert e.kind == "statistical" and e.contains(float(np.mean(lam**j))), (j, e)
    res = bc.verify(subject, ["hessian.moment_lambda_max_k3", "hessian.moment_lambda_max_k4"],
                    budget=budget)
    for r in res:
        assert r.verdict != bc.Verdict.VIOLATED
        assert r.rhs.kind == "statistical" and r.rhs.upper >= lam[-1]
