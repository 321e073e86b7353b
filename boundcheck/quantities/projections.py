"""Random projections of the loss Hessian (THEOREMS.md T9; Böttcher & Wheeler, arXiv
2208.13219), and the trace from loss values alone.

All statistical quantities are at ``ctx.confidence`` and share one draw of
``Budget.projection_planes`` Gaussian planes (δ, η) per context
(:func:`boundcheck.engines.projections.projected_hessians`), projected through the dense
Hessian when it is affordable (its rounding bound added to each sample's allowance), else
through Hessian-vector products:

* ``projection.curvature_mean`` / ``projection.curvature_variance``: ``E[δᵀHδ]``,
  ``Var(δᵀHδ)`` from the 2M diagonal entries (δᵀHδ and ηᵀHη are iid);
* ``projection.cross_mean`` / ``projection.cross_variance``: ``E[δᵀHη]``, ``Var(δᵀHη)``;
* ``projection.saddle_probability``: the frequency of ``det < 0`` over the M planes, with the
  Clopper–Pearson interval; ``projection.saddle_probability_predicted``: the same
  probability simulated from the dense spectrum alone (``Budget.saddle_draws`` planes);
* ``projection.extreme_plane_determinant``: the determinant of H projected on the plane of
  its λ_max and λ_min eigenvectors (``= λ_max λ_min``; < 0 exactly when that plane shows a
  saddle), exact with a rounding allowance;

``hessian.trace_finite_difference`` (tr H from loss values alone) is in
:mod:`boundcheck.quantities.hessian`.
"""

from __future__ import annotations

import numpy as np
import torch

from boundcheck.core.estimate import UNIT_ROUNDOFF, Estimate
from boundcheck.core.subject import Subject
from boundcheck.engines.curvature import SymmetricMatrixOperator
from boundcheck.engines.estimators import stream_seed
from boundcheck.engines.finite_difference_trace import subject_evaluator
from boundcheck.engines.product_error import product_error
from boundcheck.engines.projections import (
    ProjectedHessians,
    UncalibratedConfidenceError,
    clopper_pearson,
    mean_interval,
    projected_hessians,
    saddle_probability_from_spectrum,
    surface_1d,
    surface_2d,
    variance_interval,
)
from boundcheck.quantities.ggn import hessian_operator_of, require_calibrated_confidence
from boundcheck.quantities.hessian import dense_affordable, dense_spectrum
from boundcheck.quantities.registry import (
    Context,
    NotAffordableError,
    NotApplicableError,
    quantity,
)
from boundcheck.quantities.time_budget import require_time_for

U = UNIT_ROUNDOFF["float64"]


def planes(ctx: Context) -> ProjectedHessians:
    """The context's Gaussian planes projected through H (built once)."""

    def build() -> ProjectedHessians:
        require_calibrated_confidence(ctx)
        seed = stream_seed(ctx.seed, "projection.planes")
        m = ctx.budget.projection_planes
        if dense_affordable(ctx):
            d = dense_spectrum(ctx)
            op = SymmetricMatrixOperator(d.matrix * d.scale)
            return projected_hessians(op, m, seed, matrix_error=d.perturbation * d.scale)
        require_time_for(ctx, 2 * m, f"{m} random planes (2 products each)")
        op = hessian_operator_of(ctx)
        products = product_error(op)  # working-precision products: ‖E‖₂ ≤ ε, as matrix_error
        return projected_hessians(op, m, seed,
                                  matrix_error=0.0 if products is None else products.norm)

    return ctx.artifact(f"projection.planes:{ctx.seed}", build)


def _statistical(value: float, lower: float, upper: float, method: str, ctx: Context,
                 **details) -> Estimate:
    return Estimate(value, min(lower, value), max(upper, value), "statistical", method,
                    ctx.confidence, details)


def _calibrated(interval, *args):
    try:
        return interval(*args)
    except UncalibratedConfidenceError as err:
        raise NotAffordableError(str(err)) from err


@quantity("projection.curvature_mean", "E[δᵀHδ] over Gaussian directions δ (sampled)",
          r"\mathbb{E}[\delta^\top H \delta]")
def _curvature_mean(ctx: Context) -> Estimate:
    x, r = planes(ctx).curvature_samples
    i = mean_interval(x, r, ctx.confidence)
    return _statistical(i.value, i.lower, i.upper, i.method, ctx, samples=i.samples,
                        critical_value=i.critical[0])


@quantity("projection.curvature_variance", "Var(δᵀHδ) over Gaussian directions δ (sampled)",
          r"\operatorname{Var}(\delta^\top H \delta)")
def _curvature_variance(ctx: Context) -> Estimate:
    x, r = planes(ctx).curvature_samples
    i = _calibrated(variance_interval, x, r, ctx.confidence, "direct")
    return _statistical(i.value, i.lower, i.upper, i.method, ctx, samples=i.samples,
                        ratio_quantiles=list(i.critical))


@quantity("projection.cross_mean", "E[δᵀHη] over independent Gaussian δ, η (sampled)",
          r"\mathbb{E}[\delta^\top H \eta]")
def _cross_mean(ctx: Context) -> Estimate:
    p = planes(ctx)
    i = mean_interval(p.cross, p.rounding_cross, ctx.confidence)
    return _statistical(i.value, i.lower, i.upper, i.method, ctx, samples=i.samples,
                        critical_value=i.critical[0])


@quantity("projection.cross_variance", "Var(δᵀHη) over independent Gaussian δ, η (sampled)",
          r"\operatorname{Var}(\delta^\top H \eta)")
def _cross_variance(ctx: Context) -> Estimate:
    p = planes(ctx)
    i = _calibrated(variance_interval, p.cross, p.rounding_cross, ctx.confidence, "cross")
    return _statistical(i.value, i.lower, i.upper, i.method, ctx, samples=i.samples,
                        ratio_quantiles=list(i.critical))


@quantity("projection.saddle_probability",
          "P(det < 0) of the Hessian projected on a random Gaussian plane, observed",
          r"p_{\mathrm{saddle}}")
def _saddle_observed(ctx: Context) -> Estimate:
    p = planes(ctx)
    det = p.determinants
    # a plane counts only where the sign of det is certain; undecided planes widen the
    # interval both ways
    slack = (np.abs(p.direct) + np.abs(p.other)) * p.rounding_direct + 2 * np.abs(
        p.cross) * p.rounding_cross + p.rounding_direct**2 + p.rounding_cross**2
    sure = int(np.count_nonzero(det < -slack))
    maybe = int(np.count_nonzero(np.abs(det) <= slack))
    m = len(det)
    lo, _ = clopper_pearson(sure, m, ctx.confidence)
    _, hi = clopper_pearson(sure + maybe, m, ctx.confidence)
    value = (sure + 0.5 * maybe) / m
    return _statistical(value, lo, hi, "frequency of det < 0 over Gaussian planes through "
                        "the full H, Clopper–Pearson", ctx, planes=m, saddles=sure,
                        undecided=maybe)


@quantity("projection.saddle_probability_predicted",
          "P(det < 0) of a random Gaussian projection, simulated from the spectrum alone",
          r"\hat p_{\mathrm{saddle}}")
def _saddle_predicted(ctx: Context) -> Estimate:
    require_calibrated_confidence(ctx)
    d = dense_spectrum(ctx)
    lam = d.eigenvalues.cpu().numpy() * d.scale
    draws = ctx.budget.saddle_draws
    k = saddle_probability_from_spectrum(lam, draws,
                                         stream_seed(ctx.seed, "projection.saddle_predicted"))
    lo, hi = clopper_pearson(k, draws, ctx.confidence)
    return _statistical(k / draws, lo, hi, "Monte Carlo over the eigenvalues (the law depends "
                        "on the spectrum only), Clopper–Pearson", ctx, draws=draws,
                        saddles=k)


@quantity("projection.extreme_plane_determinant",
          "det of H projected on the plane of its λ_max and λ_min eigenvectors",
          r"\det H_{\pm}")
def _extreme_plane(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    a, b, c, err = extreme_plane(ctx)
    det = (a * c - b * b) * d.scale**2
    bound = (abs(a) * err + abs(c) * err + err * err + 2 * abs(b) * err + 4 * U * (
        abs(a * c) + b * b)) * d.scale**2
    return Estimate.exact(det, bound, "2×2 projection on the eigh eigenvectors of λ_max, "
                          "λ_min of the dense Hessian", entries=[a * d.scale, b * d.scale,
                                                                c * d.scale])


def extreme_plane(ctx: Context) -> tuple[float, float, float, float]:
    """``uᵀHu, uᵀHv, vᵀHv`` (scaled units) for the λ_max and λ_min eigenvectors u, v, and a
    bound on each entry's error."""

    def build():
        d = dense_spectrum(ctx)
        u, v = extreme_directions(ctx)
        hu, hv = d.matrix @ u, d.matrix @ v
        a, b, c = float(u @ hu), float(u @ hv), float(v @ hv)
        err = d.perturbation + 8 * U * d.dim * d.frobenius
        return a, b, c, err

    return ctx.artifact("projection.extreme_plane", build)


def extreme_directions(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit eigenvectors of λ_max and λ_min of the dense Hessian (for surface plots)."""
    d = dense_spectrum(ctx)
    _, vecs = ctx.artifact("projection.eigh", lambda: torch.linalg.eigh(d.matrix))
    return vecs[:, -1], vecs[:, 0]


# --- loss surfaces for figures (artifacts, not quantities) ----------------------------------
def loss_surfaces(ctx: Context, points_1d: int = 41, points_2d: int = 21,
                  relative_radius: float = 0.2) -> dict:
    """The loss along random and extreme-curvature directions, for the report's figures.

    1-D: ``L(θ + t·d)`` for d a unit Gaussian direction, and (when the dense Hessian is
    affordable) the unit λ_max and λ_min eigenvectors; 2-D: the plane of two Gaussian
    directions and the plane of the two eigenvectors. ``t`` spans ``±relative_radius ·
    max(1, ‖θ‖)``. The quadratic model ``L(θ) + t gᵀd + ½ t² dᵀHd`` along the eigenvectors is
    stored beside them (``curvature`` = the eigenvalue).
    """
    subject = ctx.subject
    if not isinstance(subject, Subject):
        raise NotApplicableError("loss surfaces need a loss to evaluate")
    evaluate, theta = subject_evaluator(subject)
    n = subject.n

    def loss_at(at: torch.Tensor) -> float:
        return float(evaluate(at)[0].sum() / n)

    radius = relative_radius * max(1.0, float(theta.norm()))
    gen = torch.Generator().manual_seed(stream_seed(ctx.seed, "projection.surfaces"))
    rand = torch.randn(2, theta.numel(), generator=gen, dtype=torch.float64).to(theta)
    out: dict = {"radius": radius, "loss": loss_at(theta), "lines": [], "planes": []}
    ts, ys = surface_1d(loss_at, theta, rand[0], radius, points_1d)
    out["lines"].append({"direction": "random", "t": ts, "loss": ys})
    grid_t, grid = surface_2d(loss_at, theta, rand[0], rand[1], radius, points_2d)
    out["planes"].append({"directions": ["random δ", "random η"], "t": grid_t, "loss": grid})
    if dense_affordable(ctx):
        d = dense_spectrum(ctx)
        u_max, u_min = (v.to(theta) for v in extreme_directions(ctx))
        lam = d.eigenvalues.cpu().numpy() * d.scale
        for name, u, curv in (("λ_max eigenvector", u_max, lam[-1]),
                              ("λ_min eigenvector", u_min, lam[0])):
            ts, ys = surface_1d(loss_at, theta, u, radius, points_1d)
            out["lines"].append({"direction": name, "t": ts, "loss": ys,
                                 "curvature": float(curv)})
        grid_t, grid = surface_2d(loss_at, theta, u_max, u_min, radius, points_2d)
        out["planes"].append({"directions": ["λ_max eigenvector", "λ_min eigenvector"],
                              "t": grid_t, "loss": grid})
    return out
