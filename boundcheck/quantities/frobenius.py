"""The exact structured route of ``hessian.fro2`` = ‖H‖_F² = tr H² (and of what is built on it:
``hessian.moment_2`` and, with the exact trace, ``hessian.eigenvalue_variance`` beyond the
dense budget).

For softmax cross-entropy on ``Linear → σ → … → Linear`` nets with smooth σ (the nets
:func:`boundcheck.engines.closed_form_depth.deep_net` reads, any depth and width),
``‖H‖_F² = (1/n²) Σ_{i,j} ⟨H_i, H_j⟩`` from the per-sample layer factors
(:func:`boundcheck.engines.closed_form_depth.deep_traces`, derived in
:mod:`derivations.closed_form_ce_depth`), exact up to a rigorous rounding bound. Its work is
quadratic in n (about ``pair_flops`` multiply-adds) where a Hutchinson estimate of E‖Hv‖² is
linear in n per product but needs hundreds to thousands of products for ±1 %: the route is
taken when ``pair_flops ≤ Budget.max_closed_form_flops``. Other losses (MSE) and
activations (piecewise-linear ones) are not derived for the pair form: they keep the dense
Hessian within ``max_dense_params`` and the estimator beyond it, with the reason recorded.
"""

from __future__ import annotations

from boundcheck.core.estimate import UNIT_ROUNDOFF, Estimate
from boundcheck.engines import closed_form as cf
from boundcheck.engines import closed_form_depth as cd
from boundcheck.quantities.registry import Context, distributed

U = UNIT_ROUNDOFF["float64"]
ETA = 2.0**-1074  # smallest subnormal: the absolute rounding floor of every operation
UNDERFLOW_FLOOR = 1e-250  # below it, terms lost to underflow could matter (issue: falsify)
REL_TARGET = 1e-7  # a rounding bar this tight (relative) is kept without a second n² pass


def pair_form_plan(ctx: Context) -> tuple[cd.DeepNet, float] | str:
    """The net and flop count of the exact pair form, or the reason it is not taken (not
    applicable, over ranks, or its flop count above ``Budget.max_closed_form_flops``)."""
    if distributed(ctx.subject):
        return "no exact pair form over ranks (its sums pair samples of different shards)"
    try:
        net = cd.deep_net(ctx.subject)
    except cf.ArchitectureMismatch as err:
        return f"no exact pair form: {err}"
    n = ctx.subject.n
    flops = cd.pair_flops(n, [w.shape[1] for w in net.weights], net.weights[-1].shape[0])
    limit = ctx.budget.max_closed_form_flops
    if flops > limit:
        return (f"the exact pair form needs ~{flops:.2g} multiply-adds (n = {n}, quadratic in "
                f"n) > Budget.max_closed_form_flops = {limit:.2g}")
    return net, flops


def pair_form_fro2(ctx: Context) -> Estimate | str:
    """‖H‖_F² by the exact pair form, or the reason it is not taken (:func:`pair_form_plan`)."""
    plan = pair_form_plan(ctx)
    if isinstance(plan, str):
        return plan
    net, flops = plan
    limit = ctx.budget.max_closed_form_flops

    def build() -> cf.ClosedFormTraces:
        shared = ctx.cached("closed_form.traces")  # T2 already computed the same sums
        if isinstance(shared, cf.ClosedFormTraces):
            return shared
        return cd.subject_deep_traces(ctx.subject, rel_target=REL_TARGET)

    try:
        t = ctx.artifact("hessian.fro2.pair_form", build)
    except cf.ArchitectureMismatch as err:
        return f"no exact pair form: {err}"
    if not t.fro2 - t.fro2_error >= UNDERFLOW_FLOOR:
        # squares of entries below ~1e-154 underflow: the pair form does not rescale (the
        # dense route does, by a power of two), so near the underflow range it is not taken
        return (f"‖H‖_F² ≈ {t.fro2:.3g} is too close to float64's underflow range for the "
                "pair form (no rescaling)")
    est = Estimate.exact(
        t.fro2, t.fro2_error,
        f"exact ‖H‖_F² = (1/n²) Σ_ij ⟨H_i, H_j⟩ from the per-sample layer factors (depth "
        f"{net.depth}, cross-entropy)",
        route="pair form", flops=flops, seconds=t.seconds,
        rel_error=t.fro2_error / t.fro2 if t.fro2 else None,
        reason=f"sequential smooth-σ cross-entropy net; ~{flops:.2g} multiply-adds ≤ "
               f"Budget.max_closed_form_flops = {limit:.2g}")
    return est.clamp_below(0.0)


def exact_second_moment(ctx: Context) -> Estimate | None:
    """μ_2 = tr H² / P from an exact ``hessian.fro2`` (None when that is an estimate)."""
    f = ctx.get("hessian.fro2")
    if f.kind != "exact":
        return None
    p = ctx.subject.num_params
    lo, hi = f.lower / p * (1 - 2 * U), f.upper / p * (1 + 2 * U)
    return Estimate(min(max(f.value / p, lo), hi), lo, hi, "exact",
                    f"tr H² / P, ‖H‖_F² by its {f.details.get('route', 'exact')} route",
                    details=dict(f.details))


def exact_variance(ctx: Context) -> Estimate | None:
    """s² = ‖H‖_F²/P − m² by interval arithmetic when ‖H‖_F² and tr H are both exact (None
    otherwise). m² is taken over the whole interval of m; the rounding of the two terms is
    covered by a relative 4u each. The cancellation is harmless unless s² ≪ m², and then
    only widens the interval."""
    f = ctx.get("hessian.fro2")
    if f.kind != "exact":
        return None
    t = ctx.get("hessian.trace")
    if t.kind != "exact":
        return None
    p = ctx.subject.num_params
    m_lo, m_hi = t.lower / p, t.upper / p
    sq_hi = max(m_lo * m_lo, m_hi * m_hi) * (1 + 4 * U)
    sq_lo = 0.0 if m_lo <= 0.0 <= m_hi else min(m_lo * m_lo, m_hi * m_hi) * (1 - 4 * U)
    lower = f.lower / p * (1 - 4 * U) - sq_hi
    upper = f.upper / p * (1 + 4 * U) - sq_lo
    # + an absolute ETA per operation: divisions and squares may underflow (a subnormal or 0
    # where the true value is ~1e-400, found by `boundcheck falsify hessian.ws_lambda_min`)
    lower = lower - 4 * U * abs(lower) - 8 * ETA
    upper = upper + 4 * U * abs(upper) + 8 * ETA
    value = f.value / p - (t.value / p) ** 2
    est = Estimate(min(max(value, lower), upper), lower, upper, "exact",
                   "‖H‖_F²/P − (tr H/P)², both exact; interval arithmetic",
                   details={"fro2": f.to_dict(), "trace": t.to_dict()})
    return est.clamp_below(0.0)
