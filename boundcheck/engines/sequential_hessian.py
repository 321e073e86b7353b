"""Exact loss curvature of sequential MLPs from pre-activation Hessians.

For ``nn.Sequential`` networks of ``nn.Linear`` layers and elementwise activations
(:func:`sequential_structure` decides, or says why not), the loss Hessian has layer structure
that autograd does not use. Per sample (index i dropped), with ``a_0 = x`` (flattened),
``s_l = W_l a_{l−1} + b_l``, ``a_l = σ_l(s_l)``, ``z = σ_L(s_L)`` (``σ_L`` = identity unless
elementwise modules follow the last Linear), ``δ_l = ∂ℓ/∂s_l``, ``g_l = ∂ℓ/∂a_l``,
``D_l = diag(σ'_l)`` and ``A = ∇²_z ℓ`` (``Loss.output_hessian``: built from stable pieces,
never re-derived from probabilities), the pre-activation Hessians are

    M_L = D_L A D_L + diag(σ''_L ⊙ ∂ℓ/∂z),
    M_l = D_l W_{l+1}ᵀ M_{l+1} W_{l+1} D_l + diag(σ''_l ⊙ g_l)        (l < L).

Since ``W_l`` enters only through ``s_l``, with ``ā = [a; 1]`` when the layer has a bias:

* **diagonal and trace** (Dangel, Kunstner & Hennig, "BackPACK", ICLR 2020, §2 and App. A,
  where the same recursion propagates square-root factors):
  ``H[(W_l)_{jk}, (W_l)_{jk}] = (1/n) Σ_i ā_{l−1,k}² M_l[j,j]``, hence
  ``tr H = (1/n) Σ_i Σ_l ‖ā_{i,l−1}‖² tr M_{i,l}``. ``M_{L−1}`` is kept as a rank-K factor
  ``Tᵀ A T`` plus a diagonal (when K is below every hidden width), and only the diagonal of
  the first layer's ``M`` is formed.
* **dense blocks**, layers a ≤ b, ``J_{a→b} = ∂s_b/∂s_a``, ``E_{b−1,a} = ∂a_{b−1}/∂s_a``
  (zero when a = b; the row of the appended 1 is zero):
  ``H[(W_b)_{jk}, (W_a)_{j'k'}] = (1/n) Σ_i [(M_b J_{a→b})_{jj'} ā_{b−1,k}
  + δ_{b,j} (E_{b−1,a})_{kj'}] ā_{a−1,k'}``
  (product rule on ``∂ℓ/∂W_b = δ_b ā_{b−1}ᵀ``: ``δ_b`` moves with ``s_a`` through
  ``M_b J_{a→b}``, ``ā_{b−1}`` through ``E_{b−1,a} = D_{b−1} W_{b−1} ⋯ W_{a+1} D_a``). The
  bracket is built for a slice of rows and all samples at once and contracted with
  ``ā_{a−1}/n`` in one GEMM; ``M_b J_{a→b}`` and ``E_{b−1,a}`` come from the same recursion
  ``G ↦ (G W_{a+1}) D_a``. Only blocks with b ≥ a (and, on the diagonal, the lower part) are
  computed; the rest is filled by copying, so the result is exactly symmetric.

Rounding (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §3.1–3.5): every
quantity is a sum of products of the inputs ``W, b, ā, σ', σ'', ∂ℓ/∂z, A``, so its computed
value differs from the exact one (for exact inputs) by at most ``γ_N · m``,
``γ_N = N u / (1 − N u)``, where m is the same computation on magnitudes and N bounds the
roundings along any product chain plus the length of every sum in it
(:func:`operation_count`: per layer its fan-in and fan-out plus 20 for the products with
``σ', σ''`` and the recursion's dot products, 2K for ``Tᵀ A T``, n + 32 for the sums over
samples and the scaling by 1/n, and the trace's sums over ``ā``, ``diag M`` and layers; for
the reference MLP 20→64→64→10 on 512 samples N = 1041, γ_N ≈ 1.2e-13). The inputs carry
errors of their own; each input x with a first-order error bound ``e_x`` enters m as
``|x| + e_x / γ_N``, so ``γ_N · m`` covers both:

* forward pass: ``e_s = γ_{fan-in+1} (|W| |ā|) + |W| e_a`` (Higham §3.1, plus the error
  carried in); by the mean value theorem with ``|σ^(k)(ξ)| ≤ |σ^(k)(s)| + F_{k+1} |ξ − s|``,
  ``e_a = 16u |a| + (|σ'| + F_2 e_s) e_s``, ``e_{σ'} = 16u (|σ'| + F_1) + (|σ''| + F_3 e_s)
  e_s`` and ``e_{σ''} = 16u (|σ''| + F_2) + F_3 e_s``: the elementwise kernels are assumed
  accurate to 16 ulps of the function's own derivative scale (autograd's tanh' = 1 − t² is
  not relatively accurate where tanh saturates). ``F_1, F_2`` are the largest
  ``|σ'|, |σ''|`` and ``F_3`` the largest difference quotient of ``σ''`` (a Lipschitz
  constant) on a grid of [−20, 20] (step 1/200). Piecewise-linear activations (ReLU,
  LeakyReLU, Hardtanh, ReLU6) have exact derivatives, kinks excepted (there the Hessian is
  not defined), and ``e_a = 16u |a| + F_1 e_s``.
* loss: ``e_{∂ℓ/∂z} = 16u |∂ℓ/∂z| + |A| e_z`` (it moves by ``A Δz``); for cross-entropy
  ``e_A = (16u + 6 max_m e_{z,m}) |A|``, since ``Σ_m |∂A_kl/∂z_m| ≤ 6 |A_kl|`` for
  ``A = diag(p) − ppᵀ``; MSE's A is a constant; for other losses ``e_A = 16u |A|`` is
  assumed, not checked.

:func:`exact_trace` returns ``(value, abs_error)``, :func:`exact_diagonal` the diagonal with
an error per entry, :func:`exact_dense_hessian` the matrix (parameter order and flattening of
``Subject.params``, as :meth:`boundcheck.engines.curvature.HessianOperator.dense`) with a bound on
the Frobenius norm of its error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.subject import Subject
from boundcheck.engines.sequential import (
    LayerValues,
    SequentialMLP,
    activation_derivatives,
    backpropagate,
    forward_backward,
    subject_structure,
)

PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.Hardtanh, nn.ReLU6)
CHUNK_BYTES = 2**27  # per-sample intermediates of one chunk of samples (128 MiB)
BLOCK_BYTES = 2**26  # the expanded factor of one dense block slice (64 MiB)
GRID_HALF_WIDTH, GRID_STEPS_PER_UNIT = 20.0, 200
EVALUATION_ULPS = 16  # error of an elementwise function or loss derivative, in ulps of its scale


@dataclass(frozen=True)
class ExactTrace:
    value: float
    abs_error: float


@dataclass(frozen=True)
class ExactDiagonal:
    value: torch.Tensor  # (P,), parameter order of Subject.params
    abs_error: torch.Tensor  # (P,)


@dataclass(frozen=True)
class ExactDense:
    matrix: torch.Tensor  # (P, P), exactly symmetric
    frobenius_error: float  # bound on ‖computed − exact‖_F


@dataclass(frozen=True)
class _Floors:
    """Derivative scales of one activation (see the module docstring)."""

    f1: float
    f2: float
    f3: float
    smooth: bool


def _floors(acts: tuple[nn.Module, ...], dtype, device) -> _Floors | None:
    if not acts:
        return None
    step = 1.0 / GRID_STEPS_PER_UNIT
    count = int(2 * GRID_HALF_WIDTH * GRID_STEPS_PER_UNIT) + 1
    grid = torch.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, count, dtype=dtype, device=device)
    _, d1, d2 = activation_derivatives(acts, grid.unsqueeze(0))
    smooth = not all(type(m) in PIECEWISE_LINEAR for m in acts)
    f3 = float((d2[0, 1:] - d2[0, :-1]).abs().max()) / step
    return _Floors(float(d1.abs().max()), float(d2.abs().max()), f3, smooth)


def _magnitudes(c: LayerValues, z: torch.Tensor, structure: SequentialMLP,
                floors: list[_Floors | None], loss_kind: str, gamma: float,
                u: float) -> LayerValues:
    """The same quantities on magnitudes: ``|x| + e_x/γ_N`` for each input x with a
    first-order error bound ``e_x`` (module docstring), so that ``γ_N · m`` bounds both the
    rounding of the curvature computation and the propagated input errors."""
    weights = [w.abs() for w in c.weights]
    outputs = [*c.inputs[1:], z]  # a_l, the value after linear l and its activation
    inputs, d1s, d2s = [], [], []
    a_abs = c.inputs[0].abs()
    evaluated = any(type(m) is not nn.Flatten for m in structure.prefix)
    a_err = (EVALUATION_ULPS * u if evaluated else 0.0) * a_abs
    for l, lin in enumerate(structure.linears):
        inputs.append(a_abs + a_err / gamma)
        s_abs = a_abs @ weights[l].T
        if lin.bias is not None:
            s_abs = s_abs + lin.bias.detach().abs()
        s_err = _gamma(lin.in_features + 1, c.weights[l].dtype) * s_abs + a_err @ weights[l].T
        a_abs = outputs[l].abs()
        fl = floors[l]
        if fl is None:  # identity
            d1s.append(None)
            d2s.append(None)
            a_err = s_err
            continue
        d1, d2 = c.d1[l].abs(), c.d2[l].abs()
        if fl.smooth:  # mean value theorem, with |σ^(k)(ξ)| ≤ |σ^(k)(s)| + F_{k+1} |ξ − s|
            a_err = EVALUATION_ULPS * u * a_abs + (d1 + fl.f2 * s_err) * s_err
            d1 = d1 + (EVALUATION_ULPS * u * (d1 + fl.f1) + (d2 + fl.f3 * s_err) * s_err) / gamma
            d2 = d2 + (EVALUATION_ULPS * u * (d2 + fl.f2) + fl.f3 * s_err) / gamma
        else:  # exact derivatives; a moves at most at the largest slope
            a_err = EVALUATION_ULPS * u * a_abs + fl.f1 * s_err
        d1s.append(d1)
        d2s.append(d2)
    out_abs = c.output_hessian.abs()
    dz_err = EVALUATION_ULPS * u * c.grads[-1].abs() + torch.einsum("nkl,nl->nk", out_abs, a_err)
    dz = c.grads[-1].abs() + dz_err / gamma
    if loss_kind == "cross_entropy":
        drift = 6.0 * a_err.amax(dim=1)[:, None, None]  # Σ_m |∂A_kl/∂z_m| ≤ 6 |A_kl|
        out_abs = out_abs * (1 + (EVALUATION_ULPS * u + drift) / gamma)
    elif loss_kind != "mse":
        out_abs = out_abs * (1 + EVALUATION_ULPS * u / gamma)
    grads, deltas = backpropagate(weights, d1s, dz)
    return LayerValues(weights, c.has_bias, inputs, d1s, d2s, grads, deltas, out_abs)


# --- pre-activation Hessians --------------------------------------------------------------------
@dataclass
class _PreActivationHessian:
    """``M = Tᵀ A T + diag(diag) + full`` for n samples; absent parts are None."""

    factor: torch.Tensor | None  # T (n, K, out)
    diag: torch.Tensor | None  # (n, out)
    full: torch.Tensor | None  # (n, out, out)

    def diagonal(self, a: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.factor is not None:
            parts.append(((a @ self.factor) * self.factor).sum(dim=1))
        if self.diag is not None:
            parts.append(self.diag)
        if self.full is not None:
            parts.append(torch.diagonal(self.full, dim1=1, dim2=2))
        return sum(parts[1:], parts[0])

    def dense(self) -> torch.Tensor:
        """The full matrix (requires no factor)."""
        out = self.full
        if self.diag is not None:
            d = torch.diag_embed(self.diag)
            out = d if out is None else out + d
        return out


def _pre_activation_hessians(c: LayerValues, low_rank: bool, full_from: int):
    """Yield ``(l, M_l)`` for l = L−1 … 0. ``M_l`` has a full part only for ``l ≥ full_from``
    (below that only its diagonal is needed); ``low_rank`` keeps ``Tᵀ A T`` factored."""
    depth = len(c.weights)
    top = depth - 1
    d1, d2, a = c.d1[top], c.d2[top], c.output_hessian
    curv = None if d2 is None else d2 * c.grads[top]
    if low_rank:
        k = a.shape[-1]
        factor = (torch.eye(k, dtype=a.dtype, device=a.device).expand(a.shape[0], k, k)
                  if d1 is None else torch.diag_embed(d1))
        m = _PreActivationHessian(factor, curv, None)
    else:
        full = a if d1 is None else d1[:, :, None] * a * d1[:, None, :]
        m = _PreActivationHessian(None, curv, full)
    yield top, m
    for l in range(top - 1, -1, -1):
        w = c.weights[l + 1]
        d1, d2 = c.d1[l], c.d2[l]
        factor = None
        if m.factor is not None:
            factor = m.factor @ w
            if d1 is not None:
                factor = factor * d1[:, None, :]
        diag, full = None, None
        if l >= full_from:
            if m.diag is not None or m.full is not None:
                if m.full is None:
                    full = (w.T * m.diag[:, None, :]) @ w
                else:
                    full = w.T @ (m.dense() @ w)
                if d1 is not None:
                    full = d1[:, :, None] * full * d1[:, None, :]
        elif m.diag is not None or m.full is not None:
            diag = 0.0
            if m.diag is not None:
                diag = m.diag @ (w * w)
            if m.full is not None:
                diag = diag + (w * (m.full @ w)).sum(dim=1)
            if d1 is not None:
                diag = diag * d1 * d1
        if d2 is not None:
            curv = d2 * c.grads[l]
            diag = curv if diag is None else diag + curv
        m = _PreActivationHessian(factor, diag, full)
        yield l, m


# --- driving: batches, chunks, rounding -----------------------------------------------------
def operation_count(structure: SequentialMLP, n: int, output_dim: int) -> int:
    """N of the γ_N bound (module docstring): per layer its fan-in and fan-out plus 20, 2K for
    ``Tᵀ A T``, n + 32 for the sums over samples and 1/n, and the longest sums of the trace
    (``‖ā‖²``, ``tr M``, over layers)."""
    widths = structure.widths()
    per_layer = sum(i + o + 20 for i, o in widths)
    trace_sums = max(i for i, _ in widths) + max(o for _, o in widths) + len(widths)
    return per_layer + trace_sums + 2 * output_dim + n + 32


def _gamma(count: int, dtype: torch.dtype) -> float:
    u = UNIT_ROUNDOFF[str(dtype).replace("torch.", "")]
    if count * u >= 0.5:
        raise FloatingPointError(f"γ_{count} is not defined in {dtype}")
    return count * u / (1 - count * u)


def _low_rank(structure: SequentialMLP, k: int) -> bool:
    hidden = [o for _, o in structure.widths()[:-1]]
    return bool(hidden) and k < min(hidden)


class _Chunks:
    """(values, magnitudes) for chunks of samples, as many per chunk as keep
    ``per_sample_entries`` intermediates per sample within ``CHUNK_BYTES``; also the bound's
    ``γ_N`` and an underflow floor (gradual underflow: ≤ one subnormal step per operation)."""

    def __init__(self, subject: Subject, structure: SequentialMLP, per_sample_entries: int):
        self.subject = subject
        self.structure = structure
        self.count = operation_count(structure, subject.n, subject.output_dim)
        self.gamma = _gamma(self.count, subject.dtype)
        operations = self.count * subject.num_params * subject.n
        self.tiny = operations * float(torch.finfo(subject.dtype).smallest_normal) * float(
            torch.finfo(subject.dtype).eps)
        self.u = UNIT_ROUNDOFF[str(subject.dtype).replace("torch.", "")]
        itemsize = torch.finfo(subject.dtype).bits // 8
        self.chunk = max(1, CHUNK_BYTES // max(1, 2 * per_sample_entries * itemsize))
        self.floors = [_floors(acts, subject.dtype, subject.device)
                       for acts in structure.activations]

    def __iter__(self):
        s = self.subject
        with torch.no_grad():
            for b in s.batches:
                for start in range(0, b.n, self.chunk):
                    x, y = b.x[start:start + self.chunk], b.y[start:start + self.chunk]
                    values, z = forward_backward(self.structure, x, y, s.loss_fn)
                    mags = _magnitudes(values, z, self.structure, self.floors, s.loss_fn.kind,
                                       self.gamma, self.u)
                    yield values, mags


def _require(subject: Subject, structure: SequentialMLP | None) -> SequentialMLP:
    if structure is None:
        structure = subject_structure(subject)
    if isinstance(structure, str):
        raise ValueError(structure)
    return structure


def exact_diagonal(subject: Subject, structure: SequentialMLP | None = None) -> ExactDiagonal:
    """``diag H`` of a supported subject, each entry with its rounding bound."""
    structure = _require(subject, structure)
    k = subject.output_dim
    low_rank = _low_rank(structure, k)
    widths = structure.widths()
    chunks = _Chunks(subject, structure, _diagonal_entries(widths, k, low_rank))
    sums = [[None, None] for _ in widths]
    for values, mags in chunks:
        for chunk, target in ((values, 0), (mags, 1)):
            for l, m in _pre_activation_hessians(chunk, low_rank, full_from=1):
                d = m.diagonal(chunk.output_hessian)
                a = chunk.inputs[l]
                block = [d.T @ (a * a)] + ([d.sum(dim=0)] if chunk.has_bias[l] else [])
                prev = sums[l][target]
                sums[l][target] = block if prev is None else [p + q for p, q in
                                                              zip(prev, block, strict=True)]
    n = subject.n
    value = torch.cat([t.reshape(-1) / n for s in sums for t in s[0]])
    magnitude = torch.cat([t.reshape(-1) / n for s in sums for t in s[1]])
    return ExactDiagonal(value, chunks.gamma * magnitude + chunks.tiny)


def _diagonal_entries(widths: list[tuple[int, int]], k: int, low_rank: bool) -> int:
    """Per-sample entries held by the diagonal recursion (a few tensors per layer)."""
    return 3 * sum(i + o * (k if low_rank else o) for i, o in widths)


def exact_trace(subject: Subject, structure: SequentialMLP | None = None) -> ExactTrace:
    """``tr H = (1/n) Σ_i Σ_l ‖ā_{i,l−1}‖² tr M_{i,l}`` with its rounding bound."""
    structure = _require(subject, structure)
    k = subject.output_dim
    low_rank = _low_rank(structure, k)
    chunks = _Chunks(subject, structure, _diagonal_entries(structure.widths(), k, low_rank))
    totals = [0.0, 0.0]
    for values, mags in chunks:
        for idx, chunk in enumerate((values, mags)):
            for l, m in _pre_activation_hessians(chunk, low_rank, full_from=1):
                a = chunk.inputs[l]
                weight = (a * a).sum(dim=1) + (1.0 if chunk.has_bias[l] else 0.0)
                totals[idx] += float(weight @ m.diagonal(chunk.output_hessian).sum(dim=1))
    n = subject.n
    return ExactTrace(totals[0] / n, chunks.gamma * totals[1] / n + chunks.tiny)


# --- dense ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """Where layer l's parameters sit in the flat vector: weight (out, in) row-major, bias."""

    weight: int
    bias: int | None
    fan_in: int
    fan_out: int

    @property
    def rows(self) -> int:
        return self.fan_in + (self.bias is not None)


def _layouts(structure: SequentialMLP) -> list[_Layout]:
    out, offset = [], 0
    for lin in structure.linears:
        w = lin.out_features * lin.in_features
        bias = None if lin.bias is None else offset + w
        out.append(_Layout(offset, bias, lin.in_features, lin.out_features))
        offset += w + (0 if lin.bias is None else lin.out_features)
    return out


def exact_dense_hessian(subject: Subject, structure: SequentialMLP | None = None) -> ExactDense:
    """The dense Hessian of a supported subject by layer blocks (module docstring)."""
    structure = _require(subject, structure)
    layouts = _layouts(structure)
    p = subject.num_params
    dtype, device = subject.dtype, subject.device
    hess = torch.zeros(p, p, dtype=dtype, device=device)
    widths = structure.widths()
    biggest = max(o * o + (o + i) * max(w for _, w in widths) for i, o in widths)
    entries = 4 * (sum(o * o for _, o in widths) + biggest)
    block_sums = {}
    n = subject.n
    chunks = _Chunks(subject, structure, entries)
    for values, mags in chunks:
        _accumulate_blocks(hess, values, layouts, n)
        for key, bound in _block_bounds(mags, n).items():
            block_sums[key] = block_sums.get(key, 0.0) + bound
    _mirror(hess, layouts)
    # a mirrored entry carries its source's error: each block's bound counts twice
    squares = sum(2.0 * v * v for v in block_sums.values())
    err = chunks.gamma * math.sqrt(squares) + p * chunks.tiny
    return ExactDense(hess, err)


def _stacked_factors(c: LayerValues, full_hessians: list[torch.Tensor], b: int):
    """Yield ``(a, N, E)`` for a = b … 0: ``N = M_b J_{a→b}`` (n, out_b, out_a) and
    ``E = E_{b−1,a}`` (n, in_b, out_a), None when a = b."""
    m = full_hessians[b]
    yield b, m, None
    if b == 0:
        return
    n, out_b = m.shape[0], m.shape[1]
    lower = c.weights[b].shape[1]
    eye = torch.eye(lower, dtype=m.dtype, device=m.device).expand(n, lower, lower)
    stacked = torch.cat([m @ c.weights[b], eye], dim=1)
    for a in range(b - 1, -1, -1):
        if a < b - 1:
            stacked = stacked @ c.weights[a + 1]
        if c.d1[a] is not None:
            stacked = stacked * c.d1[a][:, None, :]
        yield a, stacked[:, :out_b], stacked[:, out_b:]


def _full_hessians(c: LayerValues) -> list[torch.Tensor]:
    out: list[torch.Tensor] = [None] * len(c.weights)
    for l, m in _pre_activation_hessians(c, low_rank=False, full_from=0):
        out[l] = m.dense()
    return out


def _augmented(a: torch.Tensor, bias: bool) -> torch.Tensor:
    if not bias:
        return a
    return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)


def _accumulate_blocks(hess: torch.Tensor, c: LayerValues, layouts: list[_Layout], n: int) -> None:
    """Add this chunk's part of every block (b, a), b ≥ a, into ``hess``.

    Diagonal and adjacent blocks (a ≥ b − 1, where ``E_{b−1,a}`` is 0 or ``D_{b−1}``) are a
    Kronecker-type sum ``Σ_i N_i ⊗ ā_{b−1,i} ā_{a−1,i}ᵀ``: one GEMM of ``N`` (pairs (j, j')
    by samples) with the outer products (samples by (k̄, k̄')), plus, for adjacent blocks,
    the diagonal term ``δ_{b,j} σ'_{a,k} ā_{a−1,k'}``. Other blocks, or when the outer
    products would be the larger operand, expand ``X`` (see :func:`_expanded_block`)."""
    full = _full_hessians(c)
    itemsize = hess.element_size()
    for b, lb in enumerate(layouts):
        alpha = _augmented(c.inputs[b], lb.bias is not None)  # (n_c, in_b [+1])
        for a, big_n, e in _stacked_factors(c, full, b):
            la = layouts[a]
            beta = _augmented(c.inputs[a], la.bias is not None) / n  # (n_c, in_a [+1])
            outer = c.n * lb.rows * la.rows
            if a >= b - 1 and la.rows < lb.fan_out * la.fan_out and \
                    outer * itemsize <= BLOCK_BYTES:
                correction = None
                if a == b - 1:
                    d1 = c.d1[a]
                    local = c.deltas[b][:, :, None].expand(-1, -1, lb.fan_in)
                    if d1 is not None:
                        local = local * d1[:, None, :]
                    correction = (local.reshape(c.n, -1).T @ beta).view(lb.fan_out, lb.fan_in,
                                                                          la.rows)
                _kronecker_block(hess, big_n, alpha, beta, lb, la, a == b, correction)
            else:
                _expanded_block(hess, c, b, big_n, e, beta, lb, la, a == b)


def _kronecker_block(hess, big_n, alpha, beta, lb: _Layout, la: _Layout, diagonal: bool,
                     correction: torch.Tensor | None) -> None:
    """``Σ_i N_i[j,j'] ᾱ_{i,k} β_{i,k'}`` (+ correction at j' = k) for pairs (j, j'), j' ≤ j
    on the diagonal, in slices of j; ``correction`` is (out_b, in_b, rows_a)."""
    n_c = alpha.shape[0]
    outer = (alpha[:, :, None] * beta[:, None, :]).reshape(n_c, -1)  # (n_c, rows_b·rows_a)
    pairs = big_n.permute(1, 2, 0).reshape(-1, n_c)  # rows (j, j')
    per_pair = lb.rows * la.rows * hess.element_size()
    step = max(1, BLOCK_BYTES // (per_pair * la.fan_out))
    for j0 in range(0, lb.fan_out, step):
        j1 = min(lb.fan_out, j0 + step)
        if not diagonal:
            r = (pairs[j0 * la.fan_out:j1 * la.fan_out] @ outer).view(
                j1 - j0, la.fan_out, lb.rows, la.rows)
            if correction is not None:
                torch.diagonal(r[:, :, :lb.fan_in], dim1=1, dim2=2).add_(
                    correction[j0:j1].transpose(1, 2))
            _scatter(hess, r.transpose(1, 2), lb, j0, j1, la, la.fan_out)
            continue
        for j in range(j0, j1):  # lower part: j' ≤ j
            r = (pairs[j * la.fan_out:j * la.fan_out + j + 1] @ outer).view(
                1, j + 1, lb.rows, la.rows)
            _scatter(hess, r.transpose(1, 2), lb, j, j + 1, la, j + 1)


def _expanded_block(hess, c: LayerValues, b: int, big_n, e, beta, lb: _Layout, la: _Layout,
                    diagonal: bool) -> None:
    """Build ``X[(j, k̄), j', i] = N_i[j,j'] ᾱ_{i,k} + δ_{i,j} E_i[k,j']`` for a slice of j
    and contract it with ``β = ā_{a−1}/n`` over samples in one GEMM."""
    itemsize = hess.element_size()
    alpha_t = c.inputs[b].T.contiguous()  # (in_b, n_c)
    delta_t = c.deltas[b].T.contiguous()  # (out_b, n_c)
    n_t = big_n.permute(1, 2, 0).contiguous()  # (out_b, out_a, n_c)
    e_t = None if e is None else e.permute(1, 2, 0).contiguous()  # (in_b, out_a, n_c)
    step = max(1, BLOCK_BYTES // (lb.rows * la.fan_out * c.n * itemsize))
    for j0 in range(0, lb.fan_out, step):
        j1 = min(lb.fan_out, j0 + step)
        cols = j1 if diagonal else la.fan_out  # diagonal block: lower part only
        x = torch.empty(j1 - j0, lb.rows, cols, c.n, dtype=hess.dtype, device=hess.device)
        torch.mul(n_t[j0:j1, None, :cols], alpha_t[None, :, None, :], out=x[:, :lb.fan_in])
        if e_t is not None:
            x[:, :lb.fan_in].addcmul_(delta_t[j0:j1, None, None, :], e_t[None, :, :cols])
        if lb.bias is not None:
            x[:, lb.fan_in].copy_(n_t[j0:j1, :cols])
        r = (x.view(-1, c.n) @ beta).view(j1 - j0, lb.rows, cols, la.rows)
        _scatter(hess, r, lb, j0, j1, la, cols)


def _scatter(hess, r, lb: _Layout, j0: int, j1: int, la: _Layout, cols: int) -> None:
    """Add ``r`` (rows (j, k̄) of layer b, columns (j', k̄') of layer a) into ``hess``."""
    js = j1 - j0
    fin_b, fin_a = lb.fan_in, la.fan_in
    rows_w = slice(lb.weight + j0 * fin_b, lb.weight + j1 * fin_b)
    cols_w = slice(la.weight, la.weight + cols * fin_a)
    hess[rows_w, cols_w].view(js, fin_b, cols, fin_a).add_(r[:, :fin_b, :, :fin_a])
    if la.bias is not None:
        cols_b = slice(la.bias, la.bias + cols)
        hess[rows_w, cols_b].view(js, fin_b, cols).add_(r[:, :fin_b, :, fin_a])
    if lb.bias is not None:
        rows_b = slice(lb.bias + j0, lb.bias + j1)
        hess[rows_b, cols_w].view(js, cols, fin_a).add_(r[:, fin_b, :, :fin_a])
        if la.bias is not None:
            hess[rows_b, la.bias:la.bias + cols].add_(r[:, fin_b, :, fin_a])


def _augmented_order(lay: _Layout) -> torch.Tensor:
    """For each parameter of the layer (flat order), its index in the (out, in+1) order."""
    j = torch.arange(lay.fan_out)
    weight = (j[:, None] * lay.rows + torch.arange(lay.fan_in)[None, :]).reshape(-1)
    if lay.bias is None:
        return weight
    return torch.cat([weight, j * lay.rows + lay.fan_in])


def _mirror(hess: torch.Tensor, layouts: list[_Layout]) -> None:
    """Fill the blocks above the diagonal, and the upper part of diagonal blocks (in the
    augmented (j, k̄) order in which they were computed), by copying."""
    spans = []
    for lay in layouts:
        size = lay.fan_out * lay.rows
        spans.append(slice(lay.weight, lay.weight + size))
    for b, sb in enumerate(spans):
        for a in range(b):
            hess[spans[a], sb] = hess[sb, spans[a]].T
        order = _augmented_order(layouts[b]).to(hess.device)
        block = hess[sb, sb]
        lower = order[:, None] >= order[None, :]
        hess[sb, sb] = torch.where(lower, block, block.T)


def _block_bounds(c: LayerValues, n: int) -> dict[tuple[int, int], float]:
    """For each block (b, a): ``Σ_i ‖|X_i|‖_F ‖ā_{a−1,i}‖ / n`` on magnitudes, with
    ``X_i[(j,k̄), j'] = N_{jj'} ā_k + δ_j E_{kj'}`` (its Frobenius norm without forming it)."""
    full = _full_hessians(c)
    out = {}
    for b in range(len(c.weights)):
        alpha = _augmented(c.inputs[b], c.has_bias[b])
        alpha2 = (alpha * alpha).sum(dim=1)
        delta = c.deltas[b]
        for a, big_n, e in _stacked_factors(c, full, b):
            sq = alpha2 * (big_n * big_n).sum(dim=(1, 2))
            if e is not None:
                ae = torch.einsum("nk,nkj->nj", c.inputs[b], e)
                sq = sq + 2.0 * torch.einsum("nij,ni,nj->n", big_n, delta, ae)
                sq = sq + (delta * delta).sum(dim=1) * (e * e).sum(dim=(1, 2))
            beta = _augmented(c.inputs[a], c.has_bias[a]).norm(dim=1)
            out[(b, a)] = float((sq.sqrt() * beta).sum()) / n
    return out
