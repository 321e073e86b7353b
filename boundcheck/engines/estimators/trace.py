"""Stochastic trace estimators with intervals whose coverage is tested.

Estimators (each sample is a quadratic form in a Rademacher probe v, ``E[vvᵀ] = I``):

* :func:`hutchinson_trace`: ``vᵀAv`` (Girard 1989; Hutchinson, Commun. Stat. Simul. Comput.
  18(3) 1989).
* :func:`hutchpp_trace`: Hutch++ (R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++:
  optimal stochastic trace estimation", SOSA 2021): an exact trace on the range ``Q`` of a
  sketch ``AS``, plus Hutchinson on the deflated ``(I − QQᵀ) A (I − QQᵀ)``.
* :func:`control_variate_trace`: ``tr A = tr G + tr(A − G)`` with ``tr G`` known exactly and
  ``vᵀ(A − G)v`` sampled; near a minimum ``A − G = R`` is small, so is the interval.
* :func:`squared_frobenius`: ``tr((A − cI)²) = E‖(A − cI)v‖²``.

**The interval.** Two stages. A pilot of :data:`PILOT` probes estimates the spread and sizes
the main stage; the main stage draws M fresh probes (independent of the pilot, so M is fixed
given the pilot) and reports ``mean ± c(M, α)·s/√M`` plus a rounding allowance. Student-t
under-covers here: the samples are a quadratic chaos, right-skewed, and worst when the
matrix is rank one (samples ``λχ²₁`` in the Gaussian limit; e.g. at M = 50 a nominal 99%
t interval covers about 96.4%). For any spectrum the chaos has skewness² ≤ 8 and excess
kurtosis ≤ 12, both attained by rank one, and rank one also minimises the first Edgeworth
correction of the two-sided t coverage (Hall, "The Bootstrap and Edgeworth Expansion", 1992,
§2.6). So ``c(M, α)`` is the two-sided (1 − α) quantile of ``|t|`` for M iid χ²₁ samples,
simulated by :func:`simulate_rank_one_critical_values` (2·10⁶ replicates, the 99% upper
confidence order statistic) and stored in :data:`CRITICAL_VALUES`; lookups round M down and
α down (both conservative). Coverage is counted over hundreds of seeds in
tests/test_estimators.py, for rank-one, Wishart, indefinite and network Hessians.
Supported: ``α ≥ 1e-4`` (confidence ≤ 0.9999). The main stage has at least
:data:`MIN_SAMPLES` = 50 probes: Rademacher quadratic forms can be discrete (rank one on four
coordinates takes the values 0, 1, 4 with probabilities 6/16, 8/16, 2/16) and then under-cover
at M ≤ 40 and small α (1.2α at M = 30, α = 0.01, in 4·10⁵ simulated runs); at M ≥ 50 every
such case stayed below α.

Rounding: each sample carries an allowance ``8 u P · Σ_j |v_j (Av)_j|`` (dot-product bound
with the same floor the dense path uses); the interval is widened by its mean. An operator
whose products are in a working precision (``product_error``, :mod:`..product_error`) adds
its calibrated allowance to every sample, and the estimate's method and details say so.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from boundcheck.core.estimate import UNIT_ROUNDOFF, Estimate
from boundcheck.engines.estimators import clock
from boundcheck.engines.product_error import product_error

U = UNIT_ROUNDOFF["float64"]
PILOT = 30
MIN_SAMPLES = 50
BLOCK = 16
OVERSHOOT = 1.2  # main-stage size is planned for a half-width 1/1.2 of the target

CRITICAL_ALPHAS = (0.2, 0.1, 0.05, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4)
# c(M, α) for M iid χ²₁ samples: rows M, columns CRITICAL_ALPHAS. Regenerate with
# simulate_rank_one_critical_values(M, CRITICAL_ALPHAS, reps=2_000_000, seed=20240601).
CRITICAL_VALUES = (
    (10, (1.7299, 2.8435, 4.2176, 6.3559, 8.2742, 10.4957, 14.0130, 17.2258, 20.8720, 26.4493,
          31.5413)),
    (15, (1.5607, 2.3880, 3.4137, 4.9159, 6.1864, 7.5837, 9.6102, 11.3305, 13.2291, 16.1352,
          18.9141)),
    (20, (1.4889, 2.1781, 3.0299, 4.2523, 5.2600, 6.3270, 7.8179, 9.0343, 10.3339, 12.4067,
          13.9551)),
    (30, (1.4174, 1.9782, 2.6538, 3.6219, 4.3920, 5.1793, 6.2672, 7.1435, 8.1252, 9.3952,
          10.4613)),
    (40, (1.3846, 1.8893, 2.4659, 3.3121, 3.9644, 4.6397, 5.5514, 6.2636, 7.0343, 8.0181,
          8.9186)),
    (50, (1.3645, 1.8371, 2.3568, 3.1201, 3.7012, 4.2990, 5.0982, 5.7223, 6.3867, 7.3345,
          8.0713)),
    (60, (1.3494, 1.8016, 2.2855, 2.9855, 3.5264, 4.0651, 4.7828, 5.3195, 5.8737, 6.7097,
          7.3370)),
    (80, (1.3349, 1.7625, 2.2002, 2.8247, 3.3115, 3.7933, 4.4265, 4.9189, 5.4296, 6.1219,
          6.5874)),
    (100, (1.3245, 1.7377, 2.1480, 2.7177, 3.1658, 3.6179, 4.2099, 4.6612, 5.0985, 5.7039,
           6.2292)),
    (130, (1.3162, 1.7195, 2.1065, 2.6310, 3.0442, 3.4546, 4.0058, 4.4128, 4.8011, 5.3704,
           5.7206)),
    (160, (1.3090, 1.7036, 2.0766, 2.5710, 2.9538, 3.3344, 3.8416, 4.2206, 4.5933, 5.0987,
           5.4484)),
    (200, (1.3051, 1.6950, 2.0542, 2.5219, 2.8798, 3.2408, 3.7219, 4.0754, 4.4340, 4.8606,
           5.2132)),
    (250, (1.3012, 1.6847, 2.0354, 2.4857, 2.8239, 3.1688, 3.6167, 3.9491, 4.2848, 4.7528,
           5.0740)),
    (300, (1.2961, 1.6755, 2.0209, 2.4559, 2.7821, 3.1015, 3.5314, 3.8606, 4.1792, 4.5821,
           4.8651)),
    (400, (1.2945, 1.6706, 2.0096, 2.4281, 2.7369, 3.0406, 3.4348, 3.7372, 4.0352, 4.4117,
           4.7092)),
    (500, (1.2930, 1.6654, 1.9972, 2.4025, 2.6985, 2.9847, 3.3597, 3.6486, 3.9185, 4.2649,
           4.5524)),
    (650, (1.2903, 1.6625, 1.9919, 2.3894, 2.6737, 2.9473, 3.3092, 3.5686, 3.8289, 4.1648,
           4.4151)),
    (800, (1.2889, 1.6589, 1.9857, 2.3764, 2.6565, 2.9227, 3.2762, 3.5446, 3.7978, 4.1406,
           4.3830)),
    (1000, (1.2900, 1.6591, 1.9831, 2.3680, 2.6399, 2.9027, 3.2334, 3.4814, 3.7281, 4.0392,
            4.2846)),
    (1300, (1.2876, 1.6547, 1.9764, 2.3588, 2.6283, 2.8842, 3.2011, 3.4385, 3.6849, 3.9995,
            4.2275)),
    (1600, (1.2860, 1.6526, 1.9748, 2.3551, 2.6192, 2.8654, 3.1827, 3.4136, 3.6542, 3.9557,
            4.1792)),
    (2000, (1.2860, 1.6517, 1.9711, 2.3508, 2.6124, 2.8583, 3.1719, 3.3971, 3.6206, 3.8964,
            4.1241)),
)
_TABLE_M = [m for m, _ in CRITICAL_VALUES]
# Monotone in M by construction: each row is the max of itself and all larger-M rows.
_TABLE_C = np.maximum.accumulate(np.array([row for _, row in CRITICAL_VALUES])[::-1])[::-1]


def rank_one_critical_value(num_samples: int, alpha: float) -> float:
    """``c(M, α)``: two-sided critical value for the studentised mean of M quadratic-form
    samples, calibrated on the worst case (rank one). Conservative table lookup."""
    if num_samples < _TABLE_M[0]:
        raise ValueError(f"at least {_TABLE_M[0]} samples are needed, got {num_samples}")
    if not CRITICAL_ALPHAS[-1] <= alpha < 1.0:
        raise ValueError(f"confidence must lie in (0, {1 - CRITICAL_ALPHAS[-1]}] for the "
                         f"calibrated interval, got {1 - alpha}")
    row = bisect.bisect_right(_TABLE_M, num_samples) - 1
    col = next(j for j, a in enumerate(CRITICAL_ALPHAS) if a <= alpha)
    return float(_TABLE_C[row, col])


def simulate_rank_one_critical_values(num_samples: int, alphas, reps: int,
                                      seed: int) -> list[float]:
    """Monte Carlo ``c(M, α)`` for χ²₁ samples: the 99% upper confidence order statistic of
    ``|t|`` over ``reps`` replicates (how :data:`CRITICAL_VALUES` was made)."""
    rng = np.random.default_rng([seed, num_samples])
    chunk = max(1, int(4e6 // num_samples))
    stats = []
    done = 0
    while done < reps:
        r = min(chunk, reps - done)
        x = rng.standard_normal((r, num_samples), dtype=np.float32) ** 2
        mean = x.mean(1, dtype=np.float64)
        sd = x.std(1, ddof=1, dtype=np.float64)
        stats.append(np.abs(mean - 1.0) / (sd / math.sqrt(num_samples)))
        done += r
    t = np.sort(np.concatenate(stats))
    out = []
    for a in alphas:
        k = a * reps
        k_conservative = max(1, int(math.floor(k - 2.33 * math.sqrt(k))))
        out.append(float(t[reps - k_conservative]))
    return out


@dataclass(frozen=True)
class MeanInterval:
    """The mean of sampled quadratic forms with ``mean ± half_width`` at ``confidence``, or
    (``exact``) the expectation itself, summed over all basis vectors."""

    mean: float
    half_width: float  # statistical part plus rounding allowance
    samples: int  # main-stage samples (the interval uses only these)
    pilot: int
    sd: float
    confidence: float
    critical: float = 0.0  # c(M, α) used
    exact: bool = False
    stopped: str = ""  # why the main stage drew fewer samples than planned (time limit)


Draw = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def adaptive_mean(draw: Draw, *, confidence: float, target_half_width: Callable[[float], float],
                  max_samples: int, pilot: torch.Tensor | None = None,
                  exhaustive: tuple[int, Callable[[], tuple[float, float]]] | None = None
                  ) -> MeanInterval:
    """Two-stage interval for the mean of ``draw``'s samples (see the module docstring).

    draw(m): m fresh samples and their rounding scales. target_half_width(mean estimate):
    the half-width wanted. max_samples: pilot plus main stage at most. pilot: samples already
    drawn from independent probes (e.g. while choosing an estimator); they only size the
    main stage. exhaustive: ``(cost, fn)``; when the main stage would need ``≥ cost``
    samples, ``fn()`` returns the exact expectation and its rounding error instead.
    """
    alpha = 1.0 - confidence
    rank_one_critical_value(MIN_SAMPLES, alpha)  # validates the confidence
    if pilot is None:
        pilot, _ = draw(PILOT)
    sd0 = float(pilot.std())
    target = target_half_width(float(pilot.mean()))
    room = max(MIN_SAMPLES, max_samples - len(pilot))
    m = MIN_SAMPLES
    if sd0 > 0.0:
        m = room
        if target > 0.0:
            for _ in range(4):  # c(M) decreases in M: iterate down to a fixed point
                c = rank_one_critical_value(max(m, MIN_SAMPLES), alpha)
                m = min(room, max(MIN_SAMPLES, math.ceil((OVERSHOOT * c * sd0 / target) ** 2)))
    if exhaustive is not None and m >= exhaustive[0] and not clock.expired():
        value, err = exhaustive[1]()
        return MeanInterval(value, err, exhaustive[0], len(pilot), 0.0, confidence,
                            exact=True)
    planned = m
    x, scale = draw(m)
    m = len(x)  # fewer when the time limit cut the draw (never below MIN_SAMPLES)
    mean = float(x.mean())
    sd = float(x.std()) if m > 1 else 0.0
    c = rank_one_critical_value(m, alpha)
    half = c * sd / math.sqrt(m) + float(scale.mean())
    stopped = (f"time limit reached: {m} of {planned} planned samples" if m < planned else "")
    return MeanInterval(mean, half, m, len(pilot), sd, confidence, c, stopped=stopped)


def _basis_sum(op, fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
               ) -> tuple[float, float]:
    """``Σ_i fn(e_i, A e_i)`` over all basis vectors, in blocks: (value, rounding error)."""
    total, err = 0.0, 0.0
    for start in range(0, op.dim, BLOCK):
        rows = torch.arange(start, min(op.dim, start + BLOCK), device=op.device)
        e = torch.zeros(len(rows), op.dim, dtype=op.dtype, device=op.device)
        e[torch.arange(len(rows)), rows] = 1.0
        x, scale = fn(e, apply_rows(op, e))
        total += float(x.sum())
        err += float(scale.sum())
    return total, err + 8.0 * U * op.dim * abs(total)


def exact_trace(op) -> tuple[float, float]:
    """``tr A`` from ``e_iᵀ A e_i`` (dim products): value and rounding error."""
    return _basis_sum(op, lambda e, ae: ((e * ae).sum(dim=1), _rounding(op.dim, e, ae)
                                         + _product_allowance(op, e, basis=True)))


def rademacher(m: int, dim: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """m Rademacher probes as rows (m, dim)."""
    v = torch.randint(0, 2, (m, dim), generator=generator, dtype=torch.int8)
    return (v.to(dtype) * 2 - 1).to(device)


def apply_rows(op, v: torch.Tensor) -> torch.Tensor:
    """``A v`` for each row of v, batched where the operator prefers it."""
    if getattr(op, "batched_products", False):
        return op.matmat(v)
    out = []
    for row in v:
        out.append(op.matvec(row))
        clock.report("Hessian-vector products", len(out))
    return torch.stack(out)


def _rounding(dim: int, v: torch.Tensor, av: torch.Tensor) -> torch.Tensor:
    return 8.0 * U * dim * (v * av).abs().sum(dim=1)


def _product_allowance(op, v: torch.Tensor, basis: bool = False):
    """The working-precision products' allowance for ``vᵀAv`` per row of v (0 for float64
    products): the calibrated bias for random probes, ``ε‖v‖²`` for other vectors."""
    model = product_error(op)
    if model is None:
        return torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    out = model.basis_allowance(v) if basis else model.probe_allowance(v)
    return out.to(dtype=v.dtype, device=v.device)


def _blocks(m: int, fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]]):
    """m samples in blocks; past the time limit (:mod:`.clock`) it stops after the block that
    reaches ``min(m, MIN_SAMPLES)`` samples. The cut depends on the clock only, so the interval
    over the samples drawn keeps its confidence."""
    xs, scales = [], []
    drawn = 0
    for start in range(0, m, BLOCK):
        if drawn >= min(m, MIN_SAMPLES) and clock.expired():
            break
        x, s = fn(min(BLOCK, m - start))
        xs.append(x)
        scales.append(s)
        drawn += len(x)
        clock.report("trace probes", drawn)
    return torch.cat(xs).double().cpu(), torch.cat(scales).double().cpu()


def _relative_target(rel_half_width: float, abs_half_width: float) -> Callable[[float], float]:
    return lambda mean: max(rel_half_width * abs(mean), abs_half_width)


def _estimate(op, value: float, half: float, res: MeanInterval, method: str, matvecs: int,
              **details) -> Estimate:
    info = {"samples": res.samples, "pilot": res.pilot, "matvecs": matvecs, **details}
    model = product_error(op)
    suffix = ""
    if model is not None:
        info.update(model.details())
        suffix = f"; {model.label}"
    if res.stopped:
        info["stopped"] = res.stopped
    if res.exact:
        return Estimate.exact(value, half, "exhaustive: every basis vector (cheaper than the "
                              f"probes the target needed){suffix}", **info)
    method += suffix
    return Estimate(value, value - half, value + half, "statistical", method, res.confidence,
                    {**info, "sample_sd": res.sd, "critical_value": res.critical})


def hutchinson_trace(op, *, confidence: float = 0.99, rel_half_width: float = 0.01,
                     abs_half_width: float = 0.0, max_probes: int = 2000, seed: int = 0,
                     pilot: torch.Tensor | None = None) -> Estimate:
    """``tr A`` by Hutchinson with Rademacher probes and an adaptive probe count.

    pilot: ``vᵀAv`` for independent probes, if already drawn (sizes the main stage)."""
    gen = torch.Generator().manual_seed(seed)

    def draw_block(m: int):
        v = rademacher(m, op.dim, gen, op.dtype, op.device)
        av = apply_rows(op, v)
        return (v * av).sum(dim=1), _rounding(op.dim, v, av) + _product_allowance(op, v)

    res = adaptive_mean(lambda m: _blocks(m, draw_block), confidence=confidence,
                        target_half_width=_relative_target(rel_half_width, abs_half_width),
                        max_samples=max_probes, pilot=pilot,
                        exhaustive=(op.dim, lambda: exact_trace(op)))
    return _estimate(op, res.mean, res.half_width, res, "Hutchinson (Rademacher), calibrated "
                     "two-stage interval", res.samples + res.pilot)


def hutchpp_trace(op, *, sketch_size: int = 32, confidence: float = 0.99,
                  rel_half_width: float = 0.01, abs_half_width: float = 0.0,
                  max_probes: int = 2000, seed: int = 0) -> Estimate:
    """``tr A`` by Hutch++ (Meyer et al. 2021): sketch of ``sketch_size`` products, the exact
    trace on its range, adaptive Hutchinson on the deflated remainder."""
    gen = torch.Generator().manual_seed(seed)
    k = max(1, min(sketch_size, op.dim - 1))
    s = rademacher(k, op.dim, gen, op.dtype, op.device)
    q, _ = torch.linalg.qr(apply_rows(op, s).T)  # (P, k) orthonormal columns
    aq = apply_rows(op, q.T)
    exact = float((q.T * aq).sum())
    exact_err = float((_rounding(op.dim, q.T, aq)
                       + _product_allowance(op, q.T, basis=True)).sum())

    def remainder() -> tuple[float, float]:
        total, err = exact_trace(op)
        return total - exact, err

    def draw_block(m: int):
        g = rademacher(m, op.dim, gen, op.dtype, op.device)
        g = g - (g @ q) @ q.T
        ag = apply_rows(op, g)
        return (g * ag).sum(dim=1), _rounding(op.dim, g, ag) + _product_allowance(op, g)

    rest = adaptive_mean(lambda m: _blocks(m, draw_block), confidence=confidence,
                         target_half_width=lambda mean: max(
                             rel_half_width * abs(exact + mean), abs_half_width),
                         max_samples=max_probes, exhaustive=(op.dim, remainder))
    value = exact + rest.mean
    return _estimate(op, value, rest.half_width + exact_err, rest,
                     "Hutch++ (Meyer et al. 2021), calibrated two-stage interval",
                     2 * k + rest.samples + rest.pilot, sketch=k, sketch_trace=exact)


def control_variate_trace(op, exact_trace_value: float, exact_error: float,
                          quadratic_form: Callable[[torch.Tensor], torch.Tensor], *,
                          confidence: float = 0.99, rel_half_width: float = 0.01,
                          abs_half_width: float = 0.0, max_probes: int = 2000, seed: int = 0,
                          pilot: torch.Tensor | None = None) -> Estimate:
    """``tr A = tr G + tr(A − G)``: ``tr G = exact_trace_value ± exact_error`` is known, and
    ``vᵀ(A − G)v = vᵀAv − quadratic_form(v)`` is sampled (rows of v). pilot: such samples
    for independent probes, if already drawn."""
    gen = torch.Generator().manual_seed(seed)

    def remainder() -> tuple[float, float]:
        total, err = exact_trace(op)
        return total - exact_trace_value, err

    def draw_block(m: int):
        v = rademacher(m, op.dim, gen, op.dtype, op.device)
        av = apply_rows(op, v)
        gv = quadratic_form(v)
        return (v * av).sum(dim=1) - gv, (_rounding(op.dim, v, av) + 8.0 * U * op.dim * gv.abs()
                                          + _product_allowance(op, v))

    rest = adaptive_mean(lambda m: _blocks(m, draw_block), confidence=confidence,
                         target_half_width=lambda mean: max(
                             rel_half_width * abs(exact_trace_value + mean), abs_half_width),
                         max_samples=max_probes, pilot=pilot, exhaustive=(op.dim, remainder))
    value = exact_trace_value + rest.mean
    return _estimate(op, value, rest.half_width + exact_error, rest,
                     "tr G exact + Hutchinson on tr(H − G) (control variate), calibrated "
                     "two-stage interval", rest.samples + rest.pilot,
                     exact_part=exact_trace_value, sampled_part=rest.mean)


def residual_trace(op, quadratic_form: Callable[[torch.Tensor], torch.Tensor],
                   ggn_trace: float, ggn_error: float, *, confidence: float = 0.99,
                   rel_half_width: float = 0.01, abs_half_width: float = 0.0,
                   max_probes: int = 2000, seed: int = 0) -> Estimate:
    """``tr(A − G)`` by Hutchinson on ``vᵀAv − quadratic_form(v)``; ``tr G = ggn_trace`` is
    needed only if summing over every basis vector turns out cheaper."""
    est = control_variate_trace(op, ggn_trace, ggn_error, quadratic_form,
                                confidence=confidence, rel_half_width=rel_half_width,
                                abs_half_width=abs_half_width, max_probes=max_probes, seed=seed)
    method = est.method if est.kind == "exact" else ("Hutchinson on tr(H − G), calibrated "
                                                     "two-stage interval")
    return Estimate(est.value - ggn_trace, est.lower - ggn_trace, est.upper - ggn_trace,
                    est.kind, method, est.confidence, est.details)


SUBNORMAL = 2.0**-1074  # smallest positive float64


def squared_frobenius(op, shift: float = 0.0, *, confidence: float = 0.99,
                      rel_half_width: float = 0.01, abs_half_width: float = 0.0,
                      max_probes: int = 2000, seed: int = 0) -> Estimate:
    """``tr((A − shift·I)²) = E‖(A − shift·I) v‖²`` with an adaptive probe count."""
    gen = torch.Generator().manual_seed(seed)

    def squares(v: torch.Tensor, av: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = av - shift * v
        sq = (w * w).sum(dim=1)
        # forming w loses u·(|Av| + |shift|·|v|) per entry (the product's own error alike)
        err_w = 4.0 * U * (torch.linalg.vector_norm(av, dim=1)
                           + abs(shift) * torch.linalg.vector_norm(v, dim=1))
        norm_w = torch.sqrt(sq)
        model = product_error(op)
        products = 0.0 if model is None else model.squared_norm_allowance(v, w).to(sq.device)
        # + underflow: each of the dim squares may flush to 0 (one subnormal spacing, and the
        # same again for err_w²), so at ~1e-191 curvature a sample reads 0 for ~1e-382
        underflow = 4.0 * op.dim * SUBNORMAL
        return sq, 8.0 * U * op.dim * sq + 2.0 * norm_w * err_w + err_w**2 + products + underflow

    def draw_block(m: int):
        v = rademacher(m, op.dim, gen, op.dtype, op.device)
        return squares(v, apply_rows(op, v))

    res = adaptive_mean(lambda m: _blocks(m, draw_block), confidence=confidence,
                        target_half_width=_relative_target(rel_half_width, abs_half_width),
                        max_samples=max_probes,
                        exhaustive=(op.dim, lambda: _basis_sum(op, squares)))
    est = _estimate(op, res.mean, res.half_width, res,
                    "E‖(H − cI)v‖² (Rademacher), calibrated two-stage interval",
                    res.samples + res.pilot, shift=shift)
    return est.clamp_below(0.0)
