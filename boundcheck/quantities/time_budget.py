"""Refuse, up front, a sampled estimate that cannot reach its minimum within the time limit.

Lanczos stops on the clock with the interval it reached (:mod:`boundcheck.engines.estimators
.clock`), but the trace-type estimators cannot: their calibrated interval needs
``PILOT + MIN_SAMPLES`` quadratic forms (:mod:`boundcheck.engines.estimators.trace`) before it
means anything, so under a ``Budget.time_limit_s`` they ran past it by that many products.
On an 11M-parameter ResNet-18 with 64 CIFAR images (a product ≈ 20–40 s on one CPU core)
that turned a 300 s limit into about an hour per trace. Here one product is timed (once per
context, after the product that builds the gradient graph), and a quantity whose minimum
number of products would not fit in the time left raises :class:`NotAffordableError` with
the numbers, so its theorem is INCONCLUSIVE with that reason and the run stays in its limit.
Without a time limit nothing is timed or refused.
"""

from __future__ import annotations

import math
import time

import torch

from boundcheck.engines.estimators import clock
from boundcheck.engines.estimators.trace import MIN_SAMPLES, PILOT, rademacher
from boundcheck.quantities.operators import hessian_operator_of
from boundcheck.quantities.registry import Context, NotAffordableError

MIN_TRACE_PRODUCTS = PILOT + MIN_SAMPLES  # quadratic forms before a calibrated interval


def product_seconds(ctx: Context) -> float:
    """Wall time of one Hessian-vector product of the context's subject (timed once)."""

    def build() -> list[float]:
        op = hessian_operator_of(ctx)
        _timed_product(op)  # the first product also builds the gradient graph
        return [_timed_product(op)]

    return min(ctx.artifact("hessian.product_seconds", build))


def require_time_for(ctx: Context, products: int, what: str) -> None:
    """NotAffordableError when ``products`` Hessian-vector products would not fit in the
    time left of the current limit (none: always affordable). Before refusing, one more
    product is timed and the fastest timing kept: a single timing taken while something
    else loaded the machine (7.4 s against 2.8 s for ResNet-18) refused s² in the example."""
    if not math.isfinite(clock.remaining()):
        return
    per = product_seconds(ctx)
    if products * per > clock.remaining():
        timings = ctx.cached("hessian.product_seconds")  # the list product_seconds built
        timings.append(_timed_product(hessian_operator_of(ctx)))
        per = min(timings)
    left = clock.remaining()
    need = products * per
    if need > left:
        raise NotAffordableError(
            f"{what} needs at least {products} Hessian-vector products before its interval "
            f"is calibrated, ~{need:.0f} s at {per:.3g} s a product, but {max(left, 0.0):.0f} s "
            "of the time limit are left; raise Budget.time_limit_s (--time-limit) or measure "
            "on a faster device")


def _timed_product(op) -> float:
    v = rademacher(1, op.dim, torch.Generator().manual_seed(0), op.dtype, op.device)[0]
    _synchronize(op.device)
    start = time.perf_counter()
    op.matvec(v)
    _synchronize(op.device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
