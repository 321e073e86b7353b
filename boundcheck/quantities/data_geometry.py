"""Data geometry: sample norms, Gram matrix, orthogonality, geometric means; and the same norms
for every layer's input ``h_{l−1}(x_i)``.

Registered quantities (x_i flattened to a vector in R^D; names are stable):

* ``data.num_samples`` n; ``data.dim`` D.
* ``data.norm_min``, ``data.norm_max``, ``data.norm_mean``: min, max, mean of ‖x_i‖.
* ``data.inv_sq_norm_mean`` = (1/n) Σ_i ‖x_i‖⁻²  (T4).
* ``data.sq_norm_gmean`` = GM_i ‖x_i‖² = exp((1/n) Σ_i log ‖x_i‖²)  (T6).
* ``data.orthogonality`` ρ = max_{i≠j} |⟨x_i, x_j⟩| / (‖x_i‖ ‖x_j‖).
* ``layer.<l>.input_inv_sq_mean`` = (1/n) Σ_i ‖h_{l−1}(x_i)‖⁻²  (T5).
* ``layer.<l>.input_sq_gmean`` = GM_i ‖h_{l−1}(x_i)‖²  (T7).

A zero sample (or a dead layer input, ``h_{l−1}(x_i) = 0``, e.g. a dead ReLU layer) makes the
quantities that divide by the norm undefined: they raise :class:`NotApplicableError`, never NaN.
Rounding: a squared norm of d entries carries relative error ≤ (d + 2)u (u the unit roundoff);
means add (n + 2)u relative for the summation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from boundcheck.core import layers as layer_discovery
from boundcheck.core.estimate import Estimate
from boundcheck.engines.jacobians import capture_inputs, unit_roundoff
from boundcheck.quantities.registry import Context, NotApplicableError, quantity

GRAM_BLOCK = 2048


# -- shared accessors (used by the jacobian and weights quantity modules) -------------------
def samples(ctx: Context) -> torch.Tensor:
    """All inputs x_i stacked, in the subject's dtype and device: (n, *input shape)."""
    return ctx.artifact("data.samples", lambda: ctx.subject.x_all)


def structure(ctx: Context) -> layer_discovery.Structure:
    return ctx.artifact("layers.structure", lambda: layer_discovery.structure(ctx.subject))


def layer(ctx: Context, index: int) -> layer_discovery.AffineLayer:
    """Layer l, or NotApplicableError when the network has fewer layers."""
    st = structure(ctx)
    if not 1 <= index <= len(st.layers):
        raise NotApplicableError(f"layer {index} does not exist: the network has "
                                 f"{len(st.layers)} affine (Linear/Conv) layer(s)")
    return st.layers[index - 1]


def single_input_layer(ctx: Context, index: int) -> layer_discovery.AffineLayer:
    """Layer l, provided it has one per-sample input h_{l−1} (called once, batch-major)."""
    lay = layer(ctx, index)
    if lay.calls != 1:
        raise NotApplicableError(f"layer {index} ({lay.name}) is called {lay.calls} times per "
                                 "forward pass: its input h_{l-1} is not one tensor")
    if lay.input_shape is None:
        raise NotApplicableError(f"layer {index} ({lay.name}) does not see one input row per "
                                 "sample (batch and token dimensions are merged)")
    return lay


def u_of(ctx: Context) -> float:
    return unit_roundoff(ctx.subject.dtype)


def floor_rel(ctx: Context) -> float:
    """Relative rounding floor for anything the network computes: 8u(P + D + K)."""
    s = ctx.subject
    return 8 * u_of(ctx) * (s.num_params + samples(ctx)[0].numel() + s.output_dim)


def mean_estimate(values: torch.Tensor, errors: torch.Tensor, u: float, method: str
                  ) -> Estimate:
    """Mean of finite per-sample values, each known to ± its error, plus summation rounding."""
    n = values.numel()
    value = float(values.mean())
    err = float(errors.mean()) + (n + 2) * u * float(values.abs().mean())
    return Estimate.exact(value, err, method)


def _nonzero(sq: torch.Tensor, what: str) -> None:
    zero = int((sq == 0).sum())
    if zero:
        raise NotApplicableError(f"{what} is zero for {zero} of {sq.numel()} samples "
                                 "(dead ReLU layer?): quantities dividing by its norm are "
                                 "undefined")


def inv_sq_mean(sq: torch.Tensor, dim: int, u: float, what: str, rel: float = 0.0
                ) -> Estimate:
    """(1/n) Σ 1/s_i for squared norms s_i of vectors of ``dim`` entries, each vector known
    to relative accuracy ``rel`` (0 for the data itself)."""
    _nonzero(sq, what)
    inv = 1.0 / sq
    return mean_estimate(inv, ((dim + 4) * u + 2.5 * rel) * inv, u, f"(1/n) Σ 1/‖{what}‖²")


def sq_gmean(sq: torch.Tensor, dim: int, u: float, what: str, rel: float = 0.0) -> Estimate:
    """exp((1/n) Σ log s_i), with the log-domain error propagated through exp."""
    _nonzero(sq, what)
    logs = torch.log(sq)
    n = sq.numel()
    mean_log = float(logs.mean())
    e = (dim + 4) * u + 2.5 * rel + (n + 2) * u * float(logs.abs().mean())
    value = math.exp(mean_log)
    lo = math.exp(mean_log - e) * (1 - 2 * u)
    hi = math.exp(mean_log + e) * (1 + 2 * u)
    return Estimate(value, min(lo, value), max(hi, value), "exact",
                    f"geometric mean of ‖{what}‖²")


# -- data ---------------------------------------------------------------------------------
def sample_sq_norms(ctx: Context) -> torch.Tensor:
    return ctx.artifact("data.sq_norms", lambda: samples(ctx).flatten(1).pow(2).sum(1))


def gram_matrix(ctx: Context) -> torch.Tensor:
    """The n×n Gram matrix ``X Xᵀ`` of the flattened inputs (cached; n² memory)."""
    def build() -> torch.Tensor:
        x = samples(ctx).flatten(1)
        return x @ x.T

    return ctx.artifact("data.gram", build)


def cosine_blocks(x: torch.Tensor, block: int = GRAM_BLOCK
                  ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Blocks ``(i0, j0, C)`` of the cosine matrix of the rows of x, upper block triangle."""
    unit = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
    for i in range(0, x.shape[0], block):
        for j in range(i, x.shape[0], block):
            yield i, j, unit[i:i + block] @ unit[j:j + block].T


@quantity("data.num_samples", "number of samples n", "n")
def _num_samples(ctx: Context) -> Estimate:
    return Estimate.integer(ctx.subject.n, "count")


@quantity("data.dim", "input dimension D (entries of one sample)", "D")
def _dim(ctx: Context) -> Estimate:
    return Estimate.integer(samples(ctx)[0].numel(), "count")


def _norm_estimate(ctx: Context, reduce: str) -> Estimate:
    norms = sample_sq_norms(ctx).sqrt()
    u, d = u_of(ctx), samples(ctx)[0].numel()
    if reduce == "mean":
        return mean_estimate(norms, (d + 4) * u * norms, u, "mean of ‖x_i‖")
    value = float(norms.min() if reduce == "min" else norms.max())
    return Estimate.exact(value, (d + 4) * u * value, f"{reduce} of ‖x_i‖")


@quantity("data.norm_min", "min_i ‖x_i‖", r"\min_i \|x_i\|")
def _norm_min(ctx: Context) -> Estimate:
    return _norm_estimate(ctx, "min")


@quantity("data.norm_max", "max_i ‖x_i‖", r"\max_i \|x_i\|")
def _norm_max(ctx: Context) -> Estimate:
    return _norm_estimate(ctx, "max")


@quantity("data.norm_mean", "(1/n) Σ_i ‖x_i‖", r"\overline{\|x\|}")
def _norm_mean(ctx: Context) -> Estimate:
    return _norm_estimate(ctx, "mean")


@quantity("data.inv_sq_norm_mean", "(1/n) Σ_i ‖x_i‖⁻²", r"\overline{\|x\|^{-2}}")
def _inv_sq_norm_mean(ctx: Context) -> Estimate:
    return inv_sq_mean(sample_sq_norms(ctx), samples(ctx)[0].numel(), u_of(ctx), "x_i")


@quantity("data.sq_norm_gmean", "GM_i ‖x_i‖² = exp((1/n) Σ_i log ‖x_i‖²)",
          r"\mathrm{GM}_i \|x_i\|^2")
def _sq_norm_gmean(ctx: Context) -> Estimate:
    return sq_gmean(sample_sq_norms(ctx), samples(ctx)[0].numel(), u_of(ctx), "x_i")


@quantity("data.orthogonality", "ρ = max_{i≠j} |cos(x_i, x_j)|", r"\rho")
def _orthogonality(ctx: Context) -> Estimate:
    x = samples(ctx).flatten(1)
    if x.shape[0] < 2:
        raise NotApplicableError("orthogonality needs at least two samples")
    _nonzero(sample_sq_norms(ctx), "x_i")
    rho = 0.0
    for i, j, c in cosine_blocks(x):
        if i == j:
            c = c - torch.diag(torch.diagonal(c))
        rho = max(rho, float(c.abs().max()))
    err = (x.shape[1] + 8) * u_of(ctx)
    value = min(rho, 1.0)
    return Estimate(value, max(0.0, rho - err), min(1.0, max(rho + err, value)), "exact",
                    "max off-diagonal |cosine| of the normalised Gram matrix")


# -- layer inputs -------------------------------------------------------------------------
def layer_input_sq_norms(ctx: Context, index: int) -> torch.Tensor:
    """‖h_{l−1}(x_i)‖² for every sample: (n,)."""
    lay = single_input_layer(ctx, index)

    def build() -> torch.Tensor:
        out = []
        for b in ctx.subject.batches:
            h = capture_inputs(ctx.subject.net, [lay.module], b.x)[lay.module]
            out.append(h.flatten(1).pow(2).sum(1))
        return torch.cat(out)

    return ctx.artifact(f"layer.{index}.input_sq_norms", build)


@quantity("layer.<l>.input_inv_sq_mean", "(1/n) Σ_i ‖h_{<l>-1}(x_i)‖⁻² for layer <l>'s input",
          r"\overline{\|h_{<l>-1}\|^{-2}}")
def _layer_inv_sq(ctx: Context, index: int) -> Estimate:
    lay = single_input_layer(ctx, index)
    return inv_sq_mean(layer_input_sq_norms(ctx, index), lay.input_dim, u_of(ctx),
                       f"h_{index - 1}(x_i) (input of layer {index}, {lay.name})",
                       floor_rel(ctx))


@quantity("layer.<l>.input_sq_gmean", "GM_i ‖h_{<l>-1}(x_i)‖² for layer <l>'s input",
          r"\mathrm{GM}_i \|h_{<l>-1}(x_i)\|^2")
def _layer_sq_gmean(ctx: Context, index: int) -> Estimate:
    lay = single_input_layer(ctx, index)
    return sq_gmean(layer_input_sq_norms(ctx, index), lay.input_dim, u_of(ctx),
                    f"h_{index - 1}(x_i) (input of layer {index}, {lay.name})",
                    floor_rel(ctx))
