"""T9, random projections: the derivation, the calibrated intervals (coverage counted over
seeds and spectra), the theorems' VIOLATED rate when true and their catching planted false
constants, the saddle probability against exact cases and the full H, loss surfaces against
the dense Hessian, and the report figure.

A coverage (or false-VIOLATED) test passes when the misses are at most the 99.9% quantile of
Binomial(N, 1 − confidence): a correct interval fails it with probability ≤ 0.001; the seeds
are fixed, so every test is deterministic.
"""

import math

import numpy as np
import pytest
import scipy.stats
import sympy
import torch
from torch import nn

import boundcheck as bc
from boundcheck.core.theorem import Theorem
from boundcheck.engines.curvature import SymmetricMatrixOperator, dense_hessian
from boundcheck.engines.projections import (
    VARIANCE_ALPHAS,
    VARIANCE_RATIO_QUANTILES,
    VARIANCE_REPS,
    UncalibratedConfidenceError,
    clopper_pearson,
    mean_interval,
    projected_hessians,
    rank_one_variance_ratios,
    saddle_probability_from_spectrum,
    variance_interval,
    variance_ratio_quantiles,
)
from boundcheck.outputs.report import load_runs
from boundcheck.outputs.report.figures import make_figures
from boundcheck.outputs.report.model import make_runs
from boundcheck.quantities import Budget, Context
from boundcheck.quantities.projections import loss_surfaces
from derivations import random_projections as rp
from derivations.proof import Step, StepFailed

SPECTRA = {
    "rank_one": [1.0] + [0.0] * 19,
    "rank_two": [1.0, 0.5] + [0.0] * 18,
    "isotropic": [1.0] * 20,
    "indefinite": list(np.linspace(-1.0, 2.0, 20)),
    "negative_rank_one": [-3.0] + [0.0] * 19,
}


def allowed_misses(n: int, confidence: float) -> int:
    return int(scipy.stats.binom.ppf(0.999, n, 1.0 - confidence))


def with_spectrum(eigenvalues, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T


# --- the derivation ---------------------------------------------------------------------------
def test_derivation_steps_all_check():
    checked = rp.DERIVATION.verify()
    assert len(checked) == len(rp.DERIVATION.steps) >= 15
    assert "E[δᵀHδ] = tr H" in str(rp.DERIVATION)


def test_derivation_rejects_wrong_moments():
    wrong_var = Step("Var(δᵀHδ) = tr H² (false)", rp._expect(rp._qdd**2) - rp._expect(rp._qdd) ** 2,
                     sympy.expand(rp._tr2))
    with pytest.raises(StepFailed):
        wrong_var.verify()
    wrong_mean = Step("E[δᵀHδ] = 2 tr H (false)", rp._expect(rp._qdd), 2 * rp._tr)
    with pytest.raises(StepFailed):
        wrong_mean.verify()


def test_gaussian_expectation_table():
    x, y = sympy.symbols("x y")
    assert rp.gaussian_expectation(x**4 * y**2 + 3 * x * y + 2, (x, y)) == 5
    with pytest.raises(ValueError):
        rp.gaussian_expectation(x**6, (x,))


def test_moments_against_the_dense_matrix():
    """Sampled moments from products with a dense H approach tr H, 2 tr H², 0, tr H²."""
    h = with_spectrum(SPECTRA["indefinite"], seed=3)
    p = projected_hessians(SymmetricMatrixOperator(h), 20000, seed=1)
    x, _ = p.curvature_samples
    tr, fro2 = float(torch.trace(h)), float((h * h).sum())
    assert abs(x.mean() - tr) < 4 * np.sqrt(2 * fro2 / len(x))
    assert abs(x.var() / (2 * fro2) - 1) < 0.05
    assert abs(p.cross.mean()) < 4 * np.sqrt(fro2 / len(p.cross))
    assert abs(p.cross.var() / fro2 - 1) < 0.05
    # every sample is the quadratic form it claims to be
    gen = torch.Generator().manual_seed(1)
    both = torch.randn(64, h.shape[0], generator=gen, dtype=torch.float64)
    d, e = both[:32], both[32:]
    np.testing.assert_allclose(p.direct[:32], ((d @ h) * d).sum(1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(p.cross[:32], ((d @ h) * e).sum(1).numpy(), rtol=1e-12)


# --- calibrated intervals ---------------------------------------------------------------------
def _forms(lam: np.ndarray, m: int, rng: np.random.Generator):
    """m planes' (δᵀHδ, δᵀHη, ηᵀHη) straight from the spectrum (rotation invariance)."""
    d = rng.standard_normal((m, len(lam)))
    e = rng.standard_normal((m, len(lam)))
    return (d * d) @ lam, (d * e) @ lam, (e * e) @ lam


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_mean_and_variance_intervals_cover(name):
    lam = np.array(SPECTRA[name])
    conf, runs, m = 0.9, 300, 60
    tr, fro2 = lam.sum(), (lam**2).sum()
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    misses = {"mean": 0, "var": 0, "cross_mean": 0, "cross_var": 0}
    zeros = np.zeros(2 * m)
    for _ in range(runs):
        a, b, c = _forms(lam, m, rng)
        x = np.concatenate([a, c])
        misses["mean"] += not mean_interval(x, zeros, conf).lower <= tr <= mean_interval(
            x, zeros, conf).upper
        v = variance_interval(x, zeros, conf, "direct")
        misses["var"] += not v.lower <= 2 * fro2 <= v.upper
        cm = mean_interval(b, zeros[:m], conf)
        misses["cross_mean"] += not cm.lower <= 0.0 <= cm.upper
        cv = variance_interval(b, zeros[:m], conf, "cross")
        misses["cross_var"] += not cv.lower <= fro2 <= cv.upper
    limit = allowed_misses(runs, conf)
    assert all(k <= limit for k in misses.values()), (name, misses, limit)


def test_variance_quantiles_are_sane_and_refuse_unreachable_confidence():
    lo, hi = variance_ratio_quantiles(100, 0.01, "direct")
    assert 0.2 < lo < 1 < hi < 4
    lo_c, hi_c = variance_ratio_quantiles(100, 0.01, "cross")
    assert lo < lo_c < 1 < hi_c < hi  # the cross term is lighter tailed
    # rounding M and α down widens the interval
    assert variance_ratio_quantiles(120, 0.012, "direct") == (lo, hi)
    assert variance_ratio_quantiles(130, 0.01, "direct")[0] >= lo
    with pytest.raises(UncalibratedConfidenceError, match="too high"):
        variance_ratio_quantiles(100, 1e-6, "direct")
    with pytest.raises(ValueError):
        variance_ratio_quantiles(100, 0.01, "diagonal")
    with pytest.raises(ValueError):
        variance_ratio_quantiles(5, 0.01, "direct")


@pytest.mark.parametrize("kind", ["direct", "cross"])
def test_variance_table_regenerates(kind):
    """The stored row for M = 10 is what the documented simulation gives."""
    ratios = rank_one_variance_ratios(10, kind)
    row = VARIANCE_RATIO_QUANTILES[kind][0]
    assert row[0] == 10
    for a, (lo, hi) in zip(VARIANCE_ALPHAS, row[1], strict=True):
        k = 0.5 * a * VARIANCE_REPS
        kc = math.floor(k - 2.33 * math.sqrt(k))
        assert (lo, hi) == (round(float(ratios[kc - 1]), 4),
                            round(float(ratios[VARIANCE_REPS - kc]), 4))


# --- theorems ---------------------------------------------------------------------------------
TRUE_IDS = [t.id for t in rp.THEOREMS if t.id != "projection.extreme_plane_shows_saddle"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rank_one", "indefinite"])
def test_true_identities_are_violated_at_most_at_the_nominal_rate(name):
    conf, runs = 0.9, 120
    subject = bc.MatrixSubject(with_spectrum(SPECTRA[name], seed=2).numpy())
    budget = Budget(projection_planes=60, saddle_draws=2000)
    violated = dict.fromkeys(TRUE_IDS, 0)
    for seed in range(runs):
        res = bc.verify(subject, TRUE_IDS, confidence=conf, seed=seed, budget=budget)
        for tid in TRUE_IDS:
            violated[tid] += res[tid].verdict == "VIOLATED"
    # a one-sided miss: at most the two-sided rate
    limit = allowed_misses(runs, conf)
    assert all(v <= limit for v in violated.values()), (violated, limit)


def planted(lhs, rhs, tid):
    syms = {s: rp.QUANTITY[s] for s in (sympy.sympify(lhs).free_symbols
                                        | sympy.sympify(rhs).free_symbols)}
    return Theorem(id=tid, title=tid, lhs=lhs, rhs=rhs, symbols=syms, source="planted",
                   slack="difference")


PLANTED = [planted(2 * rp.trace_h, rp.mean_curv, "planted.mean_is_2trace"),
           planted(rp.var_curv, rp.fro2, "planted.variance_is_fro2"),
           planted(2 * rp.fro2, rp.var_cross, "planted.cross_variance_is_2fro2")]


@pytest.fixture(scope="module")
def small_net():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 6, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
    return bc.Subject(net, (x, y), "cross_entropy", name="small")


def test_planted_constants_are_violated_and_true_ones_not(small_net):
    res = bc.verify(small_net, PLANTED + [rp.THEOREMS[i] for i in range(8)], confidence=0.99,
                    seed=0)
    for t in PLANTED:
        assert res[t.id].verdict == "VIOLATED", res[t.id]
    for t in rp.THEOREMS[:8]:
        assert res[t.id].verdict in ("INCONCLUSIVE", "HOLDS"), res[t.id]


def test_extreme_plane_shows_the_saddle_and_needs_one():
    saddle = bc.MatrixSubject(with_spectrum([2.0, 0.5, 0.1, -0.3], seed=1).numpy())
    r = bc.verify(saddle, "projection.extreme_plane_shows_saddle")
    assert r["projection.extreme_plane_shows_saddle"].verdict == "HOLDS"
    det = r["projection.extreme_plane_shows_saddle"].quantities[
        "projection.extreme_plane_determinant"]
    assert det.contains(2.0 * -0.3)
    psd = bc.MatrixSubject(with_spectrum([2.0, 0.5, 0.1, 0.0], seed=1).numpy())
    r = bc.verify(psd, "projection.extreme_plane_shows_saddle")
    assert r["projection.extreme_plane_shows_saddle"].verdict == "NOT_APPLICABLE"
    assert "no saddle" in r["projection.extreme_plane_shows_saddle"].reason


# --- saddle probability -----------------------------------------------------------------------
def test_saddle_probability_exact_cases():
    # P = 2 and det H < 0: det(AᵀHA) = det(A)² det H < 0 for every plane; PSD: never
    assert saddle_probability_from_spectrum(np.array([1.0, -2.0]), 3000, 0) == 3000
    assert saddle_probability_from_spectrum(np.array([1.0, 0.3, 0.0]), 3000, 0) == 0
    lo, hi = clopper_pearson(0, 100, 0.95)
    assert lo == 0 and abs(hi - (1 - 0.025 ** (1 / 100))) < 1e-12


def test_saddle_probability_from_spectrum_matches_the_full_matrix():
    lam = np.array([1.0, 0.8, 0.3, -0.4, -0.1, 0.05])
    h = with_spectrum(lam, seed=5)
    ctx = Context(bc.MatrixSubject(h.numpy()), confidence=0.999, seed=1,
                  budget=Budget(projection_planes=4000, saddle_draws=40000))
    obs = ctx.get("projection.saddle_probability")
    pred = ctx.get("projection.saddle_probability_predicted")
    assert 0.05 < pred.value < 0.95
    assert obs.lower <= pred.upper and pred.lower <= obs.upper, (obs, pred)
    assert obs.details["undecided"] == 0


# --- loss surfaces ----------------------------------------------------------------------------
def test_loss_surfaces_curvature_matches_the_dense_hessian(small_net):
    ctx = Context(small_net)
    s = loss_surfaces(ctx, points_1d=41, points_2d=5, relative_radius=0.02)
    evals = torch.linalg.eigvalsh(dense_hessian(small_net))
    by_name = {line["direction"]: line for line in s["lines"]}
    for name, lam in (("λ_max eigenvector", evals[-1]), ("λ_min eigenvector", evals[0])):
        line = by_name[name]
        h = line["t"][21] - line["t"][20]
        second = (line["loss"][21] - 2 * line["loss"][20] + line["loss"][19]) / h**2
        assert abs(second - float(lam)) <= 1e-3 * float(evals.abs().max()), (name, second, lam)
        assert line["loss"][20] == pytest.approx(small_net.loss_value(), rel=1e-12)
    assert len(s["planes"]) == 2 and len(s["planes"][1]["loss"]) == 5


def test_surface_figure_from_stored_extras(small_net, tmp_path):
    ctx = Context(small_net)
    res = bc.verify(small_net, ["projection.saddle_observed_le_predicted"], context=ctx)
    res.extras["loss_surfaces"] = loss_surfaces(ctx, points_1d=9, points_2d=5)
    path = tmp_path / "results.json"
    res.save(path)
    runs = make_runs(load_runs([path]))
    figs = make_figures(runs, [], tmp_path / "figs", formats=("png",))
    surf = [f for f in figs if f.name.startswith("surfaces-")]
    assert len(surf) == 1 and surf[0].files["png"].exists()
    assert "predicted from the spectrum" in surf[0].caption


@pytest.mark.slow  # ~20 s: a CLI run with training, report and figures
def test_run_selecting_t9_stores_surfaces_and_draws_them(tmp_path):
    from boundcheck.cli import main
    from boundcheck.verification.results import Results

    cfg = tmp_path / "t9.toml"
    cfg.write_text('name = "t9"\ntheorems = ["projection.extreme_plane_shows_saddle"]\n'
                   '[subject]\ndataset = "digits"\nn_samples = 100\nhidden = [4]\n'
                   '[recipe]\nsteps = 20\nlr = 0.5\n')
    out = tmp_path / "out"
    assert main(["run", str(cfg), "-o", str(out), "--no-pdf", "-q"]) == 0
    surfaces = Results.load(out / "results.json").extras["loss_surfaces"]
    assert [line["direction"] for line in surfaces["lines"]] == [
        "random", "λ_max eigenvector", "λ_min eigenvector"]
    assert list((out / "report-figures").glob("surfaces-*.png"))
    assert "surfaces-" in (out / "report.md").read_text()
