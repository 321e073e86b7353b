"""‖H‖_F² on MLP 20→h→h→10 tanh, 512 samples, cross-entropy, at initialisation: the exact
pair form (``hessian.fro2``'s route for sequential smooth-σ cross-entropy nets) and the
estimator E‖Hv‖² (±1 % at 99 %, the route beyond the flop budget), each in units of one plain
gradient (``F.cross_entropy(net(x), y)`` + ``torch.autograd.grad``, float64), measured side
by side in one process on one thread (best of ``--repeats``).

    python benchmarks/bench_fro2.py [--widths 32 64 128 256] [--repeats 2] [--no-estimator]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

import boundcheck as bc
from boundcheck.engines import closed_form_depth as cd
from boundcheck.harness.models import mlp
from boundcheck.quantities.registry import Budget

N, D, K = 512, 20, 10


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def row(h: int, repeats: int, estimator: bool) -> dict:
    net = mlp([D, h, h, K], "tanh", seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=g)
    params = list(net.parameters())

    def gradient():
        return torch.autograd.grad(F.cross_entropy(net(x), y), params)

    grad_s, _ = best_of(gradient, max(10, 5 * repeats))
    subject = bc.Subject(net, (x, y), "cross_entropy")
    exact_s, est = best_of(lambda: bc.measure(subject, ["hessian.fro2"])["hessian.fro2"],
                           repeats)
    out = {"h": h, "P": subject.num_params, "grad_ms": 1e3 * grad_s,
           "flops": cd.pair_flops(N, [D, h, h], K), "exact": exact_s / grad_s,
           "route": est.details.get("route"), "value": est.value,
           "rel_err": est.half_width / est.value}
    if estimator:
        budget = Budget(max_dense_params=0, max_closed_form_flops=1.0)
        s, e = best_of(lambda: bc.measure(subject, ["hessian.fro2"], budget=budget)
                       ["hessian.fro2"], 1)
        out.update(estimator=s / grad_s, est_covers=e.lower <= est.value <= e.upper,
                   probes=e.details.get("probes", e.details.get("num_probes")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-estimator", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cd.generated()  # the sympy-generated pair terms, built once per process (not timed)
    print(f"1 thread, float64, n = {N}; load average {os.getloadavg()[0]:.2f}")
    print("|    h |      P | gradient (ms) | pair flops | exact ‖H‖_F² (gradients) | "
          "rel. error bar | estimator (gradients) | estimator covers |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for h in args.widths:
        r = row(h, args.repeats, not args.no_estimator)
        est = (f"{r['estimator']:.0f}", str(r["est_covers"])) if "estimator" in r else ("—", "—")
        print(f"| {r['h']} | {r['P']:,} | {r['grad_ms']:.2f} | {r['flops']:.2g} | "
              f"{r['exact']:.0f} ({r['route']}) | {r['rel_err']:.1e} | {est[0]} | {est[1]} |",
              flush=True)


if __name__ == "__main__":
    main()
