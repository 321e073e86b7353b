"""Scaling: λ_max and tr H intervals from 0.1M to 11M parameters, beside curvlinops.

Issue 13's table. CIFAR-sized synthetic images (``boundcheck.harness.data.gaussian_images``:
3×32×32, 10 classes), cross-entropy, float64, at initialisation, three nets:

* MLP 3072→32→32→10 (tanh, ~0.1M parameters; the sequential-MLP routes apply),
* CNN: VGG-style stages (32, 32), (64, 64) and a 256-unit head (~1.1M),
* ResNet-18, CIFAR stem, batch norm in eval mode (11.2M).

Per net, side by side in one process: one gradient, one boundcheck Hessian-vector product and
one curvlinops ``HessianLinearOperator`` product; ``hessian.lambda_max`` with its 99%
interval at ``lanczos_rel_tol = 1e-3`` against curvlinops + ``scipy.sparse.linalg.eigsh(k=1,
tol=1e-3)`` (products counted); ``hessian.trace`` at ±5% (99%) against curvlinops'
``hutchinson_trace`` with as many probes as boundcheck used (100 where boundcheck's route is
exact). Wall time, products and peak memory (CPU: the process's ``ru_maxrss`` high-water mark
after each step, monotone; CUDA: ``torch.cuda.max_memory_allocated`` per step). On CUDA also
one float32 double-backward Hessian-vector product (issue 13: a product within 1.3× of it).

    python benchmarks/bench_scaling.py --quick             # MLP and CNN rows only
    python benchmarks/bench_scaling.py                     # + ResNet-18 (CPU: ~hours)
    python benchmarks/bench_scaling.py --device cuda --n 256
    python benchmarks/bench_scaling.py --nets ResNet-18 --threads 2 --product-dtype float32 \
        --time-limit 900                                   # issue 13's 2-core CPU target

Timings are noisy on a shared machine: compare the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import resource
import time

import torch
from torch import nn

import boundcheck as bc
from boundcheck.harness.data import gaussian_images
from boundcheck.harness.zoo import build_model
from boundcheck.quantities import Budget, Context
from boundcheck.quantities.ggn import hessian_operator_of
from boundcheck.quantities.registry import NotAffordableError

NETS = {
    "MLP": {"model": "mlp", "hidden": [32, 32], "activation": "tanh"},
    "CNN": {"model": "vgg", "stages": [[32, 32], [64, 64]], "hidden": [256]},
    "ResNet-18": {"model": "resnet18", "width": 64},
}
LAMBDA_REL = 1e-3
TRACE_REL = 0.05
HUTCHINSON_CHUNK = 10  # curvlinops' probes per call


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn, device: torch.device, repeats: int = 1):
    """(result, best wall time over ``repeats``, peak memory in MiB)."""
    best, out = math.inf, None
    reset_peak(device)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return out, best, peak_memory_mb(device)


def subject_for(name: str, n: int, device: str, product_dtype: str | None = None
                ) -> bc.Subject:
    x, y = gaussian_images(n, seed=0)
    shape = (3 * 32 * 32,) if name == "MLP" else (3, 32, 32)
    net = build_model({**NETS[name], "seed": 0}, input_shape=shape, output_dim=10).eval()
    return bc.Subject(net, (x.reshape(n, *shape), y), "cross_entropy", device=device,
                      product_dtype=product_dtype)


class Counted:
    """A scipy LinearOperator wrapper counting products (eigsh's cost in products)."""

    def __init__(self, op):
        from scipy.sparse.linalg import LinearOperator

        self.count = 0

        def mv(v):
            self.count += 1
            return op @ v

        self.op = LinearOperator(op.shape, matvec=mv, dtype=op.dtype)


def curvlinops_hessian(subject: bc.Subject, dtype: torch.dtype = torch.float64):
    """curvlinops' Hessian of the subject's net and data, in ``dtype`` (a float32 copy when
    boundcheck's products run in float32: the same working precision side by side)."""
    from curvlinops import HessianLinearOperator

    x = torch.cat([b.x for b in subject.batches]).to(dtype)
    y = torch.cat([b.y for b in subject.batches])
    net = subject.net if dtype == torch.float64 else copy.deepcopy(subject.net).to(dtype)
    return HessianLinearOperator(net, nn.CrossEntropyLoss(), list(net.parameters()), [(x, y)],
                                 check_deterministic=False)


def bench(name: str, n: int, device: str, log, product_dtype: str | None = None,
          time_limit: float | None = None, parts: tuple[str, ...] = ("lambda", "trace")) -> dict:
    dev = torch.device(device)
    s = subject_for(name, n, device, product_dtype)
    cl_dtype = torch.float32 if product_dtype == "float32" else torch.float64
    log(f"\n{name}: P = {s.num_params:,}, n = {n}, {device}")
    row: dict = {"net": name, "P": s.num_params}
    x = torch.cat([b.x for b in s.batches])
    y = torch.cat([b.y for b in s.batches])

    def gradient():
        loss = nn.functional.cross_entropy(s.net(x), y)
        return torch.autograd.grad(loss, s.params)

    if product_dtype is not None:  # the gradient a user would time in that precision
        dt = getattr(torch, product_dtype)
        net_lp, x_lp = copy.deepcopy(s.net).to(dt), x.to(dt)

        def gradient():
            loss = nn.functional.cross_entropy(net_lp(x_lp), y)
            return torch.autograd.grad(loss, list(net_lp.parameters()))

    _, row["grad_s"], _ = timed(gradient, dev, repeats=2)
    op = hessian_operator_of(Context(s))
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
                    ).to(dev)
    op.matvec(v)  # builds the gradient graph once
    _, row["hvp_s"], _ = timed(lambda: op.matvec(v), dev, repeats=2)
    log(f"  gradient {row['grad_s']:.3f} s, boundcheck product {row['hvp_s']:.3f} s "
        f"({row['hvp_s'] / row['grad_s']:.2f} gradients)")
    if dev.type == "cuda":  # the float32 double-backward product a user would write
        net32 = copy.deepcopy(s.net).float()
        params32 = list(net32.parameters())
        v32 = [t.float() for t in op._split(v)]

        def hvp32():
            loss = nn.functional.cross_entropy(net32(x.float()), y)
            g = torch.autograd.grad(loss, params32, create_graph=True)
            return torch.autograd.grad(g, params32, grad_outputs=v32)

        hvp32()
        _, row["hvp32_s"], _ = timed(hvp32, dev, repeats=3)
        log(f"  float32 double-backward product {row['hvp32_s']:.4f} s: boundcheck's float64 "
            f"product / it = {row['hvp_s'] / row['hvp32_s']:.2f}")
    try:
        h = curvlinops_hessian(s, cl_dtype)
        sp = h.to_scipy()
        v_np = v.to(cl_dtype).cpu().numpy()
        sp @ v_np
        _, row["cl_hvp_s"], _ = timed(lambda: sp @ v_np, dev, repeats=2)
        log(f"  curvlinops product {row['cl_hvp_s']:.3f} s: boundcheck / curvlinops = "
            f"{row['hvp_s'] / row['cl_hvp_s']:.2f}")
    except ImportError:
        h = None
        log("  curvlinops not importable: its columns are skipped")

    budget = Budget(lanczos_rel_tol=LAMBDA_REL, trace_rel_half_width=TRACE_REL,
                    max_refinements=0, max_dense_params=0, time_limit_s=time_limit)
    if "lambda" in parts:
        lambda_max_columns(s, h, sp if h is not None else None, budget, row, dev, log)
    if "trace" in parts:
        trace_columns(s, h, budget, row, dev, log)
    return row


def lambda_max_columns(s, h, sp, budget, row, dev, log) -> None:
    est, row["lam_s"], row["lam_mb"] = timed(
        lambda: bc.measure(s, ["hessian.lambda_max"], budget=budget)["hessian.lambda_max"],
        dev)
    row["lam_products"] = est.details.get("matvecs", 0)
    if "stopped" in est.details:
        log(f"  λ_max: {est.details['stopped']}")
    log(f"  boundcheck λ_max {est.value:.6g} in [{est.lower:.6g}, {est.upper:.6g}] "
        f"({est.kind}): {row['lam_products']} products, {row['lam_s']:.1f} s, "
        f"peak {row['lam_mb']:.0f} MiB")
    if h is not None:
        from scipy.sparse.linalg import eigsh

        counted = Counted(sp)
        ref, row["eigsh_s"], row["eigsh_mb"] = timed(
            lambda: float(eigsh(counted.op, k=1, which="LA", tol=LAMBDA_REL,
                                return_eigenvectors=False)[0]), dev)
        row["eigsh_products"] = counted.count
        log(f"  curvlinops + eigsh(tol={LAMBDA_REL:g}) λ_max {ref:.6g}: {counted.count} "
            f"products, {row['eigsh_s']:.1f} s; time ratio boundcheck / eigsh = "
            f"{row['lam_s'] / row['eigsh_s']:.2f}; eigsh's Ritz value ≤ boundcheck's upper "
            f"side: {ref <= est.upper}, rel. difference "
            f"{abs(ref - est.value) / abs(est.value):.1e}")


def trace_columns(s, h, budget, row, dev, log) -> None:
    try:
        est, row["tr_s"], row["tr_mb"] = timed(
            lambda: bc.measure(s, ["hessian.trace"], budget=budget)["hessian.trace"], dev)
    except NotAffordableError as err:
        log(f"  boundcheck tr H refused: {err}")
        row.update(tr_s=math.nan, tr_products=0)
        return
    row["tr_products"] = est.details.get("matvecs", 0)
    if "stopped" in est.details:
        log(f"  tr H: {est.details['stopped']}")
    log(f"  boundcheck tr H {est.value:.6g} in [{est.lower:.6g}, {est.upper:.6g}] ({est.kind}, "
        f"{est.method[:60]}): {row['tr_products']} products, {row['tr_s']:.1f} s, "
        f"peak {row['tr_mb']:.0f} MiB")
    if h is not None:
        from curvlinops import hutchinson_trace

        probes = row["tr_products"] or 100

        def chunked() -> float:  # all probes at once (P × probes) overflows memory on ResNet-18
            sizes = [min(HUTCHINSON_CHUNK, probes - i) for i in range(0, probes, HUTCHINSON_CHUNK)]
            return sum(k * float(hutchinson_trace(h, k)) for k in sizes) / probes

        cl, row["cl_tr_s"], _ = timed(chunked, dev)
        log(f"  curvlinops hutchinson_trace, {probes} probes: {cl:.6g}, {row['cl_tr_s']:.1f} s; "
            f"time ratio boundcheck / curvlinops = {row['tr_s'] / row['cl_tr_s']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="MLP and CNN rows only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=64, help="images (64 on CPU, 256 on a GPU)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nets", nargs="+", choices=list(NETS), help="only these rows")
    p.add_argument("--product-dtype", choices=["float32", "bfloat16"],
                   help="boundcheck's products in this working precision (curvlinops then "
                        "runs on a float32 copy of the model and data)")
    p.add_argument("--parts", nargs="+", choices=["lambda", "trace"],
                   default=["lambda", "trace"], help="only these columns")
    p.add_argument("--time-limit", type=float,
                   help="Budget.time_limit_s per quantity (issue 13: 900 s on 2 CPU cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    names = args.nets or (["MLP", "CNN"] if args.quick else list(NETS))
    rows = [bench(name, args.n, args.device, print, args.product_dtype, args.time_limit,
                  tuple(args.parts)) for name in names]
    print("\n| net | P | product / gradient | product / curvlinops' | λ_max s (products) "
          "| eigsh s (products) | ratio | tr H s (products) | curvlinops Hutchinson s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        def ratio(a, b, r=r):
            return f"{r[a] / r[b]:.2f}" if a in r and b in r else "—"

        print(f"| {r['net']} | {r['P']:,} | {ratio('hvp_s', 'grad_s')} | "
              f"{ratio('hvp_s', 'cl_hvp_s')} | {r.get('lam_s', math.nan):.1f} "
              f"({r.get('lam_products', '—')}) | "
              f"{r.get('eigsh_s', math.nan):.1f} ({r.get('eigsh_products', '—')}) | "
              f"{ratio('lam_s', 'eigsh_s')} | {r.get('tr_s', math.nan):.1f} "
              f"({r.get('tr_products', '—')}) | "
              f"{r.get('cl_tr_s', math.nan):.1f} | {ratio('tr_s', 'cl_tr_s')} |")


if __name__ == "__main__":
    main()
