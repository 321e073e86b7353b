"""Per-sample Jacobians of a network, batched with ``torch.func`` (vmap over jacrev/jacfwd).

Three Jacobians per sample x_i (THEOREMS.md conventions):

* the input Jacobian ``J_x(x_i) = ∂f/∂x ∈ R^{K×D}``;
* the layer-input Jacobian ``J_{h,l}(x_i) = ∂f/∂h_{l−1} ∈ R^{K×dim h}``, obtained by a forward
  pre-hook that feeds layer l a given input. This is the derivative along the path through
  layer l, ``(∂f/∂z_l)·W_l``; it is the total derivative ∂f/∂h_{l−1} exactly when h_{l−1}
  reaches f only through layer l, which :mod:`boundcheck.core.layers` checks (``input_elsewhere``);
* the weight Jacobian ``J_{W_l}(x_i) = ∂f/∂W_l ∈ R^{K×|W_l|}`` (weights only, no bias), whose
  squared Frobenius norm is ``‖∇_{W_l} f(x_i)‖_F² = Σ_k ‖∂f_k/∂W_l‖_F²``, over all K outputs.

Reverse mode costs K vector-Jacobian products per sample, forward mode one product per input
coordinate: the cheaper one is used. Samples are processed in chunks that fit
``Budget.jacobian_chunk_bytes``, and only per-sample summaries are kept (singular values,
``J Jᵀ``, norms), never all Jacobians at once.

Rounding model (the allowance carried by "exact" estimates). ``J̃`` from autograd differs from
J by ``ΔJ`` with ``‖ΔJ‖_F ≤ ρ‖J̃‖_F``, where ``ρ = max(8u(P + D + K), 4·ρ_measured)``: a floor
from standard dot-product error bounds (u the unit roundoff, P parameters), and four times the
relative difference, on the first samples, between random products ``J̃v`` (or ``vᵀJ̃``) read
off the Jacobian and the same products computed directly in the other autodiff mode (two
summation orders: the rounding noise autograd actually made, the analogue of the measured
Hessian asymmetry in :mod:`boundcheck.quantities.hessian`; for Gaussian v,
``E‖ΔJ v‖² = ‖ΔJ‖_F²``). Weight Jacobians use the floor alone. Singular values then move by at most
``‖ΔJ‖_2 ≤ ‖ΔJ‖_F`` (Weyl) plus LAPACK's backward error ``8u·max(K, d)·σ̃_1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacfwd, jacrev, jvp, vjp, vmap

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.engines.memory import samples_that_fit

CHECK_SAMPLES = 8  # samples on which the two autodiff modes are compared
CHECK_DIRECTIONS = 2  # random products per checked sample


def unit_roundoff(dtype: torch.dtype) -> float:
    return UNIT_ROUNDOFF[str(dtype).replace("torch.", "")]


@dataclass(frozen=True)
class JacobianStats:
    """Per-sample summaries of a K×d Jacobian over n samples (all tensors indexed by sample)."""

    svals: torch.Tensor  # (n, r) singular values, descending, r = min(K, d)
    gram: torch.Tensor  # (n, K, K) J̃ J̃ᵀ
    fro: torch.Tensor  # (n,) ‖J̃‖_F
    err: torch.Tensor  # (n,) bound on ‖J̃ − J‖_F
    sval_err: torch.Tensor  # (n,) bound on |σ̃_k − σ_k| for every k
    mode: str  # "reverse" or "forward"


@dataclass(frozen=True)
class WeightStats:
    """Per-sample summaries of the weight Jacobian J_W = ∂f/∂W of one layer."""

    fro2: torch.Tensor  # (n,) ‖J̃_W‖_F² = ‖∇_W f‖_F² over all K outputs
    gram: torch.Tensor  # (n, K, K) J̃_W J̃_Wᵀ
    kappa_gram: torch.Tensor  # (n, K, K) Q_kk' = ⟨W Wᵀ, M_k M_k'ᵀ⟩, M_k = ∂f_k/∂W as rows
    err: torch.Tensor  # (n,) bound on ‖J̃_W − J_W‖_F
    kappa_err: torch.Tensor  # (n,) bound on ‖Q̃ − Q‖_F


def per_sample(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to each sample (row) of ``tensors``, stacked: ``vmap`` when the model
    allows it, else a Python loop (models with data-dependent control flow, ``.item()``…)."""
    with torch.no_grad():
        try:
            return vmap(fn)(*tensors)
        except RuntimeError:
            return torch.stack([fn(*row) for row in zip(*tensors, strict=True)])


def sample_fn(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x_i ↦ f(x_i) ∈ R^K`` for one sample (no batch dimension)."""
    return lambda xi: net(xi.unsqueeze(0)).squeeze(0)


def input_jacobians(net: nn.Module, x: torch.Tensor, out_dim: int,
                    mode: str | None = None) -> torch.Tensor:
    """``J_x(x_i)`` for every row of ``x``: (n, K, D), D = numel of one sample."""
    d = x[0].numel()
    mode = mode or preferred_mode(out_dim, d)
    jac = jacrev if mode == "reverse" else jacfwd
    return per_sample(jac(sample_fn(net)), x).reshape(x.shape[0], out_dim, d)


def input_products(net: nn.Module, x: torch.Tensor, v: torch.Tensor, mode: str
                   ) -> torch.Tensor:
    """``J_x(x_i) v_i`` (mode "forward", v: (n, D)) or ``v_iᵀ J_x(x_i)`` ("reverse", v: (n, K))
    computed directly by one JVP / VJP per sample, never through the Jacobian."""
    f = sample_fn(net)
    if mode == "forward":
        return per_sample(lambda xi, vi: jvp(f, (xi,), (vi.reshape(xi.shape),))[1], x, v)
    return per_sample(lambda xi, vi: vjp(f, xi)[1](vi)[0].reshape(-1), x, v)


def _replacing_input(net: nn.Module, module: nn.Module):
    """``(f, remove)``: ``f(x_i, h_i)`` runs the net on x_i with ``module`` fed h_i."""
    cell: dict[str, torch.Tensor] = {}
    handle = module.register_forward_pre_hook(lambda m, args: (cell["h"], *args[1:]))

    def f(xi, hi):
        cell["h"] = hi.unsqueeze(0)
        return net(xi.unsqueeze(0)).squeeze(0)

    return f, handle.remove


def layer_input_jacobians(net: nn.Module, module: nn.Module, x: torch.Tensor,
                          h: torch.Tensor, out_dim: int, mode: str | None = None
                          ) -> torch.Tensor:
    """``J_{h,l}(x_i) = ∂f/∂h`` along the path through ``module``: (n, K, dim h).

    ``h`` holds the module's inputs for the samples ``x`` (from :func:`capture_inputs`).
    """
    d = h[0].numel()
    mode = mode or preferred_mode(out_dim, d)
    jac = jacrev if mode == "reverse" else jacfwd
    f, remove = _replacing_input(net, module)
    try:
        j = per_sample(jac(f, argnums=1), x, h)
    finally:
        remove()
    return j.reshape(x.shape[0], out_dim, d)


def layer_input_products(net: nn.Module, module: nn.Module, x: torch.Tensor, h: torch.Tensor,
                         v: torch.Tensor, mode: str) -> torch.Tensor:
    """:func:`input_products` for ``J_{h,l}``."""
    f, remove = _replacing_input(net, module)
    try:
        if mode == "forward":
            return per_sample(lambda xi, hi, vi: jvp(lambda t: f(xi, t), (hi,),
                                                     (vi.reshape(hi.shape),))[1], x, h, v)
        return per_sample(lambda xi, hi, vi: vjp(lambda t: f(xi, t), hi)[1](vi)[0].reshape(-1),
                          x, h, v)
    finally:
        remove()


def weight_jacobians(net: nn.Module, weight_names: Sequence[str], x: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """``∂f(x_i)/∂W`` for each named weight: name -> (n, K, *W.shape)."""
    state = dict(net.named_parameters())
    state.update(dict(net.named_buffers()))
    weights = {name: state[name].detach() for name in weight_names}

    def f(w, xi):
        return functional_call(net, {**state, **w}, (xi.unsqueeze(0),)).squeeze(0)

    jac = jacrev(f)
    with torch.no_grad():
        try:
            return vmap(jac, in_dims=(None, 0))(weights, x)
        except RuntimeError:
            rows = [jac(weights, xi) for xi in x]
            return {name: torch.stack([r[name] for r in rows]) for name in weights}


def capture_inputs(net: nn.Module, modules: Sequence[nn.Module], x: torch.Tensor
                   ) -> dict[nn.Module, torch.Tensor]:
    """The input of each module's first call when ``net`` runs on the batch ``x``."""
    seen: dict[nn.Module, torch.Tensor] = {}

    def hook(m, args):
        seen.setdefault(m, args[0].detach())

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def preferred_mode(out_dim: int, in_dim: int) -> str:
    """Reverse mode costs ``out_dim`` products per sample, forward mode ``in_dim``."""
    return "reverse" if out_dim <= in_dim else "forward"


def chunk_size(per_sample_elements: int, element_bytes: int, budget_bytes: int,
               memory_bytes: int | None = None) -> int:
    """Samples per chunk so that a few (4) copies of the chunk's Jacobians fit the budget;
    ``memory_bytes`` (``Budget.memory_bytes``) is a hard limit:
    :class:`boundcheck.engines.memory.MemoryBudgetError` when not even one sample fits it."""
    per_sample = 4 * per_sample_elements * element_bytes
    step = max(1, budget_bytes // max(1, per_sample))
    if memory_bytes is None:
        return step
    return min(step, samples_that_fit(per_sample, memory_bytes, memory_bytes,
                                      "a chunk of per-sample Jacobians"))


def dead_relu_samples(net: nn.Module, x: torch.Tensor, after: nn.Module | None = None
                      ) -> torch.Tensor:
    """(n,) bool: where J (of f w.r.t. x, or w.r.t. the input of the Linear ``after``) is
    PROVEN exactly 0: a sequential MLP (:func:`boundcheck.engines.sequential.
    sequential_structure`) with a ReLU layer, at or after ``after``, whose every
    pre-activation is < 0 beyond its rounding error. The error of z̃_l is bounded elementwise
    by ``e_l = |W_l| e_{l−1} + γ_{d+2}(|W_l||h̃_{l−1}| + |b_l|)`` (e_0 = 0: the data are exact;
    ReLU is 1-Lipschitz; standard dot-product bounds, γ_m = mu/(1 − mu)); the propagation stops
    at the first activation other than ReLU. Every other exactly zero J̃ gets the underflow
    floor (issue 12: underflow and saturation give exact zeros too)."""
    from boundcheck.engines.sequential import sequential_structure

    proven = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    structure = sequential_structure(net)
    if isinstance(structure, str) or any(not isinstance(m, nn.Flatten)
                                         for m in structure.prefix):
        return proven
    ids = [id(lin) for lin in structure.linears]
    first = 0 if after is None else (ids.index(id(after)) if id(after) in ids else None)
    if first is None:
        return proven
    u = unit_roundoff(x.dtype)
    with torch.no_grad():
        h = x.flatten(1)
        e = torch.zeros_like(h)
        for index, (lin, acts) in enumerate(zip(structure.linears, structure.activations,
                                                strict=True)):
            w, b = lin.weight, lin.bias
            m = lin.in_features + 2
            gamma = m * u / (1 - m * u)
            z = torch.nn.functional.linear(h, w, b)
            mag = h.abs() @ w.abs().T + (b.abs() if b is not None else 0.0)
            e = (e @ w.abs().T + gamma * mag) * (1 + 4 * m * u)
            if not (len(acts) == 1 and type(acts[0]) is nn.ReLU):
                break
            if index >= first:
                proven |= ((z + e) < 0).all(dim=1)
            h = torch.relu(z)
    return proven


def jacobian_stats(jacobian: Callable[[int, int, str], torch.Tensor],
                   products: Callable[[int, int, torch.Tensor, str], torch.Tensor], n: int,
                   out_dim: int, in_dim: int, floor_rel: float, dtype: torch.dtype,
                   budget_bytes: int, seed: int = 0,
                   proven_zero: torch.Tensor | None = None,
                   memory_bytes: int | None = None) -> JacobianStats:
    """Summaries of ``jacobian(start, stop, mode) -> (stop − start, K, d)`` over n samples.

    On the first :data:`CHECK_SAMPLES` samples, :data:`CHECK_DIRECTIONS` random products
    ``products(start, stop, v, other_mode)`` computed directly in the other autodiff mode are
    compared with the same products taken from the Jacobian; their relative difference sets
    the rounding allowance (module docstring).
    """
    u = unit_roundoff(dtype)
    mode = preferred_mode(out_dim, in_dim)
    step = chunk_size(out_dim * in_dim, torch.finfo(dtype).bits // 8, budget_bytes,
                      memory_bytes)
    svals, grams, fros = [], [], []
    measured = 0.0
    for start in range(0, n, step):
        stop = min(n, start + step)
        j = jacobian(start, stop, mode)
        if start == 0:
            measured = _measured_rounding(j[:CHECK_SAMPLES], products, mode, seed)
        svals.append(torch.linalg.svdvals(j))
        grams.append(j @ j.transpose(1, 2))
        fros.append(torch.linalg.matrix_norm(j))
    s, fro = torch.cat(svals), torch.cat(fros)
    rho = max(floor_rel, 4.0 * measured)
    # Underflow can hide a tiny but nonzero J, so an exactly zero J̃ gets the floor unless the
    # zero is proven (``proven_zero``, :func:`dead_relu_samples`): underflow, and a saturated
    # tanh before :func:`boundcheck.core.activations.stable_tanh`, give exact zeros too.
    floor = torch.full_like(fro, underflow_floor(out_dim * in_dim))
    if proven_zero is not None:
        floor = torch.where(proven_zero.to(fro.device) & (fro == 0), 0.0, floor)
    err = rho * fro + floor
    sval_err = err + 8 * u * max(out_dim, in_dim) * s[:, 0]
    return JacobianStats(s, torch.cat(grams), fro, err, sval_err, mode)


def _measured_rounding(j: torch.Tensor, products: Callable, mode: str, seed: int) -> float:
    """max relative difference between products read off J̃ and computed in the other mode."""
    m, k, d = j.shape
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(CHECK_DIRECTIONS):
        if mode == "reverse":  # J̃ came from VJPs: compare J̃ v with a JVP
            v = torch.randn(m, d, generator=gen, dtype=j.dtype).to(j.device)
            from_j = torch.einsum("mkd,md->mk", j, v)
            direct = products(0, m, v, "forward").reshape(m, k)
        else:  # J̃ came from JVPs: compare vᵀ J̃ with a VJP
            v = torch.randn(m, k, generator=gen, dtype=j.dtype).to(j.device)
            from_j = torch.einsum("mkd,mk->md", j, v)
            direct = products(0, m, v, "reverse").reshape(m, d)
        scale = torch.linalg.vector_norm(from_j, dim=1)
        diff = torch.linalg.vector_norm(from_j - direct, dim=1)
        ok = scale > 0
        if ok.any():
            worst = max(worst, float((diff[ok] / scale[ok]).max()))
    return worst


def underflow_floor(terms: int) -> float:
    """Absolute error of a norm built from ``terms`` squares that may each underflow to 0.

    A square below the smallest subnormal (2⁻¹⁰⁷⁴) is lost entirely, so the sum of squares is
    off by at most ``terms·2⁻¹⁰⁷⁴`` and the norm by at most its square root (times 2, for the
    rounding of the square root itself). Without this floor a gradient of norm 1e-187 "is" 0
    and a ratio over it "is" ∞: a false VIOLATED.
    """
    return 2.0 * math.sqrt(terms * 2.0**-1074)


def weight_stats(net: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor,
                 floor_rel: float, budget_bytes: int, memory_bytes: int | None = None
                 ) -> dict[str, WeightStats]:
    """:class:`WeightStats` for each named weight (rows = output units/channels)."""
    u = unit_roundoff(x.dtype)
    total = sum(w.numel() for w in weights.values())
    with torch.no_grad():
        k = net(x[:1]).shape[1]
    step = chunk_size(k * total, x.element_size(), budget_bytes, memory_bytes)
    parts: dict[str, list[tuple[torch.Tensor, ...]]] = {name: [] for name in weights}
    for start in range(0, x.shape[0], step):
        jac = weight_jacobians(net, list(weights), x[start:start + step])
        for name, w in weights.items():
            m = jac[name].reshape(jac[name].shape[0], k, w.shape[0], -1)
            parts[name].append(_weight_summaries(m, w.reshape(w.shape[0], -1)))
    out = {}
    for name, w in weights.items():
        fro2, gram, q = (torch.cat(t) for t in zip(*parts[name], strict=True))
        fro = fro2.sqrt()
        err = floor_rel * fro + underflow_floor(k * w.numel())
        w2 = w.reshape(w.shape[0], -1)
        s_norm = float(torch.linalg.matrix_norm(w2, ord=2)) ** 2
        s_fro = float(torch.linalg.matrix_norm(w2)) ** 2
        rows, cols = w2.shape
        kappa_err = (s_norm * (2 * err * fro + err * err)
                     + 4 * u * (rows * cols + rows + cols) * s_fro * fro2)
        out[name] = WeightStats(fro2, gram, q, err, kappa_err)
    return out


def _weight_summaries(m: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """m: (c, K, rows, cols) weight Jacobians, w: (rows, cols) -> fro2, gram, kappa Gram."""
    flat = m.flatten(2)
    gram = flat @ flat.transpose(1, 2)
    fro2 = torch.diagonal(gram, dim1=1, dim2=2).sum(-1)
    rows, cols = w.shape
    if rows <= cols:  # Q_kk' = ⟨M_k, (W Wᵀ) M_k'⟩, cost K·rows²·cols
        c = torch.matmul(w @ w.T, m).flatten(2)
        q = flat @ c.transpose(1, 2)
    else:  # Q_kk' = ⟨Wᵀ M_k, Wᵀ M_k'⟩, cost K·rows·cols²
        b = torch.matmul(w.T, m).flatten(2)
        q = b @ b.transpose(1, 2)
    return fro2, gram, 0.5 * (q + q.transpose(1, 2))
