"""Exact 1-Wasserstein distance between two empirical measures, Euclidean cost, with an
enclosure.

``W_1(μ, ν) = min_π Σ_ij π_ij ‖a_i − b_j‖`` over couplings of ``μ = (1/m) Σ δ_{a_i}`` and
``ν = (1/n) Σ δ_{b_j}`` (the transport LP; Kantorovich duality
``W_1 = max {Σ u_i/m + Σ v_j/n : u_i + v_j ≤ c_ij}``).

* ``method="linprog"``: scipy's HiGHS on the LP. Upper end: the cost of the returned plan,
  plus ``c_max`` times the plan's total marginal violation (moving that much mass repairs the
  plan at cost ≤ c_max per unit). Lower end: the dual potentials u made feasible by
  ``v_j = min_i (c_ij − u_i)`` (a c-transform), so ``Σ u/m + Σ v/n`` is a true lower bound.
* ``method="assignment"`` (m = n): an optimal coupling of two uniform measures of equal size is
  a permutation (Birkhoff), so ``W_1 = (1/n) min_σ Σ c_{iσ(i)}``, solved exactly by
  ``scipy.optimize.linear_sum_assignment``; the enclosure is the summation rounding.

Both ends are widened for the cost matrix's rounding (``(D + 4)u`` relative per entry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment, linprog
from scipy.sparse import coo_matrix, vstack

U = 2.0**-53


@dataclass(frozen=True)
class Wasserstein:
    value: float
    lower: float
    upper: float
    method: str


def cost_matrix(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """c_ij = ‖a_i − b_j‖ in float64 (direct differences, no Gram-trick cancellation)."""
    fa = a.detach().to(torch.float64).flatten(1)
    fb = b.detach().to(torch.float64).flatten(1)
    return torch.linalg.vector_norm(fa[:, None, :] - fb[None, :, :], dim=2).numpy()


def wasserstein1(a: torch.Tensor, b: torch.Tensor, method: str = "auto") -> Wasserstein:
    """W_1 between the empirical measures of the rows of ``a`` and ``b``."""
    m, n = a.shape[0], b.shape[0]
    if m == 0 or n == 0:
        raise ValueError("W_1 needs two non-empty samples")
    if method == "auto":
        method = "assignment" if m == n else "linprog"
    c = cost_matrix(a, b)
    rel = (a[0].numel() + 4) * U
    if method == "assignment":
        if m != n:
            raise ValueError(f"the assignment solver needs equal sizes, got {m} and {n}")
        rows, cols = linear_sum_assignment(c)
        costs = c[rows, cols]
        value = math.fsum(costs) / n
        err = 2 * U * value
        return Wasserstein(value, (value - err) * (1 - rel), (value + err) * (1 + rel),
                           "assignment (linear_sum_assignment)")
    if method != "linprog":
        raise ValueError(f"unknown W_1 method {method!r}; choose auto, linprog, assignment")
    return _linprog(c, rel)


def _linprog(c: np.ndarray, rel: float) -> Wasserstein:
    m, n = c.shape
    rows = coo_matrix((np.ones(m * n), (np.repeat(np.arange(m), n), np.arange(m * n))),
                      shape=(m, m * n))
    cols = coo_matrix((np.ones(m * n), (np.tile(np.arange(n), m), np.arange(m * n))),
                      shape=(n, m * n))
    a_eq = vstack([rows, cols]).tocsr()
    b_eq = np.concatenate([np.full(m, 1.0 / m), np.full(n, 1.0 / n)])
    res = linprog(c.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"the transport LP failed: {res.message}")
    plan = np.maximum(res.x, 0.0).reshape(m, n)
    c_max = float(c.max())
    violation = (np.abs(plan.sum(axis=1) - 1.0 / m).sum()
                 + np.abs(plan.sum(axis=0) - 1.0 / n).sum())
    primal = math.fsum((plan * c).ravel())
    upper = float((primal + c_max * violation) * (1 + 2 * U * m * n))
    u = np.asarray(res.eqlin.marginals[:m], dtype=np.float64)
    v = (c - u[:, None]).min(axis=0)  # c-transform: u_i + v_j ≤ c_ij for all i, j
    dual = math.fsum(u) / m + math.fsum(v) / n
    slop = 4 * U * (math.fsum(np.abs(u)) / m + math.fsum(np.abs(v)) / n + c_max)
    lower = max(0.0, dual - slop)
    value = min(max(primal, lower), upper)
    return Wasserstein(value, lower * (1 - rel), upper * (1 + rel),
                       "transport LP (scipy linprog, HiGHS), dual bound below")
