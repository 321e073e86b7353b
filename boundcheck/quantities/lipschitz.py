"""Lipschitz quantities (THEOREMS.md T11b, c): the ℓ₂ Lipschitz sandwich of f and the
per-class Kantorovich–Rubinstein gap.

  ``lipschitz.product``         Π_l ‖W_l‖₂ · Π Lip(σ) · Π pool factors over the chain
                                (certified: from ``layer.<l>.weight_norm``, convolutions as
                                operators on their input, exact or a certified bracket)
  ``lipschitz.lipsdp``          √ρ of LipSDP-Neuron, certified from the solver's multipliers
                                (a true upper bound on Lip(f); interval = the point)
  ``lipschitz.upper``           min(lipsdp, product): the certified upper side
  ``lipschitz.jacobian_lower``  max_i ‖J_x(x_i)‖₂ over the samples where f is certainly
                                differentiable (≤ Lip(f) there)
  ``lipschitz.quotient_lower``  best ‖f(a) − f(b)‖/‖a − b‖: sample pairs, then segment search
                                and gradient ascent
  ``lipschitz.lower``           the larger of the two
  ``kr.cross_entropy_ratio_max``  max_k |E_ν g_k − E_μ g_k| / (√2 W_1(μ_k, ν_k)), g_k(x) =
                                ℓ_CE(f(x), k), μ_k/ν_k the train/test inputs of class k

Engines: :mod:`boundcheck.engines.lipschitz`, :mod:`boundcheck.engines.transport`.
"""

from __future__ import annotations

import math

import torch

from boundcheck.core.estimate import Estimate, combine_kind
from boundcheck.core.subject import Subject
from boundcheck.engines import lipschitz as lip
from boundcheck.engines.transport import wasserstein1
from boundcheck.quantities.data_geometry import floor_rel, samples, structure, u_of
from boundcheck.quantities.jacobian import input_jacobian_stats
from boundcheck.quantities.registry import (
    Context,
    NotAffordableError,
    NotApplicableError,
    quantity,
)


def chain_ops(ctx: Context) -> list[lip.Op]:
    if not isinstance(ctx.subject, Subject):
        raise NotApplicableError("Lipschitz bounds need a network subject")
    ops = ctx.artifact("lipschitz.chain", lambda: lip.chain(ctx.subject.net))
    if isinstance(ops, str):
        raise NotApplicableError(ops)
    return ops


@quantity("lipschitz.chain_affine_layers",
          "affine maps in the model's chain (NotApplicable, with the reason, off a chain)",
          r"L_{\mathrm{affine}}")
def _chain_affine_layers(ctx: Context) -> Estimate:
    """The chain theorems' applicability check (``Theorem.applies_to``): nothing is measured
    when the model is no chain, before the costly quotient search."""
    count = sum(op.kind == "affine" for op in chain_ops(ctx))
    return Estimate.exact(float(count), 0.0, "count of Linear/Conv maps in the chain")


@quantity("lipschitz.product",
          "Π_l ‖W_l‖_2 · Π Lip(σ) · Π pool factors over the chain (upper bound on Lip(f))",
          r"\prod_l \|W_l\|_2 \, \mathrm{Lip}(\sigma)^{L-1}")
def _product(ctx: Context) -> Estimate:
    ops = chain_ops(ctx)
    layers = {id(la.module): la.index for la in structure(ctx).layers}
    norms = []
    for op in ops:
        if op.kind == "affine":
            if id(op.module) not in layers:
                raise NotApplicableError(f"{type(op.module).__name__} was not seen as an affine "
                                         "layer by discovery")
            norms.append(ctx.get(f"layer.{layers[id(op.module)]}.weight_norm"))
    factor = lip.product_factor(ops)
    u = u_of(ctx)
    grow = (1 + 2 * u) ** (len(norms) + 1)
    value = math.prod(e.value for e in norms) * factor
    lower = math.prod(e.lower for e in norms) * factor / grow / (1 + 4 * len(ops) * u)
    upper = math.prod(e.upper for e in norms) * factor * grow
    kind, confidence = combine_kind(norms)
    return Estimate(value, min(lower, value), max(upper, value), kind,
                    f"product of {len(norms)} operator norms × activation/pool factor "
                    f"{factor:.6g}", confidence)


@quantity("lipschitz.lipsdp", "LipSDP-Neuron bound √ρ (Fazlyab et al. 2019), certified",
          r"\mathrm{LipSDP}(f)")
def _lipsdp(ctx: Context) -> Estimate:
    ops = chain_ops(ctx)
    x = samples(ctx)
    parts = lip.segments(ops, tuple(x.shape[1:]))
    if isinstance(parts, str):
        raise NotApplicableError(parts)
    mats, slopes, widths = parts
    dim = mats[0].shape[1] + sum(widths)
    if dim > ctx.budget.lipsdp_max_dim:
        raise NotAffordableError(f"the LipSDP matrix would be {dim}×{dim}, above "
                                 f"budget.lipsdp_max_dim = {ctx.budget.lipsdp_max_dim}")
    res = ctx.artifact("lipschitz.lipsdp", lambda: _solve(mats, slopes))
    if isinstance(res, str):
        raise NotAffordableError(res)
    return Estimate(res.value, res.value, res.value, "certified",
                    f"LipSDP-Neuron ({res.solver}), certified from its multipliers",
                    details={"lmi_dim": dim, "solver_rho": res.solver_rho,
                             "certified_rho": res.rho, "certify_steps": res.certify_steps})


def _solve(mats, slopes):
    res = lip.lipsdp(mats, slopes, "SCS")  # ~5× faster than Clarabel here; certified anyway
    return lip.lipsdp(mats, slopes, "CLARABEL") if isinstance(res, str) else res


@quantity("lipschitz.upper", "min(LipSDP, product bound): certified upper bound on Lip(f)",
          r"\overline{\mathrm{Lip}}(f)")
def _upper(ctx: Context) -> Estimate:
    product = ctx.get("lipschitz.product")
    try:
        sdp = ctx.get("lipschitz.lipsdp")
    except (NotApplicableError, NotAffordableError) as err:
        return Estimate(product.value, product.lower, product.upper, product.kind,
                        f"product bound (LipSDP: {err})", product.confidence)
    used = [product, sdp]
    kind, confidence = combine_kind(used)
    best = "LipSDP" if sdp.upper <= product.upper else "product"
    return Estimate(min(product.value, sdp.value), min(product.lower, sdp.lower),
                    min(product.upper, sdp.upper), kind,
                    f"min(LipSDP, product): {best}", confidence)


@quantity("lipschitz.jacobian_lower",
          "max_i ‖J_x(x_i)‖_2 over the samples where f is certainly differentiable",
          r"\max_i \|J_x(x_i)\|_2")
def _jacobian_lower(ctx: Context) -> Estimate:
    ops = chain_ops(ctx)
    mask = lip.differentiable_mask(ops, samples(ctx), floor_rel(ctx))
    if not bool(mask.any()):
        raise NotApplicableError("f is not certainly differentiable at any sample (a kinked "
                                 "pre-activation or a max-pool tie within rounding)")
    st = input_jacobian_stats(ctx)
    s1 = torch.where(mask, st.svals[:, 0], torch.full_like(st.svals[:, 0], -math.inf))
    i = int(torch.argmax(s1))
    hi = float((s1 + st.sval_err).max())
    lo = max(0.0, float(s1[i] - st.sval_err[i]))
    skipped = int((~mask).sum())
    return Estimate(float(s1[i]), lo, hi, "exact",
                    f"max of σ_1(J_x) over {int(mask.sum())} differentiable samples"
                    + (f" ({skipped} at a kink left out)" if skipped else ""))


@quantity("lipschitz.quotient_lower",
          "best ‖f(a) − f(b)‖/‖a − b‖ (sample pairs, segment search, gradient ascent)",
          r"\max \frac{\|f(a) - f(b)\|}{\|a - b\|}")
def _quotient_lower(ctx: Context) -> Estimate:
    if not isinstance(ctx.subject, Subject):
        raise NotApplicableError("Lipschitz bounds need a network subject")
    x = samples(ctx)
    if x.shape[0] < 2:
        raise NotApplicableError("difference quotients need at least two samples")
    net = ctx.subject.net
    rel = floor_rel(ctx)
    res = ctx.artifact("quotient_search",
                       lambda: lip.search_quotient(net, x, rel, seed=ctx.seed))
    return Estimate(res.value, res.lower, res.value + (res.value - res.lower), "exact",
                    f"difference quotients: best sample pair {res.sample_best:.6g} over "
                    f"{res.pairs} pairs, raised by segment search and gradient ascent")


@quantity("lipschitz.lower", "max(jacobian_lower, quotient_lower): a lower bound on Lip(f)",
          r"\underline{\mathrm{Lip}}(f)")
def _lower(ctx: Context) -> Estimate:
    found = [ctx.get("lipschitz.quotient_lower")]
    try:
        found.append(ctx.get("lipschitz.jacobian_lower"))
    except NotApplicableError:
        pass
    best = max(found, key=lambda e: e.lower)
    return Estimate(best.value, best.lower, best.upper, best.kind, best.method)


# -- Kantorovich–Rubinstein (T11c) ----------------------------------------------------------
@quantity("kr.cross_entropy_ratio_max",
          "max_k |E_test g_k − E_train g_k| / (√2 W_1(train_k, test_k)), g_k = ℓ_CE(f(·), k)",
          r"\max_k \frac{|\mathbb{E}_{\nu_k} g_k - \mathbb{E}_{\mu_k} g_k|}"
          r"{\sqrt{2}\, W_1(\mu_k, \nu_k)}")
def _kr_ratio(ctx: Context) -> Estimate:
    s = ctx.subject
    if not isinstance(s, Subject):
        raise NotApplicableError("the KR check needs a network subject")
    if s.loss_fn.kind != "cross_entropy":
        raise NotApplicableError(f"the loss is {s.loss_fn.kind}: Λ_k = √2·Lip(f) is proved "
                                 "for cross-entropy only (‖softmax(z) − e_k‖ ≤ √2)")
    if s.test_x is None:
        raise NotApplicableError("no held-out data: pass Subject(test_data=(X, Y)) or set "
                                 "subject.test_fraction in the config")
    return ctx.artifact("kr.ratio", lambda: _kr_measure(ctx))


def _kr_measure(ctx: Context) -> Estimate:
    s = ctx.subject
    x_tr, y_tr, x_te, y_te = samples(ctx), s.y_all, s.test_x, s.test_y
    rel = floor_rel(ctx)
    u = u_of(ctx)
    with torch.no_grad():
        g_tr = s.loss_fn.per_sample(s.net(x_tr), y_tr)
        g_te = s.loss_fn.per_sample(s.net(x_te), y_te)
    per_class, lows, highs, values = {}, [], [], []
    for k in range(s.output_dim):
        a, b = y_tr == k, y_te == k
        if not (bool(a.any()) and bool(b.any())):
            continue
        w = wasserstein1(x_tr[a], x_te[b])
        ga, gb = g_tr[a], g_te[b]
        gap = abs(float(gb.mean()) - float(ga.mean()))
        err = (rel + (ga.numel() + gb.numel() + 4) * u) * (float(ga.abs().max())
                                                           + float(gb.abs().max()) + 1.0)
        sq2 = math.sqrt(2.0)
        if w.upper <= 0:
            continue  # identical supports: both means agree, the bound is 0 ≤ 0
        values.append(gap / (sq2 * w.value))
        lows.append(max(0.0, gap - err) / (sq2 * w.upper) * (1 - 4 * u))
        highs.append((gap + err) / (sq2 * w.lower) * (1 + 4 * u) if w.lower > 0 else math.inf)
        per_class[str(k)] = {"gap": gap, "w1": w.value, "w1_lower": w.lower,
                             "w1_upper": w.upper, "n_train": int(a.sum()), "n_test": int(b.sum()),
                             "ratio": values[-1]}
    if not values:
        raise NotApplicableError("no class has samples in both the training and the test data")
    i = max(range(len(values)), key=lambda j: values[j])
    return Estimate(values[i], min(max(lows), values[i]), max(max(highs), values[i]), "exact",
                    f"per-class W_1 ({len(values)} classes: transport LP / assignment) and "
                    "mean loss gaps; worst class", details={"classes": per_class})
