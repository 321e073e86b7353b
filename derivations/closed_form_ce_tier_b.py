"""T2 Tier B — a parameter-level λ_max bound for cross-entropy in ``f(x) = V σ(W x + b) + c``:
data only through n, ``R = max_i ‖x_i‖`` and ``ρ = max_{i≠j} |cos(x_i, x_j)|``; parameters
only through ``‖W‖₂, ‖b‖, ‖V‖₂, ‖V‖_F``; σ through ``sup|σ'|, sup|σ''|, |σ(0)|, sup|σ|``;
and h, K, P. Optionally (the "saturation" variant) also through
``ε = max_i (1 − p_{i,y_i})``, the worst training-sample confidence gap (ε = 1 is norm-only).

Source: relaxation of T2 Tier A (:mod:`derivations.closed_form_ce`; Omae et al.,
arXiv 2604.10202, 2026, for the setting), derived here step by step.

Notation. ``α = min(√h sup|σ|, √h|σ(0)| + sup|σ'|(‖W‖₂R + ‖b‖))`` bounds ‖a_i‖;
``Â² = α² + β_o``, ``X̂² = R² + β_h``, ``X_ρ = ρR² + β_h`` (β = 1 when the layer has a bias);
softmax constants ``τ = min(1 − 1/K, 2ε) ≥ tr A_i``, ``λ_A = min(½, 2ε) ≥ λ_max(A_i)``,
``a_F = min(½, 2ε) ≥ ‖A_i‖_F``, ``γ = √2 ε ≥ ‖g_i‖``.

Route 1 (Wolkowicz–Styan over a box). Per sample (Tier A's blocks, Cauchy–Schwarz):
``tr H_i ∈ [−√h s₂‖V‖₂γX̂², τÂ² + (λ_A s₁²‖V‖_F² + √h s₂‖V‖₂γ)X̂²]``,
``‖M_i‖_F ≤ m_F = λ_A s₁²‖V‖₂‖V‖_F + s₂‖V‖₂γ``, ``‖C_i‖_F ≤ c_F = λ_A s₁‖V‖_F Â + √h s₁γ``,
``|⟨H_i,H_j⟩| ≤ a_F²Â⁴ + X_ij² m_F² + 2X_ij c_F²`` with ``X_ii = X̂²``, ``X_ij ≤ X_ρ``, so
``‖H‖_F² ≤ F̄ = (Φ_d + (n−1)Φ_o)/n``. WS ``φ(m) = m + √((P−1)(F/P − m²))`` increases in F and
is concave in m with maximum ``√F̄`` at ``m* = √F̄/P``: the bound is φ at m* clipped to the
trace box.

Route 2 (2×2 block bound). With H split into hidden (W, b) and output (V, c) blocks,
``λ_max(H) ≤ λ_max([[λ₁₁, β], [β, λ₂₂]])`` where ``λ₁₁ = μ̄Λ_X/n`` (``M_i ⪯ μ̄ I``,
``μ̄ = λ_A s₁²‖V‖₂² + s₂‖V‖₂γ``, ``Λ_X = X̂² + (n−1)X_ρ ≥ λ_max(Σ x̃_ix̃_iᵀ)`` by Gershgorin),
``λ₂₂ = λ_A Â²`` and ``β = c₂√(Λ_X/n)``, ``c₂ = λ_A s₁‖V‖₂Â + s₁γ ≥ ‖C_i‖₂``.

Statement: ``λ_max(H) ≤ min(route 1, route 2)``.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import sympy

from boundcheck.core.formulas.closed_form import (  # noqa: F401  (the derivation's own symbols)
    INGREDIENTS,
    K,
    P,
    R,
    bh,
    bnorm,
    bo,
    eps,
    h,
    n,
    pieces,
    rho,
    s0,
    s1,
    s2,
    smax,
    tier_b_expression,
    v2,
    vf,
    w2,
)
from boundcheck.core.theorem import Theorem

from .proof import Derivation, Step

SOURCE = ("relaxation of T2 Tier A (derivations/closed_form_ce.py); setting of Y. Omae et al., "
          "arXiv 2604.10202 (2026); derived in derivations/closed_form_ce_tier_b.py")

# --- the theorems -----------------------------------------------------------------------------
lam_max = sympy.Symbol(r"\lambda_{\max}", real=True)
bound_b = sympy.Symbol(r"B_{\mathrm{T2B}}", real=True)
bound_b_sat = sympy.Symbol(r"B_{\mathrm{T2B},\varepsilon}", real=True)


_NOTES = ("B = min(route 1: Wolkowicz–Styan maximised over the box of norm-level bounds on "
          "tr H and ‖H‖_F²; route 2: the 2×2 block bound λ_max([[μ̄Λ_X/n, β],[β, λ_AÂ²]])); "
          "see derivations/closed_form_ce_tier_b.py; at depth L ≥ 2 the same two routes over "
          "per-layer norms, route 2 with the (L+1)×(L+1) layer-block norm matrix "
          "(derivations/closed_form_ce_depth_tier_b.py). The right side is measured as the "
          "quantity with an interval from interval evaluation over its ingredients.")

TIER_B = Theorem(
    id="hessian.tier_b_lambda_max",
    title="Parameter-level λ_max bound (CE, L ≥ 1 smooth hidden layers; T2 Tier B, norms only)",
    lhs=lam_max, rhs=bound_b,
    symbols={lam_max: "hessian.lambda_max", bound_b: "closed_form.tier_b_lambda_max"},
    source=SOURCE, slack="ratio", family="hessian.closed_form", notes=_NOTES,
    applies_to="closed_form.depth",
)
TIER_B_SAT = Theorem(
    id="hessian.tier_b_sat_lambda_max",
    title="Parameter-level λ_max bound with the confidence gap ε = max_i(1 − p_{i,y_i}) "
          "(T2 Tier B, saturation-aware)",
    lhs=lam_max, rhs=bound_b_sat,
    symbols={lam_max: "hessian.lambda_max", bound_b_sat: "closed_form.tier_b_sat_lambda_max"},
    source=SOURCE, slack="ratio", family="hessian.closed_form", notes=_NOTES,
    applies_to="closed_form.depth",
)
THEOREMS = (TIER_B, TIER_B_SAT)


# --- numeric instances for the lemma checks ---------------------------------------------------
def _np_rng(rng: random.Random) -> np.random.Generator:
    return np.random.default_rng(rng.getrandbits(63))


def _simplex(r: np.random.Generator, k: int) -> np.ndarray:
    logits = r.normal(size=k) * r.choice([0.3, 3.0, 15.0])
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _softmax_hessian(p: np.ndarray) -> np.ndarray:
    return np.diag(p) - np.outer(p, p)


class _Sample:
    """A random per-sample instance of Tier A's factors with |σ'| ≤ d1, |σ''| ≤ d2."""

    def __init__(self, r: np.random.Generator, v: np.ndarray, d1: float, d2: float, dx: int,
                 biases: tuple[bool, bool]):
        k, hh = v.shape
        self.p = _simplex(r, k)
        self.y = int(r.integers(k))
        self.g = self.p - np.eye(k)[self.y]
        self.A = _softmax_hessian(self.p)
        self.s1 = r.uniform(-d1, d1, hh)
        self.s2 = r.uniform(-d2, d2, hh)
        self.a = r.normal(size=hh) * r.choice([0.1, 1.0, 3.0])
        self.x = r.normal(size=dx)
        self.xt = np.append(self.x, 1.0) if biases[0] else self.x
        self.at = np.append(self.a, 1.0) if biases[1] else self.a
        b = v * self.s1
        self.F = b.T @ self.A
        self.q = self.s2 * (v.T @ self.g)
        self.M = self.F @ b + np.diag(self.q)
        na = len(self.at)
        self.C = np.zeros((k * na, hh))
        for kk in range(k):
            self.C[kk * na:(kk + 1) * na] = np.outer(self.at, self.F[:, kk])
            self.C[kk * na + np.arange(hh), np.arange(hh)] += self.s1 * self.g[kk]

    def pair(self, other: _Sample) -> float:
        """⟨H_i, H_j⟩_F from the block formulas."""
        gx, ga = self.xt @ other.xt, self.at @ other.at
        return (np.sum(self.A * other.A) * ga**2 + gx**2 * np.sum(self.M * other.M)
                + 2 * gx * np.sum(self.C * other.C))


def _instance(rng: random.Random, biases: tuple[bool, bool] = (True, True)):
    r = _np_rng(rng)
    k, hh, dx = int(r.integers(2, 6)), int(r.integers(1, 6)), int(r.integers(1, 5))
    v = r.normal(size=(k, hh)) * r.choice([0.1, 1.0, 5.0])
    d1, d2 = float(r.uniform(0.1, 2)), float(r.uniform(0.0, 2))
    return r, v, d1, d2, dx, k, hh


def _norm_values(v: np.ndarray, d1: float, d2: float, k: int, hh: int) -> dict:
    return {v2: np.linalg.norm(v, 2), vf: np.linalg.norm(v), s1: d1, s2: d2, K: k, h: hh}


# symbols for measured left sides
_lhs = sympy.Symbol("measured", real=True)
_RHS = sympy.Symbol("rhs_value")
_lamA = sympy.Symbol(r"\lambda_{\max}(A)", nonnegative=True)
_gn = sympy.Symbol(r"\|g\|", nonnegative=True)
_an = sympy.Symbol(r"\|\tilde a\|", nonnegative=True)
_xn = sympy.Symbol(r"\|x\|", nonnegative=True)


def _per_sample_step(name: str, rhs: sympy.Expr, measure, because: str = "") -> Step:
    def sampler(rng):
        r, v, d1, d2, dx, k, hh = _instance(rng)
        s = _Sample(r, v, d1, d2, dx, (bool(r.integers(2)), bool(r.integers(2))))
        vals = _norm_values(v, d1, d2, k, hh)
        vals.update({_lamA: np.linalg.eigvalsh(s.A)[-1], _gn: np.linalg.norm(s.g),
                     _an: np.linalg.norm(s.at), _lhs: measure(s, v)})
        return {key: float(val) for key, val in vals.items()}

    return Step(name, _lhs, rhs, relation="<=", check="numeric", sampler=sampler,
                because=because)


def _activation_sampler(bounded_only: bool):
    import torch

    from boundcheck.core.activations import activation_of

    mods = [torch.nn.Tanh(), torch.nn.Sigmoid(), torch.nn.Softplus(beta=2.0),
            torch.nn.Softplus(), torch.nn.GELU()]
    if bounded_only:
        mods = mods[:2]

    def sampler(rng):
        r = _np_rng(rng)
        act = activation_of(mods[int(r.integers(len(mods)))])
        hh, dx = int(r.integers(1, 8)), int(r.integers(1, 6))
        w = r.normal(size=(hh, dx)) * r.choice([0.1, 1.0, 10.0])
        b = r.normal(size=hh) * r.choice([0.0, 1.0, 5.0])
        x = r.normal(size=dx) * r.choice([0.1, 1.0, 10.0])
        a = act.derivatives(torch.tensor(w @ x + b))[0].numpy()
        return {_lhs: float(np.linalg.norm(a)), h: hh, s0: act.at_zero, s1: act.sup_d1,
                smax: act.sup_abs if bounded_only else 0.0, w2: float(np.linalg.norm(w, 2)),
                bnorm: float(np.linalg.norm(b)), R: float(np.linalg.norm(x))}

    return sampler


def _activation_constants_sampler(rng):
    """σ', σ'' of each supported activation at a random z against the stated suprema."""
    import torch

    from boundcheck.core.activations import activation_of

    r = _np_rng(rng)
    mods = [torch.nn.Tanh(), torch.nn.Sigmoid(), torch.nn.Softplus(beta=0.5), torch.nn.GELU(),
            torch.nn.Identity()]
    act = activation_of(mods[int(r.integers(len(mods)))])
    z = torch.tensor([r.normal() * r.choice([0.5, 2.0, 8.0])], dtype=torch.float64)
    _, d1, d2, _, _ = act.derivatives(z)
    return {_lhs: max(float(d1.abs()) / max(act.sup_d1, 1e-300),
                      float(d2.abs()) / max(act.sup_d2, 1e-300) if act.sup_d2 else 0.0)}


def _pair_sampler(rng):
    r, v, d1, d2, dx, k, hh = _instance(rng)
    biases = (bool(r.integers(2)), bool(r.integers(2)))
    si, sj = (_Sample(r, v, d1, d2, dx, biases) for _ in range(2))
    gx, ga = si.xt @ sj.xt, si.at @ sj.at
    fro = np.linalg.norm
    return {_lhs: abs(si.pair(sj)),
            _RHS: (fro(si.A) * fro(sj.A) * ga**2
                                        + gx**2 * fro(si.M) * fro(sj.M)
                                        + 2 * abs(gx) * fro(si.C) * fro(sj.C))}


def _gram_sampler(rng):
    r = _np_rng(rng)
    nn_, dx = int(r.integers(2, 8)), int(r.integers(1, 6))
    x = r.normal(size=(nn_, dx)) * r.choice([0.1, 1.0, 10.0])
    x[0] *= r.choice([1.0, 0.0])  # a zero sample is allowed
    bias = float(r.integers(2))
    norms = np.linalg.norm(x, axis=1)
    cos = np.abs(x @ x.T) / np.maximum(np.outer(norms, norms), 1e-300)
    np.fill_diagonal(cos, 0.0)
    xt = np.hstack([x, np.full((nn_, 1), bias)])
    return {_lhs: float(np.linalg.eigvalsh(xt @ xt.T)[-1]), n: nn_, R: float(norms.max()),
            rho: float(cos.max()), bh: bias}


def _block_sampler(rng):
    r = _np_rng(rng)
    p1, p2 = int(r.integers(1, 6)), int(r.integers(1, 6))
    m = r.normal(size=(p1 + p2, p1 + p2))
    m = m + m.T
    top, off, bottom = m[:p1, :p1], m[p1:, :p1], m[p1:, p1:]
    l11, l22 = np.linalg.eigvalsh(top)[-1], np.linalg.eigvalsh(bottom)[-1]
    beta = np.linalg.norm(off, 2)
    return {_lhs: float(np.linalg.eigvalsh(m)[-1]),
            _RHS: float(np.linalg.eigvalsh(
                np.array([[l11, beta], [beta, l22]]))[-1])}


def _hidden_block_sampler(rng):
    """H₁₁ = (1/n)Σ M_i ⊗ x̃_ix̃_iᵀ with λ_max(M_i) ≤ μ̄ against μ̄ λ_max(Σ x̃x̃ᵀ)/n."""
    r = _np_rng(rng)
    nn_, hh, dx = int(r.integers(1, 6)), int(r.integers(1, 4)), int(r.integers(1, 4))
    x = r.normal(size=(nn_, dx)) * r.choice([0.3, 3.0])
    ms = []
    for _ in range(nn_):
        m = r.normal(size=(hh, hh))
        ms.append(m + m.T)
    mu = max(max(np.linalg.eigvalsh(m)[-1] for m in ms), 0.0)
    h11 = sum(np.kron(m, np.outer(xi, xi)) for m, xi in zip(ms, x, strict=True)) / nn_
    return {_lhs: float(np.linalg.eigvalsh(h11)[-1]),
            _RHS: float(mu * np.linalg.eigvalsh(x.T @ x)[-1] / nn_)}


def _cross_block_sampler(rng):
    """H₁₂ = (1/n)Σ C_i ⊗ x̃_iᵀ against max‖C_i‖₂ √(λ_max(Σ x̃x̃ᵀ)/n)."""
    r = _np_rng(rng)
    nn_, rows, hh, dx = (int(r.integers(1, 6)), int(r.integers(1, 5)), int(r.integers(1, 4)),
                         int(r.integers(1, 4)))
    x = r.normal(size=(nn_, dx))
    cs = [r.normal(size=(rows, hh)) for _ in range(nn_)]
    h12 = sum(np.kron(c, xi[None, :]) for c, xi in zip(cs, x, strict=True)) / nn_
    c2 = max(np.linalg.norm(c, 2) for c in cs)
    return {_lhs: float(np.linalg.norm(h12, 2)),
            _RHS: float(c2 * math.sqrt(np.linalg.eigvalsh(x.T @ x)[-1]
                                                            / nn_))}


_m, _fv = sympy.symbols("m F", real=True)
_phi = _m + sympy.sqrt((P - 1) * (_fv / P - _m**2))


def _ws_box_sampler(rng):
    """A point (m, F) with F ≤ F̄, m² ≤ F/P, m in [m_lo, m_hi]: φ_F(m) against φ_F̄(clip m*)."""
    r = _np_rng(rng)
    pp = int(r.integers(2, 10_000))
    fbar = float(r.uniform(0.1, 10))
    f = fbar * float(r.uniform(0, 1))
    m = float(r.uniform(-1, 1)) * math.sqrt(f / pp)
    mlo, mhi = m - float(r.exponential(0.01)), m + float(r.exponential(0.01))
    mc = min(max(math.sqrt(fbar) / pp, mlo), mhi)
    return {_lhs: m + math.sqrt(max((pp - 1) * (f / pp - m * m), 0.0)),
            _RHS: mc + math.sqrt(max((pp - 1) * (fbar / pp - mc * mc),
                                                          0.0))}



def _bound_step(name: str, sampler, because: str = "") -> Step:
    """A numeric step on random instances: the sampler returns the measured left side and the
    bound's value (the name states the claim)."""
    def evaluate(rng):
        point = sampler(rng)
        return point[_lhs], point[_RHS]

    return Step(name, sympy.Symbol("measured"), sympy.Symbol("bound"), relation="<=",
                check="numeric", evaluate=evaluate, because=because)


# --- softmax facts, symbolically (K = 3, y = the first class) -------------------------------
# Stated homogeneously in positive p₁, p₂, p₃ with s = Σp (s = 1 on the simplex), so that
# sympy sees each witness is ≥ 0.
_p1, _p2, _p3 = sympy.symbols("p_1 p_2 p_3", positive=True)
_ps = (_p1, _p2, _p3)
_s = _p1 + _p2 + _p3
_S2 = sum(p**2 for p in _ps)
_S3 = sum(p**3 for p in _ps)
_x = sympy.Symbol("x", real=True)
_Amat = sympy.diag(*_ps) - sympy.Matrix(_ps) * sympy.Matrix(_ps).T
_pairs = ((_p1, _p2), (_p1, _p3), (_p2, _p3))
_on_simplex = {_p3: 1 - _p1 - _p2}
_Fb = sympy.Symbol(r"\bar F", positive=True)


def _steps() -> tuple[Step, ...]:
    pr = pieces(True)
    return (
        # softmax
        Step("tr A = 1 − Σp² ≤ 1 − 1/K (K = 3): s² − Σp² ≤ (1 − 1/K)s²", _s**2 - _S2,
             (1 - sympy.Rational(1, 3)) * _s**2, relation="<=",
             witness=sum((a - b) ** 2 for a, b in _pairs) / 3,
             because="Σp² − s²/K = (1/K) Σ_{a<b} (p_a − p_b)²"),
        Step("tr A ≤ 2(1 − p_y): s² − Σp² ≤ 2(s − p_y)s", _s**2 - _S2, 2 * (_s - _p1) * _s,
             relation="<=", witness=(_s - _p1) ** 2 + _p2**2 + _p3**2,
             because="the difference is (s − p_y)² + Σ_{l≠y} p_l²"),
        Step("‖A‖_F² = S₂ − 2S₃ + S₂² on the simplex (S_j = Σ p^j)",
             sum(e**2 for e in _Amat), _S2 - 2 * _S3 + _S2**2, substitutions=_on_simplex),
        Step("S₃ ≥ S₂² (Cauchy–Schwarz): S₂² ≤ S₃ s", _S2**2, _S3 * _s, relation="<=",
             witness=sum(a * b * (a - b) ** 2 for a, b in _pairs),
             because="S₃ s − S₂² = Σ_{a<b} p_a p_b (p_a − p_b)²"),
        Step("so ‖A‖_F² ≤ S₂ − S₂² ≤ ¼", _x - _x**2, sympy.Rational(1, 4), relation="<=",
             witness=(_x - sympy.Rational(1, 2)) ** 2, because="x = S₂"),
        Step("‖g‖² = ‖p − e_y‖² ≤ 2(1 − p_y)²", (_s - _p1) ** 2 + _p2**2 + _p3**2,
             2 * (_s - _p1) ** 2, relation="<=", witness=2 * _p2 * _p3,
             because="Σ_{l≠y} p_l² ≤ (Σ_{l≠y} p_l)² = (s − p_y)²"),
        _bound_step("λ_max(A) ≤ ½ (Popoviciu: uᵀAu = Var_p(u) ≤ (max u − min u)²/4 ≤ ½)",
                    _softmax_eig_sampler(0)),
        _bound_step("λ_max(A) ≤ ‖A‖_F ≤ tr A (A ⪰ 0)", _softmax_eig_sampler(1)),
        # activations
        _bound_step("|σ'| ≤ sup|σ'| and |σ''| ≤ sup|σ''| for the constants used "
                    "(ratio ≤ 1)", _ratio_sampler(_activation_constants_sampler)),
        Step("‖a‖ ≤ √h|σ(0)| + sup|σ'|(‖W‖₂‖x‖ + ‖b‖)", _lhs,
             sympy.sqrt(h) * s0 + s1 * (w2 * R + bnorm), relation="<=", check="numeric",
             sampler=_activation_sampler(False), because="|σ(z_r)| ≤ |σ(0)| + sup|σ'||z_r|"),
        Step("‖a‖ ≤ √h sup|σ| (bounded σ)", _lhs, sympy.sqrt(h) * smax, relation="<=",
             check="numeric", sampler=_activation_sampler(True)),
        # per-sample norms
        _per_sample_step("|tr BᵀAB| ≤ λ_max(A) sup|σ'|² ‖V‖_F²",
                         _lamA * s1**2 * vf**2,
                         lambda s, v: abs(np.trace(s.F @ (v * s.s1)))),
        _per_sample_step("|Σ_r q_r| ≤ √h sup|σ''| ‖V‖₂ ‖g‖", sympy.sqrt(h) * s2 * v2 * _gn,
                         lambda s, v: abs(s.q.sum())),
        _per_sample_step("‖M‖_F ≤ λ_max(A) sup|σ'|²‖V‖₂‖V‖_F + sup|σ''|‖V‖₂‖g‖",
                         _lamA * s1**2 * v2 * vf + s2 * v2 * _gn,
                         lambda s, v: np.linalg.norm(s.M)),
        _per_sample_step("λ_max(M) ≤ λ_max(A) sup|σ'|²‖V‖₂² + sup|σ''|‖V‖₂‖g‖",
                         _lamA * s1**2 * v2**2 + s2 * v2 * _gn,
                         lambda s, v: np.linalg.eigvalsh(s.M)[-1]),
        _per_sample_step("‖C‖_F ≤ λ_max(A) sup|σ'|‖V‖_F‖ã‖ + √h sup|σ'|‖g‖",
                         _lamA * s1 * vf * _an + sympy.sqrt(h) * s1 * _gn,
                         lambda s, v: np.linalg.norm(s.C)),
        _per_sample_step("‖C‖₂ ≤ λ_max(A) sup|σ'|‖V‖₂‖ã‖ + sup|σ'|‖g‖",
                         _lamA * s1 * v2 * _an + s1 * _gn,
                         lambda s, v: np.linalg.norm(s.C, 2)),
        _bound_step("|⟨H_i,H_j⟩| ≤ ‖A_i‖_F‖A_j‖_F(ã_i·ã_j)² + (x̃_i·x̃_j)²‖M_i‖_F‖M_j‖_F + "
                    "2|x̃_i·x̃_j|‖C_i‖_F‖C_j‖_F", _pair_sampler,
                    because="Cauchy–Schwarz on each term of Tier A's Φ_ij"),
        # data
        _bound_step_expr("λ_max(Σ x̃_ix̃_iᵀ) ≤ X̂² + (n−1)X_ρ (Gershgorin; |x̃_i·x̃_j| ≤ ρR² + β_h)",
                         pr["lam_x"], _gram_sampler),
        # the two routes
        _bound_step("WS over the box: φ_F(m) ≤ φ_F̄(clip(√F̄/P, m_lo, m_hi)) when F ≤ F̄, "
                    "m ∈ [m_lo, m_hi]", _ws_box_sampler,
                    because="φ increases in F; concave in m with its maximum at m* = √F̄/P"),
        Step("the unconstrained maximum φ(√F̄/P) = √F̄: radicand (P−1)(F̄/P − m*²) = "
             "(√F̄ − m*)²", ((P - 1) * (_fv / P - _m**2)).subs(_m, sympy.sqrt(_fv) / P),
             (sympy.sqrt(_fv) - sympy.sqrt(_fv) / P) ** 2, substitutions={_fv: _Fb},
             because="so φ(m*) = m* + (√F̄ − m*) = √F̄ (√F̄ ≥ m* as P ≥ 1)"),
        _bound_step("2×2 block bound: λ_max(H) ≤ λ_max([[λ_max(H₁₁), ‖H₁₂‖],[‖H₁₂‖, "
                    "λ_max(H₂₂)]])", _block_sampler,
                    because="vᵀHv ≤ (‖v₁‖,‖v₂‖) [[λ₁₁, β],[β, λ₂₂]] (‖v₁‖,‖v₂‖)ᵀ"),
        _bound_step("λ_max(H₁₁) ≤ μ̄ λ_max(Σ x̃_ix̃_iᵀ)/n when M_i ⪯ μ̄I, μ̄ ≥ 0",
                    _hidden_block_sampler,
                    because="(μ̄I − M_i) ⊗ x̃_ix̃_iᵀ ⪰ 0"),
        _bound_step("‖H₁₂‖₂ ≤ max‖C_i‖₂ √(λ_max(Σ x̃_ix̃_iᵀ)/n)", _cross_block_sampler,
                    because="H₁₂ = (1/n)[C_1 … C_n](stacked I ⊗ x̃_iᵀ); ‖[C_i]‖² ≤ Σ‖C_i‖²"),
    )


def _ratio_sampler(sampler):
    def wrapped(rng):
        out = sampler(rng)
        out[_RHS] = 1.0
        return out

    return wrapped


def _softmax_eig_sampler(which: int):
    def sampler(rng):
        r = _np_rng(rng)
        k = int(r.integers(2, 8))
        a = _softmax_hessian(_simplex(r, k))
        lam = float(np.linalg.eigvalsh(a)[-1])
        if which == 0:
            return {_lhs: lam, _RHS: 0.5}
        return {_lhs: max(lam, float(np.linalg.norm(a))), _RHS:
                float(np.trace(a))}

    return sampler


def _bound_step_expr(name: str, rhs: sympy.Expr, sampler) -> Step:
    return Step(name, _lhs, rhs, relation="<=", check="numeric", sampler=sampler)


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    return Derivation(
        title="T2 Tier B: a norm-level λ_max bound (CE, one smooth hidden layer)",
        source=SOURCE, steps=_steps(),
        conclusion="λ_max(H) ≤ min(route 1, route 2) (see tier_b_expression)")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access (its numeric steps import torch)."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
