"""T2 Tier B at depth L as sympy expressions: what ``boundcheck.engines.closed_form_depth``
evaluates and ``derivations/closed_form_ce_depth_tier_b.py`` proves step by step.

Layers l = 1 … L+1 (L hidden layers; layer L+1 maps to the K logits), each with ‖W_l‖₂,
‖W_l‖_F, ‖b_l‖, its output width h_l (h_{L+1} = K) and β_l = 1 when it has a bias. The scalar
ingredients (n, K, P, R = max‖x‖, ρ, σ's constants, ε) are the one-layer Tier B's symbols.

Named pieces (all nonnegative):
- ``α_l ≥ ‖a_l‖``: α_0 = R; α_l = min(√h_l sup|σ|, √h_l|σ(0)| + sup|σ'|(‖W_l‖₂α_{l−1} + ‖b_l‖)).
- ``U_l = α_{l−1}² + β_l ≥ ‖u_l‖²`` (u_l = ã_{l−1}, the layer's input); ``O_l ≥ |u_l^i·u_l^j|``:
  O_1 = ρR² + β_1, O_l = U_l (l ≥ 2); ``G_l ≥ λ_max(Σ_i u_l u_lᵀ)/n``: G_1 = (U_1 + (n−1)O_1)/n,
  G_l = U_l.
- backward, from j_{L+1} = 1, γ_{L+1} = √2ε, ω_{L+1} = ω^F_{L+1} = 0:
  ``j_l = s₁‖W_{l+1}‖₂ j_{l+1} ≥ ‖J_l‖₂``, ``j^F_l = s₁‖W_{l+1}‖_F j_{l+1} ≥ ‖J_l‖_F``,
  ``γ_l = s₁‖W_{l+1}‖₂γ_{l+1} ≥ ‖δ_l‖``,
  ``ω_l = s₁²‖W_{l+1}‖₂²ω_{l+1} + s₂‖W_{l+1}‖₂γ_{l+1} ≥ ‖Q_l‖₂`` (ω^F_l likewise,
  ≥ ‖Q_l‖_F).
- ``d_{ml} = Π_{t=l+1}^{m} s₁‖W_t‖₂ ≥ ‖D_{ml}‖₂``; ``e_{ml} = s₁ d_{m−1,l} ≥ ‖E_{ml}‖₂``,
  ``e^F_{ml} = √min(h_{m−1}, h_l) e_{ml}``.
- diagonal blocks (l ≤ L): ``μ_l = λ_A j_l² + ω_l ≥ λ_max(P_ll)``,
  ``m^F_l = λ_A j_l j^F_l + ω^F_l``, ``tr P_ll ∈ [−√h_l ω^F_l, λ_A (j^F_l)² + √h_l ω^F_l]``;
  the output block P = A: μ = λ_A, m^F = a_F, tr ∈ [0, τ].
- off-diagonal (l < m): ``p_{lm} = λ_A j_l j_m + d_{ml}ω_m``,
  ``p^F_{lm} = λ_A j^F_l j_m + d_{ml}ω^F_m``,
  ``c_{lm} = p_{lm}√U_m + γ_m e_{ml} ≥ ‖C_lm‖₂``, ``c^F_{lm} = p^F_{lm}√U_m + γ_m e^F_{ml}``.
Route 1: Wolkowicz–Styan maximised over tr H ∈ [Σ U_l tr_lo,l, Σ U_l tr_hi,l] and
``‖H‖_F² ≤ F̄ = (Φ_d + (n−1)Φ_o)/n``, ``Φ_d = Σ_l U_l² (m^F_l)² + 2Σ_{l<m} U_l (c^F_{lm})²``
(Φ_o with O_l). Route 2: λ_max of the (L+1)×(L+1) matrix N, ``N_ll = μ_l G_l``,
``N_lm = c_{lm}√G_l``. At L = 1 both are today's one-layer Tier B.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy

from boundcheck.core.formulas.closed_form import K, P, R, eps, n, rho, s0, s1, s2, smax

SCALARS = {n: "n", K: "K", P: "P", R: "max_x_norm", rho: "rho", s1: "sup_d1", s2: "sup_d2",
           s0: "sigma_at_zero", smax: "sup_sigma", eps: "confidence_gap"}
LAYER_NAMES = ("W_spectral", "W_frobenius", "b_norm", "h", "bias")


@functools.lru_cache(maxsize=8)
def depth_symbols(depth: int) -> dict[str, tuple[sympy.Symbol, ...]]:
    """Per-layer symbols (layers 1 … L+1) by ingredient name."""
    layers = range(1, depth + 2)
    return {
        "W_spectral": tuple(sympy.Symbol(rf"\|W_{l}\|_2", nonnegative=True) for l in layers),
        "W_frobenius": tuple(sympy.Symbol(rf"\|W_{l}\|_F", nonnegative=True) for l in layers),
        "b_norm": tuple(sympy.Symbol(rf"\|b_{l}\|", nonnegative=True) for l in layers),
        "h": tuple(sympy.Symbol(f"h_{l}", positive=True) for l in layers),
        "bias": tuple(sympy.Symbol(rf"\beta_{l}", nonnegative=True) for l in layers),
    }


@functools.lru_cache(maxsize=16)
def depth_pieces(depth: int, bounded: bool) -> dict:
    """The named pieces (module docstring) for L = depth: dicts keyed by layer (pair)."""
    sy = depth_symbols(depth)
    w2, wf, bn, hh, be = (sy[k] for k in LAYER_NAMES)
    top = depth + 1  # the output layer's index
    tau = sympy.Min(1 - 1 / K, 2 * eps)
    lam_a = sympy.Min(sympy.Rational(1, 2), 2 * eps)
    a_f = sympy.Min(sympy.Rational(1, 2), 2 * eps)
    gam = sympy.sqrt(2) * eps
    alpha = {0: R}
    for l in range(1, top):
        lip = sympy.sqrt(hh[l - 1]) * s0 + s1 * (w2[l - 1] * alpha[l - 1] + bn[l - 1])
        alpha[l] = sympy.Min(sympy.sqrt(hh[l - 1]) * smax, lip) if bounded else lip
    u = {l: alpha[l - 1] ** 2 + be[l - 1] for l in range(1, top + 1)}
    o = {l: (rho * R**2 + be[0]) if l == 1 else u[l] for l in range(1, top + 1)}
    gram = {l: (u[1] + (n - 1) * o[1]) / n if l == 1 else u[l] for l in range(1, top + 1)}
    j, jf, g, om, omf = {top: 1}, {}, {top: gam}, {top: 0}, {top: 0}
    for l in range(depth, 0, -1):
        j[l] = s1 * w2[l] * j[l + 1]
        jf[l] = s1 * wf[l] * j[l + 1]
        g[l] = s1 * w2[l] * g[l + 1]
        om[l] = s1**2 * w2[l] ** 2 * om[l + 1] + s2 * w2[l] * g[l + 1]
        omf[l] = s1**2 * w2[l] ** 2 * omf[l + 1] + s2 * w2[l] * g[l + 1]

    def dnorm(m: int, l: int):
        out = sympy.Integer(1)
        for t in range(l + 1, m + 1):
            out = out * s1 * w2[t - 1]
        return out

    mu, mf, tr_hi, tr_lo = {top: lam_a}, {top: a_f}, {top: tau}, {top: sympy.Integer(0)}
    for l in range(1, top):
        mu[l] = lam_a * j[l] ** 2 + om[l]
        mf[l] = lam_a * j[l] * jf[l] + omf[l]
        tr_hi[l] = lam_a * jf[l] ** 2 + sympy.sqrt(hh[l - 1]) * omf[l]
        tr_lo[l] = -sympy.sqrt(hh[l - 1]) * omf[l]
    c2, cf = {}, {}
    for l in range(1, top + 1):
        for m in range(l + 1, top + 1):
            e = s1 * dnorm(m - 1, l)
            ef = sympy.sqrt(sympy.Min(hh[m - 2], hh[l - 1])) * e
            p2 = lam_a * j[l] * j[m] + dnorm(m, l) * om[m]
            pf = lam_a * jf[l] * j[m] + dnorm(m, l) * omf[m]
            c2[l, m] = p2 * sympy.sqrt(u[m]) + g[m] * e
            cf[l, m] = pf * sympy.sqrt(u[m]) + g[m] * ef
    layers = range(1, top + 1)
    phi_d = sum(u[l] ** 2 * mf[l] ** 2 for l in layers) + 2 * sum(u[l] * v**2 for (l, _), v
                                                                  in cf.items())
    phi_o = sum(o[l] ** 2 * mf[l] ** 2 for l in layers) + 2 * sum(o[l] * v**2 for (l, _), v
                                                                  in cf.items())
    fbar = (phi_d + (n - 1) * phi_o) / n
    t_hi = sum(u[l] * tr_hi[l] for l in layers)
    t_lo = sum(u[l] * tr_lo[l] for l in layers)
    m_c = sympy.Min(sympy.Max(sympy.sqrt(fbar) / P, t_lo / P), t_hi / P)
    route1 = m_c + sympy.sqrt((P - 1) * sympy.Max(0, fbar / P - m_c**2))
    nmat = {(l, l): mu[l] * gram[l] for l in layers}
    nmat.update({(l, m): c2[l, m] * sympy.sqrt(gram[l]) for (l, m) in c2})
    return {"alpha": alpha, "U": u, "O": o, "G": gram, "j": j, "jF": jf, "gamma": g,
            "omega": om, "omegaF": omf, "mu": mu, "mF": mf, "trace_hi": tr_hi,
            "trace_lo": tr_lo, "c2": c2, "cF": cf, "fro2_bar": fbar, "t_hi": t_hi,
            "t_lo": t_lo, "route1": route1, "N": nmat}


def _ordered_symbols(depth: int) -> list[sympy.Symbol]:
    sy = depth_symbols(depth)
    return [*SCALARS, *(s for name in LAYER_NAMES for s in sy[name])]


@functools.lru_cache(maxsize=16)
def route1_function(depth: int, bounded: bool):
    """(route-1 expression, its symbols in order, a float function of them)."""
    expr = depth_pieces(depth, bounded)["route1"]
    syms = _ordered_symbols(depth)
    return expr, syms, sympy.lambdify(syms, expr, modules="math", cse=True)


@functools.lru_cache(maxsize=16)
def _route2_entries(depth: int, bounded: bool):
    nmat = depth_pieces(depth, bounded)["N"]
    syms = _ordered_symbols(depth)
    keys = sorted(nmat)
    fn = sympy.lambdify(syms, [nmat[k] for k in keys], modules="math", cse=True)
    return keys, syms, fn


def route2_matrix(depth: int, bounded: bool, values: dict) -> np.ndarray:
    """N at the given ingredient values (symbol → float), symmetric (L+1)×(L+1)."""
    keys, syms, fn = _route2_entries(depth, bounded)
    entries = fn(*[values[s] for s in syms])
    mat = np.zeros((depth + 1, depth + 1))
    for (l, m), v in zip(keys, entries, strict=True):
        mat[l - 1, m - 1] = mat[m - 1, l - 1] = float(v)
    return mat



# === Tier A at depth L: the per-layer(-pair) terms of tr H_i and ⟨H_i, H_j⟩ ================
# per sample and layer l
TRP = sympy.Symbol(r"\operatorname{tr}P_{ll,i}", real=True)
NU = sympy.Symbol(r"\|u_{l,i}\|^2", nonnegative=True)
# per sample pair and layer pair (l ≤ m)
GUL = sympy.Symbol(r"u_{l,i}\cdot u_{l,j}", real=True)
GUM = sympy.Symbol(r"u_{m,i}\cdot u_{m,j}", real=True)
PP = sympy.Symbol(r"\langle P_{lm,i},P_{lm,j}\rangle", real=True)
XIJ = sympy.Symbol(r"X_{ij}", real=True)  # (E_{ml,j}ᵀ a_{m−1,i})·(P_{lm,i} δ_{m,j})
XJI = sympy.Symbol(r"X_{ji}", real=True)
DD = sympy.Symbol(r"\delta_{m,i}\cdot\delta_{m,j}", real=True)
EE = sympy.Symbol(r"\langle E_{ml,i},E_{ml,j}\rangle", real=True)

DEPTH_TRACE_SYMBOLS = (TRP, NU)
DEPTH_DIAG_SYMBOLS = (PP, GUL)
DEPTH_OFF_SYMBOLS = (PP, GUL, GUM, XIJ, XJI, DD, EE)
DEPTH_TRACE_EXPR = TRP * NU  # layer l's part of tr H_i
DEPTH_DIAG_EXPR = PP * GUL**2  # ⟨H_i, H_j⟩ over the diagonal block (l, l)
DEPTH_OFF_EXPR = GUL * (PP * GUM + XIJ + XJI + DD * EE)  # over block (l, m), l < m (counted 2×)
