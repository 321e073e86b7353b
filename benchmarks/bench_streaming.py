"""Streaming micro-batches under a memory budget against graph reuse (boundcheck.engines.memory).

For a small CNN on CIFAR-sized random images: the per-sample cost the probes measure, the
bytes autograd actually saves for the whole data's gradient graph (the model's prediction
next to it), and the time of one Hessian-vector product with every batch's graph kept
against streaming 2, 4 and 16 micro-batches (each product rebuilds the forward pass and the
gradient graph of every micro-batch). Side by side in one process, 1 thread, best of
``--repeats``; the ratio is what matters on a shared machine.

    python benchmarks/bench_streaming.py [--samples 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os

import torch
from bench_curvature import best_of
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import HessianOperator
from boundcheck.engines.memory import saved_tensor_bytes


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.samples
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    s = bc.Subject(cnn(), (x, y), "cross_entropy")
    keep = HessianOperator(s, memory_bytes=2**50)
    cost = keep.sample_cost
    counted = saved_tensor_bytes(lambda: keep._gradient(s.batches[0].x, s.batches[0].y),
                                 s.params)
    print(f"CNN, {s.num_params} parameters, {n} images 3×32×32, float64; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"probe: {cost.graph:,.0f} graph bytes per sample, fixed {cost.fixed:,.0f} "
          f"({cost.method})")
    model = cost.fixed + n * cost.graph
    print(f"whole-data gradient graph: autograd saved {counted:,} bytes, model {model:,.0f} "
          f"(ratio {counted / model:.4f})")
    v = torch.randn(s.num_params, generator=gen, dtype=torch.float64)
    ref = keep.matvec(v)  # builds and keeps the graphs
    base = best_of(lambda: keep.matvec(v), args.repeats)
    print("\n| route | micro-batches | budget (bytes) | s / product | ratio to kept graphs | "
          "rel. diff |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| kept graphs | 1 | ≥ {math.ceil(cost.fixed + n * cost.peak):,} | {base:.3f} | "
          f"1.00 | 0 |")
    for count in (2, 4, 16):
        size = math.ceil(n / count)
        budget = math.ceil(cost.fixed + size * cost.peak)
        op = HessianOperator(s, memory_bytes=budget)
        diff = float(torch.linalg.vector_norm(op.matvec(v) - ref) / torch.linalg.vector_norm(ref))
        t = best_of(lambda op=op: op.matvec(v), args.repeats)
        print(f"| streamed | {count} | {budget:,} | {t:.3f} | {t / base:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
