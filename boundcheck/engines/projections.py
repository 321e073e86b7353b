"""The Hessian projected on random Gaussian planes, and what its law predicts.

Source: M. Böttcher and M. Wheeler, "Visualising high-dimensional loss landscapes: random
projections and curvature", arXiv 2208.13219 (J. Stat. Mech. 2024). For δ, η with iid N(0, 1)
entries the projected 2×2 Hessian ``[[δᵀHδ, δᵀHη], [δᵀHη, ηᵀHη]]`` has
``E[δᵀHδ] = tr H``, ``E[δᵀHη] = 0``, ``Var(δᵀHδ) = 2 tr H²``, ``Var(δᵀHη) = tr H²``
(proved in ``derivations/random_projections.py``), and its law depends only on the spectrum
of H (rotate δ, η into H's eigenbasis: they stay iid Gaussian).

* :func:`projected_hessians`: M planes, each ``(δᵀHδ, δᵀHη, ηᵀHη)`` from products with the
  full H (any operator with ``matvec``/``matmat``), with a rounding allowance per sample.
* :func:`mean_interval`: ``mean ± c(M, α)·s/√M``, ``c`` the rank-one-calibrated critical
  value of :mod:`.estimators.trace` (for Gaussian probes rank one gives exactly χ²₁ samples,
  the case that table was simulated for; the cross term ``λ g h`` is symmetric and lighter
  tailed, so the same c is conservative for it, which the tests count).
* :func:`variance_interval`: the sample variance ``v`` with ``[v/q_hi, v/q_lo]``, q the
  α/2 and 1 − α/2 quantiles of ``v/σ²`` for the worst spectrum, rank one: the excess kurtosis
  of ``δᵀHδ`` is ``12 Σλ⁴/(Σλ²)² ≤ 12`` (of ``δᵀHη``: ``6 Σλ⁴/(Σλ²)² ≤ 6``), both attained at
  rank one, where v/σ² is the most dispersed. The quantiles are simulated
  (:func:`rank_one_variance_ratios`, cached) with the conservative order statistic of
  :func:`.estimators.trace.simulate_rank_one_critical_values`; coverage is counted in
  tests/test_projections.py over rank-one, rank-two, isotropic, indefinite and network spectra.
* :func:`saddle_probability_from_spectrum`: Monte Carlo of ``P(det < 0)`` over the eigenvalues
  alone; :func:`clopper_pearson` the exact binomial interval for it and for the observed
  frequency.
* :func:`surface_1d` / :func:`surface_2d`: the loss along directions, for figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import stats

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.engines.estimators.trace import apply_rows, rank_one_critical_value

U = UNIT_ROUNDOFF["float64"]
VARIANCE_REPS = 100_000  # replicates behind the simulated variance quantiles
MIN_TAIL_COUNT = 10  # a quantile needs at least this many replicates beyond it
BLOCK = 32


@dataclass(frozen=True)
class ProjectedHessians:
    """M planes: ``direct = δᵀHδ``, ``cross = δᵀHη``, ``other = ηᵀHη`` (float64, CPU), each
    with a rounding allowance (absolute, per sample)."""

    direct: np.ndarray
    cross: np.ndarray
    other: np.ndarray
    rounding_direct: np.ndarray
    rounding_cross: np.ndarray

    @property
    def determinants(self) -> np.ndarray:
        return self.direct * self.other - self.cross**2

    @property
    def curvature_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Both diagonal entries: 2M iid samples of ``δᵀHδ`` and their allowances."""
        return (np.concatenate([self.direct, self.other]),
                np.concatenate([self.rounding_direct, self.rounding_direct]))


def projected_hessians(op, num_planes: int, seed: int,
                       matrix_error: float = 0.0) -> ProjectedHessians:
    """``num_planes`` Gaussian planes (δ, η) projected through ``op``.

    Each sample's allowance is the dot-product rounding bound ``8uP Σ_j |δ_j (Hη)_j|``
    plus ``matrix_error · ‖δ‖‖η‖`` when the products use an approximation of H whose error
    has spectral (or Frobenius) norm ≤ ``matrix_error`` (e.g. the rounded dense Hessian).
    """
    if num_planes < 1:
        raise ValueError(f"num_planes must be ≥ 1, got {num_planes}")
    gen = torch.Generator().manual_seed(int(seed))
    parts: list[list[torch.Tensor]] = [[], [], [], [], []]
    for start in range(0, num_planes, BLOCK):
        m = min(BLOCK, num_planes - start)
        both = torch.randn(2 * m, op.dim, generator=gen, dtype=torch.float64)
        both = both.to(dtype=op.dtype, device=op.device)
        hb = apply_rows(op, both)
        d, e = both[:m], both[m:]
        hd, he = hb[:m], hb[m:]
        norms = both.double().norm(dim=1)
        nd, ne = norms[:m], norms[m:]
        parts[0].append((d * hd).sum(1))
        parts[1].append((d * he).sum(1))
        parts[2].append((e * he).sum(1))
        parts[3].append(8 * U * op.dim * (d * hd).abs().sum(1) + matrix_error * nd * nd)
        parts[4].append(8 * U * op.dim * (d * he).abs().sum(1) + matrix_error * nd * ne)
    a, b, c, rd, rc = (torch.cat(p).double().cpu().numpy() for p in parts)
    return ProjectedHessians(a, b, c, rd, rc)


@dataclass(frozen=True)
class Interval:
    value: float
    lower: float
    upper: float
    samples: int
    method: str
    critical: tuple[float, ...] = ()


def mean_interval(x: np.ndarray, rounding: np.ndarray, confidence: float) -> Interval:
    """Mean of iid Gaussian quadratic (or bilinear) forms, ``± c(M, α)·s/√M + mean rounding``."""
    m = len(x)
    c = rank_one_critical_value(m, 1.0 - confidence)
    mean = float(np.mean(x))
    half = c * float(np.std(x, ddof=1)) / math.sqrt(m) + float(np.mean(rounding))
    return Interval(mean, mean - half, mean + half, m,
                    f"mean ± c·s/√M, c = {c:.4g} calibrated on rank one (χ²₁)", (c,))


def variance_interval(x: np.ndarray, rounding: np.ndarray, confidence: float,
                      kind: str) -> Interval:
    """Variance of iid ``δᵀHδ`` (kind "direct") or ``δᵀHη`` ("cross") samples: the sample
    variance v with ``[v/q_hi, v/q_lo]`` (module docstring); rounding widens v first."""
    m = len(x)
    q_lo, q_hi = variance_ratio_quantiles(m, 1.0 - confidence, kind)
    v = float(np.var(x, ddof=1))
    # each sample moves by ≤ r_i: the sample sd moves by ≤ rms(r)·√(M/(M−1))
    spread = float(np.sqrt(np.mean(rounding**2) * m / (m - 1)))
    sd = math.sqrt(v)
    lo = max(sd - spread, 0.0) ** 2 / q_hi
    hi = (sd + spread) ** 2 / q_lo
    return Interval(v, min(lo, v), max(hi, v), m,
                    f"sample variance, [v/{q_hi:.4g}, v/{q_lo:.4g}] (rank-one-calibrated "
                    f"quantiles of v/σ²)", (q_lo, q_hi))


def variance_ratio_quantiles(num_samples: int, alpha: float, kind: str) -> tuple[float, float]:
    """Conservative α/2 and 1 − α/2 quantiles of ``v/σ²`` for M rank-one samples."""
    if kind not in ("direct", "cross"):
        raise ValueError(f"kind must be 'direct' or 'cross', got {kind!r}")
    if num_samples < 10:
        raise ValueError(f"at least 10 samples are needed for a variance interval, got "
                         f"{num_samples}")
    k = 0.5 * alpha * VARIANCE_REPS
    k_conservative = math.floor(k - 2.33 * math.sqrt(k)) if k > 0 else 0
    if k_conservative < MIN_TAIL_COUNT:
        raise ValueError(f"confidence {1 - alpha} is too high for the simulated variance "
                         f"quantiles ({VARIANCE_REPS} replicates)")
    ratios = rank_one_variance_ratios(num_samples, kind)
    return float(ratios[k_conservative - 1]), float(ratios[VARIANCE_REPS - k_conservative])


@lru_cache(maxsize=16)
def rank_one_variance_ratios(num_samples: int, kind: str, seed: int = 20260601) -> np.ndarray:
    """Sorted ``v/σ²`` over :data:`VARIANCE_REPS` replicates of M rank-one samples: ``g²``
    (σ² = 2) for "direct", ``g·h`` (σ² = 1) for "cross"."""
    rng = np.random.default_rng([seed, num_samples, kind == "cross"])
    chunk = max(1, int(4e6 // num_samples))
    out = []
    done = 0
    while done < VARIANCE_REPS:
        r = min(chunk, VARIANCE_REPS - done)
        g = rng.standard_normal((r, num_samples), dtype=np.float32)
        if kind == "direct":
            x, sigma2 = g * g, 2.0
        else:
            x, sigma2 = g * rng.standard_normal((r, num_samples), dtype=np.float32), 1.0
        out.append(x.var(axis=1, ddof=1, dtype=np.float64) / sigma2)
        done += r
    return np.sort(np.concatenate(out))


# --- saddles ---------------------------------------------------------------------------------
def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided binomial interval (Clopper & Pearson, Biometrika 26, 1934)."""
    if trials < 1:
        raise ValueError("a proportion needs at least one trial")
    a = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(a / 2, successes,
                                                         trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.ppf(1 - a / 2, successes + 1,
                                                              trials - successes))
    return lo, hi


def saddle_probability_from_spectrum(eigenvalues: np.ndarray, draws: int,
                                     seed: int) -> int:
    """How many of ``draws`` random planes show a saddle (det < 0), simulated from the
    spectrum alone: in H's eigenbasis ``δᵀHδ = Σ λ_j δ_j²`` with δ, η iid N(0, I)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, int(2e6 // max(1, len(lam))))
    count = 0
    done = 0
    while done < draws:
        r = min(chunk, draws - done)
        d = rng.standard_normal((r, len(lam)))
        e = rng.standard_normal((r, len(lam)))
        a = (d * d) @ lam
        b = (d * e) @ lam
        c = (e * e) @ lam
        count += int(np.count_nonzero(a * c - b * b < 0))
        done += r
    return count


# --- loss surfaces ---------------------------------------------------------------------------
def surface_1d(loss_at: Callable[[torch.Tensor], float], theta: torch.Tensor,
               direction: torch.Tensor, radius: float, points: int) -> tuple[list, list]:
    """``L(θ + t·d/‖d‖)`` for ``points`` values of t in ``[−radius, radius]``."""
    unit = direction / direction.norm()
    ts = np.linspace(-radius, radius, points)
    return ts.tolist(), [loss_at(theta + float(t) * unit) for t in ts]


def surface_2d(loss_at: Callable[[torch.Tensor], float], theta: torch.Tensor,
               first: torch.Tensor, second: torch.Tensor, radius: float,
               points: int) -> tuple[list, list[list[float]]]:
    """``L(θ + s·u + t·v)`` on a ``points × points`` grid, u, v the orthonormalised pair."""
    u = first / first.norm()
    v = second - (second @ u) * u
    v = v / v.norm()
    ts = np.linspace(-radius, radius, points)
    grid = [[loss_at(theta + float(s) * u + float(t) * v) for s in ts] for t in ts]
    return ts.tolist(), grid
