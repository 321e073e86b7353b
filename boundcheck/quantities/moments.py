"""Trace moments of the Hessian, μ_j = tr(H^j)/P, and T12's λ_max bounds from them.

Exact path (P ≤ ``budget.max_dense_params``): from the dense spectrum, with each eigenvalue
within ``eig_error`` of the true one (see :mod:`boundcheck.quantities.hessian`):
``|λ^j − λ̃^j| ≤ (|λ̃| + e)^j − |λ̃|^j`` plus the summation's rounding. The moment bounds
work in standardized units from the eigenvalues directly (centring before powering, so no
cancellation), see :class:`boundcheck.moment_bound.MomentBox`. Beyond the dense budget the
quantities are not affordable yet (stochastic ``vᵀH^j v`` moments would be too wide to
improve on T1).
"""

from __future__ import annotations

import numpy as np

from .. import moment_bound as mb
from ..estimate import UNIT_ROUNDOFF, Estimate
from . import Context, NotApplicableError, quantity
from .hessian import dense_spectrum

U = UNIT_ROUNDOFF["float64"]


def _scaled_spectrum(ctx: Context) -> tuple[np.ndarray, float, float]:
    """(eigenvalues of H / scale, their error bound, scale): ``scale`` is the dense path's
    power-of-two rescaling, so multiplying back is exact."""
    d = dense_spectrum(ctx)
    lam = d.eigenvalues.detach().cpu().numpy().astype(np.float64)
    return lam, d.eig_error, d.scale


def _moment(ctx: Context, j: int) -> Estimate:
    lam, e, scale = _scaled_spectrum(ctx)
    mag = np.abs(lam)
    value = float(np.mean(lam**j))
    spread = float(np.mean((mag + e) ** j - mag**j))
    err = spread * (1 + 4 * U) + 2 * (lam.size + j + 4) * U * float(np.mean((mag + e) ** j))
    return Estimate.exact(value * scale**j, err * scale**j,
                          f"mean of λ^{j} over the dense spectrum")


def _register_moment(j: int) -> None:
    @quantity(f"hessian.moment_{j}", f"μ_{j} = tr(H^{j})/P", rf"\mu_{j}")
    def _measure(ctx: Context) -> Estimate:
        return _moment(ctx, j)


for _j in (1, 2, 3, 4):
    _register_moment(_j)


def _bounds(ctx: Context) -> dict[int, mb.MomentBound]:
    def build() -> dict[int, mb.MomentBound]:
        lam, e, scale = _scaled_spectrum(ctx)
        if lam.size < 2:
            raise NotApplicableError("N = 1: the moment bound needs at least two eigenvalues")
        return mb.lambda_max_bounds(mb.MomentBox.from_eigenvalues(lam, e, 4).rescaled(scale))

    return ctx.artifact("moment_bound.bounds", build)


def _register_bound(k: int) -> None:
    @quantity(f"moment_bound.lambda_max_k{k}",
              f"T12: the tightest λ_max bound from N and μ_1..μ_{k} (certified outer "
              "relaxation)", rf"B_{k}")
    def _measure(ctx: Context) -> Estimate:
        b = _bounds(ctx)[k]
        return Estimate(b.upper, b.lower, b.upper, "certified",
                        f"T12 moment relaxation, k = {k} (cvxpy + interval certificate)",
                        details={"solver_value": b.solver_value, "ws_upper": b.ws_upper,
                                 **{key: v for key, v in b.details.items() if key != "units"}})


for _k in (2, 3, 4):
    _register_bound(_k)
