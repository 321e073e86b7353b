"""Flat minima and compressed representations, across a learning-rate × batch-size sweep
(THEOREMS.md T3–T8; Chen, Recanatesi, Shea-Brown, arXiv 2310.01770).

    python -m boundcheck.harness.experiments.compression examples/compression_sweep.toml [-o OUT]

The config is an ordinary run config with a ``[sweep]`` (:mod:`..config`). Every job
(one architecture, learning rate and batch size) is trained, and at each checkpoint the
``compression`` and ``relative_flatness`` theorems are verified and these measures recorded
in the same :class:`~boundcheck.quantities.Context`:

* sharpness: ``tr G``, ``tr H``, ``λ_max(H)``, and ``Σ_l κ^G(W_l)`` over the dense layers;
* compression: MLS, NMLS, log LVR, NVR, local dimensionality, the finite-perturbation LVR
  (final checkpoint only), and MLS_l / log LVR_l / local dimensionality of *every* affine
  layer — convolutions and token-wise maps included, where the theorems do not apply and the
  empirical correlation is what is reported (as the paper does for CNNs and transformers).

Records go to ``OUT/records.jsonl`` (:mod:`boundcheck.harness.store` format, one record per
checkpoint and theorem, plus a ``measures`` field), jobs run on :func:`boundcheck.harness.sweep.
open_executor` and the sweep resumes (``--resume``). The analysis writes ``OUT/summary.md``
(the slack of each bound per network, the median slack per bound and architecture, Pearson
and Spearman correlations between each sharpness and each compression measure across the
networks of an architecture), ``OUT/correlations.csv``, ``OUT/analysis.json`` and figures as
PDF and PNG: sharpness against compression, slack against training step, and the local
dimensionality demonstration (:func:`local_dimensionality_demo`).
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

THEOREMS = ["compression", "relative_flatness"]
SHARPNESS = {"ggn.trace": "tr G", "hessian.trace": "tr H", "hessian.lambda_max": "λ_max",
             "relative_flatness.kappa_sum": "Σκ^G"}
COMPRESSION = {"jacobian.mls": "MLS", "network.nmls": "NMLS", "jacobian.log_lvr": "log LVR",
               "network.nvr": "NVR", "jacobian.local_dim": "local dim",
               "lvr.finite_perturbation": "log LVR_ε"}
# The papers' dialect (boundcheck.quantities.paper_dialect, docs/paper_dialect.md): the
# authors' sharpness √(mean ‖∂f/∂θ‖²), top-k log-volume, network-wide MLS over every layer,
# on their sample subset; correlated as their plot_corr.py does (Pearson across runs, final
# checkpoints).
PAPER_SHARPNESS = {"paper.sharpness": "sharpness (paper)"}
PAPER_COMPRESSION = {"paper.mls": "MLS (paper)", "paper.nmls": "NMLS (paper)",
                     "paper.log_volume": "log vol top-k (paper)"}
DIALECTS = {"boundcheck": (SHARPNESS, COMPRESSION), "paper": (PAPER_SHARPNESS, PAPER_COMPRESSION)}
# concept -> (boundcheck's pair, the papers' pair), for the side-by-side table
SIDE_BY_SIDE = {"MLS": (("ggn.trace", "jacobian.mls"), ("paper.sharpness", "paper.mls")),
                "NMLS": (("ggn.trace", "network.nmls"), ("paper.sharpness", "paper.nmls")),
                "log volume": (("ggn.trace", "jacobian.log_lvr"),
                               ("paper.sharpness", "paper.log_volume"))}
LAYER_MEASURES = ("mls", "log_lvr", "local_dim")
FINAL_ONLY = ("lvr.finite_perturbation",)
SUMMARY_SHARPNESS = ("ggn.trace", "hessian.lambda_max", "relative_flatness.kappa_sum")
PERMUTATION_MAX_N = 8
LOG_AXES = {"ggn.trace", "hessian.trace", "hessian.lambda_max", "relative_flatness.kappa_sum",
            "jacobian.mls", "network.nmls"}


# --- running -------------------------------------------------------------------------------
def measure_all(ctx, final: bool) -> dict[str, dict[str, Any]]:
    """The sharpness and compression measures of one checkpoint (value, interval; or why
    not)."""
    from boundcheck.quantities.data_geometry import structure

    names = [*SHARPNESS, *(q for q in COMPRESSION if final or q not in FINAL_ONLY),
             "residual.trace", *PAPER_SHARPNESS, *PAPER_COMPRESSION]
    for layer in structure(ctx).layers:
        names += [f"layer.{layer.index}.{m}" for m in LAYER_MEASURES]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            e = ctx.get(name)
            out[name] = {"value": e.value, "lower": e.lower, "upper": e.upper, "kind": e.kind}
        except Exception as err:  # a measure that does not exist here is recorded as such
            out[name] = {"error": f"{type(err).__name__}: {err}"}
    out["layers"] = {"kinds": {str(la.index): ("dense" if la.dense else la.kind)
                               for la in structure(ctx).layers}}
    return out


def run_job(job) -> list[dict[str, Any]]:
    """Train one job, verify and measure at each checkpoint; its store records."""
    import torch

    from boundcheck.core.subject import Subject
    from boundcheck.harness.config import RunConfig
    from boundcheck.harness.pipeline import prepare
    from boundcheck.harness.store import error_records, job_records
    from boundcheck.harness.training import train
    from boundcheck.quantities import Context
    from boundcheck.verification.api import verify

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    info = {"sweep": job.sweep, "job": job.label, "job_id": job.id, "params": job.params,
            "config": job.config}
    try:
        cfg = RunConfig.from_dict(job.config)
        net, data, targets = prepare(cfg)
        snapshots: list[tuple[int, dict]] = []
        summary = train(net, data.x, targets, cfg.subject.loss, cfg.recipe, progress=False,
                        device=cfg.device, on_checkpoint=lambda step, m: snapshots.append(
                            (step, copy.deepcopy(m.state_dict()))))
        losses = dict(summary["checkpoints"])
        runs, measures = [], {}
        for step, state in snapshots:
            net.load_state_dict(state)
            subject = Subject(net, (data.x, targets), cfg.subject.loss, device=cfg.device,
                              name=f"{job.label} @ step {step}")
            ctx = Context(subject, confidence=cfg.confidence, seed=cfg.seed, budget=cfg.budget)
            results = verify(subject, cfg.theorems or THEOREMS, context=ctx,
                             confidence=cfg.confidence, seed=cfg.seed)
            final = step == summary["steps"]
            results.training = {"steps": summary["steps"], "final_loss": summary["final_loss"],
                                "reached_target": summary.get("reached_target"), "step": step,
                                "loss": losses[step], "final": final}
            measures[step] = measure_all(ctx, final)
            runs.append(results)
    except Exception as err:  # a failed job is a result too (e.g. training diverged)
        return error_records(**info, error=err, timing={"total_s": time.perf_counter() - start})
    finally:
        torch.set_num_threads(threads)
    records = job_records(**info, runs=runs, timing={"total_s": time.perf_counter() - start})
    for record in records:
        record["measures"] = measures[record["step"]]
    return records


def run(cfg, out_dir: Path, *, workers: int | None = None, resume: bool = False,
        log: Callable[[str], None] = print) -> Path:
    """Run every job of the config's sweep not yet in ``out_dir/records.jsonl``."""
    from boundcheck.harness.store import ResultStore
    from boundcheck.harness.sweep import expand, open_executor

    jobs = expand(cfg)
    store = ResultStore(out_dir / "records.jsonl")
    with store.lock():
        if store.path.exists() and store.path.stat().st_size and not resume:
            raise ValueError(f"{store.path} already holds records: pass --resume, or choose "
                             "another output folder")
        store.repair()
        done = store.finished_jobs()
        todo = [j for j in jobs if j.id not in done]
        log(f"{cfg.name}: {len(jobs)} jobs, {len(jobs) - len(todo)} done, {len(todo)} to run")
        with open_executor(workers=workers) as ex:
            futures = [ex.submit(run_job, job) for job in todo]
            for k, future in enumerate(futures, 1):
                records = future.result()
                store.append(records)
                log(f"[{k}/{len(todo)}] {records[0]['job']}: "
                    f"{records[0]['reason'] if records[0]['verdict'] == 'ERROR' else 'done'}")
    return store.path


# --- analysis ------------------------------------------------------------------------------
def _value(entry: dict | None) -> float:
    if not entry or entry.get("value") is None:
        return math.nan
    return float(entry["value"])


def _architecture(record: dict) -> str:
    return record["config"]["subject"]["model"]


def short_label(record: dict) -> str:
    """``arch lr=… B=…`` from the record's config (the sweep's own label can be long)."""
    recipe = record["config"]["recipe"]
    batch = recipe.get("batch_size") or "full"
    return f"{_architecture(record)} lr={recipe['lr']:g} B={batch}"


def checkpoints(records: Iterable[dict]) -> list[dict[str, Any]]:
    """One row per (job, step): params, loss, measures, and each theorem's verdict/slack."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if r["verdict"] == "ERROR":
            continue
        key = (r["job_id"], r["step"])
        row = rows.setdefault(key, {
            "job": short_label(r), "job_id": r["job_id"], "architecture": _architecture(r),
            "params": r["params"], "step": r["step"], "final": r["final"],
            "loss": (r.get("training") or {}).get("loss"),
            "measures": {k: _value(v) for k, v in r.get("measures", {}).items()
                         if k != "layers"},
            "measure_errors": {k: v["error"] for k, v in r.get("measures", {}).items()
                               if isinstance(v, dict) and "error" in v},
            "layer_kinds": r.get("measures", {}).get("layers", {}).get("kinds", {}),
            "theorems": {}})
        slack = r.get("slack") or {}
        row["theorems"][r["theorem"]] = {
            "verdict": r["verdict"], "reason": r["reason"], "slack_kind": slack.get("kind"),
            "slack": _to_float(slack.get("value"))}
    return sorted(rows.values(), key=lambda row: (row["architecture"], row["job"], row["step"]))


def _to_float(x) -> float:
    return math.nan if x is None else float(x)


def median_slacks(rows: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """architecture -> theorem -> median slack of the HOLDS verdicts (final checkpoints) and
    the verdict counts."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    by_arch: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["final"]:
            by_arch[row["architecture"]].append(row)
    for arch, group in by_arch.items():
        theorems = sorted({t for row in group for t in row["theorems"]})
        for tid in theorems:
            entries = [row["theorems"][tid] for row in group if tid in row["theorems"]]
            finite = [e["slack"] for e in entries  # +∞: a left side of −∞
                      if e["verdict"] == "HOLDS" and not math.isnan(e["slack"])]
            counts: dict[str, int] = defaultdict(int)
            for e in entries:
                counts[e["verdict"]] += 1
            kinds = {e["slack_kind"] for e in entries if e["slack_kind"]}
            out[arch][tid] = {"median": statistics.median(finite) if finite else math.nan,
                              "kind": kinds.pop() if len(kinds) == 1 else "mixed",
                              "n": len(finite), "verdicts": dict(counts)}
    return dict(out)


def compression_measures(rows: list[dict]) -> list[str]:
    names = [q for q in COMPRESSION if any(q in r["measures"] for r in rows)]
    layer_names = sorted({q for r in rows for q in r["measures"] if q.startswith("layer.")},
                         key=lambda q: (int(q.split(".")[1]), q))
    return names + layer_names


def _networks(rows: list[dict], final_only: bool) -> dict[str, list[dict]]:
    """The rows of each architecture that enter a correlation: final checkpoints, or every
    checkpoint with one shared initialisation counted once."""
    by_arch: dict[str, list[dict]] = defaultdict(list)
    initial_seen: set[tuple[str, str]] = set()
    for row in rows:
        if final_only and not row["final"]:
            continue
        if row["step"] == 0:  # every job of a sweep cell may share its initialisation
            key = (row["architecture"], json.dumps(row["measures"], sort_keys=True,
                                                   default=str))
            if key in initial_seen:
                continue
            initial_seen.add(key)
        by_arch[row["architecture"]].append(row)
    return by_arch


def correlations(rows: list[dict], final_only: bool = True, dialect: str = "boundcheck"
                 ) -> list[dict[str, Any]]:
    """Pearson and Spearman correlation of each sharpness with each compression measure,
    across the networks of each architecture (final checkpoints, or every checkpoint), in
    boundcheck's definitions or the papers' (``dialect="paper"``)."""
    from scipy import stats

    sharpness, compression = DIALECTS[dialect]
    out = []
    for arch, group in sorted(_networks(rows, final_only).items()):
        kinds = group[0]["layer_kinds"]
        measures = (compression_measures(group) if dialect == "boundcheck"
                    else [c for c in compression if any(c in r["measures"] for r in group)])
        for s in sharpness:
            for c in measures:
                pairs = [(r["measures"].get(s, math.nan), r["measures"].get(c, math.nan))
                         for r in group]
                pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
                if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len(
                        {b for _, b in pairs}) < 2:
                    continue
                xs, ys = zip(*pairs, strict=True)
                pearson = float(stats.pearsonr(xs, ys).statistic)
                spearman = float(stats.spearmanr(xs, ys).statistic)
                layer_kind = kinds.get(c.split(".")[1], "") if c.startswith("layer.") else ""
                out.append({"architecture": arch, "sharpness": s, "measure": c,
                            "layer_kind": layer_kind, "n": len(pairs),
                            "pearson": pearson, "pearson_p": p_value(xs, ys, "pearson"),
                            "spearman": spearman, "spearman_p": p_value(xs, ys, "spearman"),
                            "checkpoints": "final" if final_only else "all",
                            "dialect": dialect})
    return out


def missing_correlations(rows: list[dict]) -> list[dict[str, str]]:
    """Why a pair of the side-by-side table has no correlation (final checkpoints)."""
    out = []
    for arch, group in sorted(_networks(rows, final_only=True).items()):
        for concept, pairs in SIDE_BY_SIDE.items():
            for dialect, (s, c) in zip(("boundcheck", "paper"), pairs, strict=True):
                reason = _missing_reason(group, s, c)
                if reason:
                    out.append({"architecture": arch, "concept": concept, "dialect": dialect,
                                "sharpness": s, "measure": c, "reason": reason})
    return out


def _missing_reason(group: list[dict], s: str, c: str) -> str:
    n = len(group)
    reasons = []
    for q in (s, c):
        values = [r["measures"].get(q, math.nan) for r in group]
        errors = [r.get("measure_errors", {}).get(q) for r in group]
        unmeasured = [e for v, e in zip(values, errors, strict=True) if math.isnan(v)]
        if unmeasured:
            why = next((e for e in unmeasured if e), "not recorded")
            reasons.append(f"{q} not measured on {len(unmeasured)} of {n} networks ({why})")
        minus_inf = sum(1 for v in values if v == -math.inf)
        if minus_inf:
            reasons.append(f"{q} = −∞ on {minus_inf} of {n} networks (rank-deficient J_x: a "
                           "singular value is 0 at the measured samples, as with ReLU or a "
                           "bottleneck narrower than min(K, D); the papers' top-k "
                           "log-volume stays finite)")
    finite = [r for r in group if all(math.isfinite(r["measures"].get(q, math.nan))
                                      for q in (s, c))]
    if not reasons and len(finite) < 3:
        reasons.append(f"only {len(finite)} networks (a correlation needs 3)")
    elif not reasons and (len({r["measures"][s] for r in finite}) < 2
                          or len({r["measures"][c] for r in finite}) < 2):
        reasons.append("constant across the networks")
    return "; ".join(reasons)


def p_value(xs, ys, kind: str) -> float:
    """Two-sided p-value of no association: exact over all n! permutations for n ≤ 8 (the
    asymptotic ones are wrong for a handful of networks), scipy's otherwise."""
    import numpy as np
    from scipy import stats

    if len(xs) > PERMUTATION_MAX_N:
        stat = stats.pearsonr if kind == "pearson" else stats.spearmanr
        return float(stat(xs, ys).pvalue)
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if kind == "spearman":
        x, y = stats.rankdata(x), stats.rankdata(y)
    x = (x - x.mean()) / np.linalg.norm(x - x.mean())
    y = (y - y.mean()) / np.linalg.norm(y - y.mean())
    perms = y[np.array(list(itertools.permutations(range(len(y)))))]
    r = np.abs(perms @ x)
    return float(np.mean(r >= abs(float(x @ y)) - 1e-12))


# --- outputs -------------------------------------------------------------------------------
def _fmt_slack(value: float, kind: str) -> str:
    if not math.isfinite(value):
        return "–" if math.isnan(value) else ("+∞" if value > 0 else "−∞")
    return f"×{value:.3g}" if kind == "ratio" else f"{value:+.3g}"


def summary_markdown(rows: list[dict], medians: dict, corr: list[dict],
                     demo: dict | None) -> str:
    lines = ["# Flat minima and compression: sweep summary", ""]
    lines += ["## Median slack of each bound (final checkpoints, HOLDS only)", "",
              "ratio slack ×(rhs/lhs); difference slack +(rhs − lhs) for the log forms", ""]
    archs = sorted(medians)
    theorems = sorted({t for a in archs for t in medians[a]})
    lines.append("| theorem | " + " | ".join(archs) + " |")
    lines.append("|---|" + "---|" * len(archs))
    for tid in theorems:
        cells = []
        for a in archs:
            m = medians[a].get(tid)
            if not m:
                cells.append("")
                continue
            verdicts = ", ".join(f"{v} {k}" for k, v in sorted(m["verdicts"].items()))
            cells.append(f"{_fmt_slack(m['median'], m['kind'])} ({verdicts})")
        lines.append(f"| `{tid}` | " + " | ".join(cells) + " |")
    lines += ["", "## Correlations between sharpness and compression", "",
              "Across the networks of each architecture: at their final checkpoints, and at "
              "every checkpoint (one shared initialisation counted once). p: two-sided, exact "
              "permutation p-value for n ≤ 8. Weight-shared layers (conv, token-wise): the "
              "bounds do not apply there, so the empirical correlation is what is reported. "
              "Every pair is in correlations.csv.", "",
              "| architecture | sharpness | measure | final: n, Pearson, Spearman | "
              "all checkpoints: n, Pearson, Spearman |", "|---|---|---|---|---|"]
    table = {(c["architecture"], c["sharpness"], c["measure"], c["checkpoints"]): c
             for c in corr}

    def cell(c: dict | None) -> str:
        if c is None:
            return ""
        return (f"{c['n']}, {c['pearson']:+.2f} (p={c['pearson_p']:.2g}), "
                f"{c['spearman']:+.2f} (p={c['spearman_p']:.2g})")

    for (arch, sharp, measure, which), c in sorted(table.items()):
        if which != "all" or sharp not in SUMMARY_SHARPNESS or not _summary_measure(c):
            continue
        tag = f" ({c['layer_kind']})" if c["layer_kind"] else ""
        lines.append(f"| {arch} | {SHARPNESS[sharp]} | `{measure}`{tag} | "
                     f"{cell(table.get((arch, sharp, measure, 'final')))} | {cell(c)} |")
    lines += side_by_side_markdown(rows, corr)
    lines += ["", "## Networks (final checkpoint)", "",
              "| architecture | job | loss | tr G | λ_max | MLS | NMLS | log LVR | NVR | "
              "local dim | verdicts |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["final"]:
            continue
        m = r["measures"]
        counts: dict[str, int] = defaultdict(int)
        for t in r["theorems"].values():
            counts[t["verdict"]] += 1
        cells = [f"{m.get(q, math.nan):.4g}" for q in (
            "ggn.trace", "hessian.lambda_max", "jacobian.mls", "network.nmls",
            "jacobian.log_lvr", "network.nvr", "jacobian.local_dim")]
        lines.append(f"| {r['architecture']} | {r['job']} | {r['loss']:.3g} | "
                     + " | ".join(cells) + " | "
                     + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + " |")
    if demo:
        lines += ["", "## Local dimensionality can move either way while sharpness falls", "",
                  demo["description"], "", "| path | t | tr G | λ_max | local dim |",
                  "|---|---|---|---|---|"]
        for name, path in demo["paths"].items():
            for p in path:
                lines.append(f"| {name} | {p['t']:.3g} | {p['ggn.trace']:.4g} | "
                             f"{p['hessian.lambda_max']:.4g} | {p['jacobian.local_dim']:.4g} |")
    return "\n".join(lines) + "\n"


def side_by_side_markdown(rows: list[dict], corr: list[dict]) -> list[str]:
    """boundcheck's definitions beside the papers' (docs/paper_dialect.md), final
    checkpoints, Pearson across runs as the authors' plot_corr.py; then why a cell is empty."""
    table = {(c["architecture"], c["sharpness"], c["measure"]): c for c in corr
             if c["checkpoints"] == "final"}
    lines = ["", "## Correlations in boundcheck's and in the papers' definitions", "",
             "Final checkpoints, across the networks of each architecture (the papers' "
             "statistic: Pearson across runs at each run's final checkpoint; Spearman beside "
             "it). boundcheck: sharpness tr G, MLS/log LVR of J_x over all samples, NMLS over "
             "the dense layers, log LVR over all r = min(K, D) singular values. Papers: "
             "sharpness √(mean_i ‖∂f(x_i)/∂θ‖_F²) (loss-independent), MLS and NMLS (every "
             "affine layer) and the top-k log-volume on their sample subset. See "
             "docs/paper_dialect.md.", "",
             "| architecture | measure | boundcheck: n, Pearson, Spearman | "
             "papers: n, Pearson, Spearman |", "|---|---|---|---|"]

    def cell(c: dict | None) -> str:
        return "—" if c is None else f"{c['n']}, {c['pearson']:+.2f}, {c['spearman']:+.2f}"

    for arch in sorted({r["architecture"] for r in rows}):
        for concept, (ours, theirs) in SIDE_BY_SIDE.items():
            lines.append(f"| {arch} | {concept} | {cell(table.get((arch, *ours)))} | "
                         f"{cell(table.get((arch, *theirs)))} |")
    missing = missing_correlations(rows)
    if missing:
        lines += ["", "Empty cells (—), and why:", ""]
        lines += [f"- {m['architecture']}, {m['concept']} ({m['dialect']}): {m['reason']}"
                  for m in missing]
    return lines


def _summary_measure(c: dict) -> bool:
    """Network-level measures, and MLS / local dimensionality of weight-shared layers."""
    if not c["measure"].startswith("layer."):
        return True
    return c["layer_kind"] != "dense" and c["measure"].rsplit(".", 1)[-1] in ("mls",
                                                                              "local_dim")


def _spans_decades(values) -> bool:
    """A log axis only for positive values spanning more than a factor of 10."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    return bool(v) and min(v) > 0 and max(v) > 10 * min(v)


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = [out_dir / f"{stem}.pdf", out_dir / f"{stem}.png"]
    fig.savefig(paths[0], bbox_inches="tight")
    fig.savefig(paths[1], dpi=150, bbox_inches="tight")
    return paths


def figures(rows: list[dict], corr: list[dict], demo: dict | None, out_dir: Path
            ) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    written: list[Path] = []
    final = [r for r in rows if r["final"]]
    archs = sorted({r["architecture"] for r in rows})
    colours = dict(zip(archs, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    measures = [q for q in COMPRESSION if any(math.isfinite(r["measures"].get(q, math.nan))
                                              for r in final)]
    sharp = [s for s in ("ggn.trace", "hessian.lambda_max", "relative_flatness.kappa_sum")
             if any(math.isfinite(r["measures"].get(s, math.nan)) for r in final)]
    if final and measures and sharp:
        fig, axes = plt.subplots(len(sharp), len(measures), squeeze=False,
                                 figsize=(2.6 * len(measures), 2.4 * len(sharp)))
        lookup = {(c["architecture"], c["sharpness"], c["measure"]): c for c in corr}
        for i, s in enumerate(sharp):
            for j, q in enumerate(measures):
                ax = axes[i][j]
                notes = []
                for a in archs:
                    for group, size, alpha, label in ((rows, 6, 0.35, None), (final, 16, 1.0, a)):
                        pts = [(r["measures"].get(s, math.nan), r["measures"].get(q, math.nan))
                               for r in group if r["architecture"] == a]
                        pts = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
                        if pts:
                            ax.scatter(*zip(*pts, strict=True), s=size, alpha=alpha,
                                       color=colours[a], label=label)
                    c = lookup.get((a, s, q))
                    if c:
                        notes.append(f"{a}: P {c['pearson']:+.2f}, S {c['spearman']:+.2f}")
                if s in LOG_AXES and _spans_decades([r["measures"].get(s) for r in rows]):
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(NullFormatter())
                if q in LOG_AXES and _spans_decades([r["measures"].get(q) for r in rows]):
                    ax.set_yscale("log")
                    ax.yaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel(SHARPNESS[s])
                ax.set_ylabel(COMPRESSION[q])
                ax.set_title("\n".join(notes), fontsize=6)
        axes[0][0].legend(fontsize=6)
        fig.suptitle("sharpness vs compression across networks (large: final checkpoints, "
                     "whose Pearson P / Spearman S are in each title; small: all checkpoints)",
                     fontsize=8)
        fig.tight_layout()
        written += _save(fig, out_dir, "sharpness_vs_compression")
        plt.close(fig)
    theorems = sorted({t for r in rows for t, e in r["theorems"].items()
                       if math.isfinite(e["slack"])})
    if theorems:
        cols = 4
        nrows = math.ceil(len(theorems) / cols)
        fig, axes = plt.subplots(nrows, cols, squeeze=False, figsize=(3.0 * cols, 2.3 * nrows))
        for k, tid in enumerate(theorems):
            ax = axes[k // cols][k % cols]
            kind = None
            for job in sorted({r["job_id"] for r in rows}):
                series = [(r["step"], r["theorems"][tid]) for r in rows
                          if r["job_id"] == job and tid in r["theorems"]]
                pts = [(step, e["slack"]) for step, e in series if math.isfinite(e["slack"])]
                if not pts:
                    continue
                kind = series[0][1]["slack_kind"]
                arch = next(r["architecture"] for r in rows if r["job_id"] == job)
                ax.plot(*zip(*pts, strict=True), marker="o", ms=2.5, lw=0.8,
                        color=colours[arch], alpha=0.8)
            if kind == "ratio":
                ax.set_yscale("log")
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.axhline(1.0, color="k", lw=0.6, ls=":")
            else:
                ax.axhline(0.0, color="k", lw=0.6, ls=":")
            ax.set_title(tid, fontsize=7)
            ax.set_xlabel("training step")
            ax.set_ylabel("slack (rhs/lhs)" if kind == "ratio" else "slack (rhs − lhs)")
        for k in range(len(theorems), nrows * cols):
            axes[k // cols][k % cols].axis("off")
        handles = [plt.Line2D([], [], color=colours[a], label=a) for a in archs]
        axes[0][0].legend(handles=handles, fontsize=6)
        fig.tight_layout()
        written += _save(fig, out_dir, "slack_vs_step")
        plt.close(fig)
    if demo:
        fig, ax = plt.subplots(figsize=(4.0, 3.0))
        for name, path in demo["paths"].items():
            ax.plot([p["ggn.trace"] for p in path], [p["jacobian.local_dim"] for p in path],
                    marker="o", ms=3, label=name)
            ax.annotate("start", (path[0]["ggn.trace"], path[0]["jacobian.local_dim"]),
                        fontsize=6)
        ax.set_xlabel("tr G (falls along each path)")
        ax.set_ylabel("local dimensionality")
        ax.invert_xaxis()
        ax.legend(fontsize=6)
        fig.tight_layout()
        written += _save(fig, out_dir, "local_dimensionality_demo")
        plt.close(fig)
    return written


# --- the local dimensionality demonstration --------------------------------------------------
def local_dimensionality_demo(points: int = 6, seed: int = 0) -> dict[str, Any]:
    """Two paths in parameter space along which sharpness (tr G, λ_max) falls while the local
    dimensionality of J_x rises on one and falls on the other: sharpness does not control it.

    Network ``f(x) = V W x`` with ``W = V = diag(a, b)`` (bias-free, D = K = 2), x ~ N(0, I)
    (n = 64), MSE (c = 1) with targets ``y = f(x)``: every point is a zero-loss minimum, so
    R = 0 and tr H = tr G. Then ``J_x = diag(a², b²)``, local dimensionality
    ``(a⁴ + b⁴)² / (a⁸ + b⁸)``, and ``tr G = ‖V‖_F² (1/n)Σ‖x_i‖² + K (1/n)Σ‖W x_i‖²``.
    Path "b shrinks": a = 1, b from 1 to 0.3 (local dimensionality 2 → 1). Path "a shrinks":
    b = 1, a from 2 to 1 (local dimensionality 1.12 → 2). Every number is measured by
    boundcheck on the network, not computed from these formulas.
    """
    import torch
    from torch import nn

    from boundcheck.core.subject import Subject
    from boundcheck.verification.api import measure

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    paths = {"b shrinks (a = 1)": [(1.0, b) for b in torch.linspace(1.0, 0.3, points).tolist()],
             "a shrinks (b = 1)": [(a, 1.0) for a in torch.linspace(2.0, 1.0, points).tolist()]}
    out: dict[str, list[dict[str, float]]] = {}
    for name, params in paths.items():
        out[name] = []
        for t, (a, b) in enumerate(params):
            net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)).double()
            with torch.no_grad():
                for layer in net:
                    layer.weight.copy_(torch.diag(torch.tensor([a, b], dtype=torch.float64)))
                y = net(x)  # a zero-loss minimum: R = 0 and tr H = tr G
            est = measure(Subject(net, (x, y), "mse"),
                          ["ggn.trace", "hessian.trace", "hessian.lambda_max",
                           "jacobian.local_dim"])
            out[name].append({"t": t / (points - 1), "a": a, "b": b,
                              **{k: e.value for k, e in est.items()}})
    description = ("f(x) = V W x with W = V = diag(a, b), 64 Gaussian inputs, MSE with "
                   "targets f(x) (zero-loss minima: tr H = tr G). Along both paths the "
                   "sharpness tr H = tr G falls; the local dimensionality (Σσ²)²/Σσ⁴ of J_x "
                   "falls along the first and rises along the second.")
    return {"description": description, "paths": out}


# --- command line --------------------------------------------------------------------------
def analyse(store_path: Path, out_dir: Path, demo: dict | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Read the records, write summary.md, correlations.csv, analysis.json and the figures."""
    from boundcheck.harness.store import ResultStore

    rows = checkpoints(ResultStore(store_path).records())
    medians = median_slacks(rows)
    corr = (correlations(rows) + correlations(rows, final_only=False)
            + correlations(rows, dialect="paper"))
    final_corr = [c for c in corr if c["checkpoints"] == "final"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(summary_markdown(rows, medians, corr, demo),
                                        encoding="utf-8")
    with open(out_dir / "correlations.csv", "w", newline="", encoding="utf-8") as fh:
        if corr:
            writer = csv.DictWriter(fh, fieldnames=list(corr[0]))
            writer.writeheader()
            writer.writerows(corr)
    analysis = {"median_slack": medians, "correlations": corr, "checkpoints": rows,
                "local_dimensionality_demo": demo}
    (out_dir / "analysis.json").write_text(json.dumps(_finite(analysis), indent=1),
                                           encoding="utf-8")
    written = figures(rows, final_corr, demo, out_dir)
    log(f"summary: {out_dir / 'summary.md'}; figures: {', '.join(p.name for p in written)}")
    return analysis


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def run_experiment(cfg, out_dir: Path | None = None, *, workers: int | None = None,
                   resume: bool = False, analyse_only: bool = False,
                   log: Callable[[str], None] = print) -> Path:
    """Run the sweep of ``cfg`` (a :class:`boundcheck.harness.config.RunConfig` with a ``[sweep]``),
    then analyse it; returns the output folder (default ``runs/<name>``). This is the entry
    point a ``boundcheck run`` experiment hook would call."""
    if cfg.theorems is None:
        cfg.theorems = THEOREMS
    out = Path(out_dir) if out_dir else Path("runs") / cfg.name
    store = out / "records.jsonl"
    if not analyse_only:
        store = run(cfg, out, workers=workers, resume=resume, log=log)
    analyse(store, out, local_dimensionality_demo(), log=log)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from boundcheck.harness.config import RunConfig

    parser = argparse.ArgumentParser(prog="python -m boundcheck.harness.experiments.compression",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="default runs/<config name>")
    parser.add_argument("--workers", type=int, help="local worker processes (1: in-process)")
    parser.add_argument("--resume", action="store_true", help="continue an existing store")
    parser.add_argument("--analyse-only", action="store_true",
                        help="only analyse the records already in the output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    out = run_experiment(RunConfig.from_toml(args.config), args.output, workers=args.workers,
                         resume=args.resume, analyse_only=args.analyse_only)
    print(f"done in {time.perf_counter() - started:.0f} s; see {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
