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
  (:func:`rank_one_variance_ratios`, 2·10⁵ replicates, the conservative order statistic of
  :func:`.estimators.trace.simulate_rank_one_critical_values`) and stored in
  :data:`VARIANCE_RATIO_QUANTILES`; coverage is counted in tests/test_projections.py over
  rank-one, rank-two, isotropic, indefinite and network spectra.
* :func:`saddle_probability_from_spectrum`: Monte Carlo of ``P(det < 0)`` over the eigenvalues
  alone; :func:`clopper_pearson` the exact binomial interval for it and for the observed
  frequency.
* :func:`surface_1d` / :func:`surface_2d`: the loss along directions, for figures.
"""

from __future__ import annotations

import bisect
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
VARIANCE_REPS = 200_000  # replicates behind the variance quantiles (table and fallback)
MIN_TAIL_COUNT = 10  # a quantile needs at least this many replicates beyond it
BLOCK = 32

VARIANCE_ALPHAS = (0.2, 0.1, 0.05, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 5e-4)
# (q_lo, q_hi) of v/σ² for M rank-one samples: rows M, columns VARIANCE_ALPHAS. Regenerate with
# rank_one_variance_ratios(M, kind) (seed 20260601, 2·10⁵ replicates) and the conservative
# order statistics ⌊k − 2.33√k⌋, k = 10⁵·α, from each end.
VARIANCE_RATIO_QUANTILES = {
    "direct": (
        (10, ((0.1455, 2.261), (0.0921, 3.187), (0.0615, 4.2264), (0.0364, 5.8607), (0.025, 7.2992),
         (0.0173, 9.0513), (0.0106, 12.0208), (0.0076, 14.3093), (0.0056, 16.8393))),
        (15, ((0.2192, 2.1074), (0.153, 2.82), (0.1112, 3.6288), (0.0757, 4.8975), (0.0571, 5.9427),
         (0.0435, 7.156), (0.0316, 8.8679), (0.0243, 10.6406), (0.0172, 12.2649))),
        (20, ((0.2778, 1.9991), (0.2051, 2.5854), (0.1568, 3.2434), (0.1126, 4.2138), (0.0888,
         5.1157), (0.0698, 5.97), (0.0527, 7.2696), (0.0438, 8.5913), (0.0367, 9.8759))),
        (30, ((0.3602, 1.8343), (0.2816, 2.2951), (0.2261, 2.7692), (0.1747, 3.4838), (0.1458,
         4.0946), (0.1231, 4.721), (0.0965, 5.732), (0.08, 6.6539), (0.064, 7.9149))),
        (40, ((0.4202, 1.7456), (0.3408, 2.1254), (0.2828, 2.5398), (0.2264, 3.1465), (0.1949,
         3.636), (0.1695, 4.1536), (0.14, 4.8751), (0.1221, 5.5674), (0.1067, 6.3245))),
        (50, ((0.4642, 1.6751), (0.3831, 2.0107), (0.3252, 2.3595), (0.2664, 2.8578), (0.2323,
         3.2602), (0.205, 3.7248), (0.177, 4.3157), (0.1564, 4.9138), (0.1381, 5.5259))),
        (60, ((0.498, 1.6195), (0.4208, 1.9139), (0.3623, 2.2157), (0.3028, 2.6564), (0.2666,
         3.0128), (0.2386, 3.3737), (0.2083, 3.8674), (0.1912, 4.2572), (0.1629, 4.7489))),
        (80, ((0.5506, 1.5423), (0.4743, 1.7884), (0.4169, 2.0414), (0.3569, 2.3817), (0.3207,
         2.6549), (0.2893, 2.9512), (0.2556, 3.4041), (0.2316, 3.7027), (0.2115, 4.138))),
        (100, ((0.5898, 1.484), (0.5172, 1.6989), (0.46, 1.9112), (0.3995, 2.2052), (0.3616,
         2.4475), (0.3303, 2.7078), (0.2897, 3.0427), (0.2658, 3.3445), (0.2473, 3.5948))),
        (130, ((0.6318, 1.4344), (0.5625, 1.6145), (0.5069, 1.7929), (0.4488, 2.0368), (0.4132,
         2.2227), (0.3829, 2.4171), (0.3483, 2.6844), (0.3227, 2.9662), (0.3047, 3.2385))),
        (160, ((0.6615, 1.3882), (0.5973, 1.5419), (0.5451, 1.6923), (0.4895, 1.9005), (0.4548,
         2.0505), (0.4219, 2.2223), (0.3885, 2.4625), (0.3639, 2.643), (0.3368, 2.928))),
        (200, ((0.6951, 1.3505), (0.6325, 1.487), (0.5829, 1.619), (0.5296, 1.7925), (0.4969,
         1.9286), (0.4661, 2.0695), (0.4313, 2.2758), (0.4069, 2.4232), (0.3796, 2.612))),
        (250, ((0.7225, 1.3111), (0.664, 1.4295), (0.617, 1.545), (0.5678, 1.6915), (0.5355,
         1.8058), (0.5065, 1.9221), (0.4731, 2.0737), (0.446, 2.1832), (0.4228, 2.3542))),
        (300, ((0.7441, 1.2843), (0.6896, 1.3918), (0.6448, 1.4936), (0.5956, 1.6227), (0.5638,
         1.7192), (0.5366, 1.8115), (0.5068, 1.9658), (0.4875, 2.0581), (0.4646, 2.1415))),
        (400, ((0.7759, 1.2497), (0.7258, 1.3393), (0.6856, 1.4229), (0.6389, 1.528), (0.6096,
         1.6063), (0.583, 1.691), (0.5527, 1.7956), (0.529, 1.8966), (0.5017, 1.998))),
        (500, ((0.7976, 1.221), (0.7517, 1.2989), (0.7136, 1.3729), (0.6702, 1.462), (0.6414,
         1.5294), (0.6178, 1.5961), (0.5869, 1.678), (0.5641, 1.7556), (0.5451, 1.816))),
        (650, ((0.8203, 1.1945), (0.7786, 1.2613), (0.7442, 1.3233), (0.7059, 1.4006), (0.6796,
         1.4584), (0.6555, 1.5121), (0.6253, 1.5815), (0.6053, 1.6314), (0.591, 1.699))),
        (800, ((0.8372, 1.1752), (0.7987, 1.2338), (0.7674, 1.287), (0.7297, 1.3541), (0.7056,
         1.4027), (0.6837, 1.4511), (0.6589, 1.5201), (0.6373, 1.5605), (0.6145, 1.6016))),
        (1000, ((0.8534, 1.1558), (0.8179, 1.2068), (0.7883, 1.2542), (0.7555, 1.3125), (0.7328,
         1.3548), (0.7135, 1.3986), (0.6908, 1.4561), (0.6708, 1.4974), (0.6574, 1.5426))),
        (1300, ((0.8715, 1.1363), (0.8395, 1.1806), (0.8127, 1.2221), (0.7827, 1.2723), (0.7632,
         1.3087), (0.7442, 1.3459), (0.7166, 1.3887), (0.6986, 1.4174), (0.6859, 1.4517))),
        (1600, ((0.8838, 1.123), (0.8545, 1.1623), (0.8295, 1.1982), (0.8016, 1.2435), (0.7836,
         1.2735), (0.7679, 1.3063), (0.7477, 1.3433), (0.7301, 1.3728), (0.7145, 1.4069))),
        (2000, ((0.8944, 1.1099), (0.868, 1.1444), (0.8461, 1.1763), (0.8201, 1.2145), (0.8039,
         1.2429), (0.7886, 1.2712), (0.7722, 1.305), (0.7589, 1.3254), (0.7433, 1.3596))),
    ),
    "cross": (
        (10, ((0.232, 2.0774), (0.1628, 2.7333), (0.1174, 3.4358), (0.0787, 4.5165), (0.0596,
         5.3814), (0.0453, 6.3612), (0.0328, 7.9286), (0.025, 9.0797), (0.0196, 11.086))),
        (15, ((0.3173, 1.9117), (0.2398, 2.4132), (0.1855, 2.9343), (0.1366, 3.6921), (0.1088,
         4.3621), (0.088, 5.0395), (0.0677, 6.0708), (0.0538, 7.0808), (0.0443, 8.0468))),
        (20, ((0.3792, 1.8013), (0.2978, 2.2141), (0.2423, 2.6433), (0.1873, 3.2648), (0.1566,
         3.7574), (0.1316, 4.3134), (0.1069, 5.2212), (0.0901, 5.9494), (0.0762, 6.7793))),
        (30, ((0.4634, 1.6639), (0.3821, 1.9799), (0.3213, 2.3111), (0.263, 2.756), (0.2279, 3.135),
         (0.1993, 3.5025), (0.166, 4.112), (0.1459, 4.5819), (0.1257, 5.0753))),
        (40, ((0.5197, 1.5868), (0.4416, 1.8487), (0.3801, 2.1215), (0.3183, 2.4836), (0.2795,
         2.787), (0.2503, 3.0716), (0.2181, 3.5389), (0.1929, 3.8971), (0.1767, 4.3006))),
        (50, ((0.5624, 1.5287), (0.4847, 1.7558), (0.4261, 1.9885), (0.3639, 2.312), (0.3283,
         2.5525), (0.3011, 2.806), (0.2634, 3.1883), (0.2372, 3.4723), (0.2164, 3.8003))),
        (60, ((0.5921, 1.4829), (0.517, 1.6838), (0.4584, 1.883), (0.3985, 2.1391), (0.3606,
         2.3353), (0.3265, 2.5817), (0.2908, 2.9042), (0.2647, 3.163), (0.2361, 3.4499))),
        (80, ((0.6383, 1.4183), (0.5695, 1.5874), (0.5152, 1.7479), (0.4582, 1.9625), (0.4208,
         2.1262), (0.3915, 2.3167), (0.3544, 2.5703), (0.3274, 2.7867), (0.3004, 3.0045))),
        (100, ((0.6725, 1.3748), (0.606, 1.5216), (0.5537, 1.6643), (0.4984, 1.8452), (0.4635,
         1.978), (0.4312, 2.1164), (0.3935, 2.3214), (0.3663, 2.475), (0.3474, 2.6575))),
        (130, ((0.708, 1.3275), (0.6467, 1.4538), (0.5978, 1.5718), (0.5454, 1.7263), (0.5138,
         1.8362), (0.4847, 1.9548), (0.4486, 2.1147), (0.4243, 2.2466), (0.4009, 2.3757))),
        (160, ((0.7339, 1.2964), (0.6772, 1.407), (0.6306, 1.5104), (0.5805, 1.6351), (0.5479,
         1.7325), (0.5191, 1.8353), (0.4808, 1.9674), (0.4561, 2.0835), (0.4341, 2.2389))),
        (200, ((0.7592, 1.266), (0.7059, 1.361), (0.6622, 1.4523), (0.6158, 1.5676), (0.5849, 1.65),
         (0.5557, 1.7341), (0.5211, 1.8448), (0.4987, 1.9393), (0.4734, 2.0481))),
        (250, ((0.7847, 1.2375), (0.7352, 1.321), (0.694, 1.3982), (0.6495, 1.4952), (0.6189,
         1.5703), (0.5925, 1.6498), (0.5643, 1.7548), (0.5409, 1.8407), (0.5159, 1.9041))),
        (300, ((0.801, 1.2172), (0.7552, 1.2908), (0.7158, 1.3603), (0.6731, 1.4497), (0.6447,
         1.5163), (0.6191, 1.5744), (0.5861, 1.653), (0.5611, 1.7235), (0.5434, 1.8077))),
        (400, ((0.8261, 1.1864), (0.7851, 1.2489), (0.7498, 1.3071), (0.7112, 1.3786), (0.6848,
         1.4321), (0.6606, 1.4829), (0.634, 1.5438), (0.6092, 1.5928), (0.5894, 1.6537))),
        (500, ((0.8432, 1.1672), (0.8056, 1.2232), (0.7733, 1.274), (0.7375, 1.3375), (0.7146,
         1.383), (0.6937, 1.4299), (0.6684, 1.486), (0.6493, 1.5263), (0.6302, 1.5683))),
        (650, ((0.862, 1.1461), (0.8278, 1.1943), (0.7997, 1.238), (0.7671, 1.2901), (0.7441,
         1.3282), (0.7268, 1.3647), (0.7015, 1.4154), (0.6825, 1.4547), (0.6646, 1.5034))),
        (800, ((0.8747, 1.1314), (0.8435, 1.1736), (0.8177, 1.2113), (0.7887, 1.2578), (0.7685,
         1.2908), (0.7496, 1.3234), (0.7274, 1.3669), (0.7144, 1.3934), (0.7015, 1.4311))),
        (1000, ((0.8882, 1.1169), (0.8598, 1.1544), (0.8356, 1.1879), (0.8082, 1.2292), (0.7904,
         1.2589), (0.7732, 1.2865), (0.7543, 1.3253), (0.7395, 1.3543), (0.7245, 1.3785))),
        (1300, ((0.9012, 1.103), (0.8758, 1.1353), (0.8541, 1.1649), (0.8294, 1.1992), (0.8128,
         1.2238), (0.7972, 1.247), (0.7783, 1.275), (0.7632, 1.2958), (0.7509, 1.3246))),
        (1600, ((0.9102, 1.0926), (0.8871, 1.1214), (0.8679, 1.1468), (0.8453, 1.1775), (0.8298,
         1.1978), (0.8152, 1.2172), (0.7977, 1.2458), (0.7847, 1.2668), (0.774, 1.2889))),
    ),
}
VARIANCE_TABLE_M = [m for m, _ in VARIANCE_RATIO_QUANTILES["direct"]]


def _monotone(rows) -> tuple[np.ndarray, np.ndarray]:
    """Each row widened to contain every larger-M row (so rounding M down is conservative)."""
    q = np.array([row for _, row in rows])  # (M, α, 2)
    lo = np.minimum.accumulate(q[::-1, :, 0])[::-1]
    hi = np.maximum.accumulate(q[::-1, :, 1])[::-1]
    return lo, hi


_VARIANCE_TABLE = {kind: _monotone(rows) for kind, rows in VARIANCE_RATIO_QUANTILES.items()}


class UncalibratedConfidenceError(ValueError):
    """The confidence asked for is beyond what the simulated quantiles can calibrate."""


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
    """Conservative α/2 and 1 − α/2 quantiles of ``v/σ²`` for M rank-one samples.

    From :data:`VARIANCE_RATIO_QUANTILES` (M rounded down to a row, α down to a column:
    both widen the interval); below the table's smallest α, simulated now
    (:func:`rank_one_variance_ratios`, cached per process).
    """
    if kind not in VARIANCE_RATIO_QUANTILES:
        raise ValueError(f"kind must be 'direct' or 'cross', got {kind!r}")
    if num_samples < VARIANCE_TABLE_M[0]:
        raise ValueError(f"at least {VARIANCE_TABLE_M[0]} samples are needed for a variance "
                         f"interval, got {num_samples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"1 − confidence must lie in (0, 1), got {alpha}")
    if alpha >= VARIANCE_ALPHAS[-1]:
        row = bisect.bisect_right(VARIANCE_TABLE_M, num_samples) - 1
        col = next(j for j, a in enumerate(VARIANCE_ALPHAS) if a <= alpha * (1 + 1e-12))
        lo, hi = _VARIANCE_TABLE[kind]
        return float(lo[row, col]), float(hi[row, col])
    k = 0.5 * alpha * VARIANCE_REPS
    k_conservative = math.floor(k - 2.33 * math.sqrt(k)) if k > 0 else 0
    if k_conservative < MIN_TAIL_COUNT:
        raise UncalibratedConfidenceError(
            f"confidence {1 - alpha} is too high for the simulated variance quantiles "
            f"({VARIANCE_REPS} replicates; the table stops at 1 − {VARIANCE_ALPHAS[-1]})")
    ratios = rank_one_variance_ratios(num_samples, kind)
    return float(ratios[k_conservative - 1]), float(ratios[VARIANCE_REPS - k_conservative])


@lru_cache(maxsize=16)
def rank_one_variance_ratios(num_samples: int, kind: str, reps: int = VARIANCE_REPS,
                             seed: int = 20260601) -> np.ndarray:
    """Sorted ``v/σ²`` over ``reps`` replicates of M rank-one samples: ``g²`` (σ² = 2) for
    "direct", ``g·h`` (σ² = 1) for "cross" (how :data:`VARIANCE_RATIO_QUANTILES` was made,
    with the conservative order statistic ``⌊k − 2.33√k⌋``, ``k = reps·α/2``)."""
    rng = np.random.default_rng([seed, num_samples, kind == "cross"])
    chunk = max(1, int(4e6 // num_samples))
    out = []
    done = 0
    while done < reps:
        r = min(chunk, reps - done)
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
