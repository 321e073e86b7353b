"""Curvature cost across widths (issue 18): every row side by side in one run, 1 thread.

Cases: MLP 20→h→h→10 tanh on 512 Gaussian-mixture samples, h = 32, 64, 128, 256
(P = 2,058 / 6,154 / 20,490 / 73,738), and the ~100k-parameter CNN on 128 digits, each at
initialisation and after a short training. Cross-entropy, float64. Per row:

* product / gradient: one Hessian-vector product of the operator boundcheck picks
  (``hessian_operator``) against the plain gradient a user times,
  ``autograd.grad(F.cross_entropy(net(x), y))``; best of ``--repeats``, interleaved;
* λ_max: ``bc.measure(subject, ["hessian.lambda_max"])`` with the default Budget (whatever
  route it takes; its ``lanczos_rel_tol`` is 1e-6), its interval and products, against
  curvlinops' ``HessianLinearOperator`` + ``scipy.sparse.linalg.eigsh(k=1, tol=1e-6)`` (no
  interval), its products counted;
* tr H: ``bc.measure(subject, ["hessian.trace"])`` (default Budget: ±1% at 99% where it
  estimates) against curvlinops' ``hutchinson_trace`` with 100 probes (no interval);
* ‖H‖_F²: ``bc.measure(subject, ["hessian.fro2"])``, in gradients' time;
* check: each interval against the dense Hessian's value where P ≤ ``--dense-max``, and tr H
  against the exact trace of sequential MLPs (``exact_trace``) above that.

Times are CPU time of this process (``time.process_time``) with torch at one thread and the
BLAS of numpy/scipy limited to one (threadpoolctl, when installed; else set
OPENBLAS_NUM_THREADS=1), so that other jobs on a shared machine slow a row less than its wall
time (they still share caches and memory bandwidth). Everything goes through the public API
(``bc.measure``, ``bc.Subject``, ``Budget``), so a route chosen differently by a later version
shows up here unchanged. ``--time-limit`` sets
``Budget.time_limit_s`` per quantity (an interval stopped by it says so in the table).

    python benchmarks/bench_widths.py            # the full table (< 10 min on 1 thread)
    python benchmarks/bench_widths.py --quick    # a smoke run (< 2 min)
    python benchmarks/bench_widths.py --readme   # also write the "Widths" section of README.md
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from readme_section import write_section
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import dense_hessian, hessian_operator
from boundcheck.engines.sequential import subject_structure
from boundcheck.engines.sequential_hessian import exact_trace
from boundcheck.harness.data import gaussian_mixture, load
from boundcheck.harness.models import mlp
from boundcheck.harness.training import Recipe, train
from boundcheck.quantities import Budget

SECTION = "## Widths"
EIGSH_TOL = 1e-6  # = Budget().lanczos_rel_tol
HUTCHINSON_PROBES = 100


@dataclass
class Row:
    case: str
    params: int
    cells: dict[str, str] = field(default_factory=dict)


def plain_gradient(subject: bc.Subject):
    """On the user's model (``subject.model``): boundcheck measures a copy whose tanh has a
    saturation-safe forward, slower under autograd than ``nn.Tanh``."""
    model = subject.model
    loss = F.cross_entropy(model(subject.x_all), subject.y_all)
    return torch.autograd.grad(loss, list(model.parameters()))


def timed(fn):
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def best_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            _, t = timed(fn)
            best[name] = min(best[name], t)
    return best


def mlp_subject(h: int, trained: bool, steps: int) -> bc.Subject:
    x, y = gaussian_mixture(512, 20, 10, seed=0)
    net = mlp([20, h, h, 10], "tanh", seed=0).double()
    if trained:
        train(net, x.double(), y, recipe=Recipe(optimizer="adam", lr=1e-2, steps=steps,
                                                target_loss=1e-3), progress=False)
    return bc.Subject(net, (x, y))


def cnn_subject(trained: bool, steps: int) -> bc.Subject:
    """~100k parameters on 128 8×8 digits (the model of bench_curvature.py)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * 8 * 8, 20), nn.ReLU(), nn.Linear(20, 10)).double()
    data = load("digits", n=128, layout="image")
    if trained:
        train(net, data.x.double(), data.y, recipe=Recipe(optimizer="adam", lr=1e-3,
                                                          steps=steps, target_loss=1e-3),
              progress=False)
    return bc.Subject(net, (data.x, data.y))


def curvlinops_hessian(subject: bc.Subject):
    from curvlinops import HessianLinearOperator

    model = subject.model  # the user's model, as for the plain gradient
    return HessianLinearOperator(model, nn.CrossEntropyLoss(), list(model.parameters()),
                                 [(subject.x_all, subject.y_all)], check_deterministic=False)


def eigsh_lambda_max(subject: bc.Subject) -> tuple[float, int]:
    """λ_max by curvlinops + eigsh at :data:`EIGSH_TOL`, and the products it used."""
    op = curvlinops_hessian(subject).to_scipy()
    count = [0]

    def mv(v):
        count[0] += 1
        return op @ v

    counted = LinearOperator(op.shape, matvec=mv, dtype=op.dtype)
    value = eigsh(counted, k=1, which="LA", tol=EIGSH_TOL, return_eigenvectors=False)[0]
    return float(value), count[0]


def hutchinson_100(subject: bc.Subject) -> float:
    from curvlinops import hutchinson_trace

    return float(hutchinson_trace(curvlinops_hessian(subject), HUTCHINSON_PROBES))


def measure(subject: bc.Subject, name: str, budget: Budget):
    return timed(lambda: bc.measure(subject, [name], budget=budget)[name])


def interval(est, truth: float | None) -> tuple[str, str]:
    """``(interval cell, check cell)``."""
    if est.kind == "exact":
        spread = f"exact ±{(est.upper - est.lower) / 2 / abs(est.value):.0e}"
    else:
        spread = f"±{(est.upper - est.lower) / 2 / abs(est.value):.1e}"
    if est.details.get("stopped"):
        spread += " (time limit)"
    check = "—" if truth is None else ("✓" if est.lower <= truth <= est.upper else "MISSED")
    return spread, check


def route(est) -> str:
    """A short name for the route ``bc.measure`` took (from the estimate's method)."""
    method = est.method.lower()
    for word, short in (("control", "control variate"), ("hutch++", "Hutch++"),
                        ("hutchpp", "Hutch++"), ("hutchinson", "Hutchinson"),
                        ("rademacher", "Hutchinson-type"), ("lanczos", "Lanczos"),
                        ("dense", "dense"), ("exact", "exact")):
        if word in method:
            return short
    return est.method[:24]


def run_case(label: str, subject: bc.Subject, args) -> Row:
    row = Row(label, subject.num_params)
    budget = Budget(time_limit_s=args.time_limit)
    op = hessian_operator(subject)
    v = torch.randn(subject.num_params, dtype=subject.dtype)
    op.matvec(v)  # builds the layer values or the gradient graph
    plain_gradient(subject)
    t = best_interleaved({"grad": lambda: plain_gradient(subject),
                          "prod": lambda: op.matvec(v)}, args.repeats)
    t_grad = t["grad"]
    row.cells["product/grad"] = f"{t['prod'] / t_grad:.2f}"

    truth = {}
    if subject.num_params <= args.dense_max:
        h = dense_hessian(subject)
        h = 0.5 * (h + h.T)
        ev = torch.linalg.eigvalsh(h)
        truth = {"lambda": float(ev[-1]), "trace": float(ev.sum()),
                 "fro2": float((ev**2).sum())}
        del h
    elif not isinstance(subject_structure(subject), str):
        truth["trace"] = exact_trace(subject).value

    est, t_bc = measure(subject, "hessian.lambda_max", budget)
    (_, n_eigsh), t_eigsh = timed(lambda: eigsh_lambda_max(subject))
    spread, check = interval(est, truth.get("lambda"))
    products = est.details.get("matvecs", "—")
    row.cells["λ_max route"] = route(est)
    row.cells["λ_max interval"] = spread
    row.cells["λ products bc/eigsh"] = f"{products}/{n_eigsh}"
    row.cells["λ_max bc/eigsh time"] = f"**{t_bc / t_eigsh:.2f}**"
    row.cells["λ check"] = check

    est, t_bc = measure(subject, "hessian.trace", budget)
    _, t_hutch = timed(lambda: hutchinson_100(subject))
    spread, check = interval(est, truth.get("trace"))
    row.cells["tr H route"] = route(est)
    row.cells["tr H interval"] = spread
    row.cells["tr H bc/Hutch-100 time"] = f"**{t_bc / t_hutch:.2f}**"
    row.cells["tr check"] = check

    est, t_bc = measure(subject, "hessian.fro2", budget)
    spread, check = interval(est, truth.get("fro2"))
    row.cells["‖H‖_F² route"] = route(est)
    row.cells["‖H‖_F² interval"] = spread
    row.cells["‖H‖_F² / grad"] = f"{t_bc / t_grad:.0f}"
    row.cells["F check"] = check
    print(f"{label}: " + "; ".join(f"{k} {c}" for k, c in row.cells.items()), flush=True)
    return row


def table(rows: list[Row], args, wall: float) -> str:
    columns = list(rows[0].cells)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines = [f"1 thread (torch.set_num_threads(1)), torch {torch.__version__}, float64; load "
             f"average {load:.2f} at the end, whole run {wall:.0f} s; time limit per quantity "
             f"{args.time_limit} s. Ratios are of CPU times measured side by side in this run. "
             f"{args.note}".rstrip(), "",
             "| case | P | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for r in rows:
        lines.append(f"| {r.case} | {r.params:,} | "
                     + " | ".join(r.cells[c] for c in columns) + " |")
    lines += ["", NOTES]
    return "\n".join(lines)


NOTES = f"""- product/grad: boundcheck's Hessian-vector product (R-operator for sequential MLPs,
  graph-reusing autograd otherwise) over the plain `F.cross_entropy` gradient.
- λ_max: interval half-width relative to λ_max; products boundcheck's (two Lanczos runs,
  "—" on the dense route) / eigsh's at tol {EIGSH_TOL:g}; time boundcheck / curvlinops + eigsh.
- tr H: boundcheck's interval (exact with its rounding bound, or ±1% at 99%) / curvlinops'
  {HUTCHINSON_PROBES}-probe Hutchinson (no interval, typically ±10% or wider).
- "(time limit)": `Budget.time_limit_s` stopped the estimator; the interval is the one
  reached by then (still covering at its confidence).
- check: ✓ when the interval contains the dense Hessian's value (P ≤ the dense limit) or,
  for tr H of sequential MLPs, the exact trace; — where no reference is computed."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="h = 32, 64 at init, no CNN")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="Budget.time_limit_s per quantity (default 40, quick 10)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--dense-max", type=int, default=6200)
    parser.add_argument("--widths", type=int, nargs="*", default=None)
    parser.add_argument("--no-cnn", action="store_true")
    parser.add_argument("--cnn-only", action="store_true", help="the CNN rows alone")
    parser.add_argument("--readme", action="store_true", help="write benchmarks/README.md")
    parser.add_argument("--note", default="", help="a sentence about the run")
    args = parser.parse_args()
    if args.time_limit is None:
        args.time_limit = 10.0 if args.quick else 40.0
    widths = args.widths or ([32, 64] if args.quick else [32, 64, 128, 256])
    if args.cnn_only:
        widths = []
    states = (False,) if args.quick else (False, True)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # eigsh's BLAS: one thread, so CPU time compares like with like
    except ImportError:
        pass
    torch.manual_seed(0)
    np.random.seed(0)
    start = time.perf_counter()  # wall time of the whole run
    rows = []
    for trained in states:
        when = f"trained {args.train_steps} Adam steps" if trained else "init"
        for h in widths:
            rows.append(run_case(f"MLP h={h}, {when}", mlp_subject(h, trained, args.train_steps),
                                 args))
        if not (args.quick or args.no_cnn):
            rows.append(run_case(f"CNN digits, {when}", cnn_subject(trained, args.train_steps),
                                 args))
    text = table(rows, args, time.perf_counter() - start)
    print(text)
    if args.readme:
        write_section(SECTION, "bench_widths.py", text)


if __name__ == "__main__":
    main()
