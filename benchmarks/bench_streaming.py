"""Streaming micro-batches under a memory budget against graph reuse (boundcheck.engines.memory).

For a small CNN on CIFAR-sized random images: the per-sample cost the probes measure, the
bytes autograd actually saves for the whole data's gradient graph (the model's prediction
next to it), and the time of one Hessian-vector product with every batch's graph kept
against streaming 2, 4 and 16 micro-batches (each product rebuilds the forward pass and the
gradient graph of every micro-batch). Side by side in one process, 1 thread, best of
``--repeats``; the ratio is what matters on a shared machine. The last column is the growth
of the peak resident memory (VmHWM, Linux) through two products, each route in a fresh
process, next to the budget.

    python benchmarks/bench_streaming.py [--samples 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

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


def subject(n: int) -> bc.Subject:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return bc.Subject(cnn(), (x, y), "cross_entropy")


def peak_resident_bytes() -> int:
    """VmHWM (Linux): unlike ``ru_maxrss`` it starts afresh in a new process image."""
    with open("/proc/self/status") as fh:
        line = next(row for row in fh if row.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def rss_growth(n: int, budget: int | None) -> float:
    """MB of peak-resident-memory growth through two products (run in this process)."""
    s = subject(n)
    if budget is not None:
        HessianOperator(s, memory_bytes=2**50)  # the probes, before the baseline
    base = peak_resident_bytes()
    op = HessianOperator(s, memory_bytes=budget)
    v = torch.ones(s.num_params, dtype=torch.float64)
    for _ in range(2):
        op.matvec(v)
    return (peak_resident_bytes() - base) / 1e6


def rss_in_fresh_process(n: int, budget: int | None) -> float:
    out = subprocess.run([sys.executable, __file__, "--samples", str(n), "--rss-budget",
                          str(budget or 0)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rss-budget", type=int, help=argparse.SUPPRESS)  # one RSS probe
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.samples
    if args.rss_budget is not None:
        print(rss_growth(n, args.rss_budget or None))
        return
    gen = torch.Generator().manual_seed(2)
    s = subject(n)
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
          "rel. diff | peak RSS growth (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| kept graphs | 1 | ≥ {math.ceil(cost.fixed + n * cost.peak):,} | {base:.3f} | "
          f"1.00 | 0 | {rss_in_fresh_process(n, None):.0f} |")
    for count in (2, 4, 16):
        size = math.ceil(n / count)
        budget = math.ceil(cost.fixed + size * cost.peak)
        op = HessianOperator(s, memory_bytes=budget)
        diff = float(torch.linalg.vector_norm(op.matvec(v) - ref) / torch.linalg.vector_norm(ref))
        t = best_of(lambda op=op: op.matvec(v), args.repeats)
        print(f"| streamed | {count} | {budget:,} | {t:.3f} | {t / base:.2f} | {diff:.1e} | "
              f"{rss_in_fresh_process(n, budget):.0f} |")


if __name__ == "__main__":
    main()
