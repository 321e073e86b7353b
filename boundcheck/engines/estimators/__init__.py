"""Matrix-free curvature estimators: Lanczos (extreme eigenvalues with intervals, top Ritz
pairs, stochastic Lanczos quadrature) and stochastic traces (Hutchinson, Hutch++, the
Gauss–Newton control variate) with intervals whose coverage is tested.

They need only products with an operator (``dim``, ``dtype``, ``device``, ``matvec``, and
``matmat`` where ``batched_products`` is true): :mod:`boundcheck.engines.curvature` provides them.
The ``hessian.*``, ``ggn.*`` and ``residual.*`` quantities use them when the dense Hessian is
not affordable (``P > Budget.max_dense_params``).

**Refining an INCONCLUSIVE verdict.** Every estimator honours the :class:`Budget` fields
``trace_rel_half_width`` and ``max_probes`` (traces), ``lanczos_rel_tol`` and
``lanczos_max_iter`` (eigenvalues). To re-measure tighter, build a new :class:`Context` with
``budget.tightened()`` (smaller targets, more products) and a new seed; a Context caches its
estimates, so the old one would return the same intervals::

    ctx2 = Context(subject, confidence, seed + 1, ctx.budget.tightened())
    ctx2.get("hessian.trace")

Each round is a new look at the data: a caller that reports the first decisive round must
split the failure probability over rounds so that their union stays within ``δ``
(:func:`boundcheck.verification.api.verify_one` does both).
"""

from __future__ import annotations

import zlib


def stream_seed(seed: int, name: str) -> int:
    """A seed for the random stream of one quantity: distinct quantities get independent
    probes, the same (seed, name) always the same ones."""
    return (zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF
