"""T1 — Wolkowicz–Styan eigenvalue bounds from traces.

Source: H. Wolkowicz and G. P. H. Styan, "Bounds for eigenvalues using traces",
Linear Algebra and its Applications 29 (1980) 471–506, Theorem 2.1.

Statement. For symmetric ``A ∈ R^{N×N}``, ``N ≥ 2``, ``m = tr A / N``,
``s² = tr(A²)/N − m² = ‖A − mI‖_F²/N``:

    m − s√(N−1) ≤ λ_min ≤ m − s/√(N−1),      m + s/√(N−1) ≤ λ_max ≤ m + s√(N−1).

All four are equalities at N = 2; the λ_max upper bound is attained when the other N − 1
eigenvalues all equal ``m − s/√(N−1)``. boundcheck applies them to the loss Hessian
(``A = H``, ``N = P``) and to any :class:`boundcheck.MatrixSubject`.

Proof (each step below is checked by :meth:`Derivation.verify`). Write ``d_j = λ_j − m``.
The deviations sum to 0 and their squares to ``N s²``. (i) Cauchy–Schwarz on the other N − 1
deviations gives ``d_i² ≤ (N−1)(N s² − d_i²)``, i.e. ``|d_i| ≤ s√(N−1)`` for every eigenvalue:
the outer bounds. (ii) Every ``d_j`` lies in ``[−(N−1) d_max, d_max]`` (the sum is 0), so
``Σ_j (d_max − d_j)(d_j + (N−1) d_max) ≥ 0``, which expands to ``N(N−1) d_max² ≥ N s²``:
``d_max ≥ s/√(N−1)``. Applied to −A: ``d_min ≤ −s/√(N−1)``. Those are the inner bounds.
"""

from __future__ import annotations

import sympy

from boundcheck.core.estimate import Estimate
from boundcheck.core.theorem import Assumption, Theorem

from .proof import Derivation, Step

SOURCE = ("H. Wolkowicz and G. P. H. Styan, Bounds for eigenvalues using traces, "
          "Linear Algebra Appl. 29 (1980), Thm 2.1")

N = sympy.Symbol("N", positive=True, integer=True)
m = sympy.Symbol("m", real=True)
s = sympy.Symbol("s", nonnegative=True)
lam_max = sympy.Symbol(r"\lambda_{\max}", real=True)
lam_min = sympy.Symbol(r"\lambda_{\min}", real=True)
s2 = s**2

SYMBOLS = {
    N: "hessian.dim",
    m: "hessian.eigenvalue_mean",
    s: "hessian.eigenvalue_std",
    lam_max: "hessian.lambda_max",
    lam_min: "hessian.lambda_min",
}


def _at_least_two(values: dict[str, Estimate], subject: object) -> str | None:
    n = values["hessian.dim"].value
    if n < 2:
        return f"N = {int(n)}: the bounds need N ≥ 2 (at N = 1 two sides are 0/0)"
    return None


N_AT_LEAST_2 = Assumption("N >= 2", "the matrix has at least two eigenvalues", _at_least_two,
                          ("hessian.dim",))


def _theorem(tid: str, title: str, lhs, rhs, syms) -> Theorem:
    return Theorem(
        id=tid, title=title, lhs=lhs, rhs=rhs,
        symbols={k: v for k, v in SYMBOLS.items() if k in syms},
        source=SOURCE, assumptions=(N_AT_LEAST_2,), slack="difference", family="hessian.ws",
        notes="Applied to the loss Hessian H (N = P) with exact or interval traces.",
    )


LAMBDA_MAX_UPPER = _theorem("hessian.ws_lambda_max", "Wolkowicz–Styan upper bound on λ_max",
                            lam_max, m + s * sympy.sqrt(N - 1), {lam_max, m, s, N})
LAMBDA_MAX_LOWER = _theorem("hessian.ws_lambda_max_lower",
                            "Wolkowicz–Styan lower bound on λ_max",
                            m + s / sympy.sqrt(N - 1), lam_max, {lam_max, m, s, N})
LAMBDA_MIN_UPPER = _theorem("hessian.ws_lambda_min_upper",
                            "Wolkowicz–Styan upper bound on λ_min",
                            lam_min, m - s / sympy.sqrt(N - 1), {lam_min, m, s, N})
LAMBDA_MIN_LOWER = _theorem("hessian.ws_lambda_min", "Wolkowicz–Styan lower bound on λ_min",
                            m - s * sympy.sqrt(N - 1), lam_min, {lam_min, m, s, N})

THEOREMS = (LAMBDA_MAX_UPPER, LAMBDA_MAX_LOWER, LAMBDA_MIN_UPPER, LAMBDA_MIN_LOWER)


# --- the derivation -------------------------------------------------------------------------
t1, t2 = sympy.symbols("t_1 t_2", real=True)  # tr A, tr A²
d, dmax = sympy.symbols("d d_max", real=True)  # one deviation; the largest
S1, S2 = sympy.symbols("S_1 S_2", real=True)  # Σ d_j, Σ d_j²
_n_cs = 4
_dev = sympy.symbols(f"e_1:{_n_cs + 1}", real=True)  # N−1 = 4 other deviations, for CS

DERIVATION = Derivation(
    title="T1 Wolkowicz–Styan: λ bounds from tr A and tr A²",
    source=SOURCE,
    steps=(
        Step("deviations sum to zero", t1 - N * (t1 / N), 0,
             because="Σ_j (λ_j − m) = tr A − N·m with m = tr A / N"),
        Step("deviations' squares sum to N s²",
             t2 - 2 * (t1 / N) * t1 + N * (t1 / N) ** 2, N * (t2 / N - (t1 / N) ** 2),
             because="Σ_j (λ_j − m)² = tr A² − 2m tr A + N m², and s² = tr A²/N − m²"),
        Step("Cauchy–Schwarz on the other N−1 deviations (Lagrange identity, N−1 = 4)",
             sum(_dev) ** 2, _n_cs * sum(e * e for e in _dev), relation="<=",
             witness=sum((_dev[a] - _dev[b]) ** 2 for a in range(_n_cs)
                         for b in range(a + 1, _n_cs)),
             because="(Σ e)² ≤ k Σ e², with k Σ e² − (Σ e)² = Σ_{a<b} (e_a − e_b)²; the "
                     "general-k case is a property test"),
        Step("substitute Σ_{j≠i} d_j = −d_i and Σ_{j≠i} d_j² = N s² − d_i²",
             (N - 1) * (N * s2 - d**2) - d**2, N * ((N - 1) * s2 - d**2),
             because="so (−d_i)² ≤ (N−1)(N s² − d_i²) ⇔ d_i² ≤ (N−1) s², as N > 0"),
        Step("outer bounds: |λ_i − m| ≤ s√(N−1)", (s * sympy.sqrt(N - 1)) ** 2, (N - 1) * s2,
             because="take square roots (both sides ≥ 0); i = argmax, argmin"),
        Step("each deviation lies in [−(N−1) d_max, d_max]: sum of products",
             sympy.expand(dmax * S1 + N * (N - 1) * dmax**2 - S2 - (N - 1) * dmax * S1),
             N * (N - 1) * dmax**2 - S2 + (2 - N) * dmax * S1,
             because="Σ_j (d_max − d_j)(d_j + (N−1) d_max), each factor pair ≥ 0"),
        Step("with S_1 = 0 and S_2 = N s²: N(N−1) d_max² ≥ N s²",
             (N * (N - 1) * dmax**2 - S2 + (2 - N) * dmax * S1).subs({S1: 0, S2: N * s2}),
             N * ((N - 1) * dmax**2 - s2),
             because="so d_max² ≥ s²/(N−1), and d_max ≥ 0 since the deviations sum to 0"),
        Step("inner bound on λ_max, squared", (s / sympy.sqrt(N - 1)) ** 2, s2 / (N - 1),
             because="d_max ≥ s/√(N−1); the bound on λ_min follows from −A"),
        Step("equality at N = 2", (m + s * sympy.sqrt(N - 1)).subs(N, 2),
             (m + s / sympy.sqrt(N - 1)).subs(N, 2),
             because="outer and inner bounds coincide: the eigenvalues are m ± s"),
        Step("attainment: spectrum (m + s√(N−1), m − s/√(N−1) ×(N−1)) has mean m",
             ((m + s * sympy.sqrt(N - 1)) + (N - 1) * (m - s / sympy.sqrt(N - 1))) / N, m),
        Step("attainment: ... and variance s²",
             ((s * sympy.sqrt(N - 1)) ** 2 + (N - 1) * (s / sympy.sqrt(N - 1)) ** 2) / N, s2),
    ),
    conclusion="m − s√(N−1) ≤ λ_min ≤ m − s/√(N−1) and m + s/√(N−1) ≤ λ_max ≤ m + s√(N−1)",
)
