"""T12 — the tightest λ_max upper bound from N and the trace moments μ_j = tr(A^j)/N, j ≤ k,
as a convex program (cvxpy) whose every answer is certified independently.

Formulation (derivations/trace_moments.py proves each piece). Work in units
``x = (λ − shift)/scale`` for fixed floats (the spectrum's mean and standard deviation when
known), with moments ``y_j = (1/N) Σ_i x_i^j`` known to lie in intervals ``[y_j⁻, y_j⁺]``
(``y_0 = 1``). If ``t`` is the largest eigenvalue, the other N − 1 form a measure ν of mass
N − 1 on ``[ℓ, t]`` with moments ``ν_j = N y_j − t^j``, where ``ℓ`` is T1's lower bound on
λ_min over the moment box. Relaxing "N − 1 unit atoms" to "any measure on [ℓ, t]" (an OUTER
relaxation, so the result is a sound upper bound), ν exists only if (with ``ν̂ = ν/N``)

* k ≥ 2: ``[[ν̂₀, ν̂₁], [ν̂₁, ν̂₂]] ⪰ 0``, ``ν̂₁ − ℓν̂₀ ≥ 0``, ``tν̂₀ − ν̂₁ ≥ 0``,
  ``E_ν̂[(t − x)(x − ℓ)] ≥ 0``;
* k ≥ 3: the 2×2 localizing matrices of ``x − ℓ`` and ``t − x`` (moments ν̂₀..ν̂₃) ⪰ 0;
* k = 4: the 3×3 Hankel matrix of ν̂₀..ν̂₄ and the 2×2 localizing matrix of
  ``(t − x)(x − ℓ)`` ⪰ 0

(the Hankel/localizing conditions of the truncated Hausdorff moment problem). For fixed t
these are LMIs affine in the unknown moments y within their box: an SDP feasibility problem.
The bound is ``B_k = sup{t : feasible}``. For k = 2 it is exactly Wolkowicz–Styan (in
standardized units the Hankel condition is ``t² ≤ N − 1``). Without the support limit ℓ the
k = 3 program gains nothing over k = 2; with it, k = 3, 4 are tighter.

Algorithm. Bisection on t between T1's inner bound and T1's outer bound ``U`` (above which
infeasibility is T1 itself), testing each t by the Farkas dual solved with cvxpy (Clarabel,
SCS as fallback): ``min_{Y_c ⪰ 0, Σ tr Y_c = 1} max_{y ∈ box} Σ_c ⟨Y_c, C_c(t, y)⟩`` (< 0 iff
infeasible). Then certification, independent of the solver's accuracy: the interval
``[B, U]`` is covered by cells ``[a, b]``; for each, the dual matrices from the solve at a are
eigendecomposed into ``Σ w v vᵀ`` (w ≥ 0, exact floats), and
``f(t, y) = Σ w vᵀ C_c(t, y) v`` — nonnegative at every feasible point — is evaluated in
outward-rounded interval arithmetic (mpmath iv) over the whole cell ``t ∈ [a, b]`` and the
whole moment box. ``f < 0`` there proves no feasible t in the cell; cells that fail are
split. The reported bound is the lowest point above which every cell is certified, so it
does not rely on feasibility being monotone in t. A lower end for the relaxation's optimum
is a t at which every constraint matrix is positive definite for *every* y in the box
(checked from interval enclosures of the matrices), searched downward from the certified
upper end and bisected (:func:`certified_feasible_point`), independent of the solver. A
discretised-spectrum LP would be an INNER approximation (it can fall below the true λ_max)
and is never used.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
from mpmath import iv

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.formulas.moments import constraint_matrices

U = UNIT_ROUNDOFF["float64"]
IV_PRECISION = 113
BISECTION_STEPS = 60
BISECTION_TOLERANCE = 1e-9
MAX_CELLS = 60  # certification budget per bound; stopping early only loosens the bound


@dataclass(frozen=True)
class MomentBox:
    """N and the moments ``y_j = (1/N) Σ ((λ_i − shift)/scale)^j``, j = 1..k, as intervals."""

    n: int
    shift: float
    scale: float
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    @property
    def k(self) -> int:
        return len(self.lower)

    def rescaled(self, factor: float) -> MomentBox:
        """The same moments for the spectrum multiplied by ``factor`` (a power of two keeps
        this exact): only the units change."""
        return MomentBox(self.n, self.shift * factor, self.scale * factor, self.lower,
                         self.upper)

    def truncated(self, k: int) -> MomentBox:
        return MomentBox(self.n, self.shift, self.scale, self.lower[:k], self.upper[:k])

    @classmethod
    def from_eigenvalues(cls, eigenvalues: Sequence[float], abs_error: float = 0.0,
                         k: int = 4) -> MomentBox:
        """From computed eigenvalues, each within ``abs_error`` of the true one."""
        lam = np.asarray(eigenvalues, dtype=np.float64)
        n = lam.size
        shift = float(lam.mean())
        dev = lam - shift
        scale = float(np.sqrt(np.mean(dev * dev)))
        if not scale > 0:
            scale = max(abs_error, abs(shift) * U, 1e-300)
        x = dev / scale
        dx = (abs_error + 4 * U * (np.abs(lam) + abs(shift))) / scale + 2 * U * np.abs(x)
        lo, hi = [], []
        for j in range(1, k + 1):
            value = float(np.mean(x**j))
            mag = float(np.mean(np.abs(x) ** j))
            spread = float(np.mean((np.abs(x) + dx) ** j - np.abs(x) ** j))
            err = spread * (1 + 4 * U) + 2 * _gamma(n + j + 4) * (mag + spread)
            lo.append(value - err)
            hi.append(value + err)
        return cls(n, shift, scale, tuple(lo), tuple(hi))

    @classmethod
    def from_raw_moments(cls, n: int, lower: Sequence[float], upper: Sequence[float]
                         ) -> MomentBox:
        """From intervals on the raw moments μ_j = tr(A^j)/N (e.g. estimated), j = 1..k."""
        k = len(lower)
        shift = 0.5 * (lower[0] + upper[0])
        var = 0.5 * (lower[1] + upper[1]) - shift * shift if k >= 2 else 0.0
        scale = math.sqrt(var) if var > 0 else max(abs(shift), 1.0)
        with _iv_precision():
            mu = [iv.mpf(1)] + [iv.mpf([a, b]) for a, b in zip(lower, upper, strict=True)]
            c, s = iv.mpf(shift), iv.mpf(scale)
            lo, hi = [], []
            for j in range(1, k + 1):
                y = sum(math.comb(j, i) * mu[i] * (-c) ** (j - i) for i in range(j + 1)) / s**j
                lo.append(_down(y.a))
                hi.append(_up(y.b))
        return cls(n, shift, scale, tuple(lo), tuple(hi))


@dataclass
class MomentBound:
    """``λ_max ≤ upper`` (certified); the relaxation's optimum lies in ``[lower, upper]``."""

    k: int
    upper: float
    lower: float
    solver_value: float  # the bisection's (uncertified) optimum, λ units
    ws_upper: float  # T1 over the moment box, λ units
    details: dict = field(default_factory=dict)


@contextlib.contextmanager
def _iv_precision():
    saved = iv.prec
    iv.prec = IV_PRECISION
    try:
        yield
    finally:
        iv.prec = saved


def _gamma(m: int) -> float:
    return m * U / (1 - m * U)


def _down(x) -> float:
    f = float(x)
    return math.nextafter(f, -math.inf) if iv.mpf(f) > x else f


def _up(x) -> float:
    f = float(x)
    return math.nextafter(f, math.inf) if iv.mpf(f) < x else f


def _ws_in_units(box: MomentBox) -> tuple[float, float, float]:
    """(T1 inner lower bound on x_max, T1 upper bound on x_max, T1 lower bound ℓ on x_min)
    over the box, outward rounded."""
    with _iv_precision():
        y1 = iv.mpf([box.lower[0], box.upper[0]])
        y2 = iv.mpf([max(box.lower[1], 0.0), box.upper[1]])
        var = y2 - y1**2
        var = iv.mpf([max(float(var.a), 0.0), max(float(var.b), 0.0)])
        root = iv.sqrt(var * (box.n - 1))
        inner = y1 + iv.sqrt(var / (box.n - 1))
        return _down(inner.a), _up((y1 + root).b), _down((y1 - root).a)


class _Poly:
    """A polynomial in t (lowest degree first) with float or mpmath-interval coefficients:
    just enough arithmetic for :func:`constraint_matrices` to build its entries as exact
    polynomials in t (mpmath intervals do not defer to other types, so constants are lifted)."""

    def __init__(self, coefs):
        self.c = list(coefs)

    @staticmethod
    def lift(x) -> _Poly:
        return x if isinstance(x, _Poly) else _Poly([x])

    def __add__(self, other):
        o = self.lift(other).c
        n = max(len(self.c), len(o))
        return _Poly([(self.c[i] if i < len(self.c) else 0) + (o[i] if i < len(o) else 0)
                      for i in range(n)])

    __radd__ = __add__

    def __neg__(self):
        return _Poly([-x for x in self.c])

    def __sub__(self, other):
        return self + (-self.lift(other))

    def __rsub__(self, other):
        return self.lift(other) + (-self)

    def __mul__(self, other):
        o = self.lift(other).c
        out = [0] * (len(self.c) + len(o) - 1)
        for i, x in enumerate(self.c):
            for j, y in enumerate(o):
                out[i + j] = out[i + j] + x * y
        return _Poly(out)

    __rmul__ = __mul__

    def __truediv__(self, scalar):
        return _Poly([x / scalar for x in self.c])

    def __pow__(self, e: int):
        out = _Poly([1])
        for _ in range(e):
            out = out * self
        return out

    def coef(self, d: int):
        return self.c[d] if d < len(self.c) else 0


def _polynomial_blocks(box: MomentBox, k: int, ell, one, zero):
    """The constraint matrices as polynomials in t: (blocks at y = e₀, [blocks at y = e_j
    minus those]) so that C(t, y) = C₀(t) + Σ_j y_j C_j(t) exactly (C is affine in y)."""
    t = _Poly([zero, one])
    base = [_Poly([one])] + [_Poly([zero])] * k
    c0 = constraint_matrices(k, t, base, box.n, _Poly([ell]))
    cj = []
    for j in range(1, k + 1):
        unit = list(base)
        unit[j] = _Poly([one])
        mats = constraint_matrices(k, t, unit, box.n, _Poly([ell]))
        cj.append([[[e - e0 for e, e0 in zip(row, row0, strict=True)]
                    for row, row0 in zip(m, m0, strict=True)] for m, m0 in zip(mats, c0,
                                                                                strict=True)])
    return c0, cj


def _coefficient_matrices(blocks, degree: int) -> list[list[np.ndarray]]:
    """[d][c]: the float matrix of t^d's coefficients in block c."""
    return [[np.array([[float(e.coef(d)) for e in row] for row in m]) for m in blocks]
            for d in range(degree + 1)]


DEGREE = 5  # the highest power of t in any block (k = 4: t · t⁴)


class _DualProgram:
    """The Farkas dual at a fixed t, compiled once (cvxpy, parameters τ_d = t^d):

        min_{Y_c ⪰ 0, Σ tr Y_c = 1}  Σ_c ⟨Y_c, C₀,c(t)⟩ + Σ_j (mid_j a_j + rad_j |a_j|),
        a_j = Σ_c ⟨Y_c, C_j,c(t)⟩,

    i.e. the worst case over the moment box of Σ_c ⟨Y_c, C_c(t, y)⟩; negative iff no y in the
    box makes every block PSD (up to the solver's accuracy, which certification removes)."""

    def __init__(self, box: MomentBox, k: int, ell: float):
        c0, cj = _polynomial_blocks(box, k, ell, 1.0, 0.0)
        a0 = _coefficient_matrices(c0, DEGREE)
        aj = [_coefficient_matrices(m, DEGREE) for m in cj]
        mid = [0.5 * (box.lower[j] + box.upper[j]) for j in range(k)]
        rad = [0.5 * (box.upper[j] - box.lower[j]) for j in range(k)]
        self.ys = [cp.Variable((len(m), len(m)), PSD=True) for m in c0]
        self.tau = [cp.Parameter() for _ in range(DEGREE + 1)]

        def pairing(coefs):  # Σ_d τ_d Σ_c ⟨Y_c, A_{d,c}⟩
            return sum(tau * sum(cp.sum(cp.multiply(a, y)) for a, y in
                                 zip(coefs[d], self.ys, strict=True))
                       for d, tau in enumerate(self.tau) if any(np.any(a) for a in coefs[d]))

        coef = [pairing(aj[j]) for j in range(k)]
        objective = pairing(a0) + sum(mid[j] * coef[j] + rad[j] * cp.abs(coef[j])
                                      for j in range(k))
        self.problem = cp.Problem(cp.Minimize(objective),
                                  [sum(cp.trace(y) for y in self.ys) == 1])
        self.solves = 0

    def solve(self, t: float) -> tuple[float, list[np.ndarray] | None]:
        """(dual value, dual matrices Y_c); value < 0 means infeasible at t."""
        for d, tau in enumerate(self.tau):
            tau.value = t**d
        self.solves += 1
        for solver, opts in ((cp.CLARABEL, {}), (cp.SCS, {"eps": 1e-10, "max_iters": 20000})):
            try:
                self.problem.solve(solver=solver, **opts)
            except cp.error.SolverError:
                continue
            if self.problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
                return float(self.problem.value), [np.array(y.value) for y in self.ys]
        return math.nan, None


class _Certifier:
    """Checks a dual answer independently, in outward-rounded interval arithmetic.

    From the solver's Y_c (eigendecomposed into Σ w v vᵀ with w > 0, as exact floats) it
    forms ``f(t, y) = Σ_c Σ w vᵀ C_c(t, y) v = F₀(t) + Σ_j y_j F_j(t)``: polynomials in t whose
    interval coefficients come from the exact blocks. Any feasible (t, y) has f ≥ 0, so
    ``f < 0`` on a cell × the moment box proves the cell infeasible. On a cell [a, a + w] the
    polynomials are re-expanded around a and enclosed by ``Σ_d c_d [0, w]^d``."""

    def __init__(self, box: MomentBox, k: int, ell: float):
        self.box, self.k = box, k
        with _iv_precision():
            self.c0, self.cj = _polynomial_blocks(box, k, iv.mpf(ell), iv.mpf(1), iv.mpf(0))

    def polynomials(self, duals: list[np.ndarray]) -> list[list]:
        """[F₀, F₁, …, F_k], each a list of interval coefficients (lowest degree first)."""
        terms = []
        for y in duals:
            w, v = np.linalg.eigh(0.5 * (y + y.T))
            terms.append([(float(wi), v[:, i].copy()) for i, wi in enumerate(w) if wi > 0])
        out = []
        with _iv_precision():
            for blocks in [self.c0, *self.cj]:
                coefs = [iv.mpf(0)] * (DEGREE + 1)
                for parts, m in zip(terms, blocks, strict=True):
                    for wi, v in parts:
                        for a, row in enumerate(m):
                            for b, entry in enumerate(row):
                                weight = iv.mpf(wi) * iv.mpf(float(v[a])) * iv.mpf(float(v[b]))
                                for d in range(len(entry.c)):
                                    coefs[d] = coefs[d] + weight * entry.c[d]
                out.append(coefs)
        return out

    def cell_is_infeasible(self, polys: list[list], t_lo: float, t_hi: float) -> bool:
        with _iv_precision():
            a = iv.mpf(t_lo)
            s = iv.mpf([0, _up((iv.mpf(t_hi) - a).b)])
            shifted = [_taylor_at(p, a) for p in polys]
            total = iv.mpf(0)
            for d in range(DEGREE + 1):
                c = shifted[0][d] + sum(iv.mpf([self.box.lower[j], self.box.upper[j]])
                                        * shifted[j + 1][d] for j in range(self.k))
                total = total + (c * s**d if d else c)
            return bool(total.b < 0)


def _taylor_at(coefs: list, a) -> list:
    """Coefficients of p(a + s) in s (interval arithmetic, exact binomial re-expansion)."""
    n = len(coefs)
    return [sum(math.comb(i, d) * coefs[i] * a ** (i - d) for i in range(d, n))
            for d in range(n)]


def robustly_feasible(box: MomentBox, k: int, ell: float, t: float) -> bool:
    """True iff every constraint block is positive definite at t for every y in the box
    (from interval enclosures of the blocks, Weyl's inequality for the enclosure's radius)."""
    with _iv_precision():
        y = [iv.mpf(1)] + [iv.mpf([box.lower[j], box.upper[j]]) for j in range(k)]
        for m in constraint_matrices(k, iv.mpf(t), y, box.n, iv.mpf(ell)):
            size = len(m)
            ends = [[(_down(m[a][b].a), _up(m[a][b].b)) for b in range(size)]
                    for a in range(size)]
            mid = np.array([[0.5 * (lo + hi) for lo, hi in row] for row in ends])
            rad = np.array([[max(hi - 0.5 * (lo + hi), 0.5 * (lo + hi) - lo) for lo, hi in row]
                            for row in ends])
            slack = float(np.linalg.eigvalsh(mid)[0])
            err = float(np.linalg.norm(rad + 2 * U * np.abs(mid))) + 8 * size * U * float(
                np.linalg.norm(mid))
            if not slack > err:
                return False
    return True


FEASIBLE_BISECTIONS = 40


def certified_feasible_point(box: MomentBox, k: int, ell: float, floor: float, top: float,
                             resolution: float) -> float:
    """The largest t found in ``[floor, top)`` that is :func:`robustly_feasible` (a certified
    lower end for the relaxation's optimum), else ``floor`` (T1's inner bound, sound too).

    Searched from the certified upper end ``top`` downward (steps ``resolution·2^j``), then
    bisected between the feasible point found and the infeasible one above it, to
    ``resolution``. Never from the solver's optimum alone: when the solver misjudged t (its
    Farkas value < 0 at a feasible t), a search from there started below the truth and the
    lower end fell back to T1's inner bound (issue 12: [0.107, 5.54] around λ_max = 5.30).
    Any robustly feasible t is a valid lower end, so non-monotone feasibility only costs
    tightness."""
    step, above = resolution, top
    found = None
    while top - step > floor:
        t = top - step
        if robustly_feasible(box, k, ell, t):
            found = t
            break
        above, step = t, 2 * step
    if found is None:
        return floor
    lo, hi = found, above
    for _ in range(FEASIBLE_BISECTIONS):
        if hi - lo <= resolution:
            break
        mid = 0.5 * (lo + hi)
        if robustly_feasible(box, k, ell, mid):
            lo = mid
        else:
            hi = mid
    return lo


def _certified_sweep(program: _DualProgram, certifier: _Certifier, floor: float, top: float,
                     min_width: float) -> tuple[float, int]:
    """Certify cells downward from ``top`` towards ``floor``; returns (lowest c with
    [c, top] certified infeasible, number of cells tried). Cells double after a success and
    halve after a failure; a certificate is reused until it fails, then re-solved at the
    cell's lower end. Stops after :data:`MAX_CELLS` cells (the bound is then c, looser)."""
    b, width, cells = top, top - floor, 0
    polys = None
    while b > floor and width >= min_width and cells < MAX_CELLS:
        a = max(floor, b - width)
        cells += 1
        if polys is not None and certifier.cell_is_infeasible(polys, a, b):
            b, width = a, 2 * width
            continue
        value, duals = program.solve(a)
        if duals is not None and value < 0:
            polys = certifier.polynomials(duals)
            if certifier.cell_is_infeasible(polys, a, b):
                b, width = a, 2 * width
                continue
        width *= 0.5
    return b, cells


def lambda_max_bound(box: MomentBox, k: int) -> MomentBound:
    """The certified k-moment λ_max bound (k = 2, 3 or 4) over the moment box."""
    if k not in (2, 3, 4) or box.k < k:
        raise ValueError(f"k must be 2, 3 or 4 with at least k moments given (k={k}, "
                         f"{box.k} given)")
    if box.n < 2:
        raise ValueError("the moment bound needs N ≥ 2")
    start = time.perf_counter()
    box = box.truncated(k)
    inner, upper, ell = _ws_in_units(box)
    program = _DualProgram(box, k, ell)
    lo, hi = inner, upper
    value_hi, _ = program.solve(hi)
    if not value_hi < 0:  # feasible (to solver accuracy) right up to T1's bound
        lo = hi
    tol = BISECTION_TOLERANCE * max(1.0, abs(hi), abs(lo))
    for _ in range(BISECTION_STEPS):
        if hi - lo <= tol:
            break
        mid = 0.5 * (lo + hi)
        value, _ = program.solve(mid)
        if value < 0:
            hi = mid
        else:
            lo = mid
    solver_t = hi
    margin = max(1e-9 * max(1.0, abs(solver_t)), 1e-7 * (upper - inner))
    bound_t, cells = _certified_sweep(program, _Certifier(box, k, ell), solver_t + margin,
                                      upper, margin)
    feasible_t = certified_feasible_point(box, k, ell, inner, bound_t, margin)
    with _iv_precision():
        shift, scale = iv.mpf(box.shift), iv.mpf(box.scale)
        lam_upper = _up((shift + scale * bound_t).b)
        lam_lower = _down((shift + scale * feasible_t).a)
        ws = _up((shift + scale * upper).b)
    solver_value = box.shift + box.scale * solver_t
    return MomentBound(k, lam_upper, min(lam_lower, lam_upper),
                       min(max(solver_value, lam_lower), lam_upper), ws,
                       {"solves": program.solves, "cells": cells,
                        "seconds": time.perf_counter() - start, "support_lower": ell,
                        "units": {"shift": box.shift, "scale": box.scale}})


def lambda_max_bounds(box: MomentBox, ks: Sequence[int] = (2, 3, 4)) -> dict[int, MomentBound]:
    """Bounds for several k; each also no worse than those for smaller k (all are sound)."""
    out: dict[int, MomentBound] = {}
    best = math.inf
    for k in sorted(ks):
        b = lambda_max_bound(box, k)
        b.details["raw_upper"] = b.upper
        if b.upper > best:
            b.upper = best
            b.lower = min(b.lower, best)
            b.solver_value = min(b.solver_value, best)
        best = b.upper
        out[k] = b
    return out
