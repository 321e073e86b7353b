"""T2 Tier A — exact closed forms of tr H and ‖H‖_F² for softmax cross-entropy in
``f(x) = V σ(W x + b) + c``, and the Wolkowicz–Styan λ_max bound built from them.

Source: Y. Omae, Y. Sakai, H. Kakimoto, M. Sasaki, S. Sakai, Y. Takahashi, "Wolkowicz–Styan
Upper Bound on the Hessian Eigenspectrum for Cross-Entropy Loss in Nonlinear Smooth Neural
Networks", arXiv 2604.10202 (2026). The paper's formula was not available: what follows is
derived here, each step checked by sympy (:data:`DERIVATION`).

Setting (conventions of THEOREMS.md). Hidden width h, K classes, n samples,
``z_i = W x_i + b``, ``a_i = σ(z_i)``, ``f_i = V a_i + c``, ``p_i = softmax(f_i)``,
``g_i = p_i − e_{y_i}``, ``A_i = diag(p_i) − p_i p_iᵀ``, ``L = (1/n) Σ_i ℓ_i``, ``H = ∇²_θ L``
with ``P = h(D+1) + K(h+1)`` parameters (fewer without biases). Write ``x̃ = [x; 1]`` and
``ã = [a; 1]`` (without the 1 when the layer has no bias), ``σ'_i = σ'(z_i)``,
``σ''_i = σ''(z_i)``, ``B_i = V diag(σ'_i)``, ``F_i = B_iᵀ A_i`` (h×K), ``q_i = σ''_i ⊙ Vᵀ g_i``,
``M_i = B_iᵀ A_i B_i + diag(q_i)``.

Per-sample Hessian blocks (hidden parameters ``W̃ = [W, b]`` indexed (r, d), output
parameters ``Ṽ = [V, c]`` indexed (k, r')):

    ∂²ℓ_i/∂W̃_{rd}∂W̃_{r'd'} = (M_i)_{rr'} x̃_d x̃_{d'}          (M_i ⊗ x̃ x̃ᵀ)
    ∂²ℓ_i/∂Ṽ_{kr}∂Ṽ_{k'r'} = (A_i)_{kk'} ã_r ã_{r'}           (A_i ⊗ ã ãᵀ)
    ∂²ℓ_i/∂Ṽ_{kr'}∂W̃_{rd} = x̃_d (F_{rk} ã_{r'} + σ'_r g_k [r' = r])   (C_i ⊗ x̃ᵀ)

Statement (Tier A). With the pair quantities of :data:`PAIR_DEFINITIONS`,

    tr H    = (1/n) Σ_i [tr A_i ‖ã_i‖² + (tr B_iᵀA_iB_i + Σ_r q_ir) ‖x̃_i‖²]
    ‖H‖_F² = n⁻² Σ_{i,j} Φ_ij,
    Φ_ij = ⟨A_i,A_j⟩(ã_i·ã_j)² + (x̃_i·x̃_j)²⟨M_i,M_j⟩ + 2(x̃_i·x̃_j)⟨C_i,C_j⟩,
    ⟨M_i,M_j⟩ = ⟨B_iᵀA_iB_i, B_jᵀA_jB_j⟩ + Σ_r (B_iᵀA_iB_i)_rr q_jr + Σ_r (B_jᵀA_jB_j)_rr q_ir
                + q_i·q_j,
    ⟨C_i,C_j⟩ = (ã_i·ã_j)⟨F_i,F_j⟩ + Σ_{rk} a_ir F_irk σ'_jr g_jk + (i↔j) + (σ'_i·σ'_j)(g_i·g_j),

and, by T1, ``λ_max(H) ≤ m + s√(P−1)`` with ``m = tr H / P``, ``s² = ‖H‖_F²/P − m²``. Only
n×n Gram matrices of per-sample factors enter: the cross-sample terms are the input Gram
``x̃_i·x̃_j`` (the samples' degree of orthogonality) and hidden-activation inner products.

Proof. Steps 1–3 derive the softmax cross-entropy gradient and output Hessian. Step 4 checks
the whole per-sample Hessian of the actual cross-entropy composite at a small size. Steps 5–6
check the block formulas for any twice-differentiable loss (through its second-order Taylor
model at f(θ), which has the same gradient and Hessian there) and a generic σ (an undefined
sympy function), with and without biases. Steps 7–14 derive the pairwise Frobenius products
and the per-sample trace from the blocks; steps 15–16 sum over samples. Identities are
checked as polynomial identities at fixed small sizes (every index range ≥ 2, so no index
coincidence is forced); boundcheck's tests check the code-generated form against dense
Hessians over hypothesis-drawn sizes. The symbolic pair expression :data:`PAIR_EXPR` and
trace expression :data:`TRACE_EXPR` are what :mod:`boundcheck.engines.closed_form` code-generates
into torch (``lambdify`` with common-subexpression elimination).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import sympy

from boundcheck.core.formulas.closed_form import (  # noqa: F401  (the derivation's own symbols)
    CC_EXPR,
    DQ,
    DQT,
    FF,
    GA,
    GG,
    GX,
    MBB,
    MM_EXPR,
    NA,
    NX,
    PAIR_EXPR,
    PAIR_SYMBOLS,
    QQ,
    SQ,
    SS,
    TAA,
    TBAB,
    TRA,
    TRACE_EXPR,
    TRACE_SYMBOLS,
    UT,
    WS_RHS,
    P,
    U,
    fro2_h,
    m_cf,
    trace_h,
)
from boundcheck.core.theorem import Assumption, Theorem

from .proof import Derivation, Step

SOURCE = ("Y. Omae, Y. Sakai, H. Kakimoto, M. Sasaki, S. Sakai, Y. Takahashi, Wolkowicz–Styan "
          "Upper Bound on the Hessian Eigenspectrum for Cross-Entropy Loss in Nonlinear Smooth "
          "Neural Networks, arXiv 2604.10202 (2026); closed forms derived in "
          "derivations/closed_form_ce.py")

# --- explicit per-sample objects at a fixed small size -----------------------------------
@dataclass(frozen=True)
class SampleSymbols:
    """One sample's factors at sizes (D, h, K): x̃, ã, σ', σ'', g and symmetric A."""

    xt: sympy.Matrix  # (D[+1]) × 1
    at: sympy.Matrix  # (h[+1]) × 1
    a: sympy.Matrix  # h × 1
    s1: sympy.Matrix
    s2: sympy.Matrix
    g: sympy.Matrix  # K × 1
    A: sympy.Matrix  # K × K symmetric
    hidden_bias: bool = True
    output_bias: bool = True

    @classmethod
    def make(cls, tag: str, d: int, h: int, k: int, hidden_bias: bool = True,
             output_bias: bool = True) -> SampleSymbols:
        def vec(name, size):
            return sympy.Matrix(size, 1, sympy.symbols(f"{name}_{tag}1:{size + 1}", real=True))

        x, a = vec("x", d), vec("a", h)
        amat = sympy.Matrix(k, k, lambda r, c: sympy.Symbol(
            f"A_{tag}{min(r, c)}{max(r, c)}", real=True))
        xt = x.col_join(sympy.Matrix([[1]])) if hidden_bias else x
        at = a.col_join(sympy.Matrix([[1]])) if output_bias else a
        return cls(xt, at, a, vec("s1", h), vec("s2", h), vec("g", k), amat, hidden_bias,
                   output_bias)

    def factors(self, v: sympy.Matrix) -> dict[str, sympy.Matrix]:
        """B, F = BᵀA, S = BᵀAB, q, M and the cross-block factor C (rows (k, r'), cols r)."""
        h, k = v.shape[1], v.shape[0]
        b = v * sympy.diag(*self.s1)
        f = b.T * self.A
        s = f * b
        q = sympy.Matrix([self.s2[r] * (v.T * self.g)[r] for r in range(h)])
        m = s + sympy.diag(*q)
        na = self.at.shape[0]
        c = sympy.Matrix(k * na, h, lambda row, r: f[r, row // na] * self.at[row % na]
                         + (self.s1[r] * self.g[row // na] if row % na == r else 0))
        return {"B": b, "F": f, "S": s, "q": q, "M": m, "C": c}


def shared_v(k: int, h: int) -> sympy.Matrix:
    return sympy.Matrix(k, h, lambda r, c: sympy.Symbol(f"V_{r}{c}", real=True))


def block_hessian(sample: SampleSymbols, v: sympy.Matrix) -> sympy.Matrix:
    """The per-sample Hessian assembled from the three block formulas, in torch's parameter
    order: W (row-major), b, V (row-major), c."""
    k, h = v.shape
    na = sample.at.shape[0]
    d = sample.xt.shape[0] - (1 if sample.hidden_bias else 0)
    fac = sample.factors(v)
    index: list[tuple[str, int, int]] = [("h", r, j) for r in range(h) for j in range(d)]
    index += [("h", r, d) for r in range(h)] if sample.hidden_bias else []
    index += [("o", kk, r) for kk in range(k) for r in range(h)]
    index += [("o", kk, h) for kk in range(k)] if sample.output_bias else []

    def entry(i: int, j: int):
        p, q = index[i], index[j]
        if p[0] == "h" and q[0] == "h":
            return fac["M"][p[1], q[1]] * sample.xt[p[2]] * sample.xt[q[2]]
        if p[0] == "o" and q[0] == "o":
            return sample.A[p[1], q[1]] * sample.at[p[2]] * sample.at[q[2]]
        if p[0] == "h":
            p, q = q, p
        (_, kk, rp), (_, r, dd) = p, q
        return sample.xt[dd] * fac["C"][kk * na + rp, r]

    return sympy.Matrix(len(index), len(index), entry)


def pair_definitions(si: SampleSymbols, sj: SampleSymbols, v: sympy.Matrix
                     ) -> dict[sympy.Symbol, sympy.Expr]:
    """Each pair symbol as an explicit sum over indices (what the torch einsums compute)."""
    fi, fj = si.factors(v), sj.factors(v)
    h = v.shape[1]

    def inner(x, y):
        return sum(x[r, c] * y[r, c] for r in range(x.shape[0]) for c in range(x.shape[1]))

    return {
        GX: inner(si.xt, sj.xt), GA: inner(si.at, sj.at), TAA: inner(si.A, sj.A),
        MBB: inner(fi["S"], fj["S"]),
        DQ: sum(fi["S"][r, r] * fj["q"][r] for r in range(h)),
        DQT: sum(fj["S"][r, r] * fi["q"][r] for r in range(h)),
        QQ: inner(fi["q"], fj["q"]), FF: inner(fi["F"], fj["F"]),
        U: sum(si.a[r] * fi["F"][r, kk] * sj.s1[r] * sj.g[kk]
               for r in range(h) for kk in range(v.shape[0])),
        UT: sum(sj.a[r] * fj["F"][r, kk] * si.s1[r] * si.g[kk]
                for r in range(h) for kk in range(v.shape[0])),
        SS: inner(si.s1, sj.s1), GG: inner(si.g, sj.g),
    }


def trace_definitions(s: SampleSymbols, v: sympy.Matrix) -> dict[sympy.Symbol, sympy.Expr]:
    fac = s.factors(v)
    return {TRA: s.A.trace(), NA: (s.at.T * s.at)[0], NX: (s.xt.T * s.xt)[0],
            TBAB: fac["S"].trace(), SQ: sum(fac["q"])}


def _frobenius(x: sympy.Matrix, y: sympy.Matrix) -> sympy.Expr:
    return sum(x[i] * y[i] for i in range(len(x)))


def _pairing(lhs: sympy.Matrix, rhs: sympy.Matrix, tag: str) -> tuple[sympy.Expr, sympy.Expr]:
    """A matrix identity as one scalar identity: Σ w_e lhs_e = Σ w_e rhs_e for fresh w_e
    (a polynomial identity in the w's iff every entry agrees)."""
    w = sympy.symbols(f"w_{tag}_0:{len(lhs)}", real=True)
    return (sum(wi * e for wi, e in zip(w, lhs, strict=True)),
            sum(wi * e for wi, e in zip(w, rhs, strict=True)))


# --- the Hessian computed by sympy from the network, with generic σ -------------------------
def network_hessian(d: int, h: int, k: int, loss: str = "taylor", label: int = 0,
                    hidden_bias: bool = True, output_bias: bool = True
                    ) -> tuple[sympy.Matrix, SampleSymbols, sympy.Matrix, dict]:
    """``∇²_θ ℓ(V σ(W x + b) + c)`` by sympy (σ an undefined function), rewritten in the
    per-sample symbols: σ(z_r) → a_r, σ'(z_r) → σ'_r, σ''(z_r) → σ''_r.

    loss="taylor": ℓ(f) = gᵀ(f − f₀) + ½(f − f₀)ᵀA(f − f₀) with f₀ = f(θ) substituted after
    differentiating (any C² loss has this gradient g and Hessian A at f(θ)).
    loss="cross_entropy": the actual ``−log softmax(f)_label``; then the softmax symbols are
    returned in ``extra`` (``f`` symbols standing for the logits).
    """
    sigma = sympy.Function("sigma")
    s = SampleSymbols.make("i", d, h, k, hidden_bias, output_bias)
    x = s.xt[:d, :]
    w = sympy.Matrix(h, d, lambda r, c: sympy.Symbol(f"W_{r}{c}", real=True))
    b = sympy.Matrix(h, 1, lambda r, _: sympy.Symbol(f"b_{r}", real=True))
    v = shared_v(k, h)
    c = sympy.Matrix(k, 1, lambda r, _: sympy.Symbol(f"c_{r}", real=True))
    z = w * x + (b if hidden_bias else sympy.zeros(h, 1))
    out = v * z.applyfunc(sigma) + (c if output_bias else sympy.zeros(k, 1))
    logits = sympy.Matrix(k, 1, sympy.symbols(f"f_1:{k + 1}", real=True))
    if loss == "taylor":
        f0 = sympy.Matrix(k, 1, sympy.symbols(f"f0_1:{k + 1}", real=True))
        u = out - f0
        ell = (s.g.T * u)[0] + sympy.Rational(1, 2) * (u.T * s.A * u)[0]
    elif loss == "cross_entropy":
        ell = -out[label] + sympy.log(sum(sympy.exp(e) for e in out))
    else:
        raise ValueError(loss)
    theta = list(w) + (list(b) if hidden_bias else []) + list(v) + (
        list(c) if output_bias else [])
    hess = sympy.hessian(ell, theta)
    zs = [z[r] for r in range(h)]

    def name(e: sympy.Expr) -> sympy.Expr:
        e = e.replace(
            lambda q: isinstance(q, sympy.Subs) and isinstance(q.expr, sympy.Derivative)
            and q.expr.expr.func == sigma,
            lambda q: (s.s1 if q.expr.derivative_count == 1 else s.s2)[zs.index(q.point[0])])
        e = e.subs({sigma(z[r]): s.a[r] for r in range(h)})
        if loss == "taylor":
            e = e.subs({f0[kk]: (v * s.a + (c if output_bias else sympy.zeros(k, 1)))[kk]
                        for kk in range(k)})
        elif output_bias:
            e = e.subs({c[kk]: logits[kk] - (v * s.a)[kk] for kk in range(k)})
        return sympy.expand(e)

    extra = {"logits": logits}
    return hess.applyfunc(name), s, v, extra


def softmax_factors(logits: sympy.Matrix, label: int) -> tuple[sympy.Matrix, sympy.Matrix]:
    """(g, A) of softmax cross-entropy from the logits: g = p − e_y, A = diag(p) − p pᵀ."""
    k = logits.shape[0]
    e = [sympy.exp(z) for z in logits]
    p = [x / sum(e) for x in e]
    g = sympy.Matrix([p[r] - (1 if r == label else 0) for r in range(k)])
    a = sympy.Matrix(k, k, lambda r, c: (p[r] if r == c else 0) - p[r] * p[c])
    return g, a


# --- the steps -------------------------------------------------------------------------------
_K_CE = 3
_f = sympy.Matrix(_K_CE, 1, sympy.symbols(f"f_1:{_K_CE + 1}", real=True))
_y = 1
_ce = -_f[_y] + sympy.log(sum(sympy.exp(z) for z in _f))
_g_ce, _A_ce = softmax_factors(_f, _y)
_p = sympy.symbols(f"p_1:{_K_CE + 1}", positive=True)


def _named(name: str) -> sympy.Symbol:
    """A readable stand-in for a large explicit expression (given in the step's
    substitutions, so printing shows the claim and checking uses the expansion)."""
    return sympy.Symbol(name, real=True)


def _blocks_step(d: int, h: int, k: int, hidden_bias: bool, output_bias: bool) -> Step:
    hess, s, v, _ = network_hessian(d, h, k, "taylor", hidden_bias=hidden_bias,
                                    output_bias=output_bias)
    lhs, rhs = _pairing(hess, block_hessian(s, v), f"b{d}{h}{k}")
    biases = ("with" if hidden_bias else "without") + " biases"
    auto = _named(r"\nabla^2_\theta \ell_i\ (sympy)")
    blocks = _named(r"[M\otimes\tilde x\tilde x^\top, (C\otimes\tilde x^\top)^\top; "
                    r"C\otimes\tilde x^\top, A\otimes\tilde a\tilde a^\top]")
    return Step(f"per-sample Hessian = the three blocks (D={d}, h={h}, K={k}, {biases})",
                auto, blocks, substitutions={auto: lhs, blocks: rhs},
                because="sympy.hessian of ℓ(Vσ(Wx+b)+c), generic σ and loss (second-order "
                        "Taylor model at f(θ)), paired entrywise with fresh weights")


def _ce_step() -> Step:
    d, h, k, label = 1, 2, 3, 0
    hess, s, v, extra = network_hessian(d, h, k, "cross_entropy", label=label)
    g, a = softmax_factors(extra["logits"], label)
    pred = block_hessian(s, v).subs({**dict(zip(s.g, g, strict=True)),
                                     **dict(zip(s.A, a, strict=True))}, simultaneous=True)
    lhs, rhs = _pairing(hess, pred, "ce")
    auto = _named(r"\nabla^2_\theta(-\log\operatorname{softmax}(f)_y)\ (sympy)")
    blocks = _named(r"\mathrm{blocks}(g = p - e_y,\ A = \operatorname{diag}p - pp^\top)")
    return Step("cross-entropy composite: its Hessian is the blocks with g = p − e_y, "
                "A = diag(p) − ppᵀ (D=1, h=2, K=3)", auto, blocks,
                substitutions={auto: lhs, blocks: rhs},
                because="sympy.hessian of −log softmax(Vσ(Wx+b)+c)_y, σ generic")


_SIZES_PAIR = (2, 2, 3)


def _pair_samples(hidden_bias: bool = True, output_bias: bool = True):
    d, h, k = _SIZES_PAIR
    si = SampleSymbols.make("i", d, h, k, hidden_bias, output_bias)
    sj = SampleSymbols.make("j", d, h, k, hidden_bias, output_bias)
    return si, sj, shared_v(k, h)


HH = _named(r"\langle H_i,H_j\rangle_F")
MM = _named(r"\langle M_i,M_j\rangle")
CC = _named(r"\langle C_i,C_j\rangle")


def _pair_steps() -> list[Step]:
    si, sj, v = _pair_samples()
    fi, fj = si.factors(v), sj.factors(v)
    defs = pair_definitions(si, sj, v)
    hi, hj = block_hessian(si, v), block_hessian(sj, v)
    nh = v.shape[1] * si.xt.shape[0]  # hidden parameters come first
    out_ = _named(r"\langle A_i\otimes\tilde a_i\tilde a_i^\top, "
                  r"A_j\otimes\tilde a_j\tilde a_j^\top\rangle")
    hid_ = _named(r"\langle M_i\otimes\tilde x_i\tilde x_i^\top, "
                  r"M_j\otimes\tilde x_j\tilde x_j^\top\rangle")
    crs_ = _named(r"\langle C_i\otimes\tilde x_i^\top, C_j\otimes\tilde x_j^\top\rangle")
    explicit = {
        out_: _frobenius(hi[nh:, nh:], hj[nh:, nh:]),
        hid_: _frobenius(hi[:nh, :nh], hj[:nh, :nh]),
        crs_: _frobenius(hi[nh:, :nh], hj[nh:, :nh]),
        MM: _frobenius(fi["M"], fj["M"]), CC: _frobenius(fi["C"], fj["C"]),
        HH: _frobenius(hi, hj), **defs,
    }
    si0, sj0, _ = _pair_samples(False, False)
    hh0 = _named(r"\langle H_i,H_j\rangle_F\ (no\ biases)")
    tr_ = _named(r"\operatorname{tr} H_i")
    return [
        Step("output block: ⟨A_i⊗ã_iã_iᵀ, A_j⊗ã_jã_jᵀ⟩ = ⟨A_i,A_j⟩(ã_i·ã_j)²", out_,
             TAA * GA**2, substitutions=explicit,
             because="Kronecker mixed product: ⟨X⊗uuᵀ, Y⊗wwᵀ⟩ = ⟨X,Y⟩(u·w)²"),
        Step("hidden block: ⟨M_i⊗x̃_ix̃_iᵀ, M_j⊗x̃_jx̃_jᵀ⟩ = (x̃_i·x̃_j)²⟨M_i,M_j⟩", hid_,
             GX**2 * MM, substitutions=explicit),
        Step("cross blocks (twice, H symmetric): 2⟨C_i⊗x̃_iᵀ, C_j⊗x̃_jᵀ⟩ = 2(x̃_i·x̃_j)⟨C_i,C_j⟩",
             2 * crs_, 2 * GX * CC, substitutions=explicit),
        Step("⟨M_i,M_j⟩ = ⟨S_i,S_j⟩ + Σ_r S_i,rr q_jr + Σ_r S_j,rr q_ir + q_i·q_j  (S = BᵀAB)",
             MM, MM_EXPR, substitutions=explicit,
             because="M = S + diag(q); the diagonal matrix pairs only with S's diagonal"),
        Step("⟨C_i,C_j⟩ = (ã_i·ã_j)⟨F_i,F_j⟩ + Σ a_ir F_irk σ'_jr g_jk + (i↔j) + "
             "(σ'_i·σ'_j)(g_i·g_j)", CC, CC_EXPR, substitutions=explicit,
             because="C_{(k,r'),r} = F_rk ã_r' + σ'_r g_k [r'=r]; [r'=r] keeps only r' ≤ h"),
        Step("⟨H_i,H_j⟩_F = Φ_ij (the generated pair expression)", HH, PAIR_EXPR,
             substitutions=explicit, because="sum of the three block contributions"),
        Step("⟨H_i,H_j⟩_F = Φ_ij without biases (x̃ = x, ã = a)", hh0, PAIR_EXPR,
             substitutions={hh0: _frobenius(block_hessian(si0, v), block_hessian(sj0, v)),
                            **pair_definitions(si0, sj0, v)}),
        Step("per-sample trace: tr H_i = tr A_i‖ã_i‖² + (tr B_iᵀA_iB_i + Σ_r q_ir)‖x̃_i‖²",
             tr_, TRACE_EXPR, substitutions={tr_: hi.trace(), **trace_definitions(si, v)},
             because="the cross block is off-diagonal; tr(X⊗uuᵀ) = tr X ‖u‖²"),
    ]


def _sum_steps() -> list[Step]:
    n = 3
    mats = [sympy.Matrix(2, 2, lambda r, c, t=t: sympy.Symbol(f"h_{t}{min(r, c)}{max(r, c)}",
                                                              real=True)) for t in range(n)]
    total = sum(mats, sympy.zeros(2, 2)) / n
    return [
        Step("tr H = (1/n) Σ_i tr H_i (n = 3)", total.trace(),
             sum(m.trace() for m in mats) / n, because="H = (1/n) Σ_i H_i, trace is linear"),
        Step("‖H‖_F² = n⁻² Σ_{i,j} ⟨H_i,H_j⟩ (n = 3)", _frobenius(total, total),
             sum(_frobenius(a, b) for a in mats for b in mats) / n**2,
             because="bilinearity of the Frobenius inner product"),
    ]


def _softmax_sampler(rng: random.Random) -> dict:
    vals = [rng.expovariate(1.0) for _ in _p]
    s = sum(vals)
    return {p: v / s for p, v in zip(_p, vals, strict=True)}


def _steps() -> tuple[Step, ...]:
    gk = [sympy.diff(_ce, z) for z in _f]
    ak = sympy.Matrix(_K_CE, _K_CE, lambda r, c: sympy.diff(_ce, _f[r], _f[c]))
    g_l, g_r = _pairing(sympy.Matrix(gk), _g_ce, "g")
    a_l, a_r = _pairing(ak, _A_ce, "A")
    p_rest = sum(_p[1:])
    grad, grad_f = _named(r"\nabla_f \ell"), _named("p - e_y")
    hess, hess_f = _named(r"\nabla^2_f \ell"), _named(r"\operatorname{diag}p - pp^\top")
    return (
        Step("softmax cross-entropy gradient: ∂ℓ/∂f = p − e_y (K = 3, y = 2nd class)", grad,
             grad_f, substitutions={grad: g_l, grad_f: g_r}),
        Step("softmax cross-entropy output Hessian: ∂²ℓ/∂f² = diag(p) − ppᵀ", hess, hess_f,
             substitutions={hess: a_l, hess_f: a_r}),
        Step("stable forms on the simplex: A_kk = p_k Σ_{l≠k} p_l, g_y = −Σ_{l≠y} p_l",
             (_p[0] * (1 - _p[0])).subs(_p[0], 1 - p_rest), (1 - p_rest) * p_rest,
             because="Σ_l p_l = 1: no 1 − p_k is ever formed, so saturation costs no accuracy"),
        _ce_step(),
        _blocks_step(2, 2, 3, True, True),
        _blocks_step(2, 2, 2, False, False),
        *_pair_steps(),
        *_sum_steps(),
    )


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    return Derivation(
        title="T2 Tier A: closed forms of tr H and ‖H‖_F² (CE, one smooth hidden layer)",
        source=SOURCE, steps=_steps(),
        conclusion="tr H = (1/n)Σ_i TRACE_EXPR_i, ‖H‖_F² = n⁻²Σ_{i,j} PAIR_EXPR_ij; "
                   "with T1: λ_max ≤ m + s√(P−1)")


def __getattr__(name: str):
    """``DERIVATION`` is built (a few seconds of sympy) on first access, not at import."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the theorem ----------------------------------------------------------------------------
lam_max = sympy.Symbol(r"\lambda_{\max}", real=True)


def _at_least_two(values, subject) -> str | None:
    if values["hessian.dim"].value < 2:
        return "P = 1: Wolkowicz–Styan needs at least two eigenvalues"
    return None


CLOSED_FORM_WS = Theorem(
    id="hessian.closed_form_ws_lambda_max",
    title="Closed-form Wolkowicz–Styan λ_max bound (CE, L ≥ 1 smooth hidden layers; T2 Tier A)",
    lhs=lam_max, rhs=WS_RHS,
    symbols={lam_max: "hessian.lambda_max", trace_h: "closed_form.trace",
             fro2_h: "closed_form.fro2", P: "hessian.dim"},
    source=SOURCE,
    assumptions=(Assumption("P >= 2", "the Hessian has at least two eigenvalues",
                            _at_least_two, ("hessian.dim",)),),
    slack="difference", family="hessian.closed_form",
    notes="f(x) = Vσ(Wx+b)+c (derived here) or L ≥ 2 hidden layers "
          "W_{L+1}σ(…σ(W_1x+b_1)…)+b_{L+1} (derivations/closed_form_ce_depth.py), σ ∈ {tanh, "
          "sigmoid, softplus, GELU (erf), identity}, softmax cross-entropy; tr H and ‖H‖_F² "
          "from per-sample factors and n×n Gram matrices, no Hessian-vector product.",
    applies_to="closed_form.depth",
)

THEOREMS = (CLOSED_FORM_WS,)
