"""Per-sample Jacobian cost: boundcheck's batched path against a Python loop.

Reference problem (issue 3): MLP 20→64→64→10, tanh, cross-entropy, 512 Gaussian-mixture
samples, float64, one CPU thread, at initialisation and after training to loss < 1e-3. The
baseline is what researchers write today: a Python loop over samples calling
``torch.autograd.functional.jacobian`` and ``torch.linalg.svdvals``. boundcheck computes the
same singular values with ``vmap(jacrev)`` and one batched ``svdvals`` (plus its rounding
cross-check in forward mode on the first samples). A ~100k-parameter CNN on digits shows how
the cost grows. Every timing is the best of ``--repeats`` runs on a fresh measurement
context (nothing cached between runs).

    python benchmarks/bench_jacobians.py            # print the table
    python benchmarks/bench_jacobians.py --readme   # also write the "Jacobians" section of
                                                    # benchmarks/README.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from readme_section import write_section
from torch import nn

import boundcheck as bc
from boundcheck.core.layers import structure
from boundcheck.harness.data import gaussian_mixture, load
from boundcheck.harness.models import mlp
from boundcheck.harness.training import Recipe, train
from boundcheck.quantities import Context
from boundcheck.quantities.jacobian import input_jacobian_stats, layer_jacobian_stats

SECTION = "## Jacobians"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def loop_singular_values(subject: bc.Subject, vectorize: bool = False) -> torch.Tensor:
    """The baseline: one autograd.functional.jacobian call per sample, then svdvals."""
    net, k = subject.net, subject.output_dim
    out = []
    for xi in subject.x_all:
        j = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], xi,
                                               vectorize=vectorize)
        out.append(torch.linalg.svdvals(j.reshape(k, -1)))
    return torch.stack(out)


def batched_singular_values(subject: bc.Subject) -> torch.Tensor:
    return input_jacobian_stats(Context(subject)).svals


def cnn(seed: int = 0) -> nn.Sequential:
    """~100k parameters on 8×8 digits: two 3×3 convolutions, then a dense head."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 8 * 8, 20), nn.ReLU(), nn.Linear(20, 10))


def all_layer_jacobians(subject: bc.Subject) -> None:
    ctx = Context(subject)
    for index in range(1, len(structure(subject).layers) + 1):
        layer_jacobian_stats(ctx, index)


def weight_quantities(subject: bc.Subject) -> None:
    ctx = Context(subject)
    for index in range(1, len(structure(subject).layers) + 1):
        ctx.get(f"layer.{index}.kappa_ggn")


def conv_norms(subject: bc.Subject) -> None:
    ctx = Context(subject)
    for layer in structure(subject).layers:
        ctx.get(f"layer.{layer.index}.weight_norm")


def rows_for(label: str, subject: bc.Subject, repeats: int, with_layers: bool) -> list[tuple]:
    """(case, what, seconds, ratio to the loop) rows for one subject."""
    ref = loop_singular_values(subject)
    got = batched_singular_values(subject)
    err = float((got - ref).abs().max() / ref.abs().max())
    loop = best_of(lambda: loop_singular_values(subject), max(1, repeats // 2))
    loop_vec = best_of(lambda: loop_singular_values(subject, vectorize=True),
                       max(1, repeats // 2))
    ours = best_of(lambda: batched_singular_values(subject), repeats)
    rows = [(label, "loop: autograd.functional.jacobian + svdvals", loop, 1.0),
            (label, "loop: same, vectorize=True", loop_vec, loop_vec / loop),
            (label, f"boundcheck: vmap(jacrev) + batched svdvals (max rel diff {err:.1e})",
             ours, ours / loop)]
    if with_layers:
        t = best_of(lambda: all_layer_jacobians(subject), repeats)
        rows.append((label, "boundcheck: J_{h,l} singular values, every layer", t, t / loop))
        t = best_of(lambda: weight_quantities(subject), repeats)
        rows.append((label, "boundcheck: weight Jacobians → κ^G, tr G_l, ‖∇_W f‖², every layer",
                     t, t / loop))
        t = best_of(lambda: conv_norms(subject), repeats)
        rows.append((label, "boundcheck: ‖W_l‖_2 of every layer", t, t / loop))
    return rows


def reference_mlp(n: int, trained: bool) -> tuple[bc.Subject, str]:
    x, y = gaussian_mixture(n, 20, 10, seed=0)
    net = mlp([20, 64, 64, 10], "tanh", seed=0)
    note = "at initialisation"
    if trained:
        summary = train(net, x, y, recipe=Recipe(optimizer="adam", lr=1e-2, steps=5000,
                                                 target_loss=1e-3, log_every=25),
                        progress=False)
        note = f"trained, loss {summary['final_loss']:.1e}"
    return bc.Subject(net, (x, y)), note


def digits_cnn(n: int) -> bc.Subject:
    data = load("digits", n=n, layout="image")
    return bc.Subject(cnn(), (data.x, data.y))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, 1 thread (torch.set_num_threads(1)), torch {torch.__version__}, "
            f"Python {platform.python_version()}, float64")


def table(rows: list[tuple], n: int, note: str) -> str:
    lines = [f"Per-sample Jacobians of {n} samples. Machine: {machine()}. {note} Best of "
             "repeated runs (loops: fewer repeats); ratio = time / the plain loop's time on the "
             "same case (lower is better).",
             "", "| case | computation | seconds | ratio to loop |", "|---|---|---:|---:|"]
    lines += [f"| {case} | {what} | {t:.3f} | {r:.3f} |" for case, what, t, r in rows]
    lines += ["", "Speed-up of the batched singular values over the plain loop (issue 3 asks "
              "for ≥ 10× on the reference MLP):"]
    lines += [f"- {case}: {1 / r:.1f}×" for case, what, _, r in rows
              if what.startswith("boundcheck: vmap(jacrev)")]
    lines += ["", "Where the loop's cost is Python and autograd overhead per sample (small "
              "MLPs), batching wins by an order of magnitude. In the CNN both do the same "
              "float64 convolution arithmetic (K = 10 vector-Jacobian products per sample), so "
              "batching gains little; per-layer and weight-Jacobian quantities cost a few "
              "Jacobians' worth each, and κ^G by its definition adds K·rows²·cols per sample "
              "and layer (the identity form, layer.<l>.kappa_ggn_identity, reuses J_{h,l})."]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    write_section(SECTION, "bench_jacobians.py", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--readme", action="store_true", help="write benchmarks/README.md")
    parser.add_argument("--note", default="", help="a sentence about the machine's load")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for trained in (False, True):
        subject, note = reference_mlp(args.samples, trained)
        rows += rows_for(f"MLP 20→64→64→10 tanh, {note}", subject, args.repeats,
                         with_layers=not trained)
    subject = digits_cnn(args.samples)
    rows += rows_for(f"CNN on digits, {subject.num_params} params", subject, args.repeats,
                     with_layers=True)
    text = table(rows, args.samples, args.note)
    print(text)
    if args.readme:
        write_readme(text)


if __name__ == "__main__":
    main()
