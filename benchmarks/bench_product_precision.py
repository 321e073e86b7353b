"""Hessian-vector products in float32 / bfloat16 against float64 (``Subject(product_dtype=…)``).

Side by side in one process, one CPU thread, interleaved, best of ``--repeats`` rounds of
``--products`` products each: the ~100k-parameter CNN on 128 digits (bench_curvature.py's) and
an MLP 20→256→256→10 (tanh, cross-entropy) on 512 Gaussian-mixture samples. Also printed: the
calibration's cost and its ε relative to the largest |Ritz value| of a short float64 Lanczos run
(how much a λ interval widens, relative)
and η·P/|tr H| (how much a trace interval widens, relative; tr H/P ≈ vᵀHv/‖v‖² for one
random v).

    python benchmarks/bench_product_precision.py
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_curvature import digits_cnn

import boundcheck as bc
from boundcheck.engines.curvature import hessian_operator
from boundcheck.engines.estimators.lanczos import lanczos
from boundcheck.engines.working_precision import WorkingPrecisionOperator
from boundcheck.harness.data import gaussian_mixture
from boundcheck.harness.models import mlp

DTYPES = (torch.float32, torch.bfloat16)


def subjects() -> dict[str, bc.Subject]:
    x, y = gaussian_mixture(512, 20, 10, seed=0)
    net = mlp([20, 256, 256, 10], "tanh", seed=0)
    return {"CNN on 128 digits": digits_cnn(128),
            "MLP 20→256→256→10, 512 samples": bc.Subject(net, (x, y))}


def with_products(subject: bc.Subject, dtype: torch.dtype) -> bc.Subject:
    return bc.Subject(subject.model, subject.data, subject.loss, product_dtype=dtype)


def best_time(op, v: torch.Tensor, products: int) -> float:
    start = time.perf_counter()
    for _ in range(products):
        op.matvec(v)
    return (time.perf_counter() - start) / products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--products", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for label, s64 in subjects().items():
        ops = {"float64": hessian_operator(s64)}
        for dtype in DTYPES:
            ops[str(dtype).replace("torch.", "")] = WorkingPrecisionOperator(
                with_products(s64, dtype))
        v = torch.randn(s64.num_params, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        for op in ops.values():
            op.matvec(v)  # build graphs / layer values outside the timing
        best = {k: float("inf") for k in ops}
        for _ in range(args.repeats):
            for k, op in ops.items():
                best[k] = min(best[k], best_time(op, v, args.products))
        run = lanczos(ops["float64"].matvec, v / v.norm(), 20)
        scale = float(run.ritz().values.abs().max())
        mean_diag = abs(run.alphas[0])  # vᵀHv/‖v‖² for a random v: ≈ tr H / P
        print(f"\n{label}: {s64.num_params} parameters")
        print(f"  float64 product {1e3 * best['float64']:.2f} ms")
        for k, op in ops.items():
            if k == "float64":
                continue
            err = op.product_error
            print(f"  {k:8s} product {1e3 * best[k]:.2f} ms = {best[k] / best['float64']:.2f}× "
                  f"float64; calibration {err.seconds:.2f} s ({2 * err.vectors} "
                  f"products and the float64 operator's build), ε = {err.norm:.2e} "
                  f"(ε/‖H‖ ≈ {err.norm / scale:.1e}), trace allowance η·P/|tr H| ≈ "
                  f"{err.quadratic / max(mean_diag, 1e-300):.1e}")


if __name__ == "__main__":
    main()
