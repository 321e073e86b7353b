"""The loss Hessian of a subject as an operator, and the Gauss–Newton part of it.

Products reuse the gradient graph: the gradient of each batch is built once with
``create_graph=True``; every Hessian-vector product is then one backward pass through it.
Batches are weighted by their sample counts, so ``H = Σ_b (n_b/n) H_b`` exactly.

:class:`GaussNewton` gives what the split ``H = G + R`` needs (THEOREMS.md conventions):
``G = (1/n) Σ_i J_iᵀ A_i J_i`` with ``J_i = ∂f(x_i)/∂θ`` and ``A_i`` the loss's output
Hessian, read from the loss (``Loss.output_hessian``), never assumed.

:class:`HessianOperator` and :class:`SymmetricMatrixOperator` have ``dim``, ``dtype``,
``device``, ``matvec(v)``, ``matmat(V rows)`` and ``batched_products`` (whether ``matmat``
beats a loop of ``matvec``), which is all the estimators in :mod:`.estimators` use.

Forward passes run under :func:`twice_differentiable`: attention (``nn.MultiheadAttention``,
``scaled_dot_product_attention``) then uses its math kernel, whose backward can itself be
differentiated; the fused CPU kernels cannot ("derivative for ..._backward is not
implemented").
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jacrev, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from boundcheck.core.subject import MatrixSubject, Subject
from boundcheck.engines.estimators import clock
from boundcheck.engines.memory import (
    SampleCost,
    device_memory_bytes,
    forward_cost,
    micro_batches,
    plan_products,
    product_cost,
    samples_that_fit,
)
from boundcheck.engines.sequential import subject_structure
from boundcheck.engines.sequential_hessian import exact_dense_hessian
from boundcheck.engines.sequential_products import SequentialHessianOperator

DENSE_CHUNK = 128
JACOBIAN_CHUNK_ENTRIES = 2**24  # per-sample Jacobian entries held at once (128 MiB in float64)


def twice_differentiable():
    """Context in which attention uses the kernel with second derivatives (see module)."""
    return sdpa_kernel([SDPBackend.MATH])


class HessianOperator:
    """``v ↦ H v`` for a :class:`Subject` (flat parameter vectors).

    ``memory_bytes`` (``Budget.memory_bytes``; None: no limit): the graphs of every batch are
    kept when they fit it, else each product streams micro-batches, building each one's
    gradient graph, taking one backward pass through it and freeing it; the shares
    ``(1/n) Σ_{i∈b}`` are accumulated in float64 (:mod:`.memory`). Products equal the
    graph-reusing ones to rounding (relative 4–6e-16 measured on a CNN).
    """

    def __init__(self, subject: Subject, memory_bytes: int | None = None):
        self.subject = subject
        self.dim = subject.num_params
        self.dtype = subject.dtype
        self.device = subject.device
        self.batched_products = self.device.type != "cpu"  # CPU: loops of matvec are faster
        self._graphs: list[tuple[float, tuple[torch.Tensor, ...]]] | None = None
        self.memory_bytes = memory_bytes
        self.sample_cost: SampleCost | None = None
        self.micro_batch: int | None = None  # None: keep every batch's graph
        if memory_bytes is not None:
            s = subject
            self.sample_cost = product_cost(self._gradient, s.params, s.batches[0].x,
                                            s.batches[0].y)
            self.micro_batch = plan_products(self.sample_cost, [b.n for b in s.batches],
                                             memory_bytes)

    def _gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``∇ (1/n) Σ_{i in x} ℓ_i`` with its graph (``create_graph``): the batch's share
        of the gradient, weighted n_b/n by the sum over the full n."""
        s = self.subject
        with twice_differentiable():
            loss = s.loss_fn.per_sample(s.net(x), y).sum() / s.n
        return torch.autograd.grad(loss, s.params, create_graph=True)

    def _gradient_graphs(self):
        if self._graphs is None:
            self._graphs = [(1.0, self._gradient(b.x, b.y)) for b in self.subject.batches]
        return self._graphs

    def _gradients(self):
        """The gradient graphs a product runs through: every batch's, kept; or, streaming
        (``micro_batch`` set by the memory budget), one micro-batch's at a time, rebuilt for
        each product and freed before the next is built (the caller drops its reference)."""
        if self.micro_batch is None:
            for _, g in self._gradient_graphs():
                yield g
            return
        for x, y in micro_batches(self.subject.batches, self.micro_batch):
            yield self._gradient(x, y)

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        shapes = [p.shape for p in self.subject.params]
        sizes = [p.numel() for p in self.subject.params]
        lead = v.shape[:-1]
        return [c.reshape(*lead, *s) for c, s in zip(torch.split(v, sizes, dim=-1), shapes,
                                                    strict=True)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector (P,)."""
        parts = self._split(v.to(self.dtype))
        out = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        for g in self._gradients():
            hv = torch.autograd.grad(g, self.subject.params, grad_outputs=parts,
                                     retain_graph=self.micro_batch is None, allow_unused=True)
            out += _flatten(hv, self.subject.params)
            del g, hv  # a streamed graph is freed before the next micro-batch's is built
        return out.to(self.dtype)

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block of vectors given as rows, (k, P) -> (k, P)."""
        parts = self._split(v.to(self.dtype))
        out = torch.zeros(v.shape[0], self.dim, dtype=torch.float64, device=self.device)
        for g in self._gradients():
            hv = torch.autograd.grad(g, self.subject.params, grad_outputs=parts,
                                     retain_graph=self.micro_batch is None, allow_unused=True,
                                     is_grads_batched=True)
            out += torch.cat([
                (h if h is not None else torch.zeros(v.shape[0], *p.shape, dtype=self.dtype,
                                                     device=self.device)).reshape(v.shape[0],
                                                                                  -1)
                for h, p in zip(hv, self.subject.params, strict=True)], dim=1)
            del g, hv
        return out.to(self.dtype)

    def dense(self, chunk: int = DENSE_CHUNK) -> torch.Tensor:
        """The full P×P Hessian (not symmetrised): on CPU one product per column, which
        measured 1.4 ms a column against 4.5 ms for batches of 128 on the reference MLP
        (benchmarks/README.md); elsewhere ``chunk`` columns at a time."""
        if self.device.type == "cpu":
            out = torch.empty(self.dim, self.dim, dtype=self.dtype)
            e = torch.zeros(self.dim, dtype=self.dtype)
            for j in range(self.dim):
                e[j] = 1.0
                out[j] = self.matvec(e)
                e[j] = 0.0
            return out.T.contiguous()
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        cols = [self.matmat(eye[i:i + chunk]) for i in range(0, self.dim, chunk)]
        return torch.cat(cols, dim=0).T.contiguous()


class SymmetricMatrixOperator:
    """``v ↦ A v`` for an explicit symmetric matrix (a :class:`MatrixSubject`, or tests)."""

    batched_products = True

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix
        self.dim = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v.to(self.dtype)

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        return v.to(self.dtype) @ self.matrix

    def dense(self) -> torch.Tensor:
        return self.matrix.clone()


def hessian_operator(subject: Subject | MatrixSubject, memory_bytes: int | None = None):
    """The Hessian of a subject as an operator: a :class:`MatrixSubject` is its own Hessian;
    sequential MLPs get R-operator products
    (:class:`.sequential_products.SequentialHessianOperator`: 0.76–0.86× the time of
    the graph-reusing autograd product on the reference MLP in three benchmark runs, and
    batched for blocks on GPUs) when their cached layer values fit ``memory_bytes`` twice
    over; every other network :class:`HessianOperator`, which streams micro-batches when
    its graphs do not fit (:mod:`.memory`)."""
    if isinstance(subject, MatrixSubject):
        return SymmetricMatrixOperator(subject.matrix)
    structure = subject_structure(subject)
    if not isinstance(structure, str):
        op = SequentialHessianOperator(subject, structure)
        if memory_bytes is None or 2 * subject.n * op.bytes_per_sample() <= memory_bytes:
            return op
    return HessianOperator(subject, memory_bytes)


def dense_hessian(subject: Subject | MatrixSubject) -> torch.Tensor:
    """The dense Hessian: by layer blocks for sequential MLPs
    (:mod:`boundcheck.engines.sequential_hessian`), else one product per column
    (:meth:`HessianOperator.dense`, which stays autograd-only)."""
    return dense_hessian_with_error(subject)[0]


def dense_hessian_with_error(subject: Subject | MatrixSubject, memory_bytes: int | None = None
                             ) -> tuple[torch.Tensor, float]:
    """:func:`dense_hessian` and an a-priori bound on the Frobenius norm of its rounding
    error (0 where none is known: the autograd route's error is judged from its asymmetry).
    ``memory_bytes``: the autograd route's products stream under that budget (:mod:`.memory`)."""
    if isinstance(subject, MatrixSubject):
        return subject.matrix.clone(), 0.0
    structure = subject_structure(subject)
    if isinstance(structure, str):
        return HessianOperator(subject, memory_bytes).dense(), 0.0
    exact = exact_dense_hessian(subject, structure)
    return exact.matrix, exact.frobenius_error


class GaussNewton:
    """The Gauss–Newton matrix ``G = (1/n) Σ_i J_iᵀ A_i J_i`` of a :class:`Subject`.

    ``trace_terms()`` is exact: per-sample Jacobians by ``vmap(jacrev)`` (K reverse passes
    per batch, vectorised over samples, in chunks), then ``tr G = (1/n) Σ_i tr(A_i J_i J_iᵀ)``.
    ``quadratic_form(V)`` gives ``vᵀ G v`` for each row v of V from forward-mode products
    ``J_i v`` alone: ``vᵀ G v = (1/n) Σ_i (J_i v)ᵀ A_i (J_i v)`` (two reverse passes instead
    where a layer has no forward-mode derivative, e.g. fused attention).
    """

    def __init__(self, subject: Subject, memory_bytes: int | None = None):
        self.subject = subject
        self.dim = subject.num_params
        self.dtype = subject.dtype
        self.device = subject.device
        self.memory_bytes = memory_bytes
        self._forward_bytes: float | None = None  # activations per sample (memory budget)
        self._module_buffers = dict(subject.net.named_buffers())
        self._output_hessians: list[torch.Tensor] | None = None
        self._forward_mode = True

    def _params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in zip(self.subject.param_names, self.subject.params,
                                              strict=True)}

    def _outputs(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        with twice_differentiable():
            return functional_call(self.subject.net, (params, self._module_buffers), (x,))

    def output_hessians(self) -> list[torch.Tensor]:
        """``A_i`` for every sample, per batch: (n_b, K, K)."""
        if self._output_hessians is None:
            s = self.subject
            with torch.no_grad():
                outs = [s.net(b.x) for b in s.batches]
            self._output_hessians = [s.loss_fn.output_hessian(z, b.y).detach()
                                     for z, b in zip(outs, s.batches, strict=True)]
        return self._output_hessians

    def jacobian_grams(self, x: torch.Tensor) -> torch.Tensor:
        """``J_i J_iᵀ`` (n_b, K, K) for the samples in ``x``, in chunks of samples."""
        params = self._params()

        def one(p, xi):
            return self._outputs(p, xi.unsqueeze(0)).squeeze(0)

        per_sample = vmap(jacrev(one), in_dims=(None, 0))
        k = self.subject.output_dim
        chunk = max(1, JACOBIAN_CHUNK_ENTRIES // max(1, k * self.dim))
        if self.memory_bytes is not None:  # a few copies of each Jacobian (as chunk_size)
            # and the activations of a forward pass and of K backward passes
            per = 4 * k * self.dim * x.element_size() + (k + 1) * self._activation_bytes()
            chunk = min(chunk, samples_that_fit(per, self.memory_bytes, self.memory_bytes,
                                                "a chunk of per-sample Jacobians (tr G)"))
        grams = []
        for start in range(0, x.shape[0], chunk):
            jac = per_sample(params, x[start:start + chunk])
            gram = sum(torch.einsum("nk...,nl...->nkl", j, j) for j in jac.values())
            grams.append(gram)
        return torch.cat(grams)

    def trace_terms(self) -> tuple[float, float]:
        """``(tr G, Σ |A_i| : |J_i J_iᵀ| / n)``; the second scales the rounding error."""
        total, magnitude = 0.0, 0.0
        for b, a in zip(self.subject.batches, self.output_hessians(), strict=True):
            gram = self.jacobian_grams(b.x)
            total += float(torch.einsum("nkl,nlk->", a, gram))
            magnitude += float(torch.einsum("nkl,nkl->", a.abs(), gram.abs()))
        n = self.subject.n
        return total / n, magnitude / n

    def quadratic_form(self, v: torch.Tensor) -> torch.Tensor:
        """``vᵀ G v`` for each row of ``v`` (m, P) -> (m,)."""
        v = v.to(self.dtype)
        m = v.shape[0]
        out = torch.zeros(m, dtype=self.dtype, device=self.device)
        rows, samples = self._product_chunks(m)
        for b, a in zip(self.subject.batches, self.output_hessians(), strict=True):
            for r in range(0, m, rows):
                for i in range(0, b.n, samples):
                    jv = self._jacobian_products(b.x[i:i + samples], v[r:r + rows])
                    out[r:r + rows] += torch.einsum("mnk,nkl,mnl->m", jv,
                                                    a[i:i + samples], jv)
                    clock.report("Gauss–Newton forms vᵀGv", min(r + rows, m))
        return out / self.subject.n

    def _product_chunks(self, m: int) -> tuple[int, int]:
        """``(rows of v, samples)`` per call of :meth:`_jacobian_products`: chunks whose
        tangents (about twice the activations a forward pass saves, per sample and direction,
        :func:`.memory.forward_cost`) fit the memory budget, else a quarter of the device's."""
        budget = self.memory_bytes
        if budget is None:  # a quarter of the device: 30 pilot tangents × 64 images through
            # ResNet-18 at once took the example to 20.9 GB of a 23 GB machine
            total = device_memory_bytes(self.device)
            if total is None:
                return m, max(b.n for b in self.subject.batches)
            budget = total // 4
        per = 2 * self._activation_bytes()
        rows = min(m, samples_that_fit(per, budget, budget, "a Gauss–Newton product vᵀGv"))
        return rows, max(1, int(budget // (rows * per)))

    def _activation_bytes(self) -> float:
        """Bytes per sample of a forward pass's activations (:func:`.memory.forward_cost`)."""
        if self._forward_bytes is None:
            s = self.subject
            self._forward_bytes = forward_cost(s.net, s.params, s.batches[0].x)
        return self._forward_bytes

    def _jacobian_products(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``J_i v`` for every sample and every row of v: (m, n_b, K). Forward mode, or two
        reverse passes for layers without forward-mode derivatives (fused attention)."""
        params = self._params()
        sizes = [p.numel() for p in params.values()]
        parts = [c.reshape(v.shape[0], *p.shape)
                 for c, p in zip(torch.split(v, sizes, dim=-1), params.values(), strict=True)]
        if self._forward_mode:
            tangents = dict(zip(params, parts, strict=True))
            try:
                return vmap(lambda t: jvp(lambda p: self._outputs(p, x), (params,), (t,))[1])(
                    tangents)
            except NotImplementedError:
                self._forward_mode = False
        with twice_differentiable():
            z = self.subject.net(x)
        dummy = torch.zeros_like(z, requires_grad=True)
        pulled = torch.autograd.grad(z, self.subject.params, grad_outputs=dummy,
                                     create_graph=True)
        return torch.autograd.grad(pulled, dummy, grad_outputs=parts, is_grads_batched=True)[0]


def _flatten(parts, params) -> torch.Tensor:
    return torch.cat([
        (h if h is not None else torch.zeros_like(p)).reshape(-1)
        for h, p in zip(parts, params, strict=True)
    ])
