"""Spectral summaries derived from other Hessian quantities (whatever measured them)."""

from __future__ import annotations

import math

from ..estimate import Estimate
from . import Context, quantity


@quantity("hessian.eigenvalue_std", "s = √(‖H − mI‖_F² / P), the eigenvalues' spread", "s")
def _std(ctx: Context) -> Estimate:
    v = ctx.get("hessian.eigenvalue_variance").clamp_below(0.0)
    lo = math.sqrt(v.lower)
    hi = math.sqrt(v.upper)
    lo = math.nextafter(lo, 0.0) if lo > 0 else 0.0
    hi = math.nextafter(hi, math.inf)
    value = min(max(math.sqrt(v.value), lo), hi)
    return Estimate(value, lo, hi, v.kind, "√ of " + v.method, v.confidence)
