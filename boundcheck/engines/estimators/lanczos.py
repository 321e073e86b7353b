"""Lanczos with full re-orthogonalisation: extreme eigenvalues with an interval, top Ritz
pairs, and stochastic Lanczos quadrature (SLQ) for spectral densities.

Only products ``v ↦ A v`` are used (any operator with ``dim``, ``dtype``, ``device``,
``matvec``). Every step is re-orthogonalised twice against all previous vectors (classical
Gram–Schmidt, "twice is enough"), and the products ``A q_j`` are kept, so Ritz pairs and their
residuals are computed explicitly (Rayleigh–Ritz on the basis), not from the recurrence.

**The interval for λ_max** (λ_min is λ_max of −A). After the first run, ``Y`` holds the top
``m`` Ritz vectors (orthonormal rows, ``1 ≤ m ≤`` :data:`MAX_BLOCK`), ``θ = θ_1`` is the top
Ritz value and ``ρ = ‖AYᵀ − YᵀΘ‖_2`` the norm of their residual block.

* Lower side (certified): ``θ ≤ λ_max`` (a Rayleigh quotient), less a rounding allowance ``e``.
* Upper side. Write ``A`` in the basis ``(Y, Y^⊥)``: ``A = [[Θ, Bᵀ], [B, C]]`` with
  ``‖B‖ ≤ ρ`` and ``C`` the compression of A to ``Y^⊥``. For any unit ``x = (a, z)``,
  ``xᵀAx ≤ θ‖a‖² + 2ρ‖a‖‖z‖ + c‖z‖²`` with ``c ≥ λ_max(C)``, so

      λ_max(A) ≤ (θ + c)/2 + √(((θ − c)/2)² + ρ²)   (≈ θ + ρ²/(θ − c) when c < θ).

  Deflating a block (not only the top vector) makes the gap ``θ − c ≈ λ_1 − λ_{m+1}``, so the
  second run below is short when the top eigenvalues cluster; m maximises
  ``(θ_1 − θ_{m+1})/√m`` over the current Ritz values.
  If the caller knows a certified bound ``λ_2(A) ≤ b < θ`` (a gap), Kato–Temple gives the
  certified ``λ_max ≤ θ + r²/(θ − b)`` instead (kind "certified").
  Otherwise ``c`` comes from a second Lanczos run on ``C`` from a uniformly random start in
  ``Y^⊥`` and the Kuczyński–Woźniakowski bound (J. Kuczyński, H. Woźniakowski, "Estimating the
  largest eigenvalue by the power and Lanczos algorithms with a random start", SIAM J. Matrix
  Anal. Appl. 13(4) 1992, 1094–1122): for a positive semidefinite ``B`` of size n and Krylov
  information ``[b, Bb, …, B^k b]`` (k products, a Krylov space of dimension ``m = k + 1``),

      P{ λ_max(B) − θ_m ≥ ε λ_max(B) } ≤ 1.648 √n · exp(−√ε (2k − 1)).

  Applied to ``C − λ_min(C) I`` and ``λ_max(C) I − C`` (the same start serves both) it gives,
  with probability ``≥ 1 − 2p`` where ``ε = (ln(1.648√n / p) / (2k − 1))²`` and ``ε < 1/2``,

      S ≤ (θ_C,max − θ_C,min) / (1 − 2ε),   λ_max(C) ≤ θ_C,max + ε S.

  The bound is checked only at planned step counts, each with a share of the failure
  probability ``δ = 1 − confidence`` fixed before the run (Σ shares ≤ δ), so stopping at the
  first good check keeps the stated confidence. The first run's Ritz values predict the step
  k* at which the bound should reach the needed gap (``θ_{m+1}`` for the top of C, ``θ_min``
  for its bottom; :func:`planned_steps`); k* gets ``δ/2``, and the fixed
  :data:`CHECKPOINTS` after it ``δ/2 · 6/(π² i²)`` each (all of δ that way when no k* is
  predicted). One well-funded check where it should succeed costs fewer products than many
  thinly funded ones: on issue 3's reference MLP this cut the deflated run from 45 to 28
  products at initialisation and from 23 to 14 trained. The first run stops when the
  top residual is ``≤ tol = rel_tol·max|θ|`` and the block's are ``≤ √(tol·(θ_1 − θ_{m+1})/4)``,
  so ``θ − c`` need only be resolved coarsely: a few dozen products certify the upper side to
  ``ρ²/(θ − c)``, and to about ``ρ`` when the top is repeated. A run that spans its whole
  space (or hits an invariant Krylov subspace) has found every eigenvalue and needs no bound.

  Measured and not kept (issue 18; MLP 20→h→h→10 tanh, 512 samples, rel_tol 1e-6, 3 seeds):
  the second run cannot start inside the first run's Krylov space, because KW needs a start
  uniform on the sphere of the deflated space and independent of the deflated vectors, which
  the first run's start is not. The valid reuse, deflating the whole first basis Q (a fresh
  start in Q^⊥, bound from λ_max([[QAQᵀ, F], [F, c·I]]) with F² the Gram of the residual
  block), couples every unconverged Ritz vector to c with residuals near β: deflated runs of
  91–181 products and widths 4e-2–1e-1 instead of 28–32 and < 1e-6 at initialisation (equal
  trained). Stopping the first run on the block residuals alone saved no product there (the
  block condition binds). What remains above eigsh's count is the KW floor at 99%: ~28
  products at initialisation (gap under the block ≈ 6% of the spread), ~14 trained.

Rounding: ``e = 2‖T − Tᵀ‖_F + 8 u P max|θ_j|`` with ``T = Q (AQ)ᵀ`` the projected matrix: its
asymmetry is the rounding noise the products actually made (the same model as the dense path
in :mod:`boundcheck.quantities.hessian`). Floating-point Krylov spaces are not exact ones; with
full re-orthogonalisation the computed basis is orthonormal to working precision, and the
allowance covers the first-order effect.

Working-precision products (an operator with ``product_error``, :mod:`..product_error`):
Lanczos runs on the products as given, as if exact for ``H + E`` with ``‖E‖₂ ≤ ε``; ε is
added to ``e`` (so both ends move out by at least ε, Weyl) and to the Ritz radii, and the
convergence tolerance is at least ε (the products cannot resolve finer).

SLQ: Golub & Meurant, "Matrices, Moments and Quadrature with Applications" (2010); Lin, Saad,
Yang, "Approximating spectral densities of large matrices", SIAM Review 58(1) 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.engines.estimators import clock
from boundcheck.engines.product_error import product_error

U = UNIT_ROUNDOFF["float64"]
KW_CONSTANT = 1.648
MAX_BLOCK = 4  # top Ritz vectors deflated at most
BLOCK_ROWS = 16  # Krylov rows per storage block (Rows)
RITZ_CHUNK = 8  # Ritz vectors formed at once (memory: 2 × this many rows)
CHECKPOINTS = tuple(sorted({int(round(4 * 2 ** (i / 2))) for i in range(30)}))


class Rows:
    """Vectors stored as rows in fixed blocks of :data:`BLOCK_ROWS`: appending never copies
    what is stored (doubling a (k, P) array held old and new copies at once, 17 GB at
    ResNet-18's P = 11·10⁶), and the products with all rows run block by block."""

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device):
        self.dim, self.dtype, self.device = dim, dtype, device
        self.blocks: list[torch.Tensor] = []
        self.count = 0

    def append(self, v: torch.Tensor) -> None:
        if self.count % BLOCK_ROWS == 0:
            self.blocks.append(torch.empty(BLOCK_ROWS, self.dim, dtype=self.dtype,
                                           device=self.device))
        self.blocks[-1][self.count % BLOCK_ROWS] = v
        self.count += 1

    def views(self) -> list[torch.Tensor]:
        return [b[:min(BLOCK_ROWS, self.count - i * BLOCK_ROWS)]
                for i, b in enumerate(self.blocks)]

    def coefficients(self, w: torch.Tensor) -> torch.Tensor:
        """``R w`` (k,) for the rows R."""
        return torch.cat([v @ w for v in self.views()])

    def combine(self, c: torch.Tensor) -> torch.Tensor:
        """``c R``: (k,) -> (P,) or (m, k) -> (m, P)."""
        out = None
        for i, v in enumerate(self.views()):
            part = c[..., i * BLOCK_ROWS:i * BLOCK_ROWS + v.shape[0]] @ v
            out = part if out is None else out + part
        return out

    def gram(self, other: Rows) -> torch.Tensor:
        """``R Sᵀ`` (k, l) for the rows R of self and S of other."""
        return torch.cat([torch.cat([a @ b.T for b in other.views()], dim=1)
                          for a in self.views()])

    def tensor(self) -> torch.Tensor:
        """All rows as one (k, P) tensor (a copy)."""
        return torch.cat(self.views())


@dataclass
class LanczosBasis:
    """An orthonormal Krylov basis (``rows``) and the products ``A q_j`` (``image_rows``)."""

    rows: Rows
    image_rows: Rows
    alphas: list[float]
    betas: list[float]
    invariant: bool  # the Krylov space is invariant (breakdown, or the whole space)
    timed_out: bool = False  # stopped by the time limit (:mod:`.clock`) before converging

    @property
    def steps(self) -> int:
        return self.rows.count

    @property
    def basis(self) -> torch.Tensor:
        return self.rows.tensor()

    @property
    def images(self) -> torch.Tensor:
        return self.image_rows.tensor()

    def ritz(self) -> RitzPairs:
        """Rayleigh–Ritz on the basis (ascending Ritz values); residuals are explicit
        (``‖A y − θ y‖`` from the stored images), formed only for the pairs asked for
        (:meth:`RitzPairs.residual`): all k of them cost k²P flops, 85 GFLOP at k = 44 on
        ResNet-18, where the interval needs the top few."""
        t = self.rows.gram(self.image_rows)
        asymmetry = float(torch.linalg.matrix_norm(t - t.T))
        values, vectors = torch.linalg.eigh(0.5 * (t + t.T))
        scale = float(values.abs().max()) if values.numel() else 0.0
        allowance = 2.0 * asymmetry + 8.0 * U * self.rows.dim * scale
        return RitzPairs(values, allowance, vectors, self.rows, self.image_rows)


@dataclass
class RitzPairs:
    values: torch.Tensor  # ascending
    allowance: float  # rounding allowance e
    coefficients: torch.Tensor  # (k, k): column j expresses Ritz vector j in the basis
    basis: Rows
    images: Rows
    _residuals: dict[int, float] = field(default_factory=dict)

    def rows_of(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz vectors ``y_j`` (rows, unit norm) and their images ``A y_j`` for indices idx."""
        c = self.coefficients[:, idx].T
        return self.basis.combine(c), self.images.combine(c)

    def residual(self, j: int) -> float:
        """``‖A y_j − θ_j y_j‖`` (j indexes the ascending values; negative from the top)."""
        return float(self.residuals_of([j])[0])

    def residuals_of(self, indices) -> torch.Tensor:
        """Residual norms of the Ritz pairs ``indices``, formed :data:`RITZ_CHUNK` at a time
        (memory: that many rows twice) and cached."""
        k = self.values.numel()
        wanted = [j % k for j in indices]
        todo = sorted({j for j in wanted if j not in self._residuals})
        for start in range(0, len(todo), RITZ_CHUNK):
            idx = torch.tensor(todo[start:start + RITZ_CHUNK])
            y, ay = self.rows_of(idx)
            norms = torch.linalg.vector_norm(ay - self.values[idx.to(self.values.device),
                                                             None] * y, dim=1)
            self._residuals.update(zip(idx.tolist(), norms.tolist(), strict=True))
        return torch.tensor([self._residuals[j] for j in wanted], dtype=torch.float64)

    @property
    def residuals(self) -> torch.Tensor:
        """All residual norms (k²P flops; the estimators ask for a few, :meth:`residuals_of`)."""
        return self.residuals_of(range(self.values.numel()))

    @property
    def vectors(self) -> torch.Tensor:
        return self.rows_of(torch.arange(self.values.numel()))[0]

    def top_block(self, m: int) -> tuple[torch.Tensor, float]:
        """The top m Ritz vectors (rows) and an upper bound on the spectral norm of their
        residual block B (m × P), from the m × m Gram matrix B Bᵀ: an SVD of B itself fails
        on CUDA for P in the millions (cusolver gesvdj) and costs O(m²P) memory traffic
        anyway. Rounding: |λ̃ − λ| ≤ γ_P ‖B‖_F² ≤ P·u·m·‖B‖_2², so ‖B‖_2 ≤ √λ̃ (1 + 4P·u·m)
        for P·u·m ≤ 1/4, i.e. any P below 10¹⁴ (the factor covers the square root too)."""
        idx = torch.arange(self.values.numel() - m, self.values.numel())
        y, ay = self.rows_of(idx)
        block = ay - self.values[idx.to(self.values.device), None] * y
        gram = (block @ block.T).cpu()
        top = max(float(torch.linalg.eigvalsh(0.5 * (gram + gram.T))[-1]), 0.0)
        margin = block.shape[1] * U * block.shape[0]
        return y, math.sqrt(top) * (1.0 + 4.0 * margin) + 2.0**-1000


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, max_steps: int,
            *, deflate: torch.Tensor | None = None,
            converged: Callable[[Tridiagonal], bool] | None = None) -> LanczosBasis:
    """Lanczos from ``start`` with full re-orthogonalisation (twice), at most ``max_steps``.

    deflate: orthonormal rows D; the run works on the compression ``(I − DᵀD) A`` restricted to
    the complement of their span. converged(tridiagonal): called after each step with the
    recurrence so far (:class:`Tridiagonal`); True stops the run.
    """
    dim = start.shape[0]
    free = dim - (0 if deflate is None else deflate.shape[0])
    max_steps = max(1, min(max_steps, free))
    # storage grows with the steps taken, in blocks, not max_steps × dim up front: at
    # P = 11·10⁶ (ResNet-18) 300 steps of basis and images would be 53 GB in float64
    basis = Rows(dim, start.dtype, start.device)
    images = Rows(dim, start.dtype, start.device)

    def project(w: torch.Tensor) -> torch.Tensor:
        """Classical Gram–Schmidt against D and the basis, twice ("twice is enough")."""
        for _ in range(2):
            if deflate is not None:
                w = w - deflate.T @ (deflate @ w)
            if basis.count:
                w = w - basis.combine(basis.coefficients(w))
        return w

    q = project(start)
    q = q / torch.linalg.vector_norm(q)
    alphas: list[float] = []
    betas: list[float] = []
    largest_image = 0.0
    invariant = False
    for _ in range(max_steps):
        basis.append(q)
        w = matvec(q)
        if deflate is not None:
            w = w - deflate.T @ (deflate @ w)
        images.append(w)
        largest_image = max(largest_image, float(torch.linalg.vector_norm(w)))
        alphas.append(float(q @ w))
        w = project(w)
        beta = float(torch.linalg.vector_norm(w))
        betas.append(beta)
        steps = basis.count
        if beta <= 64 * U * math.sqrt(dim) * max(largest_image, 1e-300) or steps == free:
            invariant = True
            break
        if converged is not None and converged(Tridiagonal(alphas, betas)):
            break
        clock.report("Lanczos", steps)
        if steps >= 2 and clock.expired():
            return LanczosBasis(basis, images, alphas, betas, False, timed_out=True)
        q = w / beta
        del w
    return LanczosBasis(basis, images, alphas, betas, invariant)


@dataclass(frozen=True)
class Tridiagonal:
    """The Lanczos recurrence after k steps: ``α_1..α_k`` and ``β_1..β_k`` (β_k couples to
    the next, not yet computed, vector)."""

    alphas: list[float]
    betas: list[float]

    @property
    def steps(self) -> int:
        return len(self.alphas)

    def ritz(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values with ascending indices ``first..last`` and their residual estimates
        ``β_k |s_kj|`` (only these are computed: bisection plus inverse iteration)."""
        k = self.steps
        if k == 1:
            return np.array(self.alphas), np.array([abs(self.betas[0])])
        values, vectors = scipy.linalg.eigh_tridiagonal(
            np.array(self.alphas), np.array(self.betas[:-1]), select="i",
            select_range=(max(0, first), min(k - 1, last)))
        return values, self.betas[-1] * np.abs(vectors[-1])

    def extremes(self) -> tuple[float, float]:
        """The smallest and the largest Ritz value."""
        lo, _ = self.ritz(0, 0)
        hi, _ = self.ritz(self.steps - 1, self.steps - 1)
        return float(lo[0]), float(hi[-1])


def kw_epsilon(dim: int, steps: int, failure: float) -> float:
    """Relative error ε for which Lanczos fails with probability ≤ ``failure`` (KW 1992).

    ``steps`` is the Krylov dimension m; the theorem's k is ``m − 1`` products. ``inf`` when
    the bound says nothing yet (k < 2)."""
    k = steps - 1
    if k < 2:
        return math.inf
    return (math.log(KW_CONSTANT * math.sqrt(max(dim, 1)) / failure) / (2 * k - 1)) ** 2


def two_by_two_bound(theta: float, c: float, r: float) -> float:
    """``λ_max([[θ, r], [r, c]])``: the upper bound on λ_max(A) from a Ritz pair (see module)."""
    mid, half = 0.5 * (theta + c), 0.5 * (theta - c)
    return mid + math.hypot(half, r)


@dataclass(frozen=True)
class EigenvalueInterval:
    """An extreme eigenvalue with ``lower ≤ λ ≤ upper`` (statistical or certified)."""

    value: float
    lower: float
    upper: float
    kind: str
    confidence: float | None
    matvecs: int
    details: dict[str, Any] = field(default_factory=dict)


class _Negated:
    def __init__(self, op):
        self.op = op
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return -self.op.matvec(v)


def _gaussian(dim: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    return torch.randn(dim, generator=generator, dtype=torch.float64).to(dtype=dtype,
                                                                        device=device)


class _Scaled:
    """``2^k · A``: exact in floating point, so a run on it is the run on A scaled."""

    def __init__(self, op, factor: float):
        self.op, self.factor = op, factor
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.op.matvec(v) * self.factor


SCALE_RANGE = 2.0**100  # a run whose max |Ritz value| lies outside [1/this, this] is rerun scaled


def extreme_eigenvalue(op, which: str = "largest", *, confidence: float = 0.99,
                       rel_tol: float = 1e-8, max_steps: int = 300, seed: int = 0,
                       second_below: float | None = None) -> EigenvalueInterval:
    """:func:`_extreme_eigenvalue`, run again on ``2^k · op`` (scaled back exactly) when the
    first run's Ritz values show a scale far from 1 (max |θ| below 2^-100 or above 2^100): the
    run's vector norms square their entries and underflow below ~1e-154 (a Hessian of scale
    1e-212 gave β = 0 and the start vector's Rayleigh quotient, 1/50 of λ_max, as an
    "invariant Krylov space"; `boundcheck falsify hessian.ws_lambda_max_lower` found it).
    Ritz values are dot products ``qᵀAq``, which do not square, so they show the scale even
    then; at ordinary scales nothing is spent. Working-precision operators (a product error
    model) are not rescaled."""
    kwargs = {"confidence": confidence, "rel_tol": rel_tol, "max_steps": max_steps,
              "seed": seed}
    r = _extreme_eigenvalue(op, which, second_below=second_below, **kwargs)
    theta = r.details.get("ritz_scale", 0.0)
    if (product_error(op) is not None or not 0.0 < theta < math.inf
            or 1.0 / SCALE_RANGE <= theta <= SCALE_RANGE):
        return r
    factor = 2.0 ** -math.frexp(theta)[1]
    scaled = _extreme_eigenvalue(
        _Scaled(op, factor), which,
        second_below=None if second_below is None else second_below * factor, **kwargs)
    details = dict(scaled.details, rescaled_by=factor, unscaled_products=r.matvecs)
    for key in ("residual", "rounding", "block_residual", "ritz_scale"):
        if isinstance(details.get(key), float):
            details[key] = details[key] / factor
    return EigenvalueInterval(scaled.value / factor, scaled.lower / factor,
                              scaled.upper / factor, scaled.kind, scaled.confidence,
                              r.matvecs + scaled.matvecs, details)


def _extreme_eigenvalue(op, which: str = "largest", *, confidence: float = 0.99,
                        rel_tol: float = 1e-8, max_steps: int = 300, seed: int = 0,
                        second_below: float | None = None) -> EigenvalueInterval:
    """λ_max (``which="largest"``) or λ_min (``"smallest"``) of ``op`` with an interval.

    rel_tol: target half-width relative to ``max |Ritz value|``; max_steps: products per run
    (two runs at most). second_below: a certified bound on the second-largest eigenvalue (for
    "smallest": a certified lower bound on the second-smallest), which makes the interval
    certified by Kato–Temple. See the module docstring for the construction.
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    sign = 1.0 if which == "largest" else -1.0
    a = op if sign > 0 else _Negated(op)
    gen = torch.Generator().manual_seed(seed)
    dim = op.dim
    products = product_error(op)
    eps = 0.0 if products is None else products.norm

    def first_converged(t: Tridiagonal) -> bool:
        k = t.steps
        if k < 2:
            return False
        values, res = t.ritz(k - min(k, MAX_BLOCK + 1), k - 1)
        values, res = values[::-1], res[::-1]  # descending
        tol = max(rel_tol * max(abs(float(values[0])), abs(t.extremes()[0])), eps)
        # r_1 ≤ tol, not r²/gap ≤ tol: a repeated top eigenvalue shows no gap in Ritz values
        # (one Krylov space sees one copy), and then the bound's width is about r_1
        if res[0] > tol:
            return False
        m = deflation_block(values)
        return float(res[:m].max()) <= math.sqrt(tol * float(values[0] - values[m]) / 4.0)

    run = lanczos(a.matvec, _gaussian(dim, gen, op.dtype, op.device), max_steps,
                  converged=first_converged)
    ritz = run.ritz()
    theta = float(ritz.values[-1])
    e = ritz.allowance + eps
    matvecs = run.steps
    details: dict[str, Any] = {"steps": run.steps, "residual": ritz.residual(-1),
                               "rounding": e}
    if products is not None:
        details.update(products.details())
    scale = float(ritz.values.abs().max())
    details["ritz_scale"] = scale
    tol = max(rel_tol * max(scale, 1e-300), 2.0 * eps)
    lower = theta - e
    r = ritz.residual(-1)

    if run.invariant:
        # Every eigenvalue of A is a Ritz value (the whole space, or an invariant Krylov space
        # from a random start, which holds a component of every eigenspace almost surely).
        upper = theta + r + e
        kind, conf = ("certified", None) if run.steps == dim else ("statistical", confidence)
        details["method"] = "Lanczos, invariant Krylov space"
        return _oriented(sign, theta, lower, upper, kind, conf, matvecs, details)

    if second_below is not None:
        b = sign * second_below
        if b < theta - e:
            upper = theta + e + (r + e) ** 2 / (theta - e - b)
            details["method"] = "Lanczos + Kato–Temple with a known gap"
            return _oriented(sign, theta, lower, upper, "certified", None, matvecs, details)

    delta = 1.0 - confidence
    if run.timed_out:
        # The time limit stopped the first run before it converged. Its step count was set
        # by the clock, not by the start vector, so KW applies to this run itself (all of δ).
        upper = _kw_upper(dim, run.steps, delta / 2.0, float(ritz.values[-1]),
                          float(ritz.values[0])) + e
        details.update(method="Lanczos stopped by the time limit; KW bound on that run",
                       stopped=f"time limit reached after {run.steps} products")
        return _oriented(sign, theta, lower, max(upper, theta + e), "statistical", confidence,
                         matvecs, details)

    top = ritz.values.flip(0)[:MAX_BLOCK + 1].cpu().numpy()
    m = min(deflation_block(top), dim - 1)
    y, rho = ritz.top_block(m)
    details.update(block=m, block_residual=rho)
    # The deflated run needs only θ − c ≥ (ρ + e)²/(tol − e). From the first run's Ritz values
    # (θ_{m+1} for the top of C, θ_min for its bottom), plan the step count at which the KW
    # bound should get there; that check spends half the failure probability, the fixed
    # CHECKPOINTS after it the other half (Σ ≤ δ either way).
    needed_gap = (rho + e) ** 2 / max(tol - e, 1e-300)
    planned = planned_steps(dim - m, delta / 4.0, theta - needed_gap, float(top[m]),
                            float(ritz.values[0]), max_steps)
    del run, ritz  # the first basis (2 × steps × P numbers) is not needed by the second run
    checks = {planned: delta / 2.0} if planned else {}
    later = [k for k in CHECKPOINTS if planned is None or k > planned]
    for i, k in enumerate(later, start=1):
        checks.setdefault(k, (delta / 2.0 if planned else delta) * 6.0 / (math.pi**2 * i**2))
    details["planned_steps"] = planned
    best = math.inf
    check = 0
    spent = 0.0

    def deflated_converged(t: Tridiagonal) -> bool:
        nonlocal best, check, spent
        if t.steps not in checks:
            return False
        check += 1
        failure = checks[t.steps]
        spent += failure
        bottom, top = t.extremes()
        c_up = _kw_upper(dim - m, t.steps, failure / 2.0, top, bottom)
        best = min(best, two_by_two_bound(theta + e, c_up + e, rho + e))
        floor = two_by_two_bound(theta + e, top + e, rho + e)
        return best - theta <= tol or best - floor <= 0.1 * (floor - theta)

    second = lanczos(a.matvec, _gaussian(dim, gen, op.dtype, op.device), max_steps,
                     deflate=y, converged=deflated_converged)
    matvecs += second.steps
    details["deflated_steps"] = second.steps
    if second.timed_out:
        details["stopped"] = f"time limit reached after {matvecs} products"
    c_ritz = second.ritz()
    if second.invariant:
        c_up = float(c_ritz.values[-1]) + c_ritz.residual(-1) + c_ritz.allowance
        best = min(best, two_by_two_bound(theta + e, c_up, rho + e))
        details["method"] = "Lanczos; deflated run spans an invariant space"
    else:
        if second.steps not in checks:  # stopped by the budget between checkpoints
            check += 1
            failure = delta - spent  # what the checks not reached would have spent
            c_up = _kw_upper(dim - m, second.steps, failure / 2.0,
                             float(c_ritz.values[-1]), float(c_ritz.values[0]))
            best = min(best, two_by_two_bound(theta + e, c_up + c_ritz.allowance, rho + e))
        details["method"] = "Lanczos + Kuczyński–Woźniakowski bound on the deflated operator"
    details["kw_checks"] = check
    return _oriented(sign, theta, lower, max(best, theta), "statistical", confidence, matvecs,
                     details)


def deflation_block(descending: np.ndarray) -> int:
    """How many top Ritz vectors to deflate: m ≤ MAX_BLOCK maximising (θ_1 − θ_{m+1})/√m."""
    count = min(MAX_BLOCK, len(descending) - 1)
    if count < 1:
        return 1
    scores = [(descending[0] - descending[m]) / math.sqrt(m) for m in range(1, count + 1)]
    return 1 + int(np.argmax(scores))


def planned_steps(dim: int, failure: float, target: float, top: float, bottom: float,
                  max_steps: int) -> int | None:
    """The fewest Krylov steps k at which the KW bound ``top + ε(k)·(top − bottom)/(1 − 2ε)``
    falls below ``target``, if the deflated Ritz values were already ``top`` and ``bottom``
    (a plan from the first run's Ritz values, not a bound); None when no k ≤ max_steps does."""
    if not target > top:
        return None
    for k in range(3, max_steps + 1):
        if _kw_upper(dim, k, failure, top, bottom) <= target:
            return k
    return None


def _kw_upper(dim: int, steps: int, failure: float, top: float, bottom: float) -> float:
    eps = kw_epsilon(dim, steps, failure)
    if not eps < 0.5:
        return math.inf
    spread = (top - bottom) / (1.0 - 2.0 * eps)
    return top + eps * spread


def _oriented(sign: float, theta: float, lower: float, upper: float, kind: str,
              confidence: float | None, matvecs: int, details: dict) -> EigenvalueInterval:
    if sign > 0:
        return EigenvalueInterval(theta, lower, upper, kind, confidence, matvecs, details)
    return EigenvalueInterval(-theta, -upper, -lower, kind, confidence, matvecs, details)


@dataclass(frozen=True)
class TopRitz:
    """Converged extreme Ritz pairs: for each value θ_j an eigenvalue lies in ``θ_j ± r_j``."""

    values: np.ndarray
    residuals: np.ndarray
    vectors: torch.Tensor | None  # None when taken from the dense spectrum
    matvecs: int


def top_ritz_pairs(op, k: int, *, largest: bool = True, rel_tol: float = 1e-6,
                   max_steps: int = 300, seed: int = 0) -> TopRitz:
    """The k largest (or smallest) Ritz pairs, iterated until their residuals are below
    ``rel_tol · max|θ|`` or ``max_steps``. Each ``θ_j ± r_j`` holds an eigenvalue (Weyl); that
    it is the j-th largest is not certified."""
    a = op if largest else _Negated(op)
    products = product_error(op)
    eps = 0.0 if products is None else products.norm

    def done(t: Tridiagonal) -> bool:
        if t.steps < k + 1:
            return False
        values, res = t.ritz(t.steps - k, t.steps - 1)
        scale = max(abs(float(values[-1])), abs(t.extremes()[0]))
        return bool(np.all(res <= max(rel_tol * scale, eps)))

    gen = torch.Generator().manual_seed(seed)
    run = lanczos(a.matvec, _gaussian(op.dim, gen, op.dtype, op.device), max_steps,
                  converged=done)
    ritz = run.ritz()
    idx = torch.arange(ritz.values.numel() - 1, max(-1, ritz.values.numel() - 1 - k), -1)
    sign = 1.0 if largest else -1.0
    return TopRitz(sign * ritz.values[idx].cpu().numpy(),
                   (ritz.residuals_of(idx.tolist()) + ritz.allowance + eps).numpy(),
                   ritz.rows_of(idx)[0], run.steps)


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ nodes and weights, one row per probe; each row's weights sum to 1.

    The density estimate is ``φ(λ) = (1/M) Σ_probes Σ_j w_j δ(λ − θ_j)``; for every probe
    ``Σ_j w_j θ_j^p = vᵀA^p v / vᵀv`` exactly for ``p < 2·steps`` (Gauss quadrature).
    """

    nodes: np.ndarray
    weights: np.ndarray

    def smoothed(self, grid: np.ndarray, width: float) -> np.ndarray:
        """Gaussian-smoothed density on ``grid`` (integrates to ~1 over a wide grid)."""
        diff = grid[:, None, None] - self.nodes[None]
        kernel = np.exp(-0.5 * (diff / width) ** 2) / (width * math.sqrt(2 * math.pi))
        return (kernel * self.weights[None]).sum(axis=(1, 2)) / self.nodes.shape[0]

    def moment(self, p: int) -> float:
        """The SLQ estimate of ``tr(A^p) / dim``."""
        return float((self.weights * self.nodes**p).sum(axis=1).mean())


def stochastic_lanczos_quadrature(op, num_probes: int = 10, steps: int = 80,
                                  seed: int = 0) -> SpectralDensity:
    """Spectral density of ``op`` by SLQ with Rademacher probes (Lin, Saad & Yang 2016)."""
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(num_probes):
        v = torch.randint(0, 2, (op.dim,), generator=gen, dtype=torch.float64) * 2 - 1
        run = lanczos(op.matvec, v.to(dtype=op.dtype, device=op.device), steps)
        theta, vecs = _tridiagonal_eig(run.alphas, run.betas[:-1])
        w = np.zeros(steps)
        t = np.zeros(steps)
        m = len(theta)
        t[:m], w[:m] = theta, vecs[0] ** 2
        if m < steps:  # an invariant space: pad with zero-weight copies of the last node
            t[m:] = theta[-1]
        nodes.append(t)
        weights.append(w)
    return SpectralDensity(np.array(nodes), np.array(weights))


def _tridiagonal_eig(alphas: list[float], offdiag: list[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(alphas) == 1:
        return np.array(alphas), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(offdiag))
