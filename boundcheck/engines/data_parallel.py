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
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class DataParallelOperator:
    """``v ↦ Σ_r (n_r/n) H_r v`` over the ranks of ``group`` (default: the world).

    ``local_op``: this rank's operator (e.g. :func:`.curvature.hessian_operator` of the rank's
    subject); ``local_samples``: n_r. Every rank must construct it (the sample count is
    all-reduced) and then call the same products in the same order.
    """

    def __init__(self, local_op, local_samples: int, group: dist.ProcessGroup | None = None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call "
                               "torch.distributed.init_process_group first (torchrun does)")
        if local_samples < 1:
            raise ValueError(f"every rank needs at least one sample, got {local_samples}")
        self.local = local_op
        self.group = group
        self.dim = local_op.dim
        self.dtype = local_op.dtype
        self.device = local_op.device
        self.batched_products = local_op.batched_products
        counts = torch.tensor([float(local_samples), float(self.dim), -float(self.dim)],
                              dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        world = dist.get_world_size(group)
        if counts[1] != world * self.dim or -counts[2] != world * self.dim:
            raise ValueError("the ranks hold models with different numbers of parameters")
        self.num_samples = int(counts[0])
        self.weight = local_samples / self.num_samples

    def _comm_device(self) -> torch.device:
        backend = dist.get_backend(self.group)
        return torch.device("cpu") if backend == "gloo" else torch.device(self.device)

    def _reduce(self, y: torch.Tensor) -> torch.Tensor:
        y = y * self.weight
        comm = self._comm_device()
        buffer = y.to(comm)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=self.group)
        return buffer.to(self.device)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector (P,)."""
        return self._reduce(self.local.matvec(v))

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block of vectors given as rows, (k, P) -> (k, P)."""
        return self._reduce(self.local.matmat(v))

    def dense(self) -> torch.Tensor:
        """The full P×P Hessian, one product per column (small P only)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(e) for e in eye]).T.contiguous()


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
