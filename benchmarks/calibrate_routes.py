"""Calibrate the unit costs of :mod:`boundcheck.quantities.routes` (1 thread, float64).

    python benchmarks/calibrate_routes.py

Prints, each as the best of several repeats, measured side by side in one process:
a Hessian-vector product of MLPs 20→h→h→10 tanh (cross-entropy) against n·P, eigvalsh and
Cholesky against P³, the layer-block dense Hessian against n·P², a Lanczos step's own work
(re-orthogonalisation, Ritz values) on a diagonal operator whose product costs nothing, and
an explicit matrix's product against P². The least-squares fits are the constants in
routes.py; the ratios, not the absolute times, are what the route choice uses.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

import boundcheck as bc
from boundcheck.engines.curvature import (
    SymmetricMatrixOperator,
    dense_hessian_with_error,
    hessian_operator,
)
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue
from boundcheck.harness.models import mlp


def best(f, repeats: int = 3) -> float:
    t = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - start)
    return t


class Diagonal:
    """A diagonal operator: products cost ~P flops, so the time is Lanczos's own work."""

    def __init__(self, d: torch.Tensor):
        self.d, self.dim, self.dtype, self.device = d, d.numel(), d.dtype, d.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.d * v


def subject(n: int, h: int) -> bc.Subject:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (n,), generator=g)
    return bc.Subject(mlp([20, h, h, 10], "tanh", seed=0), (x, y), "cross_entropy")


def fit(rows, ts):
    """Non-negative least squares of ``t ≈ Σ c_k x_k`` relative to t (each case weighs alike:
    the small sizes, where a route choice is close, fix the constant terms)."""
    from scipy.optimize import nnls

    a = np.array(rows, dtype=float) / np.array(ts)[:, None]
    coef, _ = nnls(a, np.ones(len(ts)))
    return coef


def main() -> None:
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}")
    work, times, dense_work, dense_times = [], [], [], []
    for n, h in [(512, 4), (512, 8), (128, 16), (512, 16), (128, 64), (512, 32), (512, 48),
                 (512, 64), (2048, 32)]:
        s = subject(n, h)
        p = s.num_params
        op = hessian_operator(s)
        v = torch.randn(p, dtype=torch.float64)
        op.matvec(v)
        t = best(lambda: [op.matvec(v) for _ in range(20)]) / 20  # noqa: B023
        work.append([1.0, n * p])
        times.append(t)
        td = best(lambda: dense_hessian_with_error(s), 2)  # noqa: B023
        dense_work.append([1.0, p * p, n * p * p])
        dense_times.append(td)
        print(f"n={n} h={h} P={p}: product {t * 1e3:.3f} ms, layer-block dense {td:.3f} s "
              f"({td / t:.0f} products = {td / t / p:.3f}·P)")
    a, b = fit(work, times)
    c0, c1, c = fit(dense_work, dense_times)
    print(f"product ≈ {a:.3g} s + {b:.3g} s·n·P;  layer-block dense ≈ {c0:.3g} s + "
          f"{c1:.3g} s·P² + {c:.3g} s·n·P²")
    eig, chol, cube, square = [], [], [], []
    for p in (200, 500, 1000, 2000, 3000):
        m = torch.randn(p, p, dtype=torch.float64)
        m = m @ m.T / p + torch.eye(p, dtype=torch.float64)
        eig.append(best(lambda: torch.linalg.eigvalsh(m), 2))  # noqa: B023
        chol.append(best(lambda: torch.linalg.cholesky_ex(m), 2))  # noqa: B023
        cube.append(p**3)
        square.append(p**2)
        print(f"P={p}: eigvalsh {eig[-1]:.3f} s, Cholesky {chol[-1]:.3f} s")
    e2, e3 = fit([[q, k] for q, k in zip(square, cube, strict=True)], eig)
    (ch,) = fit([[k] for k in cube], chol)
    print(f"eigvalsh ≈ {e2:.3g} s·P² + {e3:.3g} s·P³;  Cholesky ≈ {ch:.3g} s·P³")
    steps, lanczos_t, sq = [], [], []
    for p in (2000, 20000, 100000):
        g = torch.Generator().manual_seed(1)
        d = torch.rand(p, generator=g, dtype=torch.float64)
        d[-1] = 1.5  # a gap, as Hessians have
        op = Diagonal(d)
        r = extreme_eigenvalue(op, rel_tol=1e-6, seed=0)
        t = best(lambda: extreme_eigenvalue(op, rel_tol=1e-6, seed=0), 2)  # noqa: B023
        k1, k2 = r.details["steps"], r.details.get("deflated_steps", 0)
        steps.append(r.matvecs)
        lanczos_t.append(t)
        sq.append(p * (k1 * k1 + k2 * k2) / 2)
        print(f"Lanczos on a diagonal, P={p}: {r.matvecs} steps in {t:.3f} s")
    fixed = lanczos_t[0] / steps[0]  # P = 2000: the j·P work is negligible there
    per_jp = max(lanczos_t[-1] - fixed * steps[-1], 0.0) / sq[-1]
    print(f"Lanczos step ≈ {fixed:.3g} s + {per_jp:.3g} s·j·P (j = the step's index)")
    mv, msq = [], []
    for p in (500, 2000, 4000):
        op = SymmetricMatrixOperator(torch.randn(p, p, dtype=torch.float64))
        v = torch.randn(p, dtype=torch.float64)
        mv.append(best(lambda: [op.matvec(v) for _ in range(20)]) / 20)  # noqa: B023
        msq.append(p * p)
    (mb,) = fit([[q] for q in msq], mv)
    print(f"explicit-matrix product ≈ {mb:.3g} s·P²")


if __name__ == "__main__":
    main()
