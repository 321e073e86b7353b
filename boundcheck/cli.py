"""The ``boundcheck`` command: run, theorems, report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .pipeline import run

    cfg = RunConfig.from_toml(args.config) if args.config else RunConfig()
    if args.theorems:
        cfg.theorems = args.theorems
    if args.seed is not None:
        cfg.seed = args.seed
    results, out = run(cfg, args.output, progress=not args.quiet, pdf=not args.no_pdf)
    print()
    print(results.table())
    print(f"\nresults: {out / 'results.json'}")
    return 0


def _cmd_theorems(args: argparse.Namespace) -> int:
    from .theorem import theorems

    items = theorems()
    if args.json:
        print(json.dumps([t.describe() for t in items], indent=2))
        return 0
    for t in items:
        print(f"{t.id}\n    {t.title}\n    {t.describe()['statement']}\n    {t.source}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report
    from .results import Results

    runs = [Results.load(p) for p in args.results]
    write_report(runs, args.output, pdf=args.pdf)
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("theorems", help="list the registered theorems")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_theorems)

    p = sub.add_parser("report", help="LaTeX report from results JSON files")
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the .tex file to write")
    p.add_argument("--pdf", action="store_true", help="also build the PDF (needs latexmk)")
    p.set_defaults(func=_cmd_report)
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
