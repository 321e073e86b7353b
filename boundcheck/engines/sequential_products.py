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
layer and none of autograd's graph bookkeeping. A block of k directions (``matmat``) runs the
same sweeps with a leading dimension of k. The layer values of each batch are computed once,
when the operator is built; ``A`` comes from ``Loss.output_hessian`` (stable when the softmax
saturates) and ``∂ℓ/∂z`` from autograd through the saturation-safe loss.
"""

from __future__ import annotations

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
        self._values: list[LayerValues] | None = None
        self._sizes = [p.numel() for p in subject.params]

    def _layer_values(self) -> list[LayerValues]:
        if self._values is None:
            s = self.subject
            with torch.no_grad():
                self._values = [forward_backward(self.structure, b.x, b.y, s.loss_fn)[0]
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

    def _directions(self, v: torch.Tensor):
        """Split flat directions (…, P) into per-layer ``(V_l (…, out, in), c_l (…, out))``."""
        parts = iter(torch.split(v.to(self.dtype), self._sizes, dim=-1))
        lead = v.shape[:-1]
        out = []
        for lin in self.structure.linears:
            w = next(parts).reshape(*lead, lin.out_features, lin.in_features)
            c = None if lin.bias is None else next(parts)
            out.append((w, c))
        return out

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for directions with any leading shape (…, P)."""
        directions = self._directions(v)
        grads = [[None, None] for _ in directions]
        for c in self._layer_values():
            for l, (gw, gb) in enumerate(_r_sweeps(c, directions)):
                grads[l][0] = gw if grads[l][0] is None else grads[l][0] + gw
                if gb is not None:
                    grads[l][1] = gb if grads[l][1] is None else grads[l][1] + gb
        lead = v.shape[:-1]
        flat = [t.reshape(*lead, -1) for gw, gb in grads for t in (gw, gb) if t is not None]
        return torch.cat(flat, dim=-1) / self.subject.n

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector (P,)."""
        return self._product(v)

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block of vectors given as rows, (k, P) -> (k, P)."""
        if self.batched_products:
            return self._product(v)
        return torch.stack([self._product(row) for row in v])


def _r_sweeps(c: LayerValues, directions):
    """Per layer, ``Σ_i (R δ_l a_{l−1}ᵀ + δ_l R a_{l−1}ᵀ)`` and ``Σ_i R δ_l`` (module doc)."""
    depth = len(c.weights)
    r_s, r_in = [], []  # R s_l, and R a_{l−1} (None for the input)
    r_a = None
    for l, (v_w, v_b) in enumerate(directions):
        rs = c.inputs[l] @ v_w.transpose(-1, -2)
        if v_b is not None:
            rs = rs + v_b.unsqueeze(-2)
        if r_a is not None:
            rs = rs + r_a @ c.weights[l].T
        r_in.append(r_a)
        r_s.append(rs)
        r_a = rs if c.d1[l] is None else c.d1[l] * rs
    r_g = torch.einsum("nkl,...nl->...nk", c.output_hessian, r_a)  # R ∂ℓ/∂z
    out = [None] * depth
    for l in range(depth - 1, -1, -1):
        r_d = r_g if c.d1[l] is None else c.d1[l] * r_g
        if c.d2[l] is not None:
            r_d = r_d + c.d2[l] * r_s[l] * c.grads[l]
        g_w = r_d.transpose(-1, -2) @ c.inputs[l]
        if r_in[l] is not None:
            g_w = g_w + c.deltas[l].T @ r_in[l]
        out[l] = (g_w, r_d.sum(dim=-2) if c.has_bias[l] else None)
        if l > 0:  # R g_{l−1}
            r_g = r_d @ c.weights[l] + c.deltas[l] @ directions[l][0]
    return out
