"""Jacobian quantities: input and layer-wise sensitivity (MLS), volume (LVR), dimensionality.

Naming scheme (stable; theorems bind sympy symbols to these names). Layers are numbered
l = 1, 2, … in the order of their first call (:mod:`boundcheck.core.layers`); W_l is layer l's
weight, h_{l−1}(x) its input, ``J_{h,l} = ∂f/∂h_{l−1}``, ``σ_k`` singular values (descending),
``r = min(K, D)``, ``r_l = min(K, dim h_{l−1})``. Every mean is over the n samples. Names with
``<l>`` are indexed families: ``layer.2.mls`` is ``layer.<l>.mls`` for l = 2. Every affine
layer is numbered, dense or weight-shared (conv, token-wise): per-layer quantities are measured
for both, so weight-shared layers can be reported empirically; ``layer.<l>.is_dense`` says
whether T3–T8 apply. J_{h,l} is taken along the path through layer l, ``(∂f/∂z_l) W_l``:
the total derivative ∂f/∂h_{l−1} exactly when h_{l−1} enters f only through layer l, which
``is_dense`` includes. ‖∇_W f(x)‖_F² = Σ_k ‖∂f_k(x)/∂W‖_F² sums over all K outputs (as T3/T5).
All estimates are kind "exact" (a float64 rounding allowance), except ``layer.<l>.weight_norm``
of a convolution too large for a dense SVD ("certified" bracket), and what depends on it.

Input Jacobian J_x (this module):
  ``jacobian.r``              r = min(K, D)
  ``jacobian.mls``            (1/n) Σ_i σ_1(J_x(x_i))                         (T4 left side)
  ``jacobian.mls_max``        max_i σ_1(J_x(x_i))                             (T11b lower bound)
  ``jacobian.fro2_mean``      (1/n) Σ_i ‖J_x(x_i)‖_F²                          (T11a)
  ``jacobian.log_lvr``        (1/n) Σ_i Σ_{k≤r} log σ_k(J_x(x_i))  (−∞ if rank-deficient; T6)
  ``jacobian.local_dim``      (1/n) Σ_i (Σ_k σ_k²)² / Σ_k σ_k⁴  (participation ratio)
  ``jacobian.sensitivity_ratio_max``      max_i ‖J_x(x_i)‖_2 ‖x_i‖ / ‖∇_{W_1} f(x_i)‖_F  (T3:
                                          ≤ ‖W_1‖_2 when x enters only through layer 1)
  ``jacobian.sensitivity_ratio_fro_max``  the same with ‖J_x(x_i)‖_F
Per layer (this module):
  ``layer.<l>.is_dense``      1 if layer l is dense (THEOREMS.md convention), else 0
  ``layer.<l>.r``             r_l
  ``layer.<l>.mls``           MLS_l = (1/n) Σ_i σ_1(J_{h,l}(x_i))
  ``layer.<l>.log_lvr``       (1/n) Σ_i Σ_{k≤r_l} log σ_k(J_{h,l}(x_i))
  ``layer.<l>.local_dim``     (1/n) Σ_i participation ratio of J_{h,l}(x_i)
  ``layer.<l>.sensitivity_ratio_max``      max_i σ_1(J_{h,l}) ‖h_{l−1}‖ / ‖∇_{W_l} f‖_F  (T3, T4
                                           layer form: ≤ ‖W_l‖_2 for a dense layer)
  ``layer.<l>.sensitivity_ratio_fro_max``  the same with ‖J_{h,l}‖_F
  ``layer.<l>.weighted_mls_sq``    (1/n) Σ_i ‖h_{l−1}(x_i)‖² σ_1(J_{h,l}(x_i))²  (T8 bound, left)
  ``layer.<l>.weighted_jac_fro2``  (1/n) Σ_i ‖h_{l−1}(x_i)‖² ‖J_{h,l}(x_i)‖_F²  (T8, MSE: κ^G/c)
Network-wide, over the dense layers D (this module):
  ``network.num_layers``, ``network.num_dense_layers``
  ``network.input_through_first_layer``  1 if x reaches f only through the dense layer 1
                              (T3's premise f = g(W_1 x + b)), else 0 (reason in ``method``;
                              also ``boundcheck.core.layers.structure(subject).input_reason``)
  ``network.nmls``            NMLS = Σ_{l∈D} MLS_l                             (T5 left side)
  ``network.nvr``             NVR = Σ_{l∈D} layer.<l>.log_lvr                  (T7 left side)
  ``network.nmls_factor``     (1/n) Σ_i Σ_{l∈D} ‖W_l‖_2² / ‖h_{l−1}(x_i)‖²       (T5 right side)
  ``network.nvr_rhs``         Σ_{l∈D} (r_l/2) log(‖W_l‖_2² ḡ_l / (r_l GM_i ‖h_{l−1}(x_i)‖²)),
                              ḡ_l = layer.<l>.grad_w_fro2 (= tr G_l / c under MSE)  (T7)
Weights (:mod:`.weights`):
  ``layer.<l>.weight_norm``   ‖W_l‖_2 (a convolution: as an operator on its input shape)
  ``network.weight_norm_product``  Π_l ‖W_l‖_2 over all affine layers
  ``layer.<l>.grad_w_fro2``   (1/n) Σ_i ‖∇_{W_l} f(x_i)‖_F², Frobenius over all K outputs
  ``layer.<l>.ggn_trace``     tr G_l = (1/n) Σ_i tr(J_{W_l,i}ᵀ A_i J_{W_l,i})  (weights only)
  ``layer.<l>.kappa_ggn``     κ^G_Tr(W_l) = Σ_{s,s'} ⟨w_s, w_s'⟩ tr(G_{s,s'}) from per-sample
                              weight Jacobians (the definition; any layer)
  ``layer.<l>.kappa_ggn_identity``  (1/n) Σ_i ‖h_{l−1}(x_i)‖² tr(J_{h,l}ᵀ A_i J_{h,l})  (T8)
Data (:mod:`.data_geometry`): ``data.*`` and ``layer.<l>.input_inv_sq_mean``,
``layer.<l>.input_sq_gmean``.

Quantities that divide by ‖h_{l−1}(x_i)‖ raise NotApplicableError when it is 0 (dead layer).
Layer-input quantities need a layer called once per forward pass (else NotApplicableError).
Rounding allowances follow :mod:`boundcheck.engines.jacobians`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from boundcheck.core.estimate import Estimate, combine_kind
from boundcheck.engines import jacobians as jac
from boundcheck.quantities.data_geometry import (
    floor_rel,
    layer,
    layer_input_sq_norms,
    mean_estimate,
    sample_sq_norms,
    samples,
    single_input_layer,
    structure,
    u_of,
)
from boundcheck.quantities.registry import Context, NotApplicableError, quantity


# -- artifacts ----------------------------------------------------------------------------
def input_jacobian_stats(ctx: Context) -> jac.JacobianStats:
    """Per-sample summaries of J_x over all samples."""
    def build() -> jac.JacobianStats:
        s, x = ctx.subject, samples(ctx)

        def compute(start: int, stop: int, mode: str) -> torch.Tensor:
            return jac.input_jacobians(s.net, x[start:stop], s.output_dim, mode)

        def products(start: int, stop: int, v: torch.Tensor, mode: str) -> torch.Tensor:
            return jac.input_products(s.net, x[start:stop], v, mode)

        return jac.jacobian_stats(compute, products, s.n, s.output_dim, x[0].numel(),
                                  floor_rel(ctx), s.dtype, ctx.budget.jacobian_chunk_bytes,
                                  ctx.seed, jac.dead_relu_samples(s.net, x),
                                  ctx.budget.memory_bytes)

    return ctx.artifact("jacobian.input_stats", build)


def layer_jacobian_stats(ctx: Context, index: int) -> jac.JacobianStats:
    """Per-sample summaries of J_{h,l} over all samples."""
    lay = single_input_layer(ctx, index)

    def build() -> jac.JacobianStats:
        s, x = ctx.subject, samples(ctx)

        def inputs(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            xs = x[start:stop]
            return xs, jac.capture_inputs(s.net, [lay.module], xs)[lay.module]

        def compute(start: int, stop: int, mode: str) -> torch.Tensor:
            return jac.layer_input_jacobians(s.net, lay.module, *inputs(start, stop),
                                             s.output_dim, mode)

        def products(start: int, stop: int, v: torch.Tensor, mode: str) -> torch.Tensor:
            return jac.layer_input_products(s.net, lay.module, *inputs(start, stop), v, mode)

        return jac.jacobian_stats(compute, products, s.n, s.output_dim, lay.input_dim,
                                  floor_rel(ctx), s.dtype, ctx.budget.jacobian_chunk_bytes,
                                  ctx.seed, jac.dead_relu_samples(s.net, x, lay.module),
                                  ctx.budget.memory_bytes)

    return ctx.artifact(f"jacobian.layer.{index}.stats", build)


def weight_stats(ctx: Context, index: int) -> jac.WeightStats:
    """Per-sample weight-Jacobian summaries of layer l: for all dense layers at once (what
    T3–T8 need, one Jacobian pass), a weight-shared layer on its own when asked for. Not
    every layer at once: on ResNet-18 the per-sample Jacobians and κ Grams of its 20
    convolutions (K·rows²·cols per sample and layer) ran for over an hour on a CPU when
    only the dense head was needed."""
    lay = layer(ctx, index)
    if not lay.weight_name:
        raise NotApplicableError(f"layer {index} ({lay.name}): its weight is not a parameter "
                                 "of the model (parametrized weights are not supported)")
    group = [la for la in structure(ctx).layers if la.weight_name and la.dense]
    if not lay.dense:
        group = [lay]

    def build() -> dict[str, jac.WeightStats]:
        s = ctx.subject
        params = dict(s.net.named_parameters())
        names = [la.weight_name for la in group]
        weights = {name: params[name].detach() for name in dict.fromkeys(names)}
        return jac.weight_stats(s.net, weights, samples(ctx), floor_rel(ctx),
                                ctx.budget.jacobian_chunk_bytes, ctx.budget.memory_bytes)

    key = "jacobian.weight_stats" + ("" if lay.dense else f":{lay.weight_name}")
    return ctx.artifact(key, build)[lay.weight_name]


def output_hessians(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``A_i = ∇²_z ℓ(f(x_i), y_i)``: (n, K, K), and a bound on each ‖Ã_i − A_i‖_F."""
    def build() -> tuple[torch.Tensor, torch.Tensor]:
        s = ctx.subject
        parts = []
        for b in s.batches:
            with torch.no_grad():
                z = s.net(b.x)
            parts.append(s.loss_fn.output_hessian(z, b.y))
        a = torch.cat(parts)
        a = 0.5 * (a + a.transpose(1, 2))
        err = 16 * s.output_dim * u_of(ctx) * torch.linalg.matrix_norm(a)
        return a, err

    return ctx.artifact("jacobian.output_hessians", build)


def trace_against(a: torch.Tensor, a_err: torch.Tensor, gram: torch.Tensor,
                  gram_err: torch.Tensor, u: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``tr(A_i M_i)`` and a bound on its error, given ‖ΔA_i‖_F and ‖ΔM_i‖_F."""
    values = (a * gram).sum((1, 2))
    a_fro, m_fro = torch.linalg.matrix_norm(a), torch.linalg.matrix_norm(gram)
    k = a.shape[1]
    err = a_fro * gram_err + a_err * m_fro + a_err * gram_err + (k * k + 2) * u * a_fro * m_fro
    return values, err


def gram_error(stats: jac.JacobianStats, in_dim: int, u: float) -> torch.Tensor:
    """Bound on ‖J̃J̃ᵀ − JJᵀ‖_F from ‖ΔJ‖_F and the product's rounding."""
    return 2 * stats.fro * stats.err + stats.err ** 2 + (in_dim + 2) * u * stats.fro ** 2


# -- estimates from per-sample singular values --------------------------------------------
def mls_estimate(stats: jac.JacobianStats, u: float, what: str) -> Estimate:
    return mean_estimate(stats.svals[:, 0], stats.sval_err, u, f"mean σ_1({what}), batched svdvals")


def log_lvr_estimate(stats: jac.JacobianStats, u: float, what: str) -> Estimate:
    """Mean of Σ_k log σ_k: −∞ for samples where some σ̃_k is within its error of 0."""
    s, e = stats.svals, stats.sval_err[:, None]
    r = s.shape[1]
    neg_inf = torch.tensor(-math.inf, dtype=s.dtype, device=s.device)
    deficient = (s <= e).any(1)
    logs = torch.where(s > 0, torch.log(s.clamp_min(torch.finfo(s.dtype).tiny)), neg_inf)
    value_i = torch.where(deficient, neg_inf, logs.sum(1))
    lo = s - e
    lower_i = torch.where(lo > 0, torch.log(lo.clamp_min(torch.finfo(s.dtype).tiny)),
                          neg_inf).sum(1)
    hi = s + e
    upper_i = torch.where(hi > 0, torch.log(hi.clamp_min(torch.finfo(s.dtype).tiny)),
                          neg_inf).sum(1)
    finite_abs = torch.where(torch.isfinite(logs), logs.abs(), torch.zeros_like(logs)).sum(1)
    n = s.shape[0]
    slop = float(((r + 2) * u * finite_abs).mean()) + (n + 2) * u * float(finite_abs.mean())
    value, lower, upper = float(value_i.mean()), float(lower_i.mean()), float(upper_i.mean())
    lower = lower - slop if math.isfinite(lower) else lower
    upper = upper + slop if math.isfinite(upper) else upper
    count = int(deficient.sum())
    return Estimate(value, min(lower, value), max(upper, value), "exact",
                    f"mean Σ_k log σ_k({what}), batched svdvals",
                    details={"rank_deficient_samples": count})


def local_dim_estimate(stats: jac.JacobianStats, u: float, what: str) -> Estimate:
    """Mean participation ratio (Σσ²)²/Σσ⁴, enclosed from the singular-value intervals."""
    s, e = stats.svals, stats.sval_err[:, None]
    r = s.shape[1]
    zero = int((s[:, 0] == 0).sum())
    if zero:
        raise NotApplicableError(f"{what} is the zero matrix for {zero} samples: local "
                                 "dimensionality (Σσ²)²/Σσ⁴ is undefined")
    s2, s4 = (s ** 2).sum(1), (s ** 4).sum(1)
    pr = s2 ** 2 / s4
    lo_s, hi_s = (s - e).clamp_min(0), s + e
    pr_lo = (lo_s ** 2).sum(1) ** 2 / (hi_s ** 4).sum(1)
    hi4 = (lo_s ** 4).sum(1)
    pr_hi = torch.where(hi4 > 0, (hi_s ** 2).sum(1) ** 2 / hi4.clamp_min(1e-300),
                        torch.full_like(pr, float(r)))
    slack = 8 * (r + 2) * u * pr
    pr_lo = (pr_lo - slack).clamp(1.0, float(r))
    pr_hi = (pr_hi + slack).clamp(1.0, float(r))
    pr = pr.clamp(1.0, float(r))
    n = s.shape[0]
    tail = (n + 2) * u * float(pr.mean())
    value = float(pr.mean())
    return Estimate(value, float(pr_lo.mean()) - tail, float(pr_hi.mean()) + tail, "exact",
                    f"mean participation ratio of σ({what})")


def sensitivity_ratio(stats: jac.JacobianStats, sq_norms: torch.Tensor, rel_norm: float,
                      w: jac.WeightStats, u: float, frobenius: bool, what: str) -> Estimate:
    """max_i ‖J_i‖ ‖h_i‖ / ‖∇_W f(x_i)‖_F, enclosed; 0/0 counts as 0, a/0 (a > 0) as ∞."""
    zero = int((sq_norms == 0).sum())
    if zero:
        raise NotApplicableError(f"the input of {what} is zero for {zero} samples (dead ReLU "
                                 "layer?): the sensitivity ratio is undefined")
    jn = stats.fro if frobenius else stats.svals[:, 0]
    je = stats.err if frobenius else stats.sval_err
    hn = sq_norms.sqrt()
    gn = w.fro2.sqrt()
    num, num_lo, num_hi = jn * hn, (jn - je).clamp_min(0) * hn * (1 - rel_norm), \
        (jn + je) * hn * (1 + rel_norm)
    den_lo, den_hi = (gn - w.err).clamp_min(0), gn + w.err
    inf = torch.full_like(num, math.inf)

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(a == 0, torch.zeros_like(a),
                           torch.where(b > 0, a / b.clamp_min(1e-300), inf))

    value = float(ratio(num, gn).max())
    lower = float(ratio(num_lo, den_hi).max()) * (1 - 4 * u)
    upper = float(ratio(num_hi, den_lo).max()) * (1 + 4 * u)
    return Estimate(value, min(lower, value), max(upper, value), "exact",
                    f"max over samples, {what}")


def weighted_mean(stats_values: torch.Tensor, stats_err: torch.Tensor, sq_norms: torch.Tensor,
                  rel_norm: float, u: float, method: str) -> Estimate:
    """(1/n) Σ ‖h_i‖² v_i with v_i ≥ 0 known to ± stats_err."""
    values = sq_norms * stats_values
    err = sq_norms * stats_err + rel_norm * values
    return mean_estimate(values, err, u, method)


def norm_rel(ctx: Context, index: int) -> float:
    """Relative error of ‖h_{l−1}‖² (upstream rounding plus the sum of squares)."""
    return 2.5 * floor_rel(ctx) + (single_input_layer(ctx, index).input_dim + 4) * u_of(ctx)


# -- input Jacobian -----------------------------------------------------------------------
@quantity("jacobian.r", "r = min(K, D), the number of singular values of J_x", "r")
def _r(ctx: Context) -> Estimate:
    return Estimate.integer(min(ctx.subject.output_dim, samples(ctx)[0].numel()), "count")


@quantity("jacobian.mls", "MLS = (1/n) Σ_i σ_max(J_x(x_i))", r"\mathrm{MLS}")
def _mls(ctx: Context) -> Estimate:
    return mls_estimate(input_jacobian_stats(ctx), u_of(ctx), "J_x")


@quantity("jacobian.mls_max", "max_i σ_max(J_x(x_i))", r"\max_i \|J_x(x_i)\|_2")
def _mls_max(ctx: Context) -> Estimate:
    st = input_jacobian_stats(ctx)
    s1 = st.svals[:, 0]
    i = int(torch.argmax(s1))
    hi = float((s1 + st.sval_err).max())
    lo = max(0.0, float(s1[i] - st.sval_err[i]))
    return Estimate(float(s1[i]), lo, hi, "exact", "max of per-sample σ_1(J_x)")


@quantity("jacobian.fro2_mean", "(1/n) Σ_i ‖J_x(x_i)‖_F²", r"\overline{\|J_x\|_F^2}")
def _fro2_mean(ctx: Context) -> Estimate:
    st = input_jacobian_stats(ctx)
    return mean_estimate(st.fro ** 2, 2 * st.fro * st.err + st.err ** 2, u_of(ctx),
                         "mean ‖J_x‖_F²")


@quantity("jacobian.log_lvr", "(1/n) Σ_i Σ_{k≤r} log σ_k(J_x(x_i)) (−∞ when rank-deficient)",
          r"\overline{\log \mathrm{LVR}}")
def _log_lvr(ctx: Context) -> Estimate:
    return log_lvr_estimate(input_jacobian_stats(ctx), u_of(ctx), "J_x")


@quantity("jacobian.local_dim", "(1/n) Σ_i (Σ_k σ_k²)² / Σ_k σ_k⁴ of J_x(x_i)",
          r"\overline{D_{\mathrm{loc}}}")
def _local_dim(ctx: Context) -> Estimate:
    return local_dim_estimate(input_jacobian_stats(ctx), u_of(ctx), "J_x")


def _input_ratio(ctx: Context, frobenius: bool) -> Estimate:
    return sensitivity_ratio(input_jacobian_stats(ctx), sample_sq_norms(ctx),
                             (samples(ctx)[0].numel() + 4) * u_of(ctx), weight_stats(ctx, 1),
                             u_of(ctx), frobenius, "‖J_x‖‖x‖/‖∇_{W_1} f‖_F")


@quantity("jacobian.sensitivity_ratio_max", "max_i ‖J_x(x_i)‖_2 ‖x_i‖ / ‖∇_{W_1} f(x_i)‖_F",
          r"\max_i \frac{\|J_x\|_2 \|x_i\|}{\|\nabla_{W_1} f\|_F}")
def _input_ratio_2(ctx: Context) -> Estimate:
    return _input_ratio(ctx, frobenius=False)


@quantity("jacobian.sensitivity_ratio_fro_max",
          "max_i ‖J_x(x_i)‖_F ‖x_i‖ / ‖∇_{W_1} f(x_i)‖_F",
          r"\max_i \frac{\|J_x\|_F \|x_i\|}{\|\nabla_{W_1} f\|_F}")
def _input_ratio_f(ctx: Context) -> Estimate:
    return _input_ratio(ctx, frobenius=True)


# -- per layer ----------------------------------------------------------------------------
@quantity("layer.<l>.is_dense", "1 if layer <l> is dense (T3–T8 apply to it), else 0",
          r"\mathbb{1}_{\mathrm{dense}}(<l>)")
def _is_dense(ctx: Context, index: int) -> Estimate:
    lay = layer(ctx, index)
    return Estimate.integer(int(lay.dense), lay.reason or "dense layer")


@quantity("layer.<l>.r", "r_<l> = min(K, dim h_{<l>-1})", "r_{<l>}")
def _layer_r(ctx: Context, index: int) -> Estimate:
    lay = single_input_layer(ctx, index)
    return Estimate.integer(min(ctx.subject.output_dim, lay.input_dim), "count")


@quantity("layer.<l>.mls", "MLS_<l> = (1/n) Σ_i σ_max(J_{h,<l>}(x_i))", r"\mathrm{MLS}_{<l>}")
def _layer_mls(ctx: Context, index: int) -> Estimate:
    return mls_estimate(layer_jacobian_stats(ctx, index), u_of(ctx), f"J_h,{index}")


@quantity("layer.<l>.log_lvr", "(1/n) Σ_i Σ_{k≤r_<l>} log σ_k(J_{h,<l>}(x_i))",
          r"\overline{\log \mathrm{LVR}_{<l>}}")
def _layer_log_lvr(ctx: Context, index: int) -> Estimate:
    return log_lvr_estimate(layer_jacobian_stats(ctx, index), u_of(ctx), f"J_h,{index}")


@quantity("layer.<l>.local_dim", "(1/n) Σ_i participation ratio of J_{h,<l>}(x_i)",
          r"\overline{D_{\mathrm{loc},<l>}}")
def _layer_local_dim(ctx: Context, index: int) -> Estimate:
    return local_dim_estimate(layer_jacobian_stats(ctx, index), u_of(ctx), f"J_h,{index}")


def _layer_ratio(ctx: Context, index: int, frobenius: bool) -> Estimate:
    return sensitivity_ratio(layer_jacobian_stats(ctx, index), layer_input_sq_norms(ctx, index),
                             norm_rel(ctx, index), weight_stats(ctx, index), u_of(ctx),
                             frobenius, f"layer {index}")


@quantity("layer.<l>.sensitivity_ratio_max",
          "max_i σ_max(J_{h,<l>}) ‖h_{<l>-1}‖ / ‖∇_{W_<l>} f‖_F",
          r"\max_i \frac{\|J_{h,<l>}\|_2 \|h_{<l>-1}\|}{\|\nabla_{W_{<l>}} f\|_F}")
def _layer_ratio_2(ctx: Context, index: int) -> Estimate:
    return _layer_ratio(ctx, index, frobenius=False)


@quantity("layer.<l>.sensitivity_ratio_fro_max",
          "max_i ‖J_{h,<l>}‖_F ‖h_{<l>-1}‖ / ‖∇_{W_<l>} f‖_F",
          r"\max_i \frac{\|J_{h,<l>}\|_F \|h_{<l>-1}\|}{\|\nabla_{W_{<l>}} f\|_F}")
def _layer_ratio_f(ctx: Context, index: int) -> Estimate:
    return _layer_ratio(ctx, index, frobenius=True)


@quantity("layer.<l>.weighted_mls_sq", "(1/n) Σ_i ‖h_{<l>-1}(x_i)‖² σ_max(J_{h,<l>}(x_i))²",
          r"\overline{\|h_{<l>-1}\|^2 \mathrm{MLS}_{<l>}^2}")
def _weighted_mls_sq(ctx: Context, index: int) -> Estimate:
    st = layer_jacobian_stats(ctx, index)
    s1, e = st.svals[:, 0], st.sval_err
    return weighted_mean(s1 ** 2, 2 * s1 * e + e ** 2, layer_input_sq_norms(ctx, index),
                         norm_rel(ctx, index), u_of(ctx), "mean ‖h‖² σ_1(J_h)²")


@quantity("layer.<l>.weighted_jac_fro2", "(1/n) Σ_i ‖h_{<l>-1}(x_i)‖² ‖J_{h,<l>}(x_i)‖_F²",
          r"\overline{\|h_{<l>-1}\|^2 \|J_{h,<l>}\|_F^2}")
def _weighted_jac_fro2(ctx: Context, index: int) -> Estimate:
    st = layer_jacobian_stats(ctx, index)
    return weighted_mean(st.fro ** 2, 2 * st.fro * st.err + st.err ** 2,
                         layer_input_sq_norms(ctx, index), norm_rel(ctx, index), u_of(ctx),
                         "mean ‖h‖² ‖J_h‖_F²")


# -- network-wide sums over the dense layers ----------------------------------------------
def dense_indices(ctx: Context) -> list[int]:
    idx = [la.index for la in structure(ctx).layers if la.dense]
    if not idx:
        reasons = "; ".join(f"layer {la.index} ({la.name}): {la.reason}"
                            for la in structure(ctx).layers) or "no affine layers"
        raise NotApplicableError(f"the network has no dense layer ({reasons})")
    return idx


def estimate_sum(terms: list[tuple[float, float, float]], used: list[Estimate], method: str,
                 u: float) -> Estimate:
    """Σ of enclosed terms ``(value, lower, upper)``, widened for the additions' rounding."""
    value = sum(t[0] for t in terms)
    lower = sum(t[1] for t in terms)
    upper = sum(t[2] for t in terms)
    slop = (len(terms) + 2) * u * sum(abs(t[0]) for t in terms if math.isfinite(t[0]))
    lower = lower - slop if math.isfinite(lower) else lower
    upper = upper + slop if math.isfinite(upper) else upper
    kind, confidence = combine_kind(used)
    return Estimate(value, min(lower, value), max(upper, value), kind, method, confidence)


def _sum_over_dense(ctx: Context, family: str, method: str,
                    term: Callable[[int], tuple[tuple[float, float, float], list[Estimate]]]
                    | None = None) -> Estimate:
    terms, used = [], []
    for index in dense_indices(ctx):
        if term is None:
            e = ctx.get(family.replace("<l>", str(index)))
            terms.append((e.value, e.lower, e.upper))
            used.append(e)
        else:
            t, es = term(index)
            terms.append(t)
            used.extend(es)
    return estimate_sum(terms, used, method, u_of(ctx))


@quantity("network.num_layers", "number of affine (Linear/Conv) layers L", "L")
def _num_layers(ctx: Context) -> Estimate:
    return Estimate.integer(len(structure(ctx).layers), "hook discovery")


@quantity("network.num_dense_layers", "number of dense layers", r"L_{\mathrm{dense}}")
def _num_dense(ctx: Context) -> Estimate:
    return Estimate.integer(len(structure(ctx).dense_layers), "hook discovery")


@quantity("network.input_through_first_layer",
          "1 if x reaches f only through the dense first layer (T3's f = g(W_1 x + b)), else 0",
          r"\mathbb{1}_{f = g(W_1 x + b)}")
def _input_through_first(ctx: Context) -> Estimate:
    st = structure(ctx)
    return Estimate.integer(int(st.input_only_through_first_layer),
                            st.input_reason or "hook discovery: x enters only through layer 1")


@quantity("network.nmls", "NMLS = (1/n) Σ_i Σ_{dense l} σ_max(J_{h,l}(x_i))", r"\mathrm{NMLS}")
def _nmls(ctx: Context) -> Estimate:
    return _sum_over_dense(ctx, "layer.<l>.mls", "Σ over dense layers of MLS_l")


@quantity("network.nvr", "NVR = (1/n) Σ_i Σ_{dense l} log LVR_l(x_i)", r"\mathrm{NVR}")
def _nvr(ctx: Context) -> Estimate:
    return _sum_over_dense(ctx, "layer.<l>.log_lvr", "Σ over dense layers of mean log LVR_l")


@quantity("network.nmls_factor", "(1/n) Σ_i Σ_{dense l} ‖W_l‖_2² / ‖h_{l-1}(x_i)‖²",
          r"\overline{\sum_l \|W_l\|_2^2 / \|h_{l-1}\|^2}")
def _nmls_factor(ctx: Context) -> Estimate:
    def term(index: int):
        w = ctx.get(f"layer.{index}.weight_norm")
        q = ctx.get(f"layer.{index}.input_inv_sq_mean")
        t = (w.value ** 2 * q.value, w.lower ** 2 * q.lower * (1 - 4 * u_of(ctx)),
             w.upper ** 2 * q.upper * (1 + 4 * u_of(ctx)))
        return t, [w, q]

    return _sum_over_dense(ctx, "", "Σ_l ‖W_l‖² · mean ‖h_{l-1}‖⁻²", term)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


@quantity("network.nvr_rhs",
          "Σ_{dense l} (r_l/2) log(‖W_l‖_2² ḡ_l / (r_l GM_i ‖h_{l-1}(x_i)‖²)), "
          "ḡ_l = (1/n) Σ_i ‖∇_{W_l} f(x_i)‖_F²",
          r"\sum_l \frac{r_l}{2} \log \frac{\|W_l\|_2^2 \bar g_l}{r_l \mathrm{GM}\|h_{l-1}\|^2}")
def _nvr_rhs(ctx: Context) -> Estimate:
    u = u_of(ctx)

    def term(index: int):
        w = ctx.get(f"layer.{index}.weight_norm")
        g = ctx.get(f"layer.{index}.grad_w_fro2")
        gm = ctx.get(f"layer.{index}.input_sq_gmean")
        r = ctx.get(f"layer.{index}.r").value
        half = r / 2

        def side(wv: float, gv: float, gmv: float) -> float:
            return half * (2 * _log(wv) + _log(gv) - math.log(r) - _log(gmv))

        value = side(w.value, g.value, gm.value)
        lower = side(w.lower, g.lower, gm.upper)
        upper = side(w.upper, g.upper, gm.lower)
        slop = 8 * u * half * (abs(2 * _log(w.value)) + abs(_log(g.value)) + math.log(r)
                               + abs(_log(gm.value))) if math.isfinite(value) else 0.0
        if math.isfinite(lower):
            lower -= slop
        if math.isfinite(upper):
            upper += slop
        return (value, lower, upper), [w, g, gm]

    return _sum_over_dense(ctx, "", "Σ_l (r_l/2) log(‖W_l‖² ḡ_l / (r_l GM‖h‖²))", term)
