"""Layer 8, the ``boundcheck`` command: run, theorems, report, check, falsify (on top of every other
layer; see ``boundcheck/core/__init__.py`` for the order)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _cmd_run(args: argparse.Namespace) -> int:
    from boundcheck.harness.config import RunConfig
    from boundcheck.outputs.run import run

    cfg = RunConfig.from_toml(args.config) if args.config else RunConfig()
    if args.theorems:
        cfg.theorems = args.theorems
    if args.seed is not None:
        cfg.seed = args.seed
    if args.device:
        cfg.device = args.device
    if args.time_limit is not None:
        cfg.budget.time_limit_s = args.time_limit
    if args.route is not None:
        cfg.budget.route = args.route
    if args.memory is not None:
        cfg.budget.memory_bytes = args.memory
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from boundcheck.verification.registry import select

    select(cfg.theorems)  # an unknown theorem id fails here, before any training
    try:
        if cfg.experiment:
            return _run_experiment(cfg, args)
        if cfg.sweep or args.resume or args.scheduler or args.local_cluster or args.workers:
            return _run_sweep(cfg, args)
        with _estimator_progress(args.quiet):
            results, out = run(cfg, args.output, progress=not args.quiet, pdf=not args.no_pdf)
    except ImportError as err:  # an optional reader (torchvision, dask) is missing or broken
        print(f"boundcheck: error: {err}", file=sys.stderr)
        return 2
    print()
    print(results.table())
    print(f"\nresults: {out / 'results.json'}")
    return 0


def _estimator_progress(quiet: bool):
    """Long measurements report products done and interval width to stderr (not with -q)."""
    from contextlib import nullcontext

    from boundcheck.engines.estimators.clock import progress_to

    return nullcontext() if quiet else progress_to(lambda line: print(line, file=sys.stderr),
                                                   every_s=10.0)


_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 10**3, "KIB": 2**10, "M": 2**20, "MB": 10**6,
          "MIB": 2**20, "G": 2**30, "GB": 10**9, "GIB": 2**30, "T": 2**40, "TB": 10**12,
          "TIB": 2**40}


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads is a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"threads must be at least 1, got {value}")
    return value


def _memory(text: str) -> int:
    """``4GiB``, ``512M`` (binary), ``2GB`` (decimal) or a number of bytes."""
    number = text.strip().rstrip("bBiIkKmMgGtT")
    unit = text.strip()[len(number):].upper()
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"a memory size is bytes or e.g. 4GiB, 512M, 2GB; "
                                         f"got {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"a memory budget must be at least 1 byte, got {text}")
    return int(value)


def _time_limit(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a time limit must be positive seconds, got {text}")
    return value


def _run_experiment(cfg, args: argparse.Namespace) -> int:
    """A config naming an ``experiment``: its sweep, then the experiment's analysis."""
    import importlib

    module = importlib.import_module(f".harness.experiments.{cfg.experiment}", __package__)
    out = module.run_experiment(cfg, args.output, workers=args.workers, resume=args.resume)
    print(f"\nexperiment output: {out}")
    return 0


def _run_sweep(cfg, args: argparse.Namespace) -> int:
    """A config with a [sweep] (or any sweep option): jobs into a resumable store."""
    from boundcheck.harness.sweep import run_sweep

    summary = run_sweep(cfg, args.output, resume=args.resume, workers=args.workers,
                        scheduler=args.scheduler, local_cluster=args.local_cluster)
    print(f"\n{len(summary.ran)} job(s) run, {len(summary.skipped)} already done, "
          f"{summary.seconds:.1f} s\nrecords: {summary.store}  (pandas: "
          f"boundcheck.harness.store.load_dataframe({str(summary.store)!r}))")
    for job_id, reason in summary.errors.items():
        print(f"  job {job_id} failed: {reason}", file=sys.stderr)
    failed = [r for r in summary.errors.values() if not r.startswith("FloatingPointError")]
    return 1 if failed else 0


def _cmd_theorems(args: argparse.Namespace) -> int:
    from boundcheck.verification.registry import theorems

    items = theorems()
    if args.json:
        print(json.dumps([t.describe() for t in items], indent=2))
        return 0
    for t in items:  # readable Unicode math here; LaTeX only in --json and reports
        print(f"{t.id}\n    {t.title}\n    {t.unicode()}\n    {t.source}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from boundcheck.outputs.report import load_runs, write_report

    pairs = [tuple(p.split(":", 1)) for p in args.correlate] if args.correlate else None
    if pairs and any(len(p) != 2 for p in pairs):
        raise ValueError("--correlate takes X:Y (two quantity names)")
    write_report(load_runs(args.results), args.output, pdf=args.pdf,
                 markdown=not args.no_markdown, figures=not args.no_figures, pairs=pairs)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from boundcheck.outputs.check import import_user_modules, run_check

    import_user_modules(args.imports)
    return run_check(args.baseline, config=args.config, results=args.results,
                     tolerance=args.tolerance, update_baseline=args.update_baseline,
                     junit=args.junit, markdown=args.markdown, output=args.output,
                     progress=not args.quiet)


def _cmd_falsify(args: argparse.Namespace) -> int:
    """Exit status 1 when a certified counterexample is found (or replayed), else 0."""
    from boundcheck.outputs.falsify import falsify, replay, resolve

    if args.list_plants:
        from boundcheck.harness.planted import planted_variants

        for v in planted_variants(resolve(args.theorem)):
            print(f"{v.name}\n    {v.theorem.describe()['statement']}")
        return 0
    if args.replay:
        res = replay(args.theorem, args.replay, plant=args.plant, confidence=args.confidence,
                     seed=args.seed)
        print(f"{res.theorem_id}: {res.verdict.value}" + (f" ({res.reason})" if res.reason
                                                          else ""))
        return 1 if res.verdict.value == "VIOLATED" else 0
    report = falsify(args.theorem, budget=args.budget, seed=args.seed,
                     confidence=args.confidence, out=args.output, plant=args.plant)
    print(report.summary())
    return 1 if report.counterexample is not None else 0


def build_parser() -> argparse.ArgumentParser:
    from boundcheck.quantities.registry import ROUTES

    parser = argparse.ArgumentParser(
        prog="boundcheck",
        description="Verify theorems about neural-network loss landscapes on real networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train and verify (default: MLP on bundled digits)")
    p.add_argument("config", nargs="?", help="TOML config (default: the embedded demo)")
    p.add_argument("-o", "--output", type=Path, help="output folder (default runs/<time>/)")
    p.add_argument("--theorems", nargs="+", help="theorem ids or family prefixes")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-pdf", action="store_true", help="skip building report.pdf")
    p.add_argument("--time-limit", type=_time_limit, metavar="SECONDS",
                   help="per measured quantity: estimators stop there and report the interval "
                        "reached (the theorem is then INCONCLUSIVE with that reason)")
    p.add_argument("--route", choices=ROUTES,
                   help="spectral quantities (λ_max, λ_min, spread, moments): the cheaper of "
                        "dense and matrix-free by a cost model (auto, the default; refinement "
                        "rounds go exact), dense whenever P ≤ max_dense_params (exact), or "
                        "never dense (interval); also [budget] route in the TOML")
    p.add_argument("--threads", type=_threads, metavar="N",
                   help="torch threads for this run (default 1: sweeps and CI run one process "
                        "per core; a single large net runs faster on all cores)")
    p.add_argument("--memory", type=_memory, metavar="SIZE",
                   help="memory budget of curvature products and Jacobian chunks (e.g. 4GiB; "
                        "Budget.memory_bytes): data are streamed in micro-batches that fit, "
                        "and a sample that does not fit is an error, never an OOM crash")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", help="cpu (default) or cuda[:N]: where training and "
                   "measurement run")
    p.add_argument("--resume", action="store_true",
                   help="sweeps: continue the store in the output folder, skipping finished jobs")
    p.add_argument("--workers", type=int,
                   help="sweeps: local worker processes (default: one per core; 1: in-process)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="sweeps: run on a Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--local-cluster", type=int, metavar="N",
                   help="sweeps: start a Dask LocalCluster of N worker processes")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("theorems", help="list the registered theorems")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_theorems)

    p = sub.add_parser("report", help="LaTeX + Markdown report from results files")
    p.add_argument("results", nargs="+", type=Path,
                   help="results.json files, sweep stores (records.jsonl) or folders of them")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the .tex to write; NAME-fragment.tex, NAME.md and NAME-figures/ "
                   "go beside it")
    p.add_argument("--pdf", action="store_true", help="also build the PDF (needs latexmk)")
    p.add_argument("--no-markdown", action="store_true", help="skip NAME.md")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--correlate", action="append", metavar="X:Y",
                   help="quantities to scatter and correlate across runs (repeatable; default: "
                   "sharpness vs compression measures)")
    p.set_defaults(func=_cmd_report)

    from boundcheck.outputs.check import DEFAULT_TOLERANCE

    p = sub.add_parser("check", help="CI regression: re-run and compare with a baseline")
    p.add_argument("config", nargs="?", type=Path,
                   help="TOML config to re-run (default: the config recorded in the baseline)")
    p.add_argument("--baseline", type=Path, required=True, help="baseline results JSON")
    p.add_argument("--results", type=Path,
                   help="compare these results instead of re-running a config")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="relative slack movement allowed (default %(default)s): ratio slacks "
                   "within ×(1±tol), difference slacks within tol·max(|lhs|,|rhs|)")
    p.add_argument("--update-baseline", action="store_true",
                   help="accept the new results: write them to the baseline (atomically)")
    p.add_argument("--junit", type=Path, help="write JUnit XML (one testcase per theorem)")
    p.add_argument("--markdown", type=Path, help="write the diff as Markdown")
    p.add_argument("-o", "--output", type=Path,
                   help="keep the re-run's outputs here (default: a temporary folder)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module or .py file that registers theorems (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("falsify", help="search for a counterexample or the tightest instance")
    p.add_argument("theorem", help="a registered theorem id")
    p.add_argument("--budget", type=float, default=10.0, help="seconds (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confidence", type=float, default=0.99,
                   help="of statistical estimates, and of a certified VIOLATED")
    p.add_argument("-o", "--output", type=Path,
                   help="folder for the tightest instance (THEOREM.tightest.pt / "
                   ".counterexample.pt, with a .json beside it)")
    p.add_argument("--plant", metavar="VARIANT",
                   help="search the planted variant VARIANT of the theorem instead")
    p.add_argument("--list-plants", action="store_true",
                   help="list the theorem's planted variants and exit")
    p.add_argument("--replay", type=Path, metavar="FILE",
                   help="re-verify a subject file written by an earlier falsify")
    p.set_defaults(func=_cmd_falsify)
    return parser


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"boundcheck: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
