"""Hessian-vector products of sequential MLPs by the R-operator, without autograd.

For the networks :func:`boundcheck.engines.sequential.sequential_structure` accepts, ``H v`` is one
forward and one backward sweep of directional derivatives (Pearlmutter, "Fast exact
multiplication by the Hessian", Neural Computation 6(1), 1994). With the per-layer values of
:func:`boundcheck.engines.sequential.forward_backward` (``a_{l−1}``, ``σ'_l``, ``σ''_l``,
``g_l = ∂ℓ/∂a_l``, ``δ_l = ∂ℓ/∂s_l``, ``A = ∇²_z ℓ``) and a direction ``(V_l, c_l)`` on the
weights and biases, R{·} the derivative along it:

    R s_l = V_l a_{l−1} + c_l + W_l R a_{l−1},   R a_l = σ'_l ⊙ R s_l   (R a_0 = 0),
    R g_L = A R z,   R g_{l−1} = W_lᵀ R δ_l + V_lᵀ δ_l,
    R δ_l = σ'_l ⊙ R g_l + σ''_l ⊙ R s_l ⊙ g_l,
    (H v)_{W_l} = (1/n) Σ_i (R δ_l a_{l−1}ᵀ + δ_l R a_{l−1}ᵀ),   (H v)_{b_l} = (1/n) Σ_i R δ_l.

Every term is a matrix product over the samples, so a product costs about six GEMMs per
layer and none of autograd's graph bookkeeping. What depends only on θ and the data is computed
once per batch, when the first product is asked for: the layer values, ``σ''_l ⊙ g_l``, and the
factor ``n_b/n`` of the batch folded into ``A``, ``δ_l`` and ``σ''_l ⊙ g_l`` (the product is
linear in them jointly). A sweep then costs two GEMMs per layer forward and four backward,
accumulated in place (``addmm_``) into the output, and three elementwise products per hidden
layer. That is about twice the GEMM work of a gradient (one forward, two backward per layer):
for 20→h→h→10 the flops are 6.4 vs 3.3 n·h² at h = 256, the floor for this exact product.
``A`` comes from ``Loss.output_hessian`` (stable when the softmax saturates) and ``∂ℓ/∂z``
from autograd through the saturation-safe loss.

A block of k directions (``matmat``) runs the same sweeps on samples-major tensors
(n, k, width), so each GEMM is one wider GEMM, not k small ones. Measured on one CPU thread
(MLP 20→h→h→10 tanh, 512 samples, cross-entropy; CPU time, best of 40 interleaved, 2 cores
under load ~10), time per direction / a plain ``F.cross_entropy`` gradient for h = 32, 64,
128, 256: one at a time 0.80, 1.14, 1.41, 1.68 (the former sweep 0.90, 1.27, 1.64, 2.01);
blocks of 2 0.69, 0.99, 1.44, 1.80; of 4 0.65, 1.06, 1.53, 1.91; of 8 0.78, 1.37, 1.85, 2.06.
Blocks of 2–4 saved 10–20% at h ≤ 64, nothing at h = 128 and lost at h = 256 (the (n, k·h)
temporaries leave the cache), so on CPUs ``matmat`` stays a loop (``batched_products``
False) and the block sweep serves GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from boundcheck.core.subject import Subject
from boundcheck.engines.sequential import LayerValues, SequentialMLP, forward_backward


class SequentialHessianOperator:
    """``v ↦ H v`` for a sequential-MLP :class:`Subject`, the interface of
    :class:`boundcheck.engines.curvature.HessianOperator` (``dim``, ``dtype``, ``device``,
    ``matvec``, ``matmat``, ``batched_products``)."""

    def __init__(self, subject: Subject, structure: SequentialMLP):
        self.subject = subject
        self.structure = structure
        self.dim = subject.num_params
        self.dtype = subject.dtype
        self.device = subject.device
        self.batched_products = self.device.type != "cpu"
        self._values: list[_SweepValues] | None = None
        self._sizes = [p.numel() for p in subject.params]

    def _sweep_values(self) -> list[_SweepValues]:
        if self._values is None:
            s = self.subject
            with torch.no_grad():
                self._values = [
                    _SweepValues.of(forward_backward(self.structure, b.x, b.y, s.loss_fn)[0],
                                    1.0 / s.n)
                    for b in s.batches]
        return self._values

    def bytes_per_sample(self) -> int:
        """Bytes of the cached layer values per sample (measured on one sample); a product
        needs about as much again for its sweeps."""
        s = self.subject
        with torch.no_grad():
            c = forward_backward(self.structure, s.batches[0].x[:1], s.batches[0].y[:1],
                                 s.loss_fn)[0]
        tensors = [*c.inputs, *c.d1, *c.d2, *c.grads, *c.deltas, c.output_hessian]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one direction (P,) or a block of directions as rows (k, P)."""
        block = v.to(self.dtype).reshape(-1, self.dim)
        out = torch.zeros_like(block)
        layers = _layer_slices(self.structure, self._sizes)
        for values in self._sweep_values():
            _r_sweeps(values, block, out, layers)
        return out.reshape(v.shape)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector (P,)."""
        return self._product(v)

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block of vectors given as rows, (k, P) -> (k, P)."""
        if self.batched_products:
            return self._product(v)
        return torch.stack([self._product(row) for row in v])


@dataclass(frozen=True)
class _SweepValues:
    """What a sweep needs from one batch, with the batch's weight ``w = n_b/n`` folded into the
    terms the product is linear in: ``w A``, ``w δ_l`` and ``w σ''_l ⊙ g_l``."""

    weights: list[torch.Tensor]
    has_bias: list[bool]
    inputs: list[torch.Tensor]
    d1: list[torch.Tensor | None]
    d2_grads: list[torch.Tensor | None]
    deltas: list[torch.Tensor]
    output_hessian: torch.Tensor

    @staticmethod
    def of(c: LayerValues, weight: float) -> _SweepValues:
        d2g = [None if d2 is None else (weight * d2) * g for d2, g in zip(c.d2, c.grads,
                                                                         strict=True)]
        return _SweepValues(c.weights, c.has_bias, c.inputs, c.d1, d2g,
                            [weight * d for d in c.deltas], weight * c.output_hessian)


def _layer_slices(structure: SequentialMLP, sizes: list[int]):
    """Per layer ``(out, in, weight slice, bias slice or None)`` of the flat parameters."""
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    idx = 0
    layers = []
    for lin in structure.linears:
        w = slice(offsets[idx], offsets[idx + 1])
        idx += 1
        b = None
        if lin.bias is not None:
            b = slice(offsets[idx], offsets[idx + 1])
            idx += 1
        layers.append((lin.out_features, lin.in_features, w, b))
    return layers


def _r_sweeps(c: _SweepValues, v: torch.Tensor, out: torch.Tensor, layers) -> None:
    """Add one batch's ``H v`` for the rows of ``v`` (k, P) into ``out`` (k, P) (module doc).

    Tensors of the sweep are samples-major, (n, k·width): GEMMs against the data (``a_{l−1}``,
    ``δ_l``) take all k directions at once, and GEMMs against ``W_l`` see n·k rows."""
    k, n = v.shape[0], c.inputs[0].shape[0]
    depth = len(layers)
    dirs, r_s, r_in = [], [], []  # V_l (k·out, in); R s_l and R a_{l−1}, (n, k·width)
    r_a = None
    for l, (o, i, ws, bs) in enumerate(layers):
        v_w = v[:, ws].reshape(k * o, i)
        dirs.append(v_w)
        if bs is not None:
            rs = torch.addmm(v[:, bs].reshape(k * o), c.inputs[l], v_w.T)
        else:
            rs = c.inputs[l] @ v_w.T
        if r_a is not None:
            rs.view(n * k, o).addmm_(r_a.view(n * k, i), c.weights[l].T)
        r_in.append(r_a)
        r_s.append(rs)
        r_a = rs if c.d1[l] is None else (rs.view(n, k, o) * c.d1[l].unsqueeze(1)).view(n, -1)
    kz = layers[-1][0]
    r_g = torch.bmm(r_a.view(n, k, kz), c.output_hessian).view(n, -1)  # R ∂ℓ/∂z (A symmetric)
    for l in range(depth - 1, -1, -1):
        o, i, ws, bs = layers[l]
        r_d = r_g if c.d1[l] is None else (r_g.view(n, k, o) * c.d1[l].unsqueeze(1)).view(n, -1)
        if c.d2_grads[l] is not None:
            r_d = r_d.view(n, k, o).addcmul(r_s[l].view(n, k, o),
                                            c.d2_grads[l].unsqueeze(1)).view(n, -1)
        out_w = out[:, ws]
        if k == 1:
            g_w = out_w.view(o, i)
            g_w.addmm_(r_d.T, c.inputs[l])
            if r_in[l] is not None:
                g_w.addmm_(c.deltas[l].T, r_in[l])
        else:
            g_w = (r_d.T @ c.inputs[l]).view(k, o * i)
            if r_in[l] is not None:
                g_w += (c.deltas[l].T @ r_in[l]).view(o, k, i).transpose(0, 1).reshape(k, -1)
            out_w += g_w
        if bs is not None:
            out[:, bs] += r_d.view(n, k, o).sum(dim=0)
        if l > 0:  # R g_{l−1} = R δ_l W_l + δ_l V_l
            r_g = (r_d.view(n * k, o) @ c.weights[l]).view(n, k * i)
            v_l = dirs[l] if k == 1 else dirs[l].view(k, o, i).transpose(0, 1).reshape(o, -1)
            r_g.addmm_(c.deltas[l], v_l)
