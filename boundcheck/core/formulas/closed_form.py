"""T2's closed forms as sympy expressions: what ``boundcheck.engines.closed_form`` evaluates
(code-generated with lambdify) and ``derivations/closed_form_ce*.py`` prove step by step.

Tier A: the per-sample trace ``tr H_i`` and the pair term ``⟨H_i, H_j⟩_F`` in per-sample and
per-pair factors; the Wolkowicz–Styan right side over the closed-form traces. Tier B: the
parameter-level bound as a function of its named ingredients (data through n, max‖x‖ and the
orthogonality ρ; parameters through norms; σ through its suprema).
"""

from __future__ import annotations

import sympy

# === Tier A ====================================================================================
# --- the symbols the generated code is written in -----------------------------------------
# per sample
TRA = sympy.Symbol(r"\operatorname{tr}A_i", real=True)
NA = sympy.Symbol(r"\|\tilde a_i\|^2", nonnegative=True)
NX = sympy.Symbol(r"\|\tilde x_i\|^2", nonnegative=True)
TBAB = sympy.Symbol(r"\operatorname{tr}B_i^\top A_iB_i", real=True)
SQ = sympy.Symbol(r"\textstyle\sum_r q_{ir}", real=True)
# per sample pair
GX = sympy.Symbol(r"\tilde x_i\cdot\tilde x_j", real=True)
GA = sympy.Symbol(r"\tilde a_i\cdot\tilde a_j", real=True)
TAA = sympy.Symbol(r"\langle A_i,A_j\rangle", real=True)
MBB = sympy.Symbol(r"\langle B_i^\top A_iB_i,B_j^\top A_jB_j\rangle", real=True)
DQ = sympy.Symbol(r"\textstyle\sum_r(B_i^\top A_iB_i)_{rr}q_{jr}", real=True)
DQT = sympy.Symbol(r"\textstyle\sum_r(B_j^\top A_jB_j)_{rr}q_{ir}", real=True)
QQ = sympy.Symbol(r"q_i\cdot q_j", real=True)
FF = sympy.Symbol(r"\langle F_i,F_j\rangle", real=True)
U = sympy.Symbol(r"\textstyle\sum_{rk}a_{ir}F_{irk}\sigma'_{jr}g_{jk}", real=True)
UT = sympy.Symbol(r"\textstyle\sum_{rk}a_{jr}F_{jrk}\sigma'_{ir}g_{ik}", real=True)
SS = sympy.Symbol(r"\sigma'_i\cdot\sigma'_j", real=True)
GG = sympy.Symbol(r"g_i\cdot g_j", real=True)

TRACE_SYMBOLS = (TRA, NA, NX, TBAB, SQ)
PAIR_SYMBOLS = (GX, GA, TAA, MBB, DQ, DQT, QQ, FF, U, UT, SS, GG)

MM_EXPR = MBB + DQ + DQT + QQ  # ⟨M_i, M_j⟩
CC_EXPR = GA * FF + U + UT + SS * GG  # ⟨C_i, C_j⟩
TRACE_EXPR = TRA * NA + (TBAB + SQ) * NX  # tr H_i
PAIR_EXPR = TAA * GA**2 + GX**2 * MM_EXPR + 2 * GX * CC_EXPR  # ⟨H_i, H_j⟩_F

# Wolkowicz–Styan over the closed-form traces
P = sympy.Symbol("P", positive=True, integer=True)
trace_h = sympy.Symbol(r"\operatorname{tr}H_{\mathrm{cf}}", real=True)
fro2_h = sympy.Symbol(r"\|H\|_{F,\mathrm{cf}}^2", nonnegative=True)
m_cf = trace_h / P
WS_RHS = m_cf + sympy.sqrt(fro2_h / P - m_cf**2) * sympy.sqrt(P - 1)


# === Tier B ====================================================================================
# --- ingredients ------------------------------------------------------------------------------
n = sympy.Symbol("n", positive=True, integer=True)
h = sympy.Symbol("h", positive=True, integer=True)
K = sympy.Symbol("K", positive=True, integer=True)
R = sympy.Symbol("R", nonnegative=True)
rho = sympy.Symbol(r"\rho", nonnegative=True)
w2 = sympy.Symbol(r"\|W\|_2", nonnegative=True)
bnorm = sympy.Symbol(r"\|b\|", nonnegative=True)
v2 = sympy.Symbol(r"\|V\|_2", nonnegative=True)
vf = sympy.Symbol(r"\|V\|_F", nonnegative=True)
s1 = sympy.Symbol(r"\sup|\sigma'|", nonnegative=True)
s2 = sympy.Symbol(r"\sup|\sigma''|", nonnegative=True)
s0 = sympy.Symbol(r"|\sigma(0)|", nonnegative=True)
smax = sympy.Symbol(r"\sup|\sigma|", nonnegative=True)
bh = sympy.Symbol(r"\beta_h", nonnegative=True)  # 1 with a hidden bias, else 0
bo = sympy.Symbol(r"\beta_o", nonnegative=True)  # 1 with an output bias, else 0
eps = sympy.Symbol(r"\varepsilon", positive=True)  # max_i (1 − p_{i,y_i}); 1 = norm-only

INGREDIENTS = {
    n: "n", h: "h", K: "K", P: "P", R: "max_x_norm", rho: "rho", w2: "W_spectral",
    bnorm: "b_norm", v2: "V_spectral", vf: "V_frobenius", s1: "sup_d1", s2: "sup_d2",
    s0: "sigma_at_zero", smax: "sup_sigma", bh: "hidden_bias", bo: "output_bias",
    eps: "confidence_gap",
}
"""Tier B's symbols and the ingredient names :mod:`boundcheck.engines.closed_form` measures."""


def pieces(bounded: bool) -> dict[str, sympy.Expr]:
    """The named intermediate bounds (see the module docstring)."""
    hidden_lip = sympy.sqrt(h) * s0 + s1 * (w2 * R + bnorm)
    alpha = sympy.Min(sympy.sqrt(h) * smax, hidden_lip) if bounded else hidden_lip
    a2 = alpha**2 + bo
    x2 = R**2 + bh
    x_rho = rho * R**2 + bh
    tau = sympy.Min(1 - 1 / K, 2 * eps)
    lam_a = sympy.Min(sympy.Rational(1, 2), 2 * eps)
    a_f = sympy.Min(sympy.Rational(1, 2), 2 * eps)
    gam = sympy.sqrt(2) * eps
    t_hi = tau * a2 + (lam_a * s1**2 * vf**2 + sympy.sqrt(h) * s2 * v2 * gam) * x2
    t_lo = -sympy.sqrt(h) * s2 * v2 * gam * x2
    m_f = lam_a * s1**2 * v2 * vf + s2 * v2 * gam
    c_f = lam_a * s1 * vf * sympy.sqrt(a2) + sympy.sqrt(h) * s1 * gam
    phi_d = a_f**2 * a2**2 + x2**2 * m_f**2 + 2 * x2 * c_f**2
    phi_o = a_f**2 * a2**2 + x_rho**2 * m_f**2 + 2 * x_rho * c_f**2
    fbar = (phi_d + (n - 1) * phi_o) / n
    m_c = sympy.Min(sympy.Max(sympy.sqrt(fbar) / P, t_lo / P), t_hi / P)
    route1 = m_c + sympy.sqrt((P - 1) * sympy.Max(0, fbar / P - m_c**2))
    mu = lam_a * s1**2 * v2**2 + s2 * v2 * gam
    lam_x = x2 + (n - 1) * x_rho
    l11 = mu * lam_x / n
    l22 = lam_a * a2
    c2 = lam_a * s1 * v2 * sympy.sqrt(a2) + s1 * gam
    beta = c2 * sympy.sqrt(lam_x / n)
    route2 = (l11 + l22) / 2 + sympy.sqrt(((l11 - l22) / 2) ** 2 + beta**2)
    return {"alpha": alpha, "a2": a2, "x2": x2, "x_rho": x_rho, "tau": tau, "lam_a": lam_a,
            "a_f": a_f, "gamma": gam, "trace_hi": t_hi, "trace_lo": t_lo, "m_f": m_f,
            "c_f": c_f, "fro2_bar": fbar, "route1": route1, "mu_bar": mu, "lam_x": lam_x,
            "l11": l11, "l22": l22, "c2": c2, "beta": beta, "route2": route2,
            "bound": sympy.Min(route1, route2)}


def tier_b_expression(bounded: bool) -> sympy.Expr:
    return pieces(bounded)["bound"]
