"""Weight quantities: spectral norms of linear maps and convolutions, per-layer weight-gradient
norms, the per-layer Gauss–Newton trace tr G_l, and relative flatness κ^G_Tr(W_l).

Spectral norms (THEOREMS.md conventions: for a convolution, the operator norm of the
convolution as a linear map on its actual input shape, not a kernel norm):

* Linear: ``‖W‖_2`` from ``torch.linalg.svdvals``, exact up to LAPACK's backward error.
* Convolution (``Conv1d/2d/3d``, weights only), with A the map on the layer's input shape:
  if ``in·max(in, out)`` entries fit ``Budget.max_dense_operator_entries``, exact from the
  dense matrix (its columns are A applied to basis inputs, entries are kernel weights, no
  rounding) by svdvals. Otherwise a certified bracket. Lower end: ``‖A v‖/‖v‖`` for the top
  Ritz vector v of Lanczos with full re-orthogonalisation on ``AᵀA`` (``Aᵀ`` by autograd),
  recomputed directly and less its rounding. Upper end: the smaller of two sound bounds.
  (1) Patch bound: ``‖A x‖² = Σ_p ‖K P_p x‖² ≤ ‖K‖_2² Σ_p ‖P_p x‖² ≤ ‖K‖_2² · m · ‖x‖²``,
  with K the (C_out × C_in·k) unfolded kernel of each group and m the largest number of
  (patch, tap) pairs any input entry feeds, counted exactly by autograd through the same
  padding; any padding mode. (2) Circulant bound (zero padding only): the convolution is a
  row-and-column selection of the stride-1 circular convolution on the zero-padded grid
  ``N = H + 2p``, whose singular values are those of the Fourier symbols ``K̂(ω)``
  (Sedghi, Gupta, Long, "The singular values of convolutional layers", ICLR 2019), so
  ``‖A‖_2 ≤ max_ω σ_1(K̂(ω))`` over the N-point grid; exact for 1×1 kernels with stride 1,
  within a fraction of a percent for large inputs.

Relative flatness (Petzka et al., NeurIPS 2021; THEOREMS.md T8) with G in place of H, rows
w_s of W_l (output units/channels): ``κ^G_Tr(W_l) = Σ_{s,s'} ⟨w_s, w_s'⟩ tr(G_{s,s'})
= (1/n) Σ_i tr(A_i Q_i)``, ``Q_i,kk' = ⟨W Wᵀ, M_k M_k'ᵀ⟩``, ``M_k = ∂f_k(x_i)/∂W`` as a
(rows × cols) matrix. For a dense layer the identity of T8 gives the same number from
``J_{h,l}``: ``layer.<l>.kappa_ggn_identity``. Names and formulas: see
:mod:`boundcheck.quantities.jacobian`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from boundcheck.core.estimate import Estimate, combine_kind
from boundcheck.engines.jacobians import unit_roundoff
from boundcheck.quantities.data_geometry import (
    layer,
    layer_input_sq_norms,
    mean_estimate,
    structure,
    u_of,
)
from boundcheck.quantities.jacobian import (
    gram_error,
    layer_jacobian_stats,
    norm_rel,
    output_hessians,
    trace_against,
    weight_stats,
)
from boundcheck.quantities.registry import Context, NotApplicableError, quantity

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
LANCZOS_TOL = 1e-14  # stop when the top Ritz pair's residual is this small, relative
DENSE_CHUNK = 256  # basis inputs per convolution call when building a dense operator


# -- spectral norms -----------------------------------------------------------------------
def linear_norm(weight: torch.Tensor) -> Estimate:
    """‖W‖_2 of a matrix, exact up to LAPACK's backward error."""
    u = unit_roundoff(weight.dtype)
    w = weight.detach().reshape(weight.shape[0], -1)
    sigma = float(torch.linalg.svdvals(w)[0])
    return Estimate.exact(sigma, 8 * u * max(w.shape) * sigma, "svdvals of W")


def conv_operator_norm(module: nn.Module, input_shape: tuple[int, ...], steps: int,
                       dense_entries: int, seed: int = 0) -> Estimate:
    """‖A‖_2 of ``module``'s convolution (no bias) on inputs of per-sample shape
    ``input_shape`` (channels first): exact when small enough, else a certified bracket."""
    w = module.weight.detach()
    conv = _linear_part(module)
    n_in = math.prod(input_shape)
    n_out = conv(torch.zeros((1, *input_shape), dtype=w.dtype, device=w.device)).numel()
    if n_in * max(n_in, n_out) <= dense_entries:
        return _dense_conv_norm(conv, input_shape, w)
    return conv_norm_bracket(module, input_shape, steps, seed)


def conv_norm_bracket(module: nn.Module, input_shape: tuple[int, ...], steps: int,
                      seed: int = 0) -> Estimate:
    """Certified bracket [Lanczos Ritz value, min(patch bound, circulant bound)]."""
    w = module.weight.detach()
    u = unit_roundoff(w.dtype)
    x_shape = (1, *input_shape)
    m = _max_feed_count(module, x_shape)
    kernels = w.reshape(module.groups, w.shape[0] // module.groups, -1)
    k_norm = float(torch.linalg.svdvals(kernels)[:, 0].max())
    taps = kernels.shape[2]
    k_fro = float(torch.linalg.vector_norm(w))
    upper = (k_norm * (1 + 8 * u * max(kernels.shape[1:])) * math.sqrt(m)) * (1 + 4 * u)
    method = "patch bound ‖K‖_2·√m"
    if module.padding_mode == "zeros":
        circ = _circulant_bound(module, input_shape)
        if circ < upper:
            upper, method = circ, "circulant (Fourier) bound"
    lower, used = _lanczos_lower(_linear_part(module), x_shape, w, steps, seed)
    rq_err = 2 * (taps + 2) * u * k_fro * math.sqrt(m)
    lower = min(max(0.0, lower * (1 - 4 * u) - rq_err), upper)
    return Estimate(lower, lower, upper, "certified",
                    f"Lanczos ({used} steps) below, {method} above",
                    details={"input_shape": list(input_shape)})


def _linear_part(module: nn.Module):
    """x ↦ the module's convolution of x without bias (its padding mode included)."""
    return lambda x: module._conv_forward(x, module.weight.detach(), None)


def _dense_conv_norm(conv, input_shape: tuple[int, ...], w: torch.Tensor) -> Estimate:
    u = unit_roundoff(w.dtype)
    n_in = math.prod(input_shape)
    columns = []
    with torch.no_grad():
        for start in range(0, n_in, DENSE_CHUNK):
            basis = torch.eye(n_in, dtype=w.dtype, device=w.device)[start:start + DENSE_CHUNK]
            columns.append(conv(basis.reshape(-1, *input_shape)).flatten(1))
    a_t = torch.cat(columns)  # (n_in, n_out) = Aᵀ
    sigma = float(torch.linalg.svdvals(a_t)[0])
    return Estimate.exact(sigma, 8 * u * max(a_t.shape) * sigma,
                          "svdvals of the dense convolution operator",
                          input_shape=list(input_shape))


def _max_feed_count(module: nn.Module, x_shape: tuple[int, ...]) -> int:
    """Max over input entries of the number of (output position, tap) pairs it feeds."""
    conv = _CONV[type(module)]
    ones_in = torch.ones((1, 1, *x_shape[2:]), dtype=torch.float64, requires_grad=True)
    kernel = torch.ones((1, 1, *module.kernel_size), dtype=torch.float64)
    if module.padding_mode != "zeros":
        padded = F.pad(ones_in, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        out = conv(padded, kernel, None, module.stride, 0, module.dilation)
    else:
        out = conv(ones_in, kernel, None, module.stride, module.padding, module.dilation)
    (count,) = torch.autograd.grad(out.sum(), ones_in)
    return int(round(float(count.max())))


def _circulant_bound(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """max_ω σ_1(K̂(ω)) on the zero-padded grid, plus the FFT's and SVD's rounding."""
    w = module.weight.detach()
    u = unit_roundoff(w.dtype)
    pads = module._reversed_padding_repeated_twice  # (last dim left, right, previous dim, …)
    spatial = input_shape[1:]
    nd = len(spatial)
    grid = []
    for j in range(nd):
        left, right = pads[2 * (nd - 1 - j)], pads[2 * (nd - 1 - j) + 1]
        extent = (module.kernel_size[j] - 1) * module.dilation[j] + 1
        grid.append(max(spatial[j] + left + right, extent))
    c_out, c_in_g = w.shape[:2]
    g = module.groups
    full = torch.zeros((c_out, c_in_g * g, *grid), dtype=w.dtype, device=w.device)
    for gi in range(g):
        rows = slice(gi * (c_out // g), (gi + 1) * (c_out // g))
        cols = slice(gi * c_in_g, (gi + 1) * c_in_g)
        index = (rows, cols) + tuple(
            slice(0, (module.kernel_size[j] - 1) * module.dilation[j] + 1, module.dilation[j])
            for j in range(nd))
        full[index] = w[rows]
    symbols = torch.fft.fftn(full, dim=tuple(range(2, 2 + nd)))
    symbols = symbols.permute(*range(2, 2 + nd), 0, 1).reshape(-1, c_out, c_in_g * g)
    sigma = float(torch.linalg.svdvals(symbols)[:, 0].max())
    points = math.prod(grid)
    fft_err = 5 * math.log2(max(points, 2)) * u * math.sqrt(points) * float(
        torch.linalg.vector_norm(w))
    return (sigma + fft_err) * (1 + 8 * u * max(c_out, c_in_g * g)) * (1 + 4 * u)


def _lanczos_lower(conv, x_shape: tuple[int, ...], w: torch.Tensor, steps: int, seed: int
                   ) -> tuple[float, int]:
    """Lanczos on AᵀA with full re-orthogonalisation; returns ‖A v‖/‖v‖ for the top Ritz
    vector v (a lower bound on ‖A‖_2 whatever the convergence) and the steps used."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(math.prod(x_shape), generator=gen, dtype=w.dtype).to(w.device)
    _, pullback = torch.func.vjp(conv, torch.zeros(x_shape, dtype=w.dtype, device=w.device))

    def gram(v: torch.Tensor) -> torch.Tensor:
        return pullback(conv(v.reshape(x_shape)))[0].reshape(-1)

    basis = [q / torch.linalg.vector_norm(q)]
    alphas: list[float] = []
    betas: list[float] = []
    top = None
    for _ in range(max(1, steps)):
        r = gram(basis[-1])
        alphas.append(float(basis[-1] @ r))
        q_mat = torch.stack(basis)
        for _ in range(2):
            r = r - q_mat.T @ (q_mat @ r)
        beta = float(torch.linalg.vector_norm(r))
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)
        top = evecs[:, -1]
        if beta <= LANCZOS_TOL * max(float(evals[-1]), 0.0) or \
                beta * abs(float(top[-1])) <= LANCZOS_TOL * float(evals[-1]):
            break
        betas.append(beta)
        basis.append(r / beta)
    ritz = torch.stack(basis[:len(alphas)]).T @ top.to(device=w.device, dtype=w.dtype)
    value = float(torch.linalg.vector_norm(conv(ritz.reshape(x_shape))))
    return value / float(torch.linalg.vector_norm(ritz)), len(alphas)


def weight_norm(ctx: Context, index: int) -> Estimate:
    lay = layer(ctx, index)
    if lay.kind == "linear":
        return linear_norm(lay.module.weight)
    if lay.input_shape is None:
        raise NotApplicableError(f"layer {index} ({lay.name}): input shape per sample unknown")
    return ctx.artifact(f"weights.{index}.conv_norm", lambda: conv_operator_norm(
        lay.module, lay.input_shape, ctx.budget.conv_lanczos_steps,
        ctx.budget.max_dense_operator_entries, ctx.seed))


@quantity("layer.<l>.weight_norm", "‖W_<l>‖_2 (a convolution: as an operator on its input)",
          r"\|W_{<l>}\|_2")
def _weight_norm(ctx: Context, index: int) -> Estimate:
    return weight_norm(ctx, index)


@quantity("network.weight_norm_product",
          "Π_l ‖W_l‖_2 over all affine layers (each module once, however often it is called)",
          r"\prod_l \|W_l\|_2")
def _weight_norm_product(ctx: Context) -> Estimate:
    layers = structure(ctx).layers
    if not layers:
        raise NotApplicableError("the network has no affine layer")
    norms = [ctx.get(f"layer.{la.index}.weight_norm") for la in layers]
    u = u_of(ctx)
    grow = (1 + 2 * u) ** len(norms)
    value = math.prod(e.value for e in norms)
    lower = math.prod(e.lower for e in norms) / grow
    upper = math.prod(e.upper for e in norms) * grow
    kind, confidence = combine_kind(norms)
    return Estimate(value, min(lower, value), max(upper, value), kind,
                    "product of per-layer spectral norms", confidence)


# -- weight Jacobians: gradient norms, tr G_l, κ^G ----------------------------------------
@quantity("layer.<l>.grad_w_fro2", "(1/n) Σ_i ‖∇_{W_<l>} f(x_i)‖_F² (all K outputs)",
          r"\overline{\|\nabla_{W_{<l>}} f\|_F^2}")
def _grad_w_fro2(ctx: Context, index: int) -> Estimate:
    w = weight_stats(ctx, index)
    fro = w.fro2.sqrt()
    return mean_estimate(w.fro2, 2 * fro * w.err + w.err ** 2, u_of(ctx),
                         "per-sample weight Jacobians (vmap ∘ jacrev)")


@quantity("layer.<l>.ggn_trace", "tr G_<l> = (1/n) Σ_i tr(J_{W_<l>,i}ᵀ A_i J_{W_<l>,i})",
          r"\operatorname{tr} G_{<l>}")
def _ggn_trace(ctx: Context, index: int) -> Estimate:
    w = weight_stats(ctx, index)
    a, a_err = output_hessians(ctx)
    fro = w.fro2.sqrt()
    entries = layer(ctx, index).module.weight.numel()
    gram_err = 2 * fro * w.err + w.err ** 2 + (entries + 2) * u_of(ctx) * w.fro2
    values, errors = trace_against(a, a_err, w.gram, gram_err, u_of(ctx))
    return mean_estimate(values, errors, u_of(ctx), "per-sample weight Jacobians and A_i")


@quantity("layer.<l>.kappa_ggn", "κ^G_Tr(W_<l>) = Σ_{s,s'} ⟨w_s, w_s'⟩ tr(G_{s,s'})",
          r"\kappa^G_{\mathrm{Tr}}(W_{<l>})")
def _kappa(ctx: Context, index: int) -> Estimate:
    w = weight_stats(ctx, index)
    a, a_err = output_hessians(ctx)
    values, errors = trace_against(a, a_err, w.kappa_gram, w.kappa_err, u_of(ctx))
    return mean_estimate(values, errors, u_of(ctx),
                         "definition, from per-sample weight Jacobians")


@quantity("layer.<l>.kappa_ggn_identity",
          "(1/n) Σ_i ‖h_{<l>-1}(x_i)‖² tr(J_{h,<l>}ᵀ A_i J_{h,<l>})",
          r"\overline{\|h_{<l>-1}\|^2 \operatorname{tr}(J_{h,<l>}^\top A J_{h,<l>})}")
def _kappa_identity(ctx: Context, index: int) -> Estimate:
    st = layer_jacobian_stats(ctx, index)
    a, a_err = output_hessians(ctx)
    lay = layer(ctx, index)
    traces, errors = trace_against(a, a_err, st.gram, gram_error(st, lay.input_dim, u_of(ctx)),
                                   u_of(ctx))
    sq = layer_input_sq_norms(ctx, index)
    values = sq * traces
    return mean_estimate(values, sq * errors + norm_rel(ctx, index) * values.abs(), u_of(ctx),
                         "identity form, from J_h and ‖h‖²")
