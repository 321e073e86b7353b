"""λ_max by route, side by side: boundcheck's old dense route (``Budget(route="exact")``), the
cost model's choice (``route="auto"``, the default) and scipy ``eigsh`` on curvlinops'
``HessianLinearOperator`` at tol 1e-6.

    python benchmarks/bench_routes.py [--repeats 3]

MLP 20→h→h→10 tanh, 512 Gaussian samples, 10 classes, cross-entropy, at initialisation,
float64, 1 thread; best of ``--repeats`` runs each, all in one process. ``max_dense_params``
is raised to 7000 so that the exact route exists at P = 6154 too. Every interval is checked
against the dense route's eigvalsh value.
"""

from __future__ import annotations

import argparse
import os

import torch
from bench_closed_form import timed as best  # benchmarks/ is on the path (run as a script)
from torch import nn

import boundcheck as bc
from boundcheck.harness.models import mlp


def subject(h: int) -> bc.Subject:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (512,), generator=g)
    return bc.Subject(mlp([20, h, h, 10], "tanh", seed=0), (x, y), "cross_entropy")


def eigsh_lambda_max(s: bc.Subject) -> tuple[float, int]:
    import curvlinops
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = curvlinops.HessianLinearOperator(s.net, nn.CrossEntropyLoss(), s.params,
                                          [(s.x_all, s.y_all)],
                                          check_deterministic=False).to_scipy()
    count = [0]

    def mv(v):
        count[0] += 1
        return op @ v

    counted = LinearOperator(op.shape, matvec=mv, dtype=op.dtype)
    value = float(eigsh(counted, k=1, which="LA", tol=1e-6, return_eigenvectors=False)[0])
    return value, count[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, 1 thread, "
          f"best of {args.repeats}")
    print("| P | exact route (s) | interval route (s, products) | auto (s), its route | "
          "eigsh tol 1e-6 (s, products) | exact / auto | interval / auto | auto / eigsh | "
          "intervals hold the dense value |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for h in args.hidden:
        s = subject(h)
        exact_budget = bc.Budget(max_dense_params=7000, route="exact")
        auto_budget = bc.Budget(max_dense_params=7000)
        interval_budget = bc.Budget(max_dense_params=7000, route="interval")

        def measure(budget, s=s):
            return bc.measure(s, ["hessian.lambda_max"], budget=budget)["hessian.lambda_max"]

        te, exact = best(lambda: measure(exact_budget), args.repeats)  # noqa: B023
        ta, auto = best(lambda: measure(auto_budget), args.repeats)  # noqa: B023
        ti, interval = best(lambda: measure(interval_budget), args.repeats)  # noqa: B023
        tg, (ref, products) = best(lambda: eigsh_lambda_max(s), args.repeats)  # noqa: B023
        truth = exact.value
        holds = all(e.lower <= exact.upper and exact.lower <= e.upper
                    for e in (auto, interval))
        print(f"| {s.num_params:,} | {te:.3f} | {ti:.3f} ({interval.details['matvecs']}) | "
              f"{ta:.3f}, {auto.details['route']} | {tg:.3f} ({products}) | "
              f"{te / ta:.1f} | {ti / ta:.2f} | {ta / tg:.2f} | {holds} (|eigsh − dense| / λ = "
              f"{abs(ref - truth) / abs(truth):.1e}) |")
        print(f"    why: {auto.details['route_reason']}")


if __name__ == "__main__":
    main()
