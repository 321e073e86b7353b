"""T2 Tier A at depth L — exact closed forms of tr H and ‖H‖_F² for softmax cross-entropy in
``f = W_{L+1} σ(W_L ⋯ σ(W_1 x + b_1) ⋯ + b_L) + b_{L+1}`` (L ≥ 1 hidden layers, smooth σ,
biases optional per layer), and the Wolkowicz–Styan λ_max bound built from them.

Source: the setting of Y. Omae et al., arXiv 2604.10202 (2026) (multilayer smooth networks);
the formulas are derived here, each step checked by sympy (:data:`DERIVATION`); the one-layer
case is :mod:`derivations.closed_form_ce` (whose steps 1–4 give g = p − e_y, A = diag p − ppᵀ
for softmax cross-entropy).

Setting. Layers l = 1 … L+1, ``z_l = W_l a_{l−1} + b_l``, ``a_0 = x``, ``a_l = σ(z_l)`` (l ≤ L),
``f = z_{L+1}``; ``u_l = ã_{l−1}`` (the layer's input, with a 1 appended when it has a bias).
Per sample: ``J_l = ∂f/∂z_l`` (J_{L+1} = I, J_l = J_{l+1} W_{l+1} diag σ'_l),
``δ_l = J_lᵀ g`` (δ_l = σ'_l ⊙ W_{l+1}ᵀ δ_{l+1}), ``Q_l = Σ_k g_k ∂²f_k/∂z_l²``
(Q_{L+1} = 0, Q_l = diag σ'_l W_{l+1}ᵀ Q_{l+1} W_{l+1} diag σ'_l + diag(σ''_l ⊙ W_{l+1}ᵀ δ_{l+1})),
``D_{ml} = ∂z_m/∂z_l`` (D_{ll} = I, D_{ml} = W_m diag σ'_{m−1} D_{m−1,l}),
``E_{ml} = ∂a_{m−1}/∂z_l = diag σ'_{m−1} D_{m−1,l}`` and ``P_{lm} = J_lᵀ A J_m + D_{ml}ᵀ Q_m``.

Per-sample Hessian block of layers l ≤ m (rows (r, d) of W̃_l = [W_l, b_l], columns (s, e) of
W̃_m):

    ∂²ℓ/∂W̃_{l,rd}∂W̃_{m,se} = P_{lm,rs} u_{l,d} u_{m,e} + [l < m] u_{l,d} δ_{m,s} E_{ml,er}

(E's row for a bias entry e is 0). Statement (Tier A at depth L):

    tr H     = (1/n) Σ_i Σ_l tr P_ll ‖u_l‖²,
    ‖H‖_F²  = n⁻² Σ_{i,j} [Σ_l ⟨P_ll^i,P_ll^j⟩(u_l^i·u_l^j)²
                 + 2Σ_{l<m} (u_l^i·u_l^j)(⟨P_lm^i,P_lm^j⟩(u_m^i·u_m^j) + X_ij + X_ji
                                          + (δ_m^i·δ_m^j)⟨E_ml^i,E_ml^j⟩)],
    X_ij = (E_ml^{jᵀ} a_{m−1}^i)·(P_lm^i δ_m^j),

and, by T1, ``λ_max(H) ≤ m + s√(P−1)``. Only n×n Gram matrices of per-sample factors enter;
the input Gram ``x̃_i·x̃_j`` (orthogonality of the samples) through u_1.

Proof. Step 1 checks the block formula against ``sympy.hessian`` of the network with σ an
undefined function and the loss's second-order Taylor model at f(θ) (any C² loss has gradient
g and Hessian A there), at depth 2 with and without biases and at depth 3. Steps 2–4 derive
the Frobenius products of two samples' Hessians and the per-sample trace from generic block
factors (every P, E, δ, u a free symbol). Steps 5–6 sum over samples (as in the one-layer
derivation). Identities are polynomial identities at fixed small sizes (index ranges ≥ 2
where the cost allows); tests check the engine against the exact layer-block Hessian over
hypothesis-drawn depths 1–4.
"""

from __future__ import annotations

import functools

import sympy

from boundcheck.core.formulas.closed_form_depth import (  # noqa: F401
    DD,
    DEPTH_DIAG_EXPR,
    DEPTH_OFF_EXPR,
    DEPTH_TRACE_EXPR,
    EE,
    GUL,
    GUM,
    NU,
    PP,
    TRP,
    XIJ,
    XJI,
)

from .closed_form_ce import _frobenius, _named, _pairing, _sum_steps
from .proof import Derivation, Step

SOURCE = ("setting of Y. Omae, Y. Sakai, H. Kakimoto, M. Sasaki, S. Sakai, Y. Takahashi, "
          "Wolkowicz–Styan Upper Bound on the Hessian Eigenspectrum for Cross-Entropy Loss in "
          "Nonlinear Smooth Neural Networks, arXiv 2604.10202 (2026); depth-L closed forms "
          "derived in derivations/closed_form_ce_depth.py")


def _mat(name: str, rows: int, cols: int) -> sympy.Matrix:
    return sympy.Matrix(rows, cols, lambda r, c: sympy.Symbol(f"{name}_{r}{c}", real=True))


def _vec(name: str, size: int) -> sympy.Matrix:
    return sympy.Matrix(size, 1, lambda r, _: sympy.Symbol(f"{name}_{r}", real=True))


# --- per-sample factors and the block assembly ----------------------------------------------
def _sizes(widths: tuple[int, ...], biases: tuple[bool, ...]) -> list[int]:
    """len(u_l) for l = 1 … L+1."""
    return [widths[l - 1] + int(biases[l - 1]) for l in range(1, len(widths))]


def network_factors(weights: list[sympy.Matrix], ins: list[sympy.Matrix], s1: list, s2: list,
                    g: sympy.Matrix, amat: sympy.Matrix, biases: tuple[bool, ...]) -> dict:
    """u_l, δ_l, P_lm, E_ml by the recursions of the module docstring (sympy matrices);
    ``ins`` = [a_0 = x, a_1, …, a_L]."""
    layers = len(weights)
    depth = layers - 1
    u = {l: ins[l - 1].col_join(sympy.Matrix([[1]])) if biases[l - 1] else ins[l - 1]
         for l in range(1, layers + 1)}
    k = g.shape[0]
    jac, delta, q = {layers: sympy.eye(k)}, {layers: g}, {layers: sympy.zeros(k, k)}
    for l in range(depth, 0, -1):
        w = weights[l]  # W_{l+1}
        ds1 = sympy.diag(*s1[l - 1])
        back = w.T * delta[l + 1]
        jac[l] = jac[l + 1] * w * ds1
        delta[l] = ds1 * back
        q[l] = ds1 * w.T * q[l + 1] * w * ds1 + sympy.diag(
            *[s2[l - 1][r] * back[r] for r in range(back.shape[0])])
    dmat, emat, pmat = {}, {}, {}
    for l in range(1, layers + 1):
        dmat[l, l] = sympy.eye(weights[l - 1].shape[0])
        for m in range(l + 1, layers + 1):
            emat[m, l] = sympy.diag(*s1[m - 2]) * dmat[m - 1, l]
            dmat[m, l] = weights[m - 1] * emat[m, l]
        for m in range(l, layers + 1):
            pmat[l, m] = jac[l].T * amat * jac[m] + dmat[m, l].T * q[m]
    return {"u": u, "delta": delta, "P": pmat, "E": emat, "a": ins}


def assemble(fac: dict, widths: tuple[int, ...], biases: tuple[bool, ...]) -> sympy.Matrix:
    """The per-sample Hessian from the block formula, in torch's parameter order (per layer:
    W_l row-major, then b_l)."""
    layers = len(widths) - 1
    index = []  # (layer, output unit r, input entry d; d = widths[l−1] is the bias)
    for l in range(1, layers + 1):
        index += [(l, r, d) for r in range(widths[l]) for d in range(widths[l - 1])]
        index += [(l, r, widths[l - 1]) for r in range(widths[l])] if biases[l - 1] else []

    def entry(i: int, j: int):
        (l, r, d), (m, s, e) = index[i], index[j]
        if l > m:
            (l, r, d), (m, s, e) = (m, s, e), (l, r, d)
        out = fac["P"][l, m][r, s] * fac["u"][l][d] * fac["u"][m][e]
        if l < m and e < widths[m - 1]:
            out += fac["u"][l][d] * fac["delta"][m][s] * fac["E"][m, l][e, r]
        return out

    return sympy.Matrix(len(index), len(index), entry)


def network_hessian(widths: tuple[int, ...], biases: tuple[bool, ...]):
    """(sympy.hessian of the network's Taylor-model loss in the named per-sample symbols,
    the same Hessian from the block formula)."""
    sigma = sympy.Function("sigma")
    layers = len(widths) - 1
    x = _vec("x", widths[0])
    weights = [_mat(f"W{l}", widths[l], widths[l - 1]) for l in range(1, layers + 1)]
    bs = [_vec(f"b{l}", widths[l]) if biases[l - 1] else sympy.zeros(widths[l], 1)
          for l in range(1, layers + 1)]
    a_sym = [x] + [_vec(f"a{l}", widths[l]) for l in range(1, layers)]
    s1 = [_vec(f"s1{l}", widths[l]) for l in range(1, layers)]
    s2 = [_vec(f"s2{l}", widths[l]) for l in range(1, layers)]
    k = widths[-1]
    g = _vec("g", k)
    amat = sympy.Matrix(k, k, lambda r, c: sympy.Symbol(f"A_{min(r, c)}{max(r, c)}", real=True))
    a, points = x, {}
    for l in range(1, layers):
        z = weights[l - 1] * a + bs[l - 1]
        points.update({z[r]: (l, r) for r in range(widths[l])})
        a = z.applyfunc(sigma)
    out = weights[-1] * a + bs[-1]
    f0 = _vec("f0", k)
    dev = out - f0
    ell = (g.T * dev)[0] + sympy.Rational(1, 2) * (dev.T * amat * dev)[0]
    theta = [p for l in range(layers) for p in (*weights[l], *(bs[l] if biases[l] else []))]
    hess = sympy.hessian(ell, theta)
    names = {}
    for e in hess.atoms(sympy.Subs):
        l, r = points[e.point[0]]
        names[e] = (s1 if e.expr.derivative_count == 1 else s2)[l - 1][r]
    for e in hess.atoms(sympy.core.function.AppliedUndef):
        if e.args[0] in points:  # σ(ξ) inside a Subs goes with the Subs
            l, r = points[e.args[0]]
            names[e] = a_sym[l][r]
    f_named = weights[-1] * a_sym[-1] + bs[-1]
    hess = hess.applyfunc(lambda e: sympy.expand(e.xreplace(names).xreplace(
        {f0[kk]: f_named[kk] for kk in range(k)})))
    fac = network_factors(weights, a_sym, s1, s2, g, amat, biases)
    return hess, assemble(fac, widths, biases)


def generic_factors(tag: str, widths: tuple[int, ...], biases: tuple[bool, ...]) -> dict:
    """One sample's u_l, δ_m, P_lm, E_ml as free symbols (u_l ends in 1 with a bias)."""
    layers = len(widths) - 1
    u, delta, pmat, emat = {}, {}, {}, {}
    for l in range(1, layers + 1):
        a = _vec(f"u{tag}{l}", widths[l - 1])
        u[l] = a.col_join(sympy.Matrix([[1]])) if biases[l - 1] else a
        delta[l] = _vec(f"d{tag}{l}", widths[l])
        for m in range(l, layers + 1):
            pmat[l, m] = _mat(f"P{tag}{l}{m}", widths[l], widths[m])
            if m > l:
                emat[m, l] = _mat(f"E{tag}{m}{l}", widths[m - 1], widths[l])
    return {"u": u, "delta": delta, "P": pmat, "E": emat}


def _definitions(fi: dict, fj: dict, widths: tuple[int, ...], l: int, m: int) -> dict:
    """The Gram symbols of layer pair (l, m) as explicit sums over two samples' factors."""
    def a_in(f):  # a_{m−1}: u_m without its bias 1
        return f["u"][m][:widths[m - 1], :]

    defs = {GUL: _frobenius(fi["u"][l], fj["u"][l]), GUM: _frobenius(fi["u"][m], fj["u"][m]),
            PP: _frobenius(fi["P"][l, m], fj["P"][l, m])}
    if m > l:
        ei, ej = fi["E"][m, l], fj["E"][m, l]
        defs.update({
            XIJ: _frobenius(ej.T * a_in(fi), fi["P"][l, m] * fj["delta"][m]),
            XJI: _frobenius(ei.T * a_in(fj), fj["P"][l, m] * fi["delta"][m]),
            DD: _frobenius(fi["delta"][m], fj["delta"][m]), EE: _frobenius(ei, ej)})
    return defs


def _pair_step(widths: tuple[int, ...], biases: tuple[bool, ...]) -> Step:
    fi, fj = (generic_factors(t, widths, biases) for t in "ij")
    layers = len(widths) - 1
    hh = _named(r"\langle H_i,H_j\rangle_F")
    subs = {hh: _frobenius(assemble(fi, widths, biases), assemble(fj, widths, biases))}
    rhs = 0
    for l in range(1, layers + 1):
        for m in range(l, layers + 1):
            phi = _named(rf"\Phi^{{({l},{m})}}_{{ij}}")
            expr = DEPTH_DIAG_EXPR if m == l else DEPTH_OFF_EXPR
            subs[phi] = expr.xreplace(_definitions(fi, fj, widths, l, m))
            rhs += phi if m == l else 2 * phi
    tag = ", ".join(f"{'b' if b else '-'}" for b in biases)
    return Step(f"⟨H_i,H_j⟩_F = Σ_l Φ^(l,l) + 2Σ_(l<m) Φ^(l,m) (widths {widths}, biases "
                f"{tag}; generic P, E, δ, u)", hh, rhs, substitutions=subs,
                because="Kronecker mixed products block by block: ⟨P_i⊗u_iv_iᵀ, P_j⊗u_jv_jᵀ⟩ "
                        "= ⟨P_i,P_j⟩(u_i·u_j)(v_i·v_j); the E-term pairs with the P-term to X_ij "
                        "and with itself to (u_i·u_j)(δ_i·δ_j)⟨E_i,E_j⟩; off-diagonal blocks "
                        "twice (H symmetric)")


def _trace_step(widths: tuple[int, ...], biases: tuple[bool, ...]) -> Step:
    fi = generic_factors("i", widths, biases)
    layers = len(widths) - 1
    tr = _named(r"\operatorname{tr} H_i")
    subs = {tr: assemble(fi, widths, biases).trace()}
    rhs = 0
    for l in range(1, layers + 1):
        t = _named(rf"\operatorname{{tr}}P_{{{l}{l}}}\|u_{l}\|^2")
        subs[t] = DEPTH_TRACE_EXPR.xreplace({TRP: fi["P"][l, l].trace(),
                                             NU: _frobenius(fi["u"][l], fi["u"][l])})
        rhs += t
    return Step(f"tr H_i = Σ_l tr P_ll ‖u_l‖² (widths {widths})", tr, rhs, substitutions=subs,
                because="the E-term is off the diagonal blocks; tr(X⊗uuᵀ) = tr X ‖u‖²")


def _blocks_step(widths: tuple[int, ...], biases: tuple[bool, ...]) -> Step:
    hess, blocks = network_hessian(widths, biases)
    lhs, rhs = _pairing(hess, blocks, "".join(map(str, widths)))
    auto = _named(r"\nabla^2_\theta \ell_i\ (sympy)")
    formula = _named(r"[P_{lm}\otimes u_lu_m^\top + [l<m]\,u_l\otimes\delta_m\otimes E_{ml}]")
    tag = ", ".join(f"{'b' if b else '-'}" for b in biases)
    return Step(f"per-sample Hessian = the layer-pair blocks (widths {widths}, biases {tag})",
                auto, formula, substitutions={auto: lhs, formula: rhs},
                because="sympy.hessian of ℓ(W_{L+1}σ(…σ(W_1x+b_1)…)+b_{L+1}), σ undefined, "
                        "loss its Taylor model at f(θ); paired entrywise with fresh weights")


BLOCK_CASES = (((2, 2, 2, 2), (False, False, False)), ((2, 2, 2, 2), (True, True, True)),
               ((1, 2, 2, 2, 2), (False, False, False, False)),
               ((1, 2, 1, 2, 2), (True, False, True, True)))
PAIR_CASES = (((2, 2, 2, 2), (True, True, True)), ((1, 2, 1, 2, 2), (True, False, True, False)))


def _steps() -> tuple[Step, ...]:
    return (*(_blocks_step(w, b) for w, b in BLOCK_CASES),
            *(_pair_step(w, b) for w, b in PAIR_CASES),
            *(_trace_step(w, b) for w, b in PAIR_CASES),
            *_sum_steps())


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    return Derivation(
        title="T2 Tier A at depth L: closed forms of tr H and ‖H‖_F² (CE, L smooth hidden "
              "layers)", source=SOURCE, steps=_steps(),
        conclusion="tr H = (1/n)Σ_iΣ_l DEPTH_TRACE_EXPR, ‖H‖_F² = n⁻²Σ_{i,j}[Σ_l "
                   "DEPTH_DIAG_EXPR + 2Σ_{l<m} DEPTH_OFF_EXPR]; with T1: λ_max ≤ m + s√(P−1) "
                   "(the theorem hessian.closed_form_ws_lambda_max)")


def __getattr__(name: str):
    """``DERIVATION`` is built (about a minute of sympy) on first access, not at import."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


THEOREMS = ()  # the statement is hessian.closed_form_ws_lambda_max (derivations.closed_form_ce)
