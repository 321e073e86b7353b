"""The loss Hessian of a subject as an operator: products with vectors, and dense when small.

Products reuse the gradient graph: the gradient of each batch is built once with
``create_graph=True``; every Hessian-vector product is then one backward pass through it.
Batches are weighted by their sample counts, so ``H = Σ_b (n_b/n) H_b`` exactly.
"""

from __future__ import annotations

import torch

from .subject import MatrixSubject, Subject

DENSE_CHUNK = 128


class HessianOperator:
    """``v ↦ H v`` for a :class:`Subject` (flat parameter vectors)."""

    def __init__(self, subject: Subject):
        self.subject = subject
        self.dim = subject.num_params
        self.dtype = subject.dtype
        self.device = subject.device
        self._graphs: list[tuple[float, tuple[torch.Tensor, ...]]] | None = None

    def _gradient_graphs(self):
        if self._graphs is None:
            s = self.subject
            graphs = []
            for b in s.batches:
                loss = s.loss_fn.per_sample(s.net(b.x), b.y).sum() / s.n
                g = torch.autograd.grad(loss, s.params, create_graph=True)
                graphs.append((1.0, g))
            self._graphs = graphs
        return self._graphs

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        shapes = [p.shape for p in self.subject.params]
        sizes = [p.numel() for p in self.subject.params]
        lead = v.shape[:-1]
        return [c.reshape(*lead, *s) for c, s in zip(torch.split(v, sizes, dim=-1), shapes,
                                                    strict=True)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector (P,)."""
        parts = self._split(v.to(self.dtype))
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for _, g in self._gradient_graphs():
            hv = torch.autograd.grad(g, self.subject.params, grad_outputs=parts,
                                     retain_graph=True, allow_unused=True)
            out += _flatten(hv, self.subject.params)
        return out

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block of vectors given as rows, (k, P) -> (k, P)."""
        parts = self._split(v.to(self.dtype))
        out = torch.zeros(v.shape[0], self.dim, dtype=self.dtype, device=self.device)
        for _, g in self._gradient_graphs():
            hv = torch.autograd.grad(g, self.subject.params, grad_outputs=parts,
                                     retain_graph=True, allow_unused=True,
                                     is_grads_batched=True)
            out += torch.cat([
                (h if h is not None else torch.zeros(v.shape[0], *p.shape, dtype=self.dtype,
                                                     device=self.device)).reshape(v.shape[0],
                                                                                  -1)
                for h, p in zip(hv, self.subject.params, strict=True)], dim=1)
        return out

    def dense(self, chunk: int = DENSE_CHUNK) -> torch.Tensor:
        """The full P×P Hessian, built ``chunk`` columns at a time (not symmetrised)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        cols = [self.matmat(eye[i:i + chunk]) for i in range(0, self.dim, chunk)]
        return torch.cat(cols, dim=0).T.contiguous()


def dense_hessian(subject: Subject | MatrixSubject) -> torch.Tensor:
    if isinstance(subject, MatrixSubject):
        return subject.matrix.clone()
    return HessianOperator(subject).dense()


def _flatten(parts, params) -> torch.Tensor:
    return torch.cat([
        (h if h is not None else torch.zeros_like(p)).reshape(-1)
        for h, p in zip(parts, params, strict=True)
    ])
