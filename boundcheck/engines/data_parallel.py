"""One model, its data sharded across processes: Hessian-vector products all-reduced with
``torch.distributed`` (any backend: gloo on CPUs, NCCL on GPUs; launch with ``torchrun`` or
``torch.multiprocessing``), so Lanczos and the trace estimators of :mod:`.estimators` run
unchanged on top.

Each rank holds a shard of n_r samples and the operator of its own subject, whose loss is the
mean over the shard, ``H_r = (1/n_r) Σ_{i∈r} ∇²ℓ_i``. The full Hessian is the sample-weighted
sum ``H = Σ_r (n_r/n) H_r`` (exact weights, whatever the shard sizes), and a product is one
local product, a scaling and one all-reduce. All-reduce hands every rank the same sum, so
every rank's estimator sees the same numbers and takes the same decisions; with equal seeds
every rank draws the same probes. Rounding: the scaling adds one rounding per entry and the
all-reduce R − 1 additions (relative (R − 1)·u of Σ_r |(n_r/n) H_r v|), both far inside the
rounding allowances the estimators already carry for a product.

``bc.Subject(..., distributed=True)`` makes ``bc.measure`` / ``bc.verify`` use these:
:class:`DataParallelOperator` for products, :class:`DataParallelGaussNewton` for the sums of
the Gauss–Newton split, :func:`all_reduced_dense` for the dense Hessian, and
:meth:`ShardWeights.reduce_values` for exact per-sample means (the sequential-MLP trace).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class ShardWeights:
    """This rank's weight ``n_r/n`` in ``group`` (default: the world), and weighted
    all-reduces. Every rank must construct it (the sample count and the dimension are
    all-reduced) and then call the same reductions in the same order."""

    def __init__(self, local_samples: int, dim: int, device: torch.device | str,
                 group: dist.ProcessGroup | None = None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call "
                               "torch.distributed.init_process_group first (torchrun does)")
        if local_samples < 1:
            raise ValueError(f"every rank needs at least one sample, got {local_samples}")
        self.group = group
        self.device = torch.device(device)
        counts = torch.tensor([float(local_samples), float(dim), -float(dim)],
                              dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        self.world = dist.get_world_size(group)
        if counts[1] != self.world * dim or -counts[2] != self.world * dim:
            raise ValueError("the ranks hold models with different numbers of parameters")
        self.num_samples = int(counts[0])
        self.weight = local_samples / self.num_samples

    def _comm_device(self) -> torch.device:
        backend = dist.get_backend(self.group)
        return torch.device("cpu") if backend == "gloo" else self.device

    def reduce(self, y: torch.Tensor) -> torch.Tensor:
        """``Σ_r (n_r/n) y_r`` on every rank, where ``y`` is this rank's ``y_r``."""
        y = y * self.weight
        buffer = y.to(self._comm_device())
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=self.group)
        return buffer.to(self.device)

    def reduce_values(self, *values: float) -> list[float]:
        """:meth:`reduce` for scalars (in float64)."""
        return self.reduce(torch.tensor(values, dtype=torch.float64)).tolist()

    def rounding(self) -> float:
        """Relative rounding of a reduction, ``(R + 1)·u`` of ``Σ_r |(n_r/n) y_r|`` (the
        scaling, then R − 1 additions; float64)."""
        return (self.world + 1) * torch.finfo(torch.float64).eps / 2


class DataParallelOperator(ShardWeights):
    """``v ↦ Σ_r (n_r/n) H_r v`` over the ranks of ``group`` (default: the world).

    ``local_op``: this rank's operator (e.g. :func:`.curvature.hessian_operator` of the rank's
    subject); ``local_samples``: n_r. Every rank must construct it (the sample count is
    all-reduced) and then call the same products in the same order.
    """

    def __init__(self, local_op, local_samples: int, group: dist.ProcessGroup | None = None):
        super().__init__(local_samples, local_op.dim, local_op.device, group)
        self.local = local_op
        self.dim = local_op.dim
        self.dtype = local_op.dtype
        self.batched_products = local_op.batched_products

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector (P,)."""
        return self.reduce(self.local.matvec(v))

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block of vectors given as rows, (k, P) -> (k, P)."""
        return self.reduce(self.local.matmat(v))

    def dense(self) -> torch.Tensor:
        """The full P×P Hessian, one product per column (small P only)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(e) for e in eye]).T.contiguous()


class DataParallelGaussNewton(ShardWeights):
    """The Gauss–Newton quantities of :class:`.curvature.GaussNewton` that are sums over
    samples, all-reduced: ``trace_terms()`` and ``quadratic_form(V)``."""

    def __init__(self, local, local_samples: int, group: dist.ProcessGroup | None = None):
        super().__init__(local_samples, local.dim, local.device, group)
        self.local = local
        self.dim = local.dim
        self.dtype = local.dtype

    def trace_terms(self) -> tuple[float, float]:
        """``(tr G, Σ |A_i| : |J_i J_iᵀ| / n)`` over every rank's samples; the reduction's
        rounding, at most (R + 1)·u of the second term, is far inside the 8u(P + K²) of it
        that ``ggn.trace`` allows."""
        value, magnitude = self.reduce_values(*self.local.trace_terms())
        return value, magnitude

    def quadratic_form(self, v: torch.Tensor) -> torch.Tensor:
        """``vᵀ G v`` for each row of ``v`` (m, P) -> (m,)."""
        return self.reduce(self.local.quadratic_form(v))


def all_reduced_dense(local_dense: torch.Tensor, local_error: float, local_samples: int,
                      group: dist.ProcessGroup | None = None) -> tuple[torch.Tensor, float]:
    """``H = Σ_r (n_r/n) H_r`` from each rank's dense ``H_r`` and a bound on the Frobenius
    norm of its error: ``Σ_r (n_r/n) e_r`` plus the reduction's rounding."""
    w = ShardWeights(local_samples, local_dense.shape[0], local_dense.device, group)
    h = w.reduce(local_dense)
    error, norm = w.reduce_values(local_error, float(torch.linalg.matrix_norm(local_dense)))
    return h, error + w.rounding() * norm


def shard(n: int, rank: int, world: int) -> slice:
    """The contiguous slice of n samples that ``rank`` of ``world`` holds (sizes differ by at
    most one; every rank gets at least one sample when n ≥ world)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    if n < world:
        raise ValueError(f"{n} samples cannot be sharded over {world} ranks")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))
