"""T2 quantities: closed-form tr H and ‖H‖_F² (Tier A), the Wolkowicz–Styan bound built
from them, and the norm-level Tier B bounds — for f(x) = Vσ(Wx+b)+c with cross-entropy
(:mod:`boundcheck.engines.closed_form`) and for L ≥ 2 hidden smooth layers
(:mod:`boundcheck.engines.closed_form_depth`; one hidden layer keeps the one-layer engine).

Each raises :class:`NotApplicableError` (verdict NOT_APPLICABLE, with the reason) on any
other architecture or loss. The bounds are Estimates whose interval comes from interval
evaluation over their inputs' intervals (see :mod:`boundcheck.engines.closed_form`).
"""

from __future__ import annotations

from boundcheck.core import intervals
from boundcheck.core.estimate import Estimate
from boundcheck.engines import closed_form as cf
from boundcheck.engines import closed_form_depth as cd
from boundcheck.quantities.registry import Context, NotAffordableError, NotApplicableError, quantity


def _architecture(ctx: Context) -> cf.TwoLayerNet | cd.DeepNet:
    """The one-hidden-layer reading when it applies, else the depth-L one (or NOT_APPLICABLE
    with the depth-L reader's reason)."""
    def build():
        try:
            return cf.two_layer_net(ctx.subject)
        except cf.ArchitectureMismatch:
            pass
        try:
            return cd.deep_net(ctx.subject)
        except cf.ArchitectureMismatch as err:
            raise NotApplicableError(str(err)) from err

    return ctx.artifact("closed_form.architecture", build)


def _traces(ctx: Context) -> cf.ClosedFormTraces:
    def build() -> cf.ClosedFormTraces:
        net = _architecture(ctx)
        if isinstance(net, cd.DeepNet):
            widths = [w.shape[1] for w in net.weights]
            flops = cd.pair_flops(ctx.subject.n, widths, net.weights[-1].shape[0])
        else:
            k, h = net.V.shape
            flops = cf.pair_flops(ctx.subject.n, net.W.shape[1], h, k)
        if flops > ctx.budget.max_closed_form_flops:
            raise NotAffordableError(
                f"the closed form's n² Gram work (~{flops:.1e} multiply-adds for n = "
                f"{ctx.subject.n}) exceeds max_closed_form_flops = "
                f"{ctx.budget.max_closed_form_flops:.1e}; Lanczos/Hutchinson estimates are "
                "O(n) per product and cheaper here")
        try:
            if isinstance(net, cd.DeepNet):
                return cd.subject_deep_traces(ctx.subject)
            return cf.subject_traces(ctx.subject)
        except cf.ArchitectureMismatch as err:
            raise NotApplicableError(str(err)) from err

    return ctx.artifact("closed_form.traces", build)


@quantity("closed_form.trace", "tr H from T2's closed form (no Hessian)",
          r"\operatorname{tr} H_{\mathrm{cf}}")
def _trace(ctx: Context) -> Estimate:
    t = _traces(ctx)
    return Estimate.exact(t.trace, t.trace_error, "closed form (T2 Tier A), per-sample factors",
                          seconds=t.seconds)


@quantity("closed_form.fro2", "‖H‖_F² from T2's closed form (n×n Gram matrices)",
          r"\|H\|_{F,\mathrm{cf}}^2")
def _fro2(ctx: Context) -> Estimate:
    t = _traces(ctx)
    est = Estimate.exact(t.fro2, t.fro2_error, f"closed form (T2 Tier A), {t.route}-route Gram",
                         seconds=t.seconds)
    return est.clamp_below(0.0)


@quantity("closed_form.depth", "L, the number of hidden layers of a smooth net "
          "f = W_{L+1}σ(…σ(W_1x+b_1)…)+b_{L+1} with cross-entropy (NOT_APPLICABLE with the "
          "reason for any other architecture or loss)", "L")
def _depth(ctx: Context) -> Estimate:
    net = _architecture(ctx)
    depth = net.depth if isinstance(net, cd.DeepNet) else 1
    return Estimate.exact(float(depth), 0.0, "the architecture's hidden layers")


@quantity("closed_form.ws_lambda_max", "Wolkowicz–Styan λ_max bound from the closed-form "
          "traces (T2 Tier A)", r"B_{\mathrm{T2A}}")
def _ws(ctx: Context) -> Estimate:
    from boundcheck.core.formulas import closed_form as cfd

    t, f = ctx.get("closed_form.trace"), ctx.get("closed_form.fro2")
    p = _traces(ctx).num_params
    if p < 2:
        raise NotApplicableError("P = 1: Wolkowicz–Styan needs at least two eigenvalues")
    expr = cfd.WS_RHS.subs(cfd.P, p)
    lo, hi = intervals.evaluate(expr, {cfd.trace_h: (t.lower, t.upper),
                                       cfd.fro2_h: (f.lower, f.upper)})
    value = cf.ws_upper(t.value, f.value, p)
    return Estimate(min(max(value, lo), hi), lo, hi, "exact",
                    "m + s√(P−1) over the closed-form traces (interval evaluation)")


def _tier_b(ctx: Context, saturation: bool) -> Estimate:
    net = _architecture(ctx)
    try:
        if isinstance(net, cd.DeepNet):
            deep = cd.deep_tier_b_ingredients(ctx.subject, saturation)
            value, lo, hi = cd.deep_tier_b_bound(deep)
            details = {name: v[0] for name, v in deep.scalars.items()}
            details.update({f"{name}_{i + 1}": v[0] for name, vs in deep.layers.items()
                            for i, v in enumerate(vs)})
        else:
            ing = cf.tier_b_ingredients(ctx.subject, saturation)
            value, lo, hi = cf.tier_b_bound(ing)
            details = {name: v[0] for name, v in ing.values.items()}
    except cf.ArchitectureMismatch as err:
        raise NotApplicableError(str(err)) from err
    what = "norms and ε = max_i(1 − p_{i,y_i})" if saturation else "norms only"
    return Estimate(value, lo, hi, "exact", f"T2 Tier B ({what}), interval evaluation",
                    details=details)


@quantity("closed_form.tier_b_lambda_max", "T2 Tier B: λ_max bound from n, max‖x‖, ρ and "
          "weight norms", r"B_{\mathrm{T2B}}")
def _tier_b_norms(ctx: Context) -> Estimate:
    return _tier_b(ctx, saturation=False)


@quantity("closed_form.tier_b_sat_lambda_max", "T2 Tier B with the confidence gap "
          "ε = max_i(1 − p_{i,y_i})", r"B_{\mathrm{T2B},\varepsilon}")
def _tier_b_sat(ctx: Context) -> Estimate:
    return _tier_b(ctx, saturation=True)

