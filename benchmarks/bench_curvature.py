"""Curvature cost: boundcheck's Hessian engine against the libraries researchers use today.

Reference problem (issue 3): MLP 20→64→64→10, tanh, cross-entropy, 512 Gaussian-mixture
samples, float64, one CPU thread, at initialisation and after training to loss < 1e-3. Side by
side, in one run:

* a Hessian-vector product (graph reused) against one gradient, and against curvlinops'
  ``HessianLinearOperator`` product;
* λ_max to 1e-8 relative with its interval (Lanczos + residual/Kuczyński–Woźniakowski) against
  curvlinops + ``scipy.sparse.linalg.eigsh(k=1)``;
* tr H with a 99% interval of half-width ≤ 0.5% (the estimators, which work for any
  network) against curvlinops' ``hutchinson_trace`` with the probes a normal-theory interval
  of that width needs; the exact trace of sequential MLPs (pre-activation Hessian recursion,
  with its rounding bound) against BackPACK's exact ``DiagHessian``;
* the dense Hessian, by layer blocks (sequential MLPs) and by one graph-reusing product per
  column (any network), against column-wise ``vmap(jvp(grad))`` (torch.func).

A ~100k-parameter CNN on 128 digits (no dense Hessian: 80 GB) shows how the matrix-free
costs grow: products, λ_max to 1e-6 against curvlinops + eigsh, and tr H to ±5%.

Short operations are the best of ``--repeats`` runs; long ones run once. Every estimate is
checked against the dense Hessian.

    python benchmarks/bench_curvature.py            # print the table
    python benchmarks/bench_curvature.py --readme   # also write the "Curvature" section of
                                                    # benchmarks/README.md
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from readme_section import write_section
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

import boundcheck as bc
from boundcheck.engines.curvature import HessianOperator, hessian_operator
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue, top_ritz_pairs
from boundcheck.engines.sequential import subject_structure
from boundcheck.engines.sequential_hessian import exact_dense_hessian, exact_trace
from boundcheck.engines.sequential_products import SequentialHessianOperator
from boundcheck.harness.data import gaussian_mixture, load
from boundcheck.harness.models import mlp
from boundcheck.harness.training import Recipe, train
from boundcheck.quantities import Budget, Context
from boundcheck.quantities.hessian import matrix_free_trace

SECTION = "## Curvature"
Z99 = 2.5758293035489004  # two-sided 99% normal quantile


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def reference_mlp(n: int, trained: bool) -> tuple[bc.Subject, str]:
    x, y = gaussian_mixture(n, 20, 10, seed=0)
    net = mlp([20, 64, 64, 10], "tanh", seed=0).double()
    note = "at initialisation"
    if trained:
        summary = train(net, x.double(), y, recipe=Recipe(optimizer="adam", lr=1e-2,
                                                          steps=5000, target_loss=1e-3,
                                                          log_every=25), progress=False)
        note = f"trained, loss {summary['final_loss']:.1e}"
    return bc.Subject(net, (x, y)), note


def digits_cnn(n: int) -> bc.Subject:
    """~100k parameters on 8×8 digits (the model of bench_jacobians.py)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * 8 * 8, 20), nn.ReLU(), nn.Linear(20, 10))
    data = load("digits", n=n, layout="image")
    return bc.Subject(net, (data.x, data.y))


def curvlinops_hessian(subject: bc.Subject):
    from curvlinops import HessianLinearOperator

    return HessianLinearOperator(subject.net, nn.CrossEntropyLoss(), subject.params,
                                 [(subject.x_all, subject.y_all)], check_deterministic=False)


def gradient(subject: bc.Subject):
    loss = subject.loss_fn.per_sample(subject.net(subject.x_all), subject.y_all).mean()
    return torch.autograd.grad(loss, subject.params)


def column_wise_dense(subject: bc.Subject, chunk: int = 128) -> torch.Tensor:
    """The usual torch.func recipe: vmap over basis vectors of jvp(grad(loss))."""
    names = subject.param_names
    shapes = [p.shape for p in subject.params]
    sizes = [p.numel() for p in subject.params]
    x, y = subject.x_all, subject.y_all

    def loss(theta):
        parts = torch.split(theta, sizes)
        params = {k: t.reshape(s) for k, t, s in zip(names, parts, shapes, strict=True)}
        return subject.loss_fn.per_sample(functional_call(subject.net, params, (x,)), y).mean()

    theta = subject.flat_params()

    def column(v):
        return jvp(grad(loss), (theta,), (v,))[1]

    eye = torch.eye(theta.numel(), dtype=theta.dtype)
    return vmap(column, chunk_size=chunk)(eye)


def backpack_trace(subject: bc.Subject, net: nn.Module) -> float:
    """BackPACK's DiagHessian trace; ``net`` is a copy of ``subject.net`` (``extend`` hooks
    it in place, and boundcheck refuses hooked networks for the layer-block routes)."""
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    net = extend(net)
    loss_fn = extend(nn.CrossEntropyLoss())
    loss = loss_fn(net(subject.x_all), subject.y_all)
    with backpack(DiagHessian()):
        loss.backward()
    total = sum(float(p.diag_h.sum()) for p in net.parameters())
    for p in net.parameters():
        p.grad = None
        del p.diag_h
    return total


def section_products(label: str, subject: bc.Subject, repeats: int,
                     summary: list[str]) -> list[tuple]:
    v = torch.randn(subject.num_params, dtype=torch.float64)
    t_grad = best_of(lambda: gradient(subject), repeats)
    hessian_operator(subject).matvec(v)  # warm-up (vmap of the output Hessian)
    t_first = best_of(lambda: hessian_operator(subject).matvec(v), repeats)
    op = hessian_operator(subject)
    op.matvec(v)  # the first product builds the gradient graph (or the layer values)
    t_hvp = best_of(lambda: op.matvec(v), repeats)
    kind = ("R-operator (sequential MLP)" if isinstance(op, SequentialHessianOperator)
            else "autograd, graph reused")
    rows = [(label, "one gradient (forward + backward)", t_grad, "1.00 (reference)"),
            (label, f"boundcheck HVP, {kind}", t_hvp, f"{t_hvp / t_grad:.2f}× gradient"),
            (label, "boundcheck: first HVP of a new operator (builds the gradient graph or "
             "layer values)", t_first, f"{t_first / t_grad:.2f}× gradient")]
    if isinstance(op, SequentialHessianOperator):
        auto = HessianOperator(subject)
        auto.matvec(v)
        t_auto = best_of(lambda: auto.matvec(v), repeats)
        rows.append((label, "boundcheck HVP, autograd with the graph reused (any network)",
                     t_auto, f"{t_auto / t_grad:.2f}× gradient; R-operator {t_hvp / t_auto:.2f}×"))
    summary.append(f"{label}: HVP / gradient = {t_hvp / t_grad:.2f} (issue 3 target ≤ 1.5 on "
                   "the reference MLP)")
    try:
        h = curvlinops_hessian(subject)
        t_cl = best_of(lambda: h @ v, repeats)
        rows.append((label, "curvlinops HessianLinearOperator @ v", t_cl,
                     f"{t_cl / t_grad:.2f}× gradient; ours {t_hvp / t_cl:.2f}×"))
    except ImportError:
        rows.append((label, "curvlinops not importable: skipped", math.nan, ""))
    return rows


def section_lambda_max(label: str, subject: bc.Subject, truth: float | None,
                       repeats: int, summary: list[str], rel_tol: float = 1e-8) -> list[tuple]:
    """Best of ``repeats`` for each, interleaved (the machine's load drifts)."""
    def ours():
        return extreme_eigenvalue(hessian_operator(subject), "largest", confidence=0.99,
                                  rel_tol=rel_tol, max_steps=500, seed=0)

    def value_only():
        return top_ritz_pairs(hessian_operator(subject), 1, rel_tol=rel_tol, max_steps=500)

    def reference(tol: float = 0.0):
        from scipy.sparse.linalg import eigsh

        return float(eigsh(curvlinops_hessian(subject).to_scipy(), k=1, which="LA", tol=tol,
                           return_eigenvectors=False)[0])

    try:
        import curvlinops  # noqa: F401
        have_reference = True
    except ImportError:
        have_reference = False
    t_ours = t_ref = t_ref_tol = t_value = math.inf
    for _ in range(repeats):
        est, t = timed(ours)
        t_ours = min(t_ours, t)
        value, t = timed(value_only)
        t_value = min(t_value, t)
        if have_reference:
            ref, t = timed(reference)
            t_ref = min(t_ref, t)
            ref_tol, t = timed(lambda: reference(rel_tol))
            t_ref_tol = min(t_ref_tol, t)
    rel_half = 0.5 * (est.upper - est.lower) / abs(est.value)
    check = ("" if truth is None else f", rel. error {abs(est.value - truth) / abs(truth):.1e}, "
             f"contains dense: {est.lower <= truth <= est.upper}")
    rows = [(label, f"boundcheck λ_max = {est.value:.12g}, 99% interval half-width "
             f"{rel_half:.1e} relative, {est.matvecs} products ({est.details['steps']} + "
             f"{est.details.get('deflated_steps', 0)} deflated, block "
             f"{est.details.get('block', '-')}){check}", t_ours, "")]
    rows.append((label, f"boundcheck λ_max value only (top Ritz pair to residual "
                 f"{rel_tol:g}·max θ, no upper bound): {value.matvecs} products", t_value, ""))
    if have_reference:
        centre = truth if truth is not None else est.value
        against = "" if truth is not None else " vs ours"
        rows.append((label, f"curvlinops + eigsh(k=1), default tol: λ_max = {ref:.12g} (no "
                     f"interval), rel. error {abs(ref - centre) / abs(centre):.1e}{against}", t_ref,
                     f"ours {t_ours / t_ref:.3f}× (value only {t_value / t_ref:.3f}×)"))
        rows.append((label, f"curvlinops + eigsh(k=1, tol={rel_tol:g}): rel. error "
                     f"{abs(ref_tol - centre) / abs(centre):.1e}{against}", t_ref_tol,
                     f"ours {t_ours / t_ref_tol:.3f}× (value only {t_value / t_ref_tol:.3f}×)"))
        summary.append(f"{label}: λ_max with interval / curvlinops + eigsh(k=1) = "
                       f"{t_ours / t_ref:.2f} (target ≤ 0.25); value only "
                       f"{t_value / t_ref:.2f}")
    else:
        rows.append((label, "curvlinops not importable: skipped", math.nan, ""))
    return rows


def section_trace(label: str, subject: bc.Subject, truth: float | None, summary: list[str],
                  repeats: int, width: float = 0.005, max_probes: int = 10**6) -> list[tuple]:
    budget = Budget(max_dense_params=0, trace_rel_half_width=width, max_probes=max_probes)

    def agrees(e) -> str:
        return "" if truth is None else f", contains dense: {e.contains(truth)}"

    def spread(e) -> str:
        if e.kind == "exact":
            return "exact (every basis vector: the width needed more probes than P)"
        return f"± {e.half_width / abs(e.value):.2%}"

    def ours(method: str):
        ctx = Context(subject, confidence=0.99, seed=0,
                      budget=dataclasses.replace(budget, trace_method=method))
        return matrix_free_trace(ctx)  # the estimators, also for MLPs

    est, t_ours = timed(lambda: ours("auto"))
    width = max(width, est.half_width / abs(est.value))  # compare at the width reached
    rows = [(label, f"boundcheck tr H (auto → {est.details.get('selected', '?')}): "
             f"{est.value:.8g} {spread(est)}, "
             f"{est.details['matvecs']} probes{agrees(est)}", t_ours, "")]
    if est.details.get("selected") != "hutchinson":
        hut, t_hut = timed(lambda: ours("hutchinson"))
        rows.append((label, f"boundcheck tr H (Hutchinson): {hut.value:.8g} "
                     f"{spread(hut)}, {hut.details['matvecs']} "
                     f"probes{agrees(hut)}", t_hut,
                     f"auto {t_ours / t_hut:.3f}×"))
    # curvlinops' Hutchinson: the probes a normal-theory 99% interval of the same width needs,
    # from the spread of vᵀHv over 100 Rademacher probes (not timed)
    op = HessianOperator(subject)
    probes = torch.randint(0, 2, (100, subject.num_params), dtype=torch.float64) * 2 - 1
    sd = float(torch.stack([v @ op.matvec(v) for v in probes]).std())
    centre = truth if truth is not None else est.value
    needed = math.ceil((Z99 * sd / (width * abs(centre))) ** 2)
    try:
        from curvlinops import hutchinson_trace

        h = curvlinops_hessian(subject)
        probe = min(needed, 200, subject.num_params - 1)
        _, t_probe = timed(lambda: hutchinson_trace(h, probe))
        t_cl = t_probe * needed / probe
        how = "measured" if probe == needed else f"extrapolated from {probe} products"
        rows.append((label, f"curvlinops hutchinson_trace, {needed} products for "
                     f"±{width:.1%} ({how})", t_cl, f"ours {t_ours / t_cl:.3f}×"))
        summary.append(f"{label}: tr H to ±{width:.2%} at 99% / curvlinops Hutchinson = "
                       f"{t_ours / t_cl:.3f} (target ≤ 0.2 at the trained point)")
    except ImportError:
        rows.append((label, "curvlinops not importable: skipped", math.nan, ""))
    exact = None
    if not isinstance(subject_structure(subject), str):
        exact = exact_trace(subject)  # warm-up (vmap of the output Hessian)
        t_exact = best_of(lambda: exact_trace(subject), repeats)
        err = "" if truth is None else f", rel err {abs(exact.value - truth) / abs(truth):.1e}"
        rows.append((label, f"boundcheck exact tr H (pre-activation Hessian recursion): "
                     f"{exact.value:.12g} ± {exact.abs_error / abs(exact.value):.1e} relative "
                     f"(rounding bound){err}", t_exact, ""))
    try:
        net = copy.deepcopy(subject.net)
        value = backpack_trace(subject, net)  # warm-up
        t_bp = best_of(lambda: backpack_trace(subject, net), repeats)
        err = "" if truth is None else f", rel err {abs(value - truth) / abs(truth):.1e}"
        ratio = f"estimator {t_ours / t_bp:.3f}×"
        if exact is not None:
            ratio = f"exact {t_exact / t_bp:.3f}×, " + ratio
            summary.append(f"{label}: exact tr H / BackPACK DiagHessian = {t_exact / t_bp:.2f} "
                           "(target ≤ 1)")
        rows.append((label, f"BackPACK DiagHessian (exact, no rounding bound): {value:.12g}"
                     f"{err}", t_bp, ratio))
        summary.append(f"{label}: tr H estimator / BackPACK DiagHessian = {t_ours / t_bp:.1f}")
    except ImportError as err:
        rows.append((label, f"BackPACK not importable ({err}): skipped", math.nan, ""))
    return rows


def section_dense(label: str, subject: bc.Subject,
                  summary: list[str]) -> tuple[list[tuple], torch.Tensor]:
    exact_dense_hessian(subject)  # warm-up (vmap of the output Hessian)
    exact, t_exact = timed(lambda: exact_dense_hessian(subject))
    ours = exact.matrix
    hvp, t_hvp = timed(lambda: HessianOperator(subject).dense())
    ref, t_ref = timed(lambda: column_wise_dense(subject))
    scale = float(ref.abs().max())
    diff = float((ours - ref).abs().max()) / scale
    diff_hvp = float((hvp - ref).abs().max()) / scale
    bound = exact.frobenius_error / float(torch.linalg.matrix_norm(ours))
    rows = [(label, f"boundcheck exact dense Hessian by layer blocks (P = {subject.num_params}; "
             f"rounding bound {bound:.1e} of ‖H‖_F)", t_exact, ""),
            (label, "boundcheck dense Hessian, HVP per column (any network)", t_hvp, ""),
            (label, f"column-wise vmap(jvp(grad)), chunks of 128 (max rel diff: layer blocks "
             f"{diff:.1e}, HVP per column {diff_hvp:.1e})", t_ref,
             f"layer blocks {t_exact / t_ref:.3f}×, HVP per column {t_hvp / t_ref:.3f}×")]
    summary.append(f"{label}: dense Hessian by layer blocks / column-wise vmap(jvp(grad)) = "
                   f"{t_exact / t_ref:.3f} (target ≤ 0.3); HVP per column "
                   f"{t_hvp / t_ref:.2f}")
    return rows, ours


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (f"{cpu} ({os.cpu_count()} cores, load average {load:.2f} at the start), 1 thread "
            f"(torch.set_num_threads(1)), torch {torch.__version__}, Python "
            f"{platform.python_version()}, float64")


def table(rows: list[tuple], summary: list[str], growth: list[str], note: str) -> str:
    lines = [f"Machine: {machine()}. {note}".rstrip(), "",
             "| case | computation | seconds | ratio |", "|---|---|---:|---:|"]
    lines += [f"| {case} | {what.replace('|', '∣')} | {t:.4f} | {r} |"
              for case, what, t, r in rows]
    lines += ["", "Against the targets of issue 3 (ratios of times measured in this run):", ""]
    lines += [f"- {line}" for line in summary]
    if growth:
        lines += ["", "The larger model (issue 3 sets no targets for it; how the ratios grow):",
                  ""]
        lines += [f"- {re.sub(r' [(](issue 3 )?target[^)]*[)]', '', line)}" for line in growth]
    lines += ["", NOTES]
    return "\n".join(lines)


NOTES = """How to read it:

- HVP: for sequential MLPs the R-operator (boundcheck/engines/sequential_products.py: one forward
  and one backward sweep of directional derivatives over per-layer values computed once,
  about six GEMMs per layer); for any other network the gradient graph of each batch is
  built once (`create_graph=True`) and every product is one backward pass through it. Both
  are GEMM-bound on this CPU (the float64 64×64 products run near 48 GFLOP/s), which is
  why the R-operator saves only ~15–25% (0.76–0.86× the autograd product). curvlinops
  rebuilds forward and gradient per product (`jvp(jacrev)`).
- λ_max "with interval" is two Lanczos runs: the first converges the top Ritz pairs (its
  value alone is what `eigsh` returns, without any bound); the second runs on the operator
  deflated by the top block and exists only for the upper side (Kuczyński–Woźniakowski
  bound at 99%, checked first at the step count the first run's Ritz values predict, with
  half the failure probability). "Value only" is the first run alone. The second run's
  length has a floor set by the KW bound itself, P{λ − θ ≥ ε·spread} ≤ 1.648√P·e^{−√ε(2k−1)}:
  at P ≈ 6000 and 99%, certifying the gap under the top block takes k ≈ 14 products trained
  and ≈ 28 at initialisation (gap 11% of the spread), so "with interval" cannot cost less
  than the first run plus that.
- tr H: at initialisation a ±0.5% interval at 99% would need more Hutchinson probes than P,
  so boundcheck sums eᵢᵀHeᵢ over the basis (exact, P products). At the trained point the
  pilot selects the control variate (tr G exact from per-sample Jacobians, Hutchinson on
  tr R only). curvlinops' count is what a normal-theory interval needs (boundcheck's
  calibrated interval is wider at small M; see boundcheck/engines/estimators/trace.py); its time is
  extrapolated from 200 products. boundcheck's estimators work for any `nn.Module`.
- Exact tr H (sequential MLPs, what `hessian.trace` uses above the dense budget): the
  pre-activation Hessians M_l = D_l W_{l+1}ᵀ M_{l+1} W_{l+1} D_l + diag(σ''_l ⊙ g_l) with
  M_{L−1} kept as a rank-K factor plus a diagonal, and tr H = (1/n) Σ_i Σ_l ‖ā_{l−1}‖² tr M_l;
  the time includes a second pass on magnitudes for the rounding bound. BackPACK's
  DiagHessian is exact too but has no bound, and forms the cross-entropy output Hessian from
  probabilities, which cancels once the softmax saturates: on the saturated net of
  tests/test_cross_entropy_numerics.py (1 − p_y ≈ 1e-13) its tr H was off by 1.7e-6
  relative against the 50-digit reference, boundcheck's by 8e-16 (BackPACK runs on a copy
  of the net: `extend` hooks it in place).
- Dense Hessian by layer blocks (sequential MLPs, what `dense_hessian` uses for them): per
  block of layers (b, a) one GEMM over samples of M_b J_{a→b} (plus the δ_b ∂ā_{b−1}/∂s_a
  term) with the layer inputs; lower blocks only, mirrored exactly; the time includes the
  rounding bound. HVP per column: one graph-reusing product per column on CPU (any network;
  batched products measured slower there); torch.func's column-wise recipe evaluates
  `jvp(grad)` on chunks of 128 basis vectors.
- CNN: convolutions make a product cost more gradients, and Hutchinson's spread at
  initialisation is large: the probe budget (400) bounds the width reached, and the
  curvlinops row is for that same width."""


def write_readme(text: str) -> None:
    write_section(SECTION, "bench_curvature.py", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--readme", action="store_true", help="write benchmarks/README.md")
    parser.add_argument("--note", default="", help="a sentence about the run")
    parser.add_argument("--no-cnn", action="store_true", help="skip the ~100k-parameter CNN")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows: list[tuple] = []
    summary: list[str] = []
    for trained in (False, True):
        first = len(rows)
        subject, note = reference_mlp(args.samples, trained)
        label = f"MLP 20→64→64→10 tanh, {note}"
        dense_rows, dense = section_dense(label, subject, summary)
        ev = np.linalg.eigvalsh(0.5 * (dense + dense.T).numpy())
        rows += section_products(label, subject, args.repeats, summary)
        rows += section_lambda_max(label, subject, float(ev[-1]), 3, summary)
        rows += section_trace(label, subject, float(ev.sum()), summary, args.repeats)
        rows += dense_rows
        print("\n".join(f"{r[1]}: {r[2]:.4f} s {r[3]}" for r in rows[first:]), flush=True)
        del dense
    growth: list[str] = []
    if not args.no_cnn:
        first = len(rows)
        subject = digits_cnn(128)
        label = f"CNN on 128 digits, {subject.num_params} params, at initialisation"
        rows += section_products(label, subject, args.repeats, growth)
        rows += section_lambda_max(label, subject, None, 1, growth, rel_tol=1e-6)
        rows += section_trace(label, subject, None, growth, args.repeats, width=0.05,
                              max_probes=400)
        print("\n".join(f"{r[1]}: {r[2]:.4f} s {r[3]}" for r in rows[first:]), flush=True)
    text = table(rows, summary, growth, args.note)
    print(text)
    if args.readme:
        write_readme(text)


if __name__ == "__main__":
    main()
