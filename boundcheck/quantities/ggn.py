"""The Gauss–Newton split of the loss Hessian, ``H = G + R`` (THEOREMS.md conventions).

* ``ggn.trace``: ``tr G = (1/n) Σ_i tr(J_i J_iᵀ A_i)``, exact, from per-sample Jacobians
  (:class:`boundcheck.engines.curvature.GaussNewton`; K reverse passes per batch, vectorised over
  samples) and the loss's own output Hessians ``A_i``.
* ``residual.trace``: ``tr R = tr H − tr G``; exactly 0 when the network is piecewise linear
  in each parameter tensor (:mod:`boundcheck.engines.residual_free`: every diagonal block of
  R vanishes); else exact from the dense Hessian when affordable,
  otherwise Hutchinson on ``vᵀHv − vᵀGv`` with a calibrated interval
  (:mod:`boundcheck.engines.estimators.trace`).

Near a minimum R is small, which is what makes the control-variate ``hessian.trace``
(``tr G`` exact plus an estimate of ``tr R``) narrow; see :mod:`.hessian`.
"""

from __future__ import annotations

import torch

from boundcheck.core.estimate import UNIT_ROUNDOFF, Estimate
from boundcheck.core.subject import Subject
from boundcheck.engines.curvature import GaussNewton, dense_hessian_with_error
from boundcheck.engines.data_parallel import (
    DataParallelGaussNewton,
    ShardWeights,
    all_reduced_dense,
)
from boundcheck.engines.estimators import stream_seed
from boundcheck.engines.estimators.trace import CRITICAL_ALPHAS, residual_trace
from boundcheck.quantities.operators import hessian_operator_of, over_ranks
from boundcheck.quantities.registry import (
    Context,
    NotAffordableError,
    NotApplicableError,
    distributed,
    quantity,
)
from boundcheck.quantities.routes import dense_allowed, residual_free_of
from boundcheck.quantities.time_budget import MIN_TRACE_PRODUCTS, require_time_for

U = UNIT_ROUNDOFF["float64"]


def dense_hessian_of(ctx: Context) -> tuple[torch.Tensor, float]:
    """The dense Hessian and a bound on the Frobenius norm of its error
    (:func:`dense_hessian_with_error`), summed over a distributed subject's ranks."""
    h, error = dense_hessian_with_error(ctx.subject, ctx.budget.memory_bytes)
    if distributed(ctx.subject):
        return all_reduced_dense(h, error, ctx.subject.n, ctx.subject.process_group)
    return h, error


def shard_sum(ctx: Context, value: float, error: float) -> tuple[float, float]:
    """A quantity that is a mean over samples, ``value ± error`` on this rank's shard, as the
    mean over every rank's samples (itself when the subject is not distributed)."""
    if not distributed(ctx.subject):
        return value, error
    w = ShardWeights(ctx.subject.n, ctx.subject.num_params, ctx.subject.device,
                     ctx.subject.process_group)
    total, total_error, magnitude = w.reduce_values(value, error, abs(value))
    return total, total_error + w.rounding() * magnitude


def require_calibrated_confidence(ctx: Context) -> None:
    """Sampled traces have calibrated intervals for confidence ≤ 1 − 1e-4 only."""
    if 1.0 - ctx.confidence < CRITICAL_ALPHAS[-1]:
        raise NotAffordableError(
            f"confidence {ctx.confidence} is above {1 - CRITICAL_ALPHAS[-1]}, the highest with "
            "calibrated trace intervals; raise Budget.max_dense_params for exact values")


def gauss_newton(ctx: Context) -> GaussNewton:
    if not isinstance(ctx.subject, Subject):
        raise NotApplicableError("the Gauss–Newton split needs a network, data and a loss "
                                 "(a bare matrix has no G)")
    return ctx.artifact("ggn.operator", lambda: over_ranks(
        ctx, GaussNewton(ctx.subject, ctx.budget.memory_bytes), DataParallelGaussNewton))


@quantity("ggn.trace", "tr G, G = (1/n) Σ_i J_iᵀ A_i J_i (Gauss–Newton)",
          r"\operatorname{tr} G", data_parallel=True)
def _ggn_trace(ctx: Context) -> Estimate:
    g = gauss_newton(ctx)
    value, magnitude = g.trace_terms()
    k = ctx.subject.output_dim
    err = 8.0 * U * (g.dim + k * k) * magnitude
    return Estimate.exact(value, err, "per-sample Jacobians J_i J_iᵀ and output Hessians A_i")


@quantity("residual.trace", "tr R = tr H − tr G", r"\operatorname{tr} R",
          data_parallel=True)
def _residual_trace(ctx: Context) -> Estimate:
    free = residual_free_of(ctx)
    if free is not None and free.all_free:
        return Estimate.exact(0.0, 0.0, "structural zero: every diagonal block of R vanishes",
                              route="exact-structured", route_reason=free.reason())
    g = gauss_newton(ctx)
    if dense_allowed(ctx):  # (Budget.route "interval": tr H may be an estimate, not exact)
        h = ctx.get("hessian.trace")
        t = ctx.get("ggn.trace")
        value = h.value - t.value
        err = (h.half_width + t.half_width) + 2 * U * (abs(h.value) + abs(t.value))
        return Estimate.exact(value, err, "dense tr H − exact tr G")
    require_calibrated_confidence(ctx)
    t = ctx.get("ggn.trace")  # tr R is judged against tr G (it may be ~0)
    require_time_for(ctx, MIN_TRACE_PRODUCTS, "tr R (Hutchinson on vᵀHv − vᵀGv)")
    b = ctx.budget
    return residual_trace(hessian_operator_of(ctx), g.quadratic_form, t.value, t.half_width,
                          confidence=ctx.confidence, rel_half_width=b.trace_rel_half_width,
                          abs_half_width=b.trace_rel_half_width * abs(t.value),
                          max_probes=b.max_probes,
                          seed=stream_seed(ctx.seed, "residual.trace"))
