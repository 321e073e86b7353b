"""Quantities of the compression theorems T3–T8 that combine the per-layer primitives of
:mod:`.jacobian`, :mod:`.weights` and :mod:`.data_geometry` (THEOREMS.md).

The per-layer terms are sympy expressions in :mod:`boundcheck.core.formulas.layer_forms`
(proved in :mod:`derivations`); here
they are interval-evaluated (:func:`boundcheck.core.intervals.evaluate`, outward rounding) over each
dense layer's estimates and combined: a maximum for the "at every dense layer" forms, a sum for
network-wide right sides. Weight-shared layers are left out (their reason is recorded in
``details["excluded"]``); a layer whose left side is exactly 0 (ratio forms) or −∞ (log forms)
satisfies its inequality trivially and counts as 0 / −∞.

Names:
  ``loss.mse_scale``                 c of ``ℓ = (c/2)‖z − y‖²``, read from the loss (MSE only)
  ``sharpness.residual_tolerance``   τ = ``Budget.residual_rel_tol``: the sharpness (tr H)
                                     forms need the measured |tr R| ≤ τ tr G
  ``compression.input_gradient_layers_ratio``      max over dense l of
        [max_i ‖J_{h,l}‖_2 ‖h_{l−1}‖ / ‖∇_{W_l} f‖_F] / ‖W_l‖_2          (T3 layer form, ≤ 1)
  ``compression.input_gradient_layers_ratio_fro``  the same with ‖J_{h,l}‖_F
  ``compression.mls_layers_ratio``   max over dense l of MLS_l / (‖W_l‖_2 √(mean ‖h‖⁻²)
                                     √(tr G_l / c))                      (T4 layer form, ≤ 1)
  ``compression.lvr_layers_gap``     max over dense l of mean log LVR_l − (r_l/2)
                                     log(‖W_l‖² (tr G_l/c)/(r_l GM‖h‖²))  (T6 layer form, ≤ 0)
  ``compression.nvr_bound``          Σ_l (r_l/2) log(‖W_l‖² (tr G_l/c)/(r_l GM‖h_{l−1}‖²))  (T7)
  ``compression.nvr_constant``       Σ_l (r_l/2) log(‖W_l‖² / (r_l GM‖h_{l−1}‖²))
  ``compression.nvr_rank_sum``       R = Σ_l r_l
  ``relative_flatness.mls_ratio``    max over dense l of (1/n)Σ ‖h‖² MLS_l² / (κ^G(W_l)/c)  (T8)
  ``relative_flatness.kappa_sum``    Σ over dense l of κ^G_Tr(W_l)
  ``lvr.finite_perturbation``        mean finite-perturbation log LVR (engines.lvr)
  ``compression.mls_centered``       (1/n)Σ σ_max(P J_x), P = I − 11ᵀ/K (the part of J_x a
                                     shift-invariant loss such as cross-entropy sees)
  ``compression.layer.<l>.mls_centered``, ``compression.nmls_centered``  the same per layer,
                                     and summed over the dense layers
  ``loss.output_curvature_floor``    a = min_i λ_min(A_i on 1^⊥), for losses with A_i 1 = 0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import sympy
import torch

from boundcheck.core import intervals
from boundcheck.core.estimate import Estimate, combine_kind
from boundcheck.core.formulas import layer_forms as lf
from boundcheck.core.subject import Subject
from boundcheck.quantities.data_geometry import structure
from boundcheck.quantities.registry import Context, NotApplicableError, quantity

LAYER = "<l>"


@dataclass(frozen=True)
class LayerTerm:
    index: int
    value: float
    lower: float
    upper: float
    used: tuple[Estimate, ...]
    note: str = ""


def dense_layers(ctx: Context) -> tuple[list[int], dict[str, str]]:
    """Indices of the dense layers, and the reason each other layer is left out."""
    layers = structure(ctx).layers
    excluded = {str(la.index): f"{la.name}: {la.reason}" for la in layers if not la.dense}
    dense = [la.index for la in layers if la.dense]
    if not dense:
        why = "; ".join(f"layer {k} ({v})" for k, v in excluded.items()) or "no affine layers"
        raise NotApplicableError(f"the network has no dense layer ({why})")
    return dense, excluded


def _bind(ctx: Context, binding: Mapping[sympy.Symbol, str], index: int
          ) -> dict[sympy.Symbol, Estimate]:
    return {s: ctx.get(name.replace(LAYER, str(index))) for s, name in binding.items()}


def layer_term(expr: sympy.Expr, values: Mapping[sympy.Symbol, Estimate], index: int,
               trivial: sympy.Symbol | None = None, trivial_value: float = 0.0) -> LayerTerm:
    """Enclose ``expr`` at one layer; ``trivial``: the left-side symbol whose value 0 (ratio
    forms) or −∞ (log forms), when exact, makes the layer's inequality hold trivially."""
    used = tuple(values.values())
    if trivial is not None and values[trivial].upper == trivial_value:
        return LayerTerm(index, trivial_value, trivial_value, trivial_value, used,
                         "left side exactly " + ("0" if trivial_value == 0 else "−∞")
                         + ": holds trivially")
    bounds = {s: (e.lower, e.upper) for s, e in values.items()}
    try:
        lo, hi = intervals.evaluate(expr, bounds)
        note = ""
    except intervals.IntervalDomainError as err:
        lo, hi, note = -math.inf, math.inf, f"undefined on the measured intervals: {err}"
    point = intervals.point_value(expr, {s: e.value for s, e in values.items()})
    if math.isnan(point):
        point = lo if math.isfinite(lo) else hi
    return LayerTerm(index, min(max(point, lo), hi), lo, hi, used, note)


def max_over_dense_layers(ctx: Context, expr: sympy.Expr, binding: Mapping[sympy.Symbol, str],
                          method: str, trivial: sympy.Symbol | None = None,
                          trivial_value: float = 0.0) -> Estimate:
    """max over the dense layers l of ``expr`` (symbols bound per layer by ``binding``)."""
    dense, excluded = dense_layers(ctx)
    terms = [layer_term(expr, _bind(ctx, binding, index), index, trivial, trivial_value)
             for index in dense]
    kind, confidence = combine_kind([e for t in terms for e in t.used])
    worst = max(terms, key=lambda t: t.upper)
    details = {"layers": {str(t.index): {"value": t.value, "lower": t.lower, "upper": t.upper,
                                         **({"note": t.note} if t.note else {})}
                          for t in terms},
               "worst_layer": worst.index, "excluded": excluded}
    return Estimate(max(t.value for t in terms), max(t.lower for t in terms),
                    max(t.upper for t in terms), kind, method, confidence, details)


def sum_over_dense_layers(ctx: Context, expr: sympy.Expr, binding: Mapping[sympy.Symbol, str],
                          method: str) -> Estimate:
    """Σ over the dense layers of ``expr``, enclosed as one expression (outward rounding)."""
    dense, excluded = dense_layers(ctx)
    total, bounds, points, used = sympy.Integer(0), {}, {}, []
    for index in dense:
        values = _bind(ctx, binding, index)
        rename = {s: sympy.Symbol(f"{s.name}__{index}", **s.assumptions0) for s in values}
        total += expr.xreplace(rename)
        for s, e in values.items():
            bounds[rename[s]] = (e.lower, e.upper)
            points[rename[s]] = e.value
            used.append(e)
    lo, hi = intervals.evaluate(total, bounds)
    value = intervals.point_value(total, points)
    if math.isnan(value):
        value = lo if math.isfinite(lo) else hi
    kind, confidence = combine_kind(used)
    return Estimate(min(max(value, lo), hi), lo, hi, kind, method, confidence,
                    {"layers": dense, "excluded": excluded})


# -- loss and tolerance -------------------------------------------------------------------
@quantity("loss.mse_scale", "c of the MSE loss ℓ = (c/2)‖z − y‖² (A_i = c·I)", "c")
def _mse_scale(ctx: Context) -> Estimate:
    loss = getattr(ctx.subject, "loss_fn", None)
    if loss is None or loss.kind != "mse":
        kind = getattr(loss, "description", None) or "no loss"
        raise NotApplicableError(
            f"the loss is {kind}, not MSE: the bound's tr G / c needs A_i = c·I (for "
            "cross-entropy A_i = diag(p) − ppᵀ is singular, so tr G bounds no ‖J_i‖_F²; "
            "the centred forms compression.mls_cross_entropy / nmls_cross_entropy apply)")
    return Estimate.exact(loss.mse_scale, 0.0, "read from the loss")


@quantity("sharpness.residual_tolerance",
          "τ: the sharpness (tr H) forms need |tr R| ≤ τ tr G (Budget.residual_rel_tol)",
          r"\tau")
def _residual_tolerance(ctx: Context) -> Estimate:
    return Estimate.exact(ctx.budget.residual_rel_tol, 0.0, "Budget.residual_rel_tol")


# -- per-layer maxima ---------------------------------------------------------------------
def _layers_ratio(ctx: Context, frobenius: bool) -> Estimate:
    binding = lf.INPUT_GRADIENT_BINDING_F if frobenius else lf.INPUT_GRADIENT_BINDING_2
    return max_over_dense_layers(ctx, lf.INPUT_GRADIENT_LAYER_RATIO, binding,
                                 "max over dense layers of the T3 ratio / ‖W_l‖_2",
                                 trivial=lf.rho_l)


@quantity("compression.input_gradient_layers_ratio",
          "max over dense l, samples i of ‖J_{h,l}‖_2 ‖h_{l-1}‖ / (‖W_l‖_2 ‖∇_{W_l} f‖_F)",
          r"\max_{l,i} \frac{\|J_{h,l}\|_2 \|h_{l-1}\|}{\|W_l\|_2 \|\nabla_{W_l} f\|_F}")
def _input_gradient_layers(ctx: Context) -> Estimate:
    return _layers_ratio(ctx, frobenius=False)


@quantity("compression.input_gradient_layers_ratio_fro",
          "max over dense l, samples i of ‖J_{h,l}‖_F ‖h_{l-1}‖ / (‖W_l‖_2 ‖∇_{W_l} f‖_F)",
          r"\max_{l,i} \frac{\|J_{h,l}\|_F \|h_{l-1}\|}{\|W_l\|_2 \|\nabla_{W_l} f\|_F}")
def _input_gradient_layers_fro(ctx: Context) -> Estimate:
    return _layers_ratio(ctx, frobenius=True)


@quantity("compression.mls_layers_ratio",
          "max over dense l of MLS_l / (‖W_l‖_2 √((1/n)Σ‖h_{l-1}‖⁻²) √(tr G_l / c))",
          r"\max_l \mathrm{MLS}_l / \mathrm{bound}_l")
def _mls_layers_ratio(ctx: Context) -> Estimate:
    return max_over_dense_layers(ctx, lf.MLS_LAYER_RATIO, lf.MLS_LAYER_BINDING,
                                 "max over dense layers of MLS_l / its T4 bound",
                                 trivial=lf.mls_l)


@quantity("compression.lvr_layers_gap",
          "max over dense l of (1/n)Σ log LVR_l − (r_l/2) log(‖W_l‖² (tr G_l/c)/(r_l GM‖h‖²))",
          r"\max_l (\overline{\log \mathrm{LVR}_l} - \mathrm{bound}_l)")
def _lvr_layers_gap(ctx: Context) -> Estimate:
    return max_over_dense_layers(ctx, lf.LVR_LAYER_GAP, lf.LVR_LAYER_BINDING,
                                 "max over dense layers of mean log LVR_l − its T6 bound",
                                 trivial=lf.log_lvr_l, trivial_value=-math.inf)


@quantity("relative_flatness.mls_ratio",
          "max over dense l of (1/n)Σ_i ‖h_{l-1}‖² MLS_l(x_i)² / (κ^G_Tr(W_l) / c)",
          r"\max_l \frac{c\,\overline{\|h\|^2 \mathrm{MLS}_l^2}}{\kappa^G_{\mathrm{Tr}}(W_l)}")
def _relative_flatness_ratio(ctx: Context) -> Estimate:
    return max_over_dense_layers(ctx, lf.FLATNESS_LAYER_RATIO, lf.FLATNESS_LAYER_BINDING,
                                 "max over dense layers of (1/n)Σ‖h‖²MLS_l² / (κ^G/c)",
                                 trivial=lf.weighted_mls_sq)


# -- network-wide sums (T7) ---------------------------------------------------------------
@quantity("compression.nvr_bound",
          "Σ_{dense l} (r_l/2) log(‖W_l‖_2² (tr G_l / c) / (r_l GM_i ‖h_{l-1}(x_i)‖²))",
          r"\sum_l \frac{r_l}{2} \log \frac{\|W_l\|_2^2 \operatorname{tr}G_l/c}"
          r"{r_l \mathrm{GM}\|h_{l-1}\|^2}")
def _nvr_bound(ctx: Context) -> Estimate:
    binding = {s: q for s, q in lf.LVR_LAYER_BINDING.items() if s != lf.log_lvr_l}
    return sum_over_dense_layers(ctx, lf.LVR_LAYER_BOUND, binding,
                                 "Σ over dense layers of the T6 layer bound (sympy, intervals)")


@quantity("compression.nvr_constant",
          "Σ_{dense l} (r_l/2) log(‖W_l‖_2² / (r_l GM_i ‖h_{l-1}(x_i)‖²))",
          r"\sum_l \frac{r_l}{2} \log \frac{\|W_l\|_2^2}{r_l \mathrm{GM}\|h_{l-1}\|^2}")
def _nvr_constant(ctx: Context) -> Estimate:
    return sum_over_dense_layers(ctx, lf.NVR_LAYER_CONSTANT, lf.NVR_CONSTANT_BINDING,
                                 "Σ over dense layers (sympy, intervals)")


@quantity("compression.nvr_rank_sum", "R = Σ_{dense l} r_l, r_l = min(K, dim h_{l-1})",
          r"\sum_l r_l")
def _nvr_rank_sum(ctx: Context) -> Estimate:
    dense, _ = dense_layers(ctx)
    return Estimate.integer(int(sum(ctx.get(f"layer.{i}.r").value for i in dense)), "count")


# -- finite-perturbation LVR --------------------------------------------------------------
@quantity("lvr.finite_perturbation",
          "(1/n) Σ_i log LVR_ε(x_i): Gaussian input noise of scale ε = Budget.lvr_noise_scale, "
          "log-det of output vs projected input covariance (Monte Carlo)",
          r"\overline{\log \mathrm{LVR}_\varepsilon}")
def _finite_lvr(ctx: Context) -> Estimate:
    from boundcheck.core.subject import Subject
    from boundcheck.engines.lvr import finite_log_lvr_mean
    from boundcheck.quantities.data_geometry import samples

    if not isinstance(ctx.subject, Subject):
        raise NotApplicableError("the finite-perturbation LVR needs a network and its inputs")
    return finite_log_lvr_mean(ctx.subject.net, samples(ctx), ctx.budget.lvr_noise_scale,
                               ctx.confidence, ctx.seed)


@quantity("relative_flatness.kappa_sum",
          "Σ over dense layers l of κ^G_Tr(W_l) (relative flatness of the dense layers)",
          r"\sum_l \kappa^G_{\mathrm{Tr}}(W_l)")
def _kappa_sum(ctx: Context) -> Estimate:
    return sum_over_dense_layers(ctx, lf.kappa, lf.KAPPA_BINDING,
                                 "Σ over dense layers of κ^G_Tr(W_l)")


# -- centred sensitivity and the output-curvature floor (cross-entropy forms of T4, T5) ------
def centring(k: int, dtype, device) -> torch.Tensor:
    """An orthonormal basis Q (K × (K−1)) of 1^⊥: P = I − 11ᵀ/K = Q Qᵀ."""
    ones = torch.ones(k, 1, dtype=dtype, device=device)
    basis = torch.linalg.qr(torch.cat([ones, torch.eye(k, dtype=dtype, device=device)[:, :-1]],
                                      dim=1)).Q
    return basis[:, 1:]


def centred_mls(stats, in_dim: int, u: float, what: str) -> Estimate:
    """(1/n) Σ_i σ_max(P J_i) from the Grams J̃J̃ᵀ: σ_max(PJ)² = λ_max(Qᵀ JJᵀ Q), moved by
    at most ‖J̃J̃ᵀ − JJᵀ‖_F (Weyl) plus eigvalsh's backward error."""
    from boundcheck.quantities.jacobian import gram_error

    gram = stats.gram
    k = gram.shape[1]
    if k < 2:
        raise NotApplicableError("K = 1: the centred output P f is identically 0")
    q = centring(k, gram.dtype, gram.device)
    lam = torch.linalg.eigvalsh(q.T @ gram @ q)[:, -1].clamp_min(0)
    err = gram_error(stats, in_dim, u) + 8 * k * u * torch.linalg.matrix_norm(gram)
    value = lam.sqrt()
    lower = (lam - err).clamp_min(0).sqrt()
    upper = (lam + err).sqrt()
    n = value.numel()
    tail = (n + 2) * u * float(value.mean())
    v = float(value.mean())
    return Estimate(v, max(0.0, float(lower.mean()) - tail), float(upper.mean()) + tail,
                    "exact", f"mean σ_max(P {what}), P = I − 11ᵀ/K, from the Grams J̃J̃ᵀ")


@quantity("compression.mls_centered", "(1/n) Σ_i σ_max(P J_x(x_i)), P = I − 11ᵀ/K",
          r"\overline{\mathrm{MLS}^{\perp}}")
def _mls_centred(ctx: Context) -> Estimate:
    from boundcheck.quantities.data_geometry import samples, u_of
    from boundcheck.quantities.jacobian import input_jacobian_stats

    return centred_mls(input_jacobian_stats(ctx), samples(ctx)[0].numel(), u_of(ctx), "J_x")


@quantity("compression.layer.<l>.mls_centered",
          "(1/n) Σ_i σ_max(P J_{h,<l>}(x_i)), P = I − 11ᵀ/K",
          r"\overline{\mathrm{MLS}^{\perp}_{<l>}}")
def _layer_mls_centred(ctx: Context, index: int) -> Estimate:
    from boundcheck.quantities.data_geometry import single_input_layer, u_of
    from boundcheck.quantities.jacobian import layer_jacobian_stats

    return centred_mls(layer_jacobian_stats(ctx, index), single_input_layer(ctx, index).input_dim,
                       u_of(ctx), f"J_h,{index}")


@quantity("compression.nmls_centered", "Σ over dense l of (1/n) Σ_i σ_max(P J_{h,l}(x_i))",
          r"\mathrm{NMLS}^{\perp}")
def _nmls_centred(ctx: Context) -> Estimate:
    m = sympy.Symbol("m", nonnegative=True)
    return sum_over_dense_layers(ctx, m, {m: "compression.layer.<l>.mls_centered"},
                                 "Σ over dense layers of the centred MLS_l")


@quantity("loss.output_curvature_floor",
          "a = min_i λ_min(A_i on 1^⊥): the smallest curvature of the loss in the output "
          "directions that change it (A_i 1 = 0, e.g. cross-entropy)", "a")
def _curvature_floor(ctx: Context) -> Estimate:
    from boundcheck.quantities.data_geometry import u_of
    from boundcheck.quantities.jacobian import output_hessians

    if not isinstance(ctx.subject, Subject):
        raise NotApplicableError("needs a network, data and a loss")
    a, err = output_hessians(ctx)
    k = a.shape[1]
    if k < 2:
        raise NotApplicableError("K = 1: 1^⊥ is {0}")
    leak = torch.linalg.vector_norm(a.sum(2), dim=1)  # ‖A_i 1‖
    scale = torch.linalg.matrix_norm(a)
    if bool((leak > err * math.sqrt(k) + 64 * k * u_of(ctx) * scale).any()):
        raise NotApplicableError(
            f"the loss ({getattr(ctx.subject.loss_fn, 'description', '?')}) has A_i 1 ≠ 0: the "
            "centred forms need a loss invariant to adding a constant to every output "
            "(cross-entropy); for MSE use the tr G / c forms")
    q = centring(k, a.dtype, a.device)
    lam = torch.linalg.eigvalsh(q.T @ a @ q)[:, 0]
    i = int(torch.argmin(lam))
    slop = err + 8 * k * u_of(ctx) * scale
    lower, upper = float((lam - slop).min()), float(lam[i] + slop[i])
    lower = max(lower, 0.0)  # A_i ⪰ 0
    if ctx.subject.loss_fn.kind == "cross_entropy":  # interlacing: λ_min(A_i on 1^⊥) ≥ min p_i
        lower = max(lower, _min_probability_lower(ctx))
    value = max(float(lam[i]), lower)
    return Estimate(value, lower, max(upper, value), "exact",
                    "min over samples of λ_min(Qᵀ A_i Q), Weyl-bounded; for cross-entropy also "
                    "≥ min_{i,k} p_ik (Cauchy interlacing)")


def _min_probability_lower(ctx: Context) -> float:
    """A lower bound on min_{i,k} softmax(f(x_i))_k from log-softmax (no cancellation)."""
    from boundcheck.quantities.data_geometry import u_of

    lows = []
    for b in ctx.subject.batches:
        with torch.no_grad():
            z = ctx.subject.net(b.x)
        logp = torch.log_softmax(z, dim=1)
        err = 8 * u_of(ctx) * (z.shape[1] + z.abs().amax(dim=1))
        lows.append(float((logp.amin(dim=1) - err).min()))
    return math.exp(min(lows)) * (1 - 4 * u_of(ctx))
