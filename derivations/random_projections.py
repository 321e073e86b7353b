"""T9 — Curvature under random projections (Böttcher & Wheeler, arXiv 2208.13219,
J. Stat. Mech. 2024; THEOREMS.md T9).

Statement. For symmetric ``H ∈ R^{P×P}`` and δ, η with iid N(0, 1) entries:

    E[δᵀHδ] = tr H,   E[δᵀHη] = 0,   Var(δᵀHδ) = 2 tr H²,   Var(δᵀHη) = tr H²,

so the expected projected 2×2 Hessian is ``tr(H)·I`` (with N(0, 1/P) entries: the mean
curvature ``tr H / P``). The law of the projected 2×2 Hessian depends only on the spectrum
of H, so ``P(det < 0)`` (a random plane shows a saddle) is a Monte Carlo over the eigenvalues;
the plane of the λ_max and λ_min eigenvectors has determinant ``λ_max λ_min`` and shows a
saddle whenever H has eigenvalues of both signs. The second difference
``T(ε) = [L(θ+εδ) − 2L(θ) + L(θ−εδ)]/ε² = δᵀHδ + (ε²/12)∇⁴L[δ⁴] + O(ε⁴)`` estimates
``δᵀHδ`` from loss values, and ``(T(2ε) − T(ε))/3`` is its ε² bias.

How the moments are verified. Each identity is a statement about Gaussian moments; the
steps below prove it symbolically for a general symmetric 3×3 H (a sympy matrix identity
after replacing each monomial ``∏ δ_i^{a_i} η_i^{b_i}`` by ``∏ μ_{a_i} μ_{b_i}``,
``μ = (1, 0, 1, 0, 3)``, the moments of N(0, 1), themselves checked with sympy.stats);
rotation invariance (``Qᵀδ`` is again N(0, I) for orthogonal Q) reduces every P to the
diagonal case, proved for P = 4 with symbolic eigenvalues.

How the theorems are decided. Equalities with a sampled side: each identity is registered
as two inequalities (``sampled ≤ exact`` and ``exact ≤ sampled``) between the sampled moment
(``projection.*``, an interval at the run's confidence: the mean with the rank-one-calibrated
critical value, the variance with rank-one-calibrated quantiles of ``v/σ²``) and the exact
one (``hessian.trace``, ``hessian.fro2``). A true identity is INCONCLUSIVE (the interval
covers the exact value) or, rarely, HOLDS; it is VIOLATED only when the interval misses the
exact value on one side, which happens at most at the nominal rate ``1 − confidence``
(tests/test_projections.py counts it). A wrong constant (``E = 2 tr H``, ``Var = tr H²``)
is VIOLATED once the interval is narrower than the error.
"""

from __future__ import annotations

import math

import sympy
import sympy.stats

from boundcheck.core.estimate import Estimate
from boundcheck.core.theorem import Assumption, Theorem

from .proof import Derivation, Step

SOURCE = ("M. Böttcher and M. Wheeler, Visualising high-dimensional loss landscapes: random "
          "projections and curvature, arXiv 2208.13219 (J. Stat. Mech. 2024)")
FAMILY = "projection"

# --- theorem symbols ------------------------------------------------------------------------
mean_curv = sympy.Symbol(r"\mathbb{E}[\delta^\top H\delta]", real=True)
var_curv = sympy.Symbol(r"\operatorname{Var}(\delta^\top H\delta)", nonnegative=True)
mean_cross = sympy.Symbol(r"\mathbb{E}[\delta^\top H\eta]", real=True)
var_cross = sympy.Symbol(r"\operatorname{Var}(\delta^\top H\eta)", nonnegative=True)
trace_h = sympy.Symbol(r"\operatorname{tr} H", real=True)
fro2 = sympy.Symbol(r"\operatorname{tr} H^2", nonnegative=True)
p_obs = sympy.Symbol(r"p_{\mathrm{saddle}}", nonnegative=True)
p_pred = sympy.Symbol(r"\hat p_{\mathrm{saddle}}", nonnegative=True)
det_ext = sympy.Symbol(r"\det H_{\pm}", real=True)
lam_max = sympy.Symbol(r"\lambda_{\max}", real=True)
lam_min = sympy.Symbol(r"\lambda_{\min}", real=True)

QUANTITY = {mean_curv: "projection.curvature_mean", var_curv: "projection.curvature_variance",
            mean_cross: "projection.cross_mean", var_cross: "projection.cross_variance",
            trace_h: "hessian.trace", fro2: "hessian.fro2",
            p_obs: "projection.saddle_probability",
            p_pred: "projection.saddle_probability_predicted",
            det_ext: "projection.extreme_plane_determinant",
            lam_max: "hessian.lambda_max", lam_min: "hessian.lambda_min"}

EQUALITY_NOTE = ("One side of an identity with a sampled side (statistical at the run's "
                 "confidence): INCONCLUSIVE or HOLDS when the identity is true; VIOLATED when "
                 "the sampled interval misses the exact value on this side.")


def _theorem(tid: str, title: str, lhs, rhs, slack: str = "difference",
             assumptions: tuple[Assumption, ...] = (), notes: str = EQUALITY_NOTE) -> Theorem:
    syms = (sympy.sympify(lhs).free_symbols | sympy.sympify(rhs).free_symbols)
    return Theorem(id=tid, title=title, lhs=lhs, rhs=rhs,
                   symbols={s: QUANTITY[s] for s in syms}, source=SOURCE, slack=slack,
                   family=FAMILY, assumptions=assumptions, notes=notes)


def _has_both_signs(values: dict[str, Estimate], subject: object) -> str | None:
    lo, hi = values["hessian.lambda_min"], values["hessian.lambda_max"]
    if not lo.upper < 0.0:
        return (f"λ_min ∈ [{lo.lower:.3g}, {lo.upper:.3g}] is not certainly negative: H shows "
                "no saddle in any plane")
    if not hi.lower > 0.0:
        return f"λ_max ∈ [{hi.lower:.3g}, {hi.upper:.3g}] is not certainly positive"
    return None


SADDLE_POINT = Assumption("λ_min < 0 < λ_max", "H is indefinite (a saddle)", _has_both_signs,
                          ("hessian.lambda_min", "hessian.lambda_max"))

THEOREMS = (
    _theorem("projection.mean_curvature_le_trace", "E[δᵀHδ] ≤ tr H (sampled ≤ exact)",
             mean_curv, trace_h),
    _theorem("projection.trace_le_mean_curvature", "tr H ≤ E[δᵀHδ] (exact ≤ sampled)",
             trace_h, mean_curv),
    _theorem("projection.cross_mean_le_zero", "E[δᵀHη] ≤ 0 (sampled ≤ exact)",
             mean_cross, sympy.Integer(0)),
    _theorem("projection.zero_le_cross_mean", "0 ≤ E[δᵀHη] (exact ≤ sampled)",
             sympy.Integer(0), mean_cross),
    _theorem("projection.curvature_variance_le_2fro2", "Var(δᵀHδ) ≤ 2 tr H² (sampled ≤ exact)",
             var_curv, 2 * fro2, slack="ratio"),
    _theorem("projection.2fro2_le_curvature_variance", "2 tr H² ≤ Var(δᵀHδ) (exact ≤ sampled)",
             2 * fro2, var_curv, slack="ratio"),
    _theorem("projection.cross_variance_le_fro2", "Var(δᵀHη) ≤ tr H² (sampled ≤ exact)",
             var_cross, fro2, slack="ratio"),
    _theorem("projection.fro2_le_cross_variance", "tr H² ≤ Var(δᵀHη) (exact ≤ sampled)",
             fro2, var_cross, slack="ratio"),
    _theorem("projection.saddle_observed_le_predicted",
             "observed saddle probability ≤ the one predicted from the spectrum", p_obs, p_pred,
             notes="Both sides sampled; the union bound gives the confidence. " + EQUALITY_NOTE),
    _theorem("projection.saddle_predicted_le_observed",
             "saddle probability predicted from the spectrum ≤ the observed one", p_pred, p_obs,
             notes="Both sides sampled; the union bound gives the confidence. " + EQUALITY_NOTE),
    _theorem("projection.extreme_plane_shows_saddle",
             "the plane of the λ_max, λ_min eigenvectors shows the saddle (det ≤ 0)",
             det_ext, sympy.Integer(0), assumptions=(SADDLE_POINT,),
             notes="det = λ_max λ_min < 0 when H is indefinite; exact with rounding allowance."),
)


# --- the derivation -------------------------------------------------------------------------
_N = 3
_d = sympy.symbols(f"delta_1:{_N + 1}", real=True)
_e = sympy.symbols(f"eta_1:{_N + 1}", real=True)
_h = {(i, j): sympy.Symbol(f"h_{min(i, j) + 1}{max(i, j) + 1}", real=True)
      for i in range(_N) for j in range(_N)}
_H = sympy.Matrix(_N, _N, lambda i, j: _h[i, j])
_D = sympy.Matrix(_d)
_E = sympy.Matrix(_e)
GAUSSIAN_MOMENTS = (1, 0, 1, 0, 3)  # E[g^k], k = 0..4, g ~ N(0, 1)


def gaussian_expectation(expr: sympy.Expr, variables) -> sympy.Expr:
    """``E[expr]`` for independent N(0, 1) ``variables`` (polynomial of degree ≤ 4 in each)."""
    poly = sympy.Poly(sympy.expand(expr), *variables)
    total = sympy.Integer(0)
    for powers, coeff in poly.terms():
        if max(powers) >= len(GAUSSIAN_MOMENTS):
            raise ValueError(f"moment of order {max(powers)} not tabulated")
        total += coeff * math.prod(GAUSSIAN_MOMENTS[k] for k in powers)
    return sympy.expand(total)


def _expect(expr: sympy.Expr) -> sympy.Expr:
    return gaussian_expectation(expr, _d + _e)


_qdd = (_D.T * _H * _D)[0]
_qde = (_D.T * _H * _E)[0]
_tr = _H.trace()
_tr2 = (_H * _H).trace()

_g = sympy.stats.Normal("g", 0, 1)
_lam = sympy.symbols("lambda_1:5", real=True)
_Lam = sympy.diag(*_lam)
_D4 = sympy.Matrix(sympy.symbols("g_1:5", real=True))
_q4 = (_D4.T * _Lam * _D4)[0]

_c, _s = sympy.symbols("c s", real=True)
_Q = sympy.Matrix([[_c, -_s], [_s, _c]])

_t, _eps = sympy.symbols("t epsilon", real=True)
_phi = sympy.symbols("phi_0:7", real=True)  # φ(t) = L(θ + tδ) = Σ φ_k t^k / k!
_L = sum(_phi[k] * _t**k / math.factorial(k) for k in range(7))


def _second_difference(step):
    return (_L.subs(_t, step) - 2 * _L.subs(_t, 0) + _L.subs(_t, -step)) / step**2


DERIVATION = Derivation(
    title="T9 random projections: moments of the projected Hessian; saddles; the "
          "second-difference trace",
    source=SOURCE,
    steps=tuple([
        Step("Gaussian moments: E[g²] = 1", sympy.stats.E(_g**2), 1),
        Step("Gaussian moments: E[g⁴] = 3", sympy.stats.E(_g**4), 3,
             because="μ = (1, 0, 1, 0, 3) is the table the expectations below use"),
        Step("Gaussian moments: E[g] = E[g³] = 0", sympy.stats.E(_g) + sympy.stats.E(_g**3), 0),
        Step("E[δᵀHδ] = tr H (general symmetric 3×3 H)", _expect(_qdd), _tr,
             because="E[δ_i δ_j] = [i = j]"),
        Step("E[δᵀHη] = 0", _expect(_qde), 0, because="δ, η independent with mean 0"),
        Step("E[(δᵀHδ)²] = (tr H)² + 2 tr H²", _expect(_qdd**2), sympy.expand(_tr**2 + 2 * _tr2),
             because="Isserlis: E[δ_iδ_jδ_kδ_l] = [ij][kl] + [ik][jl] + [il][jk]"),
        Step("so Var(δᵀHδ) = 2 tr H²", _expect(_qdd**2) - _expect(_qdd) ** 2,
             sympy.expand(2 * _tr2)),
        Step("Var(δᵀHη) = E[(δᵀHη)²] = tr H²", _expect(_qde**2) - _expect(_qde) ** 2,
             sympy.expand(_tr2), because="E[(δᵀHη)²] = Σ H_ij H_kl [ik][jl] = tr H²"),
        Step("E[δᵀHδ · ηᵀHη] = (tr H)² (the two diagonal entries are independent)",
             _expect(_qdd * (_E.T * _H * _E)[0]), sympy.expand(_tr**2)),
        Step("E[δᵀHδ · δᵀHη] = 0 (diagonal and off-diagonal entries uncorrelated)",
             _expect(_qdd * _qde), 0),
        Step("rotation invariance: Qᵀδ has covariance QᵀQ = I for orthogonal Q (c² + s² = 1)",
             (_Q.T * _Q).subs(_s**2, 1 - _c**2), sympy.eye(2),
             because="so (Qᵀδ, Qᵀη) is again iid Gaussian and H = QΛQᵀ gives the law of Λ: "
                     "the projected 2×2 Hessian depends on the spectrum alone"),
        Step("in the eigenbasis: Var(Σ λ_i g_i²) = 2 Σ λ_i² (P = 4, symbolic λ)",
             gaussian_expectation(_q4**2, tuple(_D4)) - gaussian_expectation(_q4, tuple(_D4))**2,
             sympy.expand(2 * sum(v**2 for v in _lam)),
             because="Var(g²) = 3 − 1 = 2, independent terms"),
        Step("N(0, 1/P) directions: E[(δ/√P)ᵀH(δ/√P)] = tr H / P, the mean curvature",
             _expect(_qdd) / _N, _tr / _N),
        Step("the plane of the extreme eigenvectors: det diag(λ_max, λ_min) = λ_max λ_min",
             sympy.diag(lam_max, lam_min).det(), lam_max * lam_min,
             because="u_maxᵀHu_min = 0; so det < 0 iff λ_min < 0 < λ_max: the plane always "
                     "shows a saddle of H"),
        Step("second difference: T(ε) = φ''(0) + ε²φ⁗(0)/12 + ε⁴φ⁽⁶⁾(0)/360 (degree-6 φ)",
             _second_difference(_eps),
             _phi[2] + _eps**2 * _phi[4] / 12 + _eps**4 * _phi[6] / 360,
             because="φ(t) = L(θ + tδ): φ''(0) = δᵀHδ, φ⁗(0) = ∇⁴L[δ⁴]; odd terms cancel"),
        Step("bias estimate: (T(2ε) − T(ε))/3 = ε²φ⁗(0)/12 + O(ε⁴)",
             (_second_difference(2 * _eps) - _second_difference(_eps)) / 3,
             _eps**2 * _phi[4] / 12 + _eps**4 * _phi[6] * 15 / (3 * 360),
             because="so β's second term estimates T(ε)'s truncation bias; the ε⁴ rest is "
                     "not covered (statistical, not certified)"),
    ]),
    conclusion="E[δᵀHδ] = tr H, E[δᵀHη] = 0, Var(δᵀHδ) = 2 tr H², Var(δᵀHη) = tr H²; the "
               "saddle probability is a function of the spectrum; T(ε) = δᵀHδ + O(ε²)",
)
