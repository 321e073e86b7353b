"""Matrix-free estimators against exact answers: interval coverage counted over many seeds.

Operators here are explicit symmetric matrices with chosen spectra (products are cheap), so
hundreds of seeded runs fit in seconds. A coverage test passes when the number of misses is
at most the 99.9% quantile of Binomial(N, 1 − confidence): a correct interval fails it with
probability ≤ 0.001, and the seeds are fixed, so the test is deterministic.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from boundcheck.engines.curvature import SymmetricMatrixOperator
from boundcheck.engines.estimators import stream_seed
from boundcheck.engines.estimators.lanczos import (
    _kw_upper,
    extreme_eigenvalue,
    kw_epsilon,
    lanczos,
    planned_steps,
    stochastic_lanczos_quadrature,
    top_ritz_pairs,
    two_by_two_bound,
)
from boundcheck.engines.estimators.trace import (
    CRITICAL_ALPHAS,
    CRITICAL_VALUES,
    MIN_SAMPLES,
    control_variate_trace,
    hutchinson_trace,
    hutchpp_trace,
    rank_one_critical_value,
    simulate_rank_one_critical_values,
    squared_frobenius,
)
from boundcheck.quantities import Budget

P = 300


Matrix = SymmetricMatrixOperator


def with_spectrum(eigenvalues, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T


def rank_one(dense: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if dense:
        u = torch.randn(P, generator=g, dtype=torch.float64)
    else:
        u = torch.zeros(P, dtype=torch.float64)
        u[:4] = 1.0  # discrete samples: 0, 1, 4 (the hard case at small M)
    u = u / u.norm()
    return 3.0 * torch.outer(u, u)


def wishart(rank: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(P, rank, generator=g, dtype=torch.float64)
    return x @ x.T / rank


def indefinite() -> torch.Tensor:
    return with_spectrum(np.linspace(-1.0, 2.0, P), seed=3)


SPECTRA = {"rank_one": rank_one, "rank_one_sparse": lambda: rank_one(False),
           "wishart": wishart, "indefinite": indefinite}


def allowed_misses(n: int, confidence: float) -> int:
    return int(scipy.stats.binom.ppf(0.999, n, 1.0 - confidence))


def count_misses(run, truth: float, seeds) -> int:
    return sum(not run(seed).contains(truth) for seed in seeds)


# --- the critical-value table ----------------------------------------------------------------
def test_critical_values_are_monotone_and_above_student_t():
    for m, _ in CRITICAL_VALUES:
        row = [rank_one_critical_value(m, a) for a in CRITICAL_ALPHAS]
        assert all(x < y for x, y in zip(row, row[1:], strict=False))
        for a, c in zip(CRITICAL_ALPHAS, row, strict=True):
            assert c >= scipy.stats.t.ppf(1 - a / 2, m - 1)
    for a in CRITICAL_ALPHAS:
        col = [rank_one_critical_value(m, a) for m, _ in CRITICAL_VALUES]
        assert all(x >= y for x, y in zip(col, col[1:], strict=False))
    # lookups round M and α down, i.e. outward
    assert rank_one_critical_value(55, 0.01) == rank_one_critical_value(50, 0.01)
    assert rank_one_critical_value(50, 0.009) == rank_one_critical_value(50, 0.005)
    with pytest.raises(ValueError):
        rank_one_critical_value(50, 1e-5)


def test_critical_value_table_reproduces_by_simulation():
    """A fresh, smaller simulation agrees with the stored table (regenerable, not typed in)."""
    fresh = simulate_rank_one_critical_values(50, (0.05, 0.01), reps=100_000, seed=7)
    for a, c in zip((0.05, 0.01), fresh, strict=True):
        stored = rank_one_critical_value(50, a)
        assert 0.95 * c <= stored <= 1.05 * c, (a, stored, c)


# --- coverage --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPECTRA))
def test_hutchinson_coverage(name):
    a = SPECTRA[name]()
    op = Matrix(a)
    truth = float(torch.trace(a))
    seeds = range(300)
    misses = count_misses(lambda s: hutchinson_trace(op, confidence=0.95, rel_half_width=0.1,
                                                     max_probes=P - 1, seed=s), truth, seeds)
    assert misses <= allowed_misses(len(seeds), 0.95), misses


def test_student_t_under_covers_where_the_calibrated_interval_does_not():
    """Rank one at M = 50: the same runs, scored with Student-t and with c(M, α). The test
    can tell a t interval from the calibrated one."""
    op = Matrix(rank_one())
    truth = float(torch.trace(op.matrix))
    n, conf = 1000, 0.99
    t_crit = scipy.stats.t.ppf(1 - (1 - conf) / 2, MIN_SAMPLES - 1)
    calibrated = student = 0
    for seed in range(n):
        est = hutchinson_trace(op, confidence=conf, rel_half_width=10.0, seed=seed)
        assert est.details["samples"] == MIN_SAMPLES
        calibrated += not est.contains(truth)
        t_half = t_crit * est.details["sample_sd"] / math.sqrt(MIN_SAMPLES)
        student += abs(est.value - truth) > t_half
    assert calibrated <= allowed_misses(n, conf) < student, (calibrated, student)


def test_hutchpp_coverage():
    a = with_spectrum(np.concatenate([np.geomspace(10, 0.1, 15), np.full(P - 15, 0.02)]), 4)
    op = Matrix(a)
    truth = float(torch.trace(a))
    seeds = range(200)
    misses = count_misses(lambda s: hutchpp_trace(op, sketch_size=10, confidence=0.95,
                                                  rel_half_width=0.01, max_probes=P - 1,
                                                  seed=s), truth, seeds)
    assert misses <= allowed_misses(len(seeds), 0.95), misses
    # the exact part carries the top of the spectrum: far fewer probes than Hutchinson needs
    est = hutchpp_trace(op, sketch_size=10, rel_half_width=0.01, max_probes=P - 1, seed=0)
    plain = hutchinson_trace(op, rel_half_width=0.01, max_probes=10 * P, seed=0)
    assert est.details["matvecs"] < plain.details["matvecs"]


def test_control_variate_coverage_and_width():
    g = wishart()
    r = 1e-3 * indefinite()
    op = Matrix(g + r)
    truth = float(torch.trace(g + r))

    def quadratic_form(v):
        return ((v @ g) * v).sum(dim=1)

    seeds = range(200)
    misses = count_misses(
        lambda s: control_variate_trace(op, float(torch.trace(g)), 0.0, quadratic_form,
                                        confidence=0.99, rel_half_width=1e-4,
                                        max_probes=P - 1, seed=s), truth, seeds)
    assert misses <= allowed_misses(len(seeds), 0.99), misses
    cv = control_variate_trace(op, float(torch.trace(g)), 0.0, quadratic_form,
                               rel_half_width=1e-3, max_probes=P - 1, seed=0)
    plain = hutchinson_trace(op, rel_half_width=1e-3, max_probes=P - 1, seed=0)
    assert cv.kind == "statistical" and cv.half_width < 0.01 * plain.half_width


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_squared_frobenius_coverage(shift):
    a = indefinite()
    op = Matrix(a)
    centred = a - shift * torch.eye(P, dtype=torch.float64)
    truth = float((centred**2).sum())
    seeds = range(200)
    misses = count_misses(lambda s: squared_frobenius(op, shift, confidence=0.95,
                                                      rel_half_width=0.02, max_probes=P - 1,
                                                      seed=s), truth, seeds)
    assert misses <= allowed_misses(len(seeds), 0.95), misses


def test_adaptive_probe_count_reaches_the_target():
    op = Matrix(with_spectrum(np.linspace(-1.0, 2.0, 600), seed=9))
    for target in (0.04, 0.016):
        hits = 0
        for seed in range(20):
            est = hutchinson_trace(op, rel_half_width=target, max_probes=100_000, seed=seed)
            assert est.kind == "statistical"
            hits += est.half_width <= target * abs(est.value)
        assert hits >= 15, (target, hits)
    wide = hutchinson_trace(op, rel_half_width=0.04, max_probes=100_000, seed=0)
    narrow = hutchinson_trace(op, rel_half_width=0.016, max_probes=100_000, seed=0)
    assert narrow.details["samples"] > 4 * wide.details["samples"]


def test_exhaustive_when_probes_would_cost_more_than_the_basis():
    a = indefinite()[:60, :60]
    est = hutchinson_trace(Matrix(a), rel_half_width=1e-6, seed=0)
    assert est.kind == "exact"
    assert est.contains(float(torch.trace(a)))
    assert est.half_width < 1e-11 * abs(est.value)
    fro = squared_frobenius(Matrix(a), 0.3, rel_half_width=1e-6, seed=0)
    assert fro.kind == "exact"
    assert fro.contains(float(((a - 0.3 * torch.eye(60, dtype=torch.float64)) ** 2).sum()))


def test_cancellation_in_a_large_shift_is_covered():
    """A = 1e4·I + 1e-5·diag(linspace(−1, 1)): tr(A²)/P − m² cancels; the centred form and
    the rounding allowance for forming (A − cI)v keep the interval honest."""
    d = 1e4 + 1e-5 * torch.linspace(-1, 1, P, dtype=torch.float64)
    a = with_spectrum(d.numpy(), seed=5)
    op = Matrix(a)
    m = float(d.mean())
    truth = float(((d - m) ** 2).sum())
    est = squared_frobenius(op, m, rel_half_width=0.05, max_probes=P - 1, seed=0)
    assert est.contains(truth), (est, truth)
    assert est.lower >= 0.0


# --- Lanczos ---------------------------------------------------------------------------------
N = 150  # Lanczos tests: every run is two Krylov spaces of up to N vectors
LANCZOS_SPECTRA = {
    "separated": np.concatenate([np.linspace(-1, 1, N - 1), [3.0]]),
    "clustered_top": np.concatenate([np.linspace(0, 1, N - 2), [1.0 + 1e-3, 1.0 + 2e-3]]),
    "negative": -np.geomspace(1e-3, 5, N),
    "repeated_top": np.concatenate([np.linspace(-2, 1, N - 3), [2.0, 2.0, 2.0]]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LANCZOS_SPECTRA))
def test_lanczos_interval_coverage(name):
    """Both ends, 15 seeds each: the Ritz side never crosses λ (certified); the statistical
    side misses at most at the binomial rate; the intervals are narrow."""
    ev = LANCZOS_SPECTRA[name]
    op = Matrix(with_spectrum(ev, seed=6))
    lam_max, lam_min = float(ev.max()), float(ev.min())
    misses = 0
    widths = []
    for seed in range(15):
        hi = extreme_eigenvalue(op, "largest", confidence=0.99, rel_tol=1e-7, seed=seed)
        lo = extreme_eigenvalue(op, "smallest", confidence=0.99, rel_tol=1e-7, seed=seed)
        assert hi.lower <= lam_max + 1e-12 and lo.upper >= lam_min - 1e-12  # certified sides
        misses += (not hi.lower <= lam_max <= hi.upper) + (not lo.lower <= lam_min <= lo.upper)
        scale = max(abs(lam_max), abs(lam_min))
        widths += [(hi.upper - hi.lower) / scale, (lo.upper - lo.lower) / scale]
    assert misses <= allowed_misses(30, 0.99)
    assert np.median(widths) < 1e-6, np.median(widths)


def test_lanczos_reaches_1e_8_on_a_separated_top():
    op = Matrix(with_spectrum(np.concatenate([np.linspace(-1, 1, P - 1), [3.0]]), seed=6))
    est = extreme_eigenvalue(op, rel_tol=1e-8, seed=0)
    assert est.kind == "statistical" and est.lower <= 3.0 <= est.upper
    assert est.upper - est.lower < 3e-8
    assert est.matvecs < 30
    # the planned check, funded with half the failure probability, is where it stops
    assert est.details["deflated_steps"] == est.details["planned_steps"]


def test_known_gap_gives_a_certified_kato_temple_bracket():
    op = Matrix(with_spectrum(LANCZOS_SPECTRA["separated"], seed=6))
    est = extreme_eigenvalue(op, rel_tol=1e-10, seed=0, second_below=1.0)
    assert est.kind == "certified" and est.lower <= 3.0 <= est.upper
    low = extreme_eigenvalue(op, "smallest", rel_tol=1e-10, seed=0, second_below=-0.9)
    assert low.kind == "certified" and low.lower <= -1.0 <= low.upper


def test_a_run_over_the_whole_space_is_certified():
    ev = np.array([-2.0, 0.5, 1.0, 4.0, 7.0])
    est = extreme_eigenvalue(Matrix(with_spectrum(ev)), rel_tol=1e-12, seed=0)
    assert est.kind == "certified" and est.lower <= 7.0 <= est.upper
    assert est.upper - est.lower < 1e-12
    one = extreme_eigenvalue(Matrix(torch.tensor([[2.5]], dtype=torch.float64)), "smallest")
    assert one.kind == "certified" and one.lower <= 2.5 <= one.upper


def test_an_invariant_krylov_space_finds_every_distinct_eigenvalue():
    """Repeated eigenvalues: the Krylov space closes before the whole space (almost surely
    holding every eigenspace), so the bracket is tight but statistical, not certified."""
    ev = np.array([-2.0, 0.5, 0.5, 1.0, 4.0, 4.0])
    for which, truth in (("largest", 4.0), ("smallest", -2.0)):
        est = extreme_eigenvalue(Matrix(with_spectrum(ev)), which, rel_tol=1e-12, seed=0)
        assert est.kind == "statistical" and est.lower <= truth <= est.upper
        assert est.upper - est.lower < 1e-11
        assert "invariant" in est.details["method"]


def test_kw_epsilon():
    # ε solves 1.648 √n exp(−√ε (2k − 1)) = failure, with k = steps − 1 products
    eps = kw_epsilon(10_000, 41, 0.01)
    assert math.isclose(1.648 * 100 * math.exp(-math.sqrt(eps) * 79), 0.01, rel_tol=1e-12)
    assert kw_epsilon(10_000, 81, 0.01) < eps < kw_epsilon(10_000, 41, 0.001)
    assert kw_epsilon(10, 2, 0.01) == math.inf


def test_two_by_two_bound_is_the_top_eigenvalue_of_the_2x2():
    for theta, c, r in [(1.0, 0.2, 0.1), (1.0, 1.5, 0.01), (-2.0, -3.0, 0.5)]:
        exact = float(np.linalg.eigvalsh([[theta, r], [r, c]])[-1])
        assert math.isclose(two_by_two_bound(theta, c, r), exact, rel_tol=1e-14)


def test_top_ritz_pairs_enclose_eigenvalues():
    ev = np.concatenate([np.linspace(0, 1, P - 5), [2.0, 2.5, 3.0, 3.5, 4.0]])
    top = top_ritz_pairs(Matrix(with_spectrum(ev, seed=8)), 5, seed=0)
    for theta, r in zip(top.values, top.residuals, strict=True):
        assert np.min(np.abs(ev - theta)) <= r + 1e-12
    assert np.allclose(top.values, [4.0, 3.5, 3.0, 2.5, 2.0], atol=1e-6)


def test_slq_is_gauss_quadrature_for_each_probe():
    """For one probe v and m steps: Σ_j w_j θ_j^p = vᵀA^p v / vᵀv for p < 2m."""
    a = indefinite() / 2.0
    steps = 6
    dens = stochastic_lanczos_quadrature(Matrix(a), num_probes=3, steps=steps, seed=0)
    gen = torch.Generator().manual_seed(0)
    for row in range(3):
        v = torch.randint(0, 2, (P,), generator=gen, dtype=torch.float64) * 2 - 1
        for p in range(2 * steps):
            exact = float(v @ torch.linalg.matrix_power(a, p) @ v / (v @ v))
            quad = float((dens.weights[row] * dens.nodes[row] ** p).sum())
            assert math.isclose(quad, exact, rel_tol=1e-9, abs_tol=1e-12), (row, p)
    grid = np.linspace(-2, 2, 2001)
    assert math.isclose(np.trapezoid(dens.smoothed(grid, 0.05), grid), 1.0, rel_tol=1e-3)


def test_lanczos_basis_is_orthonormal_and_deflation_is_respected():
    a = indefinite()
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(1, P, generator=gen, dtype=torch.float64)
    y = y / y.norm()
    run = lanczos(Matrix(a).matvec, torch.randn(P, generator=gen, dtype=torch.float64), 80,
                  deflate=y)
    gram = run.basis @ run.basis.T
    assert torch.allclose(gram, torch.eye(run.steps, dtype=torch.float64), atol=1e-13)
    assert float((run.basis @ y.T).abs().max()) < 1e-13


def test_lanczos_storage_grows_in_blocks_and_ritz_pairs_match_dense_algebra():
    """The Krylov rows are stored in fixed blocks (no doubling copies: ResNet-18's P = 11M
    peaked at 23.7 GB with them), and Ritz values, vectors and residuals formed a chunk at a
    time equal the same algebra on the dense (k, P) arrays."""
    from boundcheck.engines.estimators import lanczos as lz

    a = indefinite()
    gen = torch.Generator().manual_seed(4)
    run = lanczos(Matrix(a).matvec, torch.randn(P, generator=gen, dtype=torch.float64), 37)
    assert run.steps == 37
    assert len(run.rows.blocks) == -(-37 // lz.BLOCK_ROWS)
    assert all(b.shape[0] == lz.BLOCK_ROWS for b in run.rows.blocks)
    q, aq = run.basis, run.images
    assert torch.allclose(aq, q @ a.T, atol=1e-12)
    ritz = run.ritz()
    t = q @ aq.T
    values, vectors = torch.linalg.eigh(0.5 * (t + t.T))
    y = vectors.T @ q
    res = torch.linalg.vector_norm(vectors.T @ aq - values[:, None] * y, dim=1)
    assert torch.allclose(ritz.values, values, atol=1e-13)
    assert torch.allclose(ritz.residuals, res, atol=1e-12)
    assert torch.allclose(ritz.vectors.abs(), y.abs(), atol=1e-10)
    w = torch.randn(P, generator=gen, dtype=torch.float64)
    assert torch.allclose(run.rows.coefficients(w), q @ w, atol=1e-12)
    c = torch.randn(3, 37, generator=gen, dtype=torch.float64)
    assert torch.allclose(run.rows.combine(c), c @ q, atol=1e-12)
    assert torch.allclose(run.rows.gram(run.image_rows), t, atol=1e-12)


# --- budgets and seeds -----------------------------------------------------------------------
def test_a_tightened_budget_gives_narrower_intervals():
    """The refinement hook: the same quantity re-measured with Budget.tightened() and a new
    seed comes back narrower, from more products."""
    import boundcheck as bc

    subject = bc.MatrixSubject(indefinite())
    budget = Budget(max_dense_params=0, trace_rel_half_width=0.05, max_probes=P - 1)
    loose = bc.measure(subject, ["hessian.trace"], seed=0, budget=budget)["hessian.trace"]
    tight = bc.measure(subject, ["hessian.trace"], seed=1,
                       budget=budget.tightened())["hessian.trace"]
    assert tight.half_width < 0.5 * loose.half_width
    assert tight.details["matvecs"] > loose.details["matvecs"]


def test_stream_seeds_are_stable_and_distinct():
    assert stream_seed(0, "hessian.trace") == stream_seed(0, "hessian.trace")
    names = ["hessian.trace", "hessian.fro2", "hessian.lambda_max", "hessian.lambda_min"]
    assert len({stream_seed(s, n) for s in range(5) for n in names}) == 20


def test_planned_steps_is_the_first_step_whose_kw_bound_reaches_the_target():
    dim, failure, top, bottom = 5000, 0.0025, 1.0, -1.0
    for target in (1.05, 1.2, 2.0):
        k = planned_steps(dim, failure, target, top, bottom, 500)
        assert k is not None
        assert _kw_upper(dim, k, failure, top, bottom) <= target
        assert _kw_upper(dim, k - 1, failure, top, bottom) > target
    assert planned_steps(dim, failure, 1.2, 1.0, -1.0, 500) < planned_steps(
        dim, failure, 1.05, 1.0, -1.0, 500)
    assert planned_steps(dim, failure, 0.9, top, bottom, 500) is None  # target below the top
    assert planned_steps(dim, failure, 1.0 + 1e-9, top, bottom, 50) is None  # beyond budget
