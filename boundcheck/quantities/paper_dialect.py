"""The papers' own definitions ("dialect"), named apart from boundcheck's so nobody confuses
them: what the authors' code computes for Chen, Recanatesi & Shea-Brown (arXiv 2310.01770,
code chinsengi/sharpdim), measured like every other quantity (an interval with a float64
rounding allowance) on the sample subset the papers use. docs/paper_dialect.md maps every
paper symbol to boundcheck's quantity and lists each difference.

The subset S: ``Budget.paper_samples`` samples (20, as the authors' measures), the first ones
(``Budget.paper_subset = "first"``) or a draw seeded by the context's seed (``"random"``);
m = |S|. All means below are over S.

  ``paper.num_samples``     m
  ``paper.sharpness``       √((1/m) Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖²) over every parameter: the papers'
                            "sharpness" axis. Loss-independent; equals √(tr G / c) only for
                            MSE with scale c (boundcheck's ``ggn.trace`` is tr G itself).
  ``paper.mls``             (1/m) Σ_i σ_1(J_x(x_i))
  ``paper.nmls``            (1/m) Σ_i Σ_l σ_1(J_{h,l}(x_i)) over EVERY affine layer, weight-shared
                            ones included (``network.nmls`` sums the dense layers only)
  ``paper.log_volume``      (1/m) Σ_i Σ_{k ≤ min(k, r)} log σ_k(J_x(x_i)), k = Budget.paper_top_k
                            (3 in the code); ``jacobian.log_lvr`` sums all r = min(K, D)
  ``paper.harmonic_factor`` (1/m) Σ_i Σ_l ω_l / (‖h_{l−1}(x_i)‖² + ε), ε = Budget.paper_epsilon
                            (1e-4): ω_l = ‖W_l‖_2² when every affine layer is dense (the code's
                            FNN), else ‖W_l‖_F² · (output positions of a convolution; 1 for a
                            linear map), as the code does for its CNNs and transformers.
                            ``network.nmls_factor`` is the ε = 0, dense-only, spectral form.
  ``paper.nmls_bound``      paper.sharpness · √(paper.harmonic_factor): the code's NMLS bound.
"""

from __future__ import annotations

import math

import torch

from boundcheck.core.estimate import Estimate, combine_kind
from boundcheck.core.subject import Subject
from boundcheck.engines import jacobians as jac
from boundcheck.quantities.data_geometry import (
    layer,
    layer_input_sq_norms,
    samples,
    structure,
    u_of,
)
from boundcheck.quantities.registry import (
    PAPER_SUBSETS,
    Context,
    NotApplicableError,
    quantity,
)


def subset_indices(n: int, size: int, how: str, seed: int) -> torch.Tensor:
    """The indices of the papers' sample subset among n samples."""
    if how not in PAPER_SUBSETS:
        raise ValueError(f"Budget.paper_subset must be one of {PAPER_SUBSETS}, got {how!r}")
    if size < 1:
        raise ValueError(f"Budget.paper_samples must be ≥ 1, got {size}")
    m = min(size, n)
    if how == "first":
        return torch.arange(m)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:m].sort().values


def paper_context(ctx: Context) -> Context:
    """A context over the subset S (same network, loss, dtype, seed, budget)."""
    def build() -> Context:
        s = ctx.subject
        if not isinstance(s, Subject):
            raise NotApplicableError("the papers' quantities need a network subject")
        b = ctx.budget
        idx = subset_indices(s.n, b.paper_samples, b.paper_subset, ctx.seed).to(s.device)
        x, y = s.x_all[idx], s.y_all[idx]
        sub = Subject(s.net, (x, y), s.loss, name=f"{s.name} [paper subset]", dtype=s.dtype,
                      device=s.device)
        return Context(sub, confidence=ctx.confidence, seed=ctx.seed, budget=b)

    return ctx.artifact("paper.context", build)


def _mean(values: torch.Tensor, errors: torch.Tensor, u: float, method: str,
          **details) -> Estimate:
    """Mean over S with each term's error and the summation's rounding (γ_{m+2})."""
    m = values.numel()
    value = float(values.mean())
    err = float(errors.mean()) + (m + 2) * u * float(values.abs().mean())
    return Estimate(value, value - err, value + err, "exact", method, details=details)


@quantity("paper.num_samples", "m = |S|, the size of the papers' sample subset", "m")
def _num_samples(ctx: Context) -> Estimate:
    sub = paper_context(ctx)
    return Estimate.exact(float(sub.subject.n), 0.0,
                          f"{ctx.budget.paper_subset} {sub.subject.n} of {ctx.subject.n}")


@quantity("paper.sharpness", "the papers' sharpness √((1/m) Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖²) over "
          "every parameter, on the subset S (loss-independent)",
          r"\sqrt{\overline{\|\partial f/\partial\theta\|_F^2}}")
def _sharpness(ctx: Context) -> Estimate:
    sub = paper_context(ctx)
    s, x, u = sub.subject, samples(sub), u_of(sub)
    jacs = jac.weight_jacobians(s.net, s.param_names, x)
    sq = sum(j.flatten(1).pow(2).sum(1) for j in jacs.values())
    terms = sum(j[0].numel() for j in jacs.values())
    # each entry of a reverse-mode Jacobian carries a relative error we bound as the rest of
    # boundcheck does for weight Jacobians: (terms + 2)·u on the sum of squares, per sample
    sq_err = (terms + 2) * u * sq + jac.underflow_floor(terms)
    mean = _mean(sq, sq_err, u, "per-sample parameter Jacobians (vmap ∘ jacrev), all outputs")
    lo = math.sqrt(max(mean.lower, 0.0))
    return Estimate(math.sqrt(mean.value), lo, math.sqrt(mean.upper), "exact",
                    "√ of the mean squared parameter-Jacobian norm over S",
                    details={"samples": s.n, "parameters": terms})


@quantity("paper.mls", "(1/m) Σ_i σ_1(J_x(x_i)) on the subset S", r"\mathrm{MLS}_S")
def _mls(ctx: Context) -> Estimate:
    return paper_context(ctx).get("jacobian.mls")


@quantity("paper.nmls", "(1/m) Σ_i Σ_l σ_1(J_{h,l}(x_i)) over every affine layer (weight-shared "
          "included), on the subset S", r"\mathrm{NMLS}_S")
def _nmls(ctx: Context) -> Estimate:
    sub = paper_context(ctx)
    parts = [sub.get(f"layer.{la.index}.mls") for la in structure(sub).layers]
    if not parts:
        raise NotApplicableError("the network has no affine (Linear/Conv) layer")
    value = sum(p.value for p in parts)
    lower, upper = sum(p.lower for p in parts), sum(p.upper for p in parts)
    slop = (len(parts) + 2) * u_of(sub) * sum(abs(p.value) for p in parts)
    kind, conf = combine_kind(parts)
    return Estimate(value, lower - slop, upper + slop, kind,
                    f"Σ over {len(parts)} affine layers of the mean σ_1(J_h,l) over S", conf)


@quantity("paper.log_volume", "(1/m) Σ_i Σ_{k≤min(k,r)} log σ_k(J_x(x_i)), k = "
          "Budget.paper_top_k (3 in the authors' code), on the subset S",
          r"\overline{\log \mathrm{vol}_k}")
def _log_volume(ctx: Context) -> Estimate:
    from boundcheck.quantities.jacobian import input_jacobian_stats, log_lvr_estimate

    k = ctx.budget.paper_top_k
    if k < 1:
        raise ValueError(f"Budget.paper_top_k must be ≥ 1, got {k}")
    sub = paper_context(ctx)
    stats = input_jacobian_stats(sub)
    top = jac.JacobianStats(stats.svals[:, :k], stats.gram, stats.fro, stats.err,
                            stats.sval_err, stats.mode)
    est = log_lvr_estimate(top, u_of(sub), f"top {min(k, stats.svals.shape[1])} of J_x")
    return est


@quantity("paper.harmonic_factor", "(1/m) Σ_i Σ_l ω_l / (‖h_{l-1}(x_i)‖² + ε), ω_l = ‖W_l‖_2² "
          "(all layers dense) or ‖W_l‖_F²·positions, ε = Budget.paper_epsilon, on S",
          r"\overline{\textstyle\sum_l \omega_l / (\|h_{l-1}\|^2 + \varepsilon)}")
def _harmonic_factor(ctx: Context) -> Estimate:
    sub = paper_context(ctx)
    eps = ctx.budget.paper_epsilon
    if not eps >= 0:
        raise ValueError(f"Budget.paper_epsilon must be ≥ 0, got {eps}")
    layers = structure(sub).layers
    if not layers:
        raise NotApplicableError("the network has no affine (Linear/Conv) layer")
    spectral = all(la.dense for la in layers)
    u = u_of(sub)
    total = torch.zeros(sub.subject.n, dtype=sub.subject.dtype)
    total_err = torch.zeros_like(total)
    kinds = []
    for la in layers:
        sq = layer_input_sq_norms(sub, la.index).cpu()
        if spectral:
            w = sub.get(f"layer.{la.index}.weight_norm")
            kinds.append(w)
            omega, omega_err = w.value ** 2, max(w.upper ** 2 - w.value ** 2,
                                                 w.value ** 2 - max(w.lower, 0.0) ** 2)
        else:
            omega, omega_err = _frobenius_weight(sub, la.index)
        denom = sq + eps
        if bool((denom == 0).any()):
            raise NotApplicableError(f"layer {la.index} has a zero input with ε = 0: the "
                                     "harmonic factor divides by 0")
        term = omega / denom
        # ω's error, the input norms' rounding (dim + 2)·u relative, and the division's
        dim = la.input_dim or 1
        total += term
        total_err += omega_err / denom + term * ((dim + 4) * u)
    est = _mean(total, total_err + (len(layers) + 2) * u * total, u,
                "ω_l/(‖h‖²+ε) summed over layers, mean over S",
                weights="spectral" if spectral else "frobenius·positions", epsilon=eps)
    kind, conf = combine_kind(kinds)
    return Estimate(est.value, est.lower, est.upper, kind, est.method, conf, est.details)


def _frobenius_weight(sub: Context, index: int) -> tuple[float, float]:
    """The code's ω_l for networks with weight-shared layers: ‖W_l‖_F² times the number of
    output positions of a convolution (1 for a linear map); (value, rounding error)."""
    lay = layer(sub, index)
    w = lay.module.weight.detach()
    fro2 = float(w.pow(2).sum())
    positions = 1
    if lay.kind == "conv":
        h = jac.capture_inputs(sub.subject.net, [lay.module], samples(sub)[:1])[lay.module]
        with torch.no_grad():
            out = lay.module(h)
        positions = int(out[0, 0].numel())
    value = fro2 * positions
    return value, (w.numel() + 2) * u_of(sub) * value


@quantity("paper.nmls_bound", "paper.sharpness · √paper.harmonic_factor: the NMLS bound as the "
          "authors' code computes it", r"B_{\mathrm{NMLS},S}")
def _nmls_bound(ctx: Context) -> Estimate:
    s, h = ctx.get("paper.sharpness"), ctx.get("paper.harmonic_factor")
    value = s.value * math.sqrt(h.value)
    lower = s.lower * math.sqrt(max(h.lower, 0.0))
    upper = s.upper * math.sqrt(h.upper)
    slop = 4 * u_of(ctx) * value
    kind, conf = combine_kind([s, h])
    return Estimate(value, lower - slop, upper + slop, kind,
                    "sharpness · √harmonic (interval product)", conf)
