"""T12 — beyond Wolkowicz–Styan: the tightest λ_max bound from N and k trace moments (new).

Statement. For symmetric A ∈ R^{N×N}, N ≥ 2, with ``μ_j = tr(A^j)/N`` known (exactly or in
intervals) for j ≤ k: ``λ_max(A) ≤ B_k``, where B_k is the largest t for which a measure of
mass N − 1 on ``[ℓ, t]`` can have moments ``N μ_j − t^j`` (j ≤ k) — relaxed to the Hankel and
localizing-matrix conditions of the truncated Hausdorff moment problem (an outer relaxation,
so B_k is still an upper bound). ``ℓ = m − s√(N−1)`` is T1's lower bound on λ_min; without it
the k = 3 bound equals T1. ``B_2`` is exactly T1's ``m + s√(N−1)``; B_3 and B_4 are at least as
tight (their constraint sets contain B_2's). :mod:`boundcheck.engines.moment_bound` states the
program, computes B_k with cvxpy, and certifies every answer in interval arithmetic.

Proof (the steps below are checked). (1) Removing the top eigenvalue t from the spectrum
leaves N − 1 eigenvalues whose power sums are ``N μ_j − t^j``. (2) They lie in [ℓ, t]: t is
the largest and ℓ ≤ λ_min by T1. (3) For any measure ν, ``cᵀ H(ν) c = ∫ (Σ_a c_a x^a)² dν ≥ 0``
(Hankel matrix PSD); for q ≥ 0 on the support, ``∫ q (Σ_a c_a x^a)² dν ≥ 0`` (localizing
matrix PSD); q ∈ {x − ℓ, t − x, (t − x)(x − ℓ)}. (4) So the true (t = λ_max, μ) satisfies every
block; any t where no moment vector in the box does is not λ_max, and all t above the
lowest such certified point are excluded. (5) At k = 2 in standardized units (m = 0, s = 1),
the Hankel determinant is ``N(N − 1 − t²)``: t ≤ √(N−1), Wolkowicz–Styan; the localizing
condition gives ``t ≥ 1/√(N−1)``, its inner bound. (6) A Farkas certificate
``Σ w vᵀ C v`` (w ≥ 0) is ≥ 0 at every feasible point, so its negativity on a cell proves
infeasibility; the cell enclosure re-expands polynomials exactly (binomial theorem).
"""

from __future__ import annotations

import functools
import random

import numpy as np
import sympy

from boundcheck.core.formulas.moments import constraint_matrices
from boundcheck.core.theorem import Assumption, Theorem

from .proof import Derivation, Step

SOURCE = ("new (boundcheck): outer moment relaxation of the largest eigenvalue given N and "
          "tr(A^j)/N, j ≤ k; truncated Hausdorff moment conditions (M. G. Krein and A. A. "
          "Nudelman, The Markov Moment Problem and Extremal Problems, AMS 1977); k = 2 is "
          "Wolkowicz–Styan (Linear Algebra Appl. 29, 1980)")

lam_max = sympy.Symbol(r"\lambda_{\max}", real=True)
bound_k3 = sympy.Symbol(r"B_3(N,\mu_1,\mu_2,\mu_3)", real=True)
bound_k4 = sympy.Symbol(r"B_4(N,\mu_1,\dots,\mu_4)", real=True)


def _at_least_two(values, subject) -> str | None:
    if values["hessian.dim"].value < 2:
        return "N = 1: the moment bound needs at least two eigenvalues"
    return None


N_AT_LEAST_2 = Assumption("N >= 2", "the matrix has at least two eigenvalues", _at_least_two,
                          ("hessian.dim",))

_NOTES = ("B_k: the largest t such that a measure of mass N−1 on [ℓ, t] (ℓ = T1's λ_min "
          "bound) can carry the moments Nμ_j − t^j, j ≤ k (Hankel + localizing PSD: an outer "
          "relaxation); cvxpy + bisection, every answer certified in interval arithmetic. "
          "The quantity's interval is [a t verified feasible for every moment in the box, the "
          "certified bound].")

MOMENT_K3 = Theorem(
    id="hessian.moment_lambda_max_k3", title="λ_max bound from three trace moments (T12, k = 3)",
    lhs=lam_max, rhs=bound_k3,
    symbols={lam_max: "hessian.lambda_max", bound_k3: "moment_bound.lambda_max_k3"},
    source=SOURCE, assumptions=(N_AT_LEAST_2,), slack="difference", family="hessian.moments",
    notes=_NOTES,
)
MOMENT_K4 = Theorem(
    id="hessian.moment_lambda_max_k4", title="λ_max bound from four trace moments (T12, k = 4)",
    lhs=lam_max, rhs=bound_k4,
    symbols={lam_max: "hessian.lambda_max", bound_k4: "moment_bound.lambda_max_k4"},
    source=SOURCE, assumptions=(N_AT_LEAST_2,), slack="difference", family="hessian.moments",
    notes=_NOTES,
)
THEOREMS = (MOMENT_K3, MOMENT_K4)


# --- the steps --------------------------------------------------------------------------------
_x = sympy.symbols("x_1:5", real=True)  # a spectrum of N = 4, x_1 the top
_j = 3
_w = sympy.symbols("w_1:4", positive=True)  # an atomic measure: weights ...
_z = sympy.symbols("z_1:4", real=True)  # ... at points
_c = sympy.symbols("c_0:3", real=True)  # a test polynomial's coefficients
_N, _t, _ell = sympy.symbols("N t ell", real=True)
_L = sympy.Matrix(2, 2, lambda r, c: sympy.Symbol(f"L_{r}{c}", real=True) if c <= r else 0)
_v = sympy.Matrix(sympy.symbols("v_1:3", real=True))
_p = sympy.symbols("p_0:6", real=True)
_a, _s = sympy.symbols("a s", real=True)


def _hankel_form() -> tuple[sympy.Expr, sympy.Expr]:
    moments = [sum(w * z**j for w, z in zip(_w, _z, strict=True)) for j in range(5)]
    form = sum(_c[a] * _c[b] * moments[a + b] for a in range(3) for b in range(3))
    squares = sum(w * sum(_c[a] * z**a for a in range(3)) ** 2
                  for w, z in zip(_w, _z, strict=True))
    return form, squares


def _spectrum(rng: random.Random) -> np.ndarray:
    r = np.random.default_rng(rng.getrandbits(63))
    n = int(r.integers(2, 12))
    kind = int(r.integers(3))
    if kind == 0:
        return r.normal(size=n)
    if kind == 1:
        return np.exp(2 * r.normal(size=n))
    return r.choice([-1.0, 0.0, 2.0], size=n)


def _true_point_feasible(rng: random.Random) -> tuple[float, float]:
    """(−min eigenvalue over all blocks at the true t and moments, tolerance): ≤ means the
    true spectrum satisfies the relaxation."""
    lam = _spectrum(rng)
    n = lam.size
    m, s = lam.mean(), lam.std()
    if s == 0:
        return 0.0, 0.0
    x = (lam - m) / s
    y = [1.0] + [float(np.mean(x**j)) for j in range(1, 5)]
    ell = -np.sqrt(n - 1)
    worst = min(float(np.linalg.eigvalsh(np.array(b, dtype=float))[0])
                for b in constraint_matrices(4, float(x.max()), y, n, ell))
    return -worst, 1e-9 * max(1.0, float(np.abs(x).max()) ** 5)


def _support(rng: random.Random) -> tuple[float, float]:
    lam = _spectrum(rng)
    n = lam.size
    ell = lam.mean() - lam.std() * np.sqrt(n - 1)
    return float(ell), float(lam.min())


def _localizing(rng: random.Random) -> tuple[float, float]:
    """A random atomic measure on [ℓ, t]: −λ_min of its (x−ℓ), (t−x), (t−x)(x−ℓ) localizing
    matrices, against 0."""
    r = np.random.default_rng(rng.getrandbits(63))
    ell, t = sorted(r.normal(size=2) * 3)
    pts = r.uniform(ell, t, size=int(r.integers(1, 6)))
    w = r.exponential(size=pts.size)
    worst = np.inf
    for q in (pts - ell, t - pts, (t - pts) * (pts - ell)):
        mat = np.array([[np.sum(w * q * pts ** (a + b)) for b in range(2)] for a in range(2)])
        worst = min(worst, float(np.linalg.eigvalsh(mat)[0]))
    scale = float(np.sum(w) * max(1.0, abs(ell), abs(t)) ** 4)
    return -worst, 1e-12 * scale


def _steps() -> tuple[Step, ...]:
    form, squares = _hankel_form()
    nu0, nu1, nu2 = _N - 1, -_t, _N - _t**2  # standardized: Σx = 0, Σx² = N
    taylor = sum(_p[i] * (_a + _s) ** i for i in range(6))
    expanded = sum(sum(sympy.binomial(i, d) * _p[i] * _a ** (i - d) for i in range(d, 6))
                   * _s**d for d in range(6))
    return (
        Step("the other eigenvalues' power sums: Σ_{i≥2} x_i^j = Σ_i x_i^j − x_1^j (N = 4)",
             sum(xi**_j for xi in _x[1:]), sum(xi**_j for xi in _x) - _x[0] ** _j),
        Step("their support: λ_min ≥ ℓ = m − s√(N−1) (T1), and ≤ t = λ_max by definition",
             sympy.Symbol(r"\ell"), sympy.Symbol(r"\lambda_{\min}"), relation="<=",
             check="numeric", evaluate=_support, because="T1's outer bound"),
        Step("Hankel form of a measure: cᵀH(ν)c = Σ_i w_i (Σ_a c_a z_i^a)² ≥ 0", 0, form,
             relation="<=", witness=squares, because="3 atoms, degree 2"),
        Step("localizing matrices of x − ℓ, t − x, (t − x)(x − ℓ) are PSD for measures on "
             "[ℓ, t]", sympy.Symbol(r"-\lambda_{\min}(L_q(\nu))"), 0, relation="<=",
             check="numeric", evaluate=_localizing,
             because="cᵀL_q c = ∫ q (Σ c_a x^a)² dν with q ≥ 0 on [ℓ, t]"),
        Step("outer relaxation: the true (t = λ_max, μ_1..μ_4) satisfies every block",
             sympy.Symbol(r"-\min_c \lambda_{\min}(C_c)"), 0, relation="<=", check="numeric",
             evaluate=_true_point_feasible,
             because="steps 1–4 applied to ν = the other N − 1 eigenvalues"),
        Step("k = 2, standardized: det [[N−1, −t], [−t, N − t²]] = N(N − 1 − t²)",
             nu0 * nu2 - nu1**2, _N * (_N - 1 - _t**2),
             because="so t ≤ √(N−1): exactly Wolkowicz–Styan's m + s√(N−1)"),
        Step("k = 2 localizing: −ν₂ + (t + ℓ)ν₁ − tℓν₀ = −N(1 + tℓ)",
             -nu2 + (_t + _ell) * nu1 - _t * _ell * nu0, -_N * (1 + _t * _ell),
             because="with ℓ = −√(N−1): t ≥ 1/√(N−1), Wolkowicz–Styan's inner bound"),
        Step("Farkas certificate: vᵀCv ≥ 0 for C = LLᵀ ⪰ 0", 0, (_v.T * _L * _L.T * _v)[0],
             relation="<=", witness=((_L.T * _v).T * (_L.T * _v))[0],
             because="so Σ w vᵀC_c v ≥ 0 at every feasible point; < 0 on a cell excludes it"),
        Step("cell enclosure: p(a + s) = Σ_d (Σ_{i≥d} C(i,d) p_i a^{i−d}) s^d (degree 5)",
             taylor, expanded, because="binomial theorem; then s^d ∈ [0, w^d] on the cell"),
    )


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    return Derivation(title="T12: λ_max from N and k trace moments (outer moment relaxation)",
                      source=SOURCE, steps=_steps(),
                      conclusion="λ_max ≤ B_k; B_2 = m + s√(N−1); B_4 ≤ B_3 ≤ B_2")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
