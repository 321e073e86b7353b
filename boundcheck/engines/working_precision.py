"""Hessian-vector products in a working precision (float32, bfloat16) under float64 estimators.

``Subject(..., product_dtype=torch.float32)`` asks for it. The estimators keep their state
(Lanczos basis and tridiagonal, probe sums) in float64; :class:`WorkingPrecisionOperator`
casts each input to the working precision, takes the product on a working-precision copy of
the network and data (any operator :func:`.curvature.hessian_operator` builds), and casts the
result back to float64. On an H200 with ResNet-18 float32 products measured ~4.5–6.5× cheaper
than float64 ones (issue 13).

The rounding this adds is accounted for by the model of :mod:`.product_error`, calibrated
lazily (at the first use of ``product_error``) on :data:`CALIBRATION_VECTORS` vectors
(half Rademacher, like the trace probes; half Gaussian, like Lanczos starts) against float64
products of the subject's own float64 network (an operator built for this and then released).
"""

from __future__ import annotations

import copy
import math
import time

import torch

from boundcheck.core.subject import Batch, Subject
from boundcheck.engines.curvature import hessian_operator
from boundcheck.engines.estimators import clock
from boundcheck.engines.product_error import ProductError

CALIBRATION_VECTORS = 8
SAFETY = 4.0  # ε and η are this multiple of the largest error the calibration saw
CALIBRATION_SEED = 0x5EED


def working_subject(subject: Subject, dtype: torch.dtype) -> Subject:
    """A shallow copy of ``subject`` whose network, data and parameters are in ``dtype``
    (the user's model and the float64 copy are left as they are)."""
    work = copy.copy(subject)
    work.net = copy.deepcopy(subject.net).to(dtype)
    work.dtype = dtype
    work.batches = [Batch(b.x.to(dtype), b.y.to(dtype) if b.y.is_floating_point() else b.y)
                    for b in subject.batches]
    work.params = [p for p in work.net.parameters() if p.requires_grad]
    return work


class WorkingPrecisionOperator:
    """``v ↦ H v`` with the product taken in ``subject.product_dtype``: float64 in and out
    (``dtype`` is float64), with the calibrated :class:`ProductError` as ``product_error``."""

    def __init__(self, subject: Subject, memory_bytes: int | None = None):
        self.subject = subject
        self.working_dtype = subject.product_dtype
        self.memory_bytes = memory_bytes
        self.inner = hessian_operator(working_subject(subject, self.working_dtype), memory_bytes)
        self.dim = subject.num_params
        self.dtype = subject.dtype
        self.device = subject.device
        self.batched_products = getattr(self.inner, "batched_products", False)
        self._error: ProductError | None = None
        self._float64 = None

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector (P,), the product in the working precision."""
        return self.inner.matvec(v.to(self.working_dtype)).to(self.dtype)

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block of vectors given as rows, (k, P) -> (k, P)."""
        return self.inner.matmat(v.to(self.working_dtype)).to(self.dtype)

    def float64_operator(self):
        """The float64 product operator of the same subject (built once, then kept)."""
        if self._float64 is None:
            self._float64 = hessian_operator(self.subject, self.memory_bytes)
        return self._float64

    @property
    def product_error(self) -> ProductError:
        if self._error is None:
            self._error = self._calibrate()
        return self._error

    def _calibrate(self) -> ProductError:
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(CALIBRATION_SEED)
        half = CALIBRATION_VECTORS // 2
        rademacher = torch.randint(0, 2, (half, self.dim), generator=gen).double() * 2 - 1
        gaussian = torch.randn(CALIBRATION_VECTORS - half, self.dim, generator=gen,
                               dtype=torch.float64)
        v = torch.cat([rademacher, gaussian]).to(device=self.device, dtype=self.dtype)
        reference = self._float64 or hessian_operator(self.subject, self.memory_bytes)
        what = f"calibrating {_name(self.working_dtype)} products against float64"
        exact = []
        for row in v:
            exact.append(reference.matvec(row))
            clock.report(what, len(exact))
        exact = torch.stack(exact)
        del reference  # its gradient graphs can be large: kept only if asked for
        worked = []
        for row in v:
            worked.append(self.matvec(row))
            clock.report(what, len(exact) + len(worked))
        worked = torch.stack(worked)
        if not torch.isfinite(worked).all():
            raise FloatingPointError(
                f"Hessian-vector products in {_name(self.working_dtype)} overflow or give NaN "
                "on this network (float64 ones do not): use a wider product_dtype")
        diff = (worked - exact).double()
        sq = (v.double() ** 2).sum(dim=1)
        rel = torch.linalg.vector_norm(diff, dim=1) / sq.sqrt()
        quad = (v.double() * diff).sum(dim=1).abs() / sq
        # floor: the rounding of the result alone, u_w‖Hv‖/‖v‖ (never claim an exact product)
        u = _unit_roundoff(self.working_dtype)
        floor = u * float((torch.linalg.vector_norm(exact.double(), dim=1) / sq.sqrt()).max())
        norm = SAFETY * max(float(rel.max()), floor)
        quadratic = min(SAFETY * max(float(quad.max()), floor / math.sqrt(self.dim)), norm)
        return ProductError(_name(self.working_dtype), norm, quadratic, SAFETY,
                            float(rel.max()), float(quad.max()), CALIBRATION_VECTORS,
                            time.perf_counter() - start)


def working_precision_operator(subject: Subject, memory_bytes: int | None = None):
    """:func:`.curvature.hessian_operator` of the subject (under the memory budget), wrapped
    in a :class:`WorkingPrecisionOperator` when it asks for products below its ``dtype``."""
    wanted = getattr(subject, "product_dtype", None)
    if not isinstance(subject, Subject) or wanted is None or wanted == subject.dtype:
        return hessian_operator(subject, memory_bytes)
    return WorkingPrecisionOperator(subject, memory_bytes)


def float64_products(op):
    """An operator with float64 products for ``op`` (``op`` itself unless it works in a lower
    precision): for callers whose intervals have no working-precision allowance."""
    return op.float64_operator() if isinstance(op, WorkingPrecisionOperator) else op


def _unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2.0


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
