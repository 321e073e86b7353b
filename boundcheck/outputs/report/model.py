"""What a report shows, independent of its format: runs, theorems with one row per run, the
quantities each run measured, and the optional fields that enable figures.

Optional results fields the report reads (all may be absent):

* ``training["step"]``: the training step at which the subject was measured (a checkpoint);
  falls back to ``training["steps"]`` (the steps trained). Runs that share a subject name and
  sweep point but differ in step form a *series*, plotted as slack vs training step.
* ``extras["sweep"]``: ``{parameter: value}`` identifying a sweep point (e.g. ``{"lr": 0.1,
  "batch_size": 32}``); with several sweep points the report plots slack across the sweep.
* ``extras["hessian_spectrum"]``: the loss Hessian's eigenvalues (a list of numbers), drawn as
  a histogram with every measured bound on λ_max / λ_min.
* ``extras["loss_surfaces"]``: the loss along random and extreme-curvature directions
  (``boundcheck.quantities.projections.loss_surfaces``: ``lines`` of ``{direction, t, loss}``
  and ``planes`` of ``{directions, t, loss grid}``), drawn as 1-D curves and 2-D contours.
* ``extras["measurements"]``: ``{quantity name: Estimate dict or number}``, quantities measured
  outside any theorem (e.g. an empirical correlate); tabulated and used in scatter plots.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boundcheck.verification.results import Results

EIGENVALUE_QUANTITIES = {"hessian.lambda_max": "λ_max", "hessian.lambda_min": "λ_min"}


@dataclass
class Run:
    """One results file (one subject at one training step)."""

    data: dict[str, Any]
    label: str = ""
    series: str = ""

    @property
    def name(self) -> str:
        return str(self.data["subject"].get("name") or "subject")

    @property
    def step(self) -> int | None:
        training = self.data.get("training") or {}
        step = training.get("step", training.get("steps"))
        return int(step) if step is not None else None

    @property
    def sweep(self) -> dict[str, Any]:
        return dict((self.data.get("extras") or {}).get("sweep") or {})

    @property
    def spectrum(self) -> list[float] | None:
        values = (self.data.get("extras") or {}).get("hessian_spectrum")
        if not values:
            return None
        return [float(v) for v in values]

    @property
    def loss_surfaces(self) -> dict[str, Any] | None:
        surfaces = (self.data.get("extras") or {}).get("loss_surfaces")
        return surfaces if surfaces and surfaces.get("lines") else None

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.data["results"]

    def result(self, theorem_id: str) -> dict[str, Any] | None:
        for r in self.results:
            if r["theorem"] == theorem_id:
                return r
        return None

    def quantities(self) -> dict[str, dict[str, Any]]:
        """Every quantity this run measured (theorem inputs and ``extras.measurements``)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            out.update(r.get("quantities") or {})
        for name, v in ((self.data.get("extras") or {}).get("measurements") or {}).items():
            out[name] = v if isinstance(v, dict) else {
                "value": float(v), "lower": float(v), "upper": float(v), "kind": "exact",
                "method": "reported"}
        return dict(sorted(out.items()))


@dataclass
class TheoremEntry:
    """A theorem with its description and one row per run that verified it."""

    id: str
    info: dict[str, Any]
    rows: list[tuple[Run, dict[str, Any]]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return str(self.info.get("title") or self.id)

    @property
    def short_title(self) -> str:
        """The prose part of a title written "prose: formula ..." (the formula is the
        statement, shown separately); otherwise the whole title."""
        head, sep, rest = self.title.partition(": ")
        return head if sep and any(c in rest for c in "≤≥<>=") else self.title

    @property
    def family(self) -> str:
        return str(self.info.get("family") or self.id.rsplit(".", 1)[0])

    @property
    def verdict_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, r in self.rows:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        return counts

    def latest_rows(self) -> list[tuple[Run, dict[str, Any]]]:
        """One row per series: the run at its last training step."""
        latest: dict[str, tuple[Run, dict[str, Any]]] = {}
        for run, r in self.rows:
            if run.series not in latest or (run.step or 0) >= (latest[run.series][0].step or 0):
                latest[run.series] = (run, r)
        return list(latest.values())

    def bounded_eigenvalue(self) -> tuple[str, str] | None:
        """``(quantity, "upper"|"lower")`` when one side is a lone λ_max / λ_min symbol and
        the other is not (it may be a lone symbol of another quantity: ``λ_max ≤ B_3``)."""
        statement = str(self.info.get("statement", ""))
        if " <= " not in statement:
            return None
        lhs, rhs = (s.strip() for s in statement.split(" <= ", 1))
        symbols = self.info.get("symbols") or {}
        if symbols.get(lhs) in EIGENVALUE_QUANTITIES and \
                symbols.get(rhs) not in EIGENVALUE_QUANTITIES:
            return symbols[lhs], "upper"
        if symbols.get(rhs) in EIGENVALUE_QUANTITIES and \
                symbols.get(lhs) not in EIGENVALUE_QUANTITIES:
            return symbols[rhs], "lower"
        return None


def load_runs(paths: Iterable[str | Path]) -> list[Results]:
    """Results from ``results.json`` files, a sweep's ``records.jsonl`` store, or folders.

    A folder contributes every store and every ``results.json`` below it; a run folder with
    ``checkpoints/`` contributes its checkpoints instead of ``results.json`` (which repeats
    the last one).
    """
    out: list[Results] = []
    for p in map(Path, paths):
        if p.is_dir():
            stores = sorted(p.rglob("*.jsonl"))
            found = [f for f in sorted(p.rglob("results.json"))
                     if not any(f.is_relative_to(s.parent) for s in stores)]
            for store in stores:
                out.extend(results_from_store(store))
            for f in found:
                checkpoints = sorted((f.parent / "checkpoints").glob("*.json"))
                out.extend(Results.load(c) for c in checkpoints or [f])
            if not stores and not found:
                raise FileNotFoundError(f"no results.json or records.jsonl below {p}")
        elif p.is_file():
            out.extend(results_from_store(p) if p.suffix == ".jsonl" else [Results.load(p)])
        else:
            raise FileNotFoundError(f"results file not found: {p}")
    return out


def results_from_store(path: str | Path) -> list[Results]:
    """One Results per (job, checkpoint) of a sweep store (:mod:`boundcheck.harness.store`); the
    job's swept parameters become ``extras["sweep"]``. Failed jobs (verdict ERROR) are left
    out."""
    from boundcheck.core.verdict import TheoremResult
    from boundcheck.harness.store import ResultStore
    from boundcheck.verification.registry import UnknownTheoremError, get

    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for record in ResultStore(path).records():
        if record.get("theorem") is None or record.get("verdict") == "ERROR":
            continue
        groups.setdefault((record["job_id"], record.get("step")), []).append(record)
    out = []
    for (job_id, step), records in groups.items():
        first = records[0]
        results = Results(
            subject=dict(first.get("subject") or {}),
            results=[TheoremResult.from_dict(r) for r in records],
            provenance={"config_hash": job_id, "device": first.get("device"),
                        "config": first.get("config"), "job": first.get("job")},
            training={**(first.get("training") or {}), "step": step,
                      "final": first.get("final")},
            extras={"sweep": dict(first.get("params") or {}),
                    **({"measurements": first["measurements"]}
                       if first.get("measurements") else {})})
        info = {}
        for r in records:
            try:
                info[r["theorem"]] = get(r["theorem"]).describe()
            except UnknownTheoremError:
                pass
        results.theorem_info = info
        out.append(results)
    return out


def make_runs(results: Sequence[Results]) -> list[Run]:
    """Wrap results as runs with unique, readable labels and their series."""
    runs = [Run(r.to_dict()) for r in results]
    keys = sorted({k for run in runs for k in run.sweep})
    varying = [k for k in keys if len({repr(run.sweep.get(k)) for run in runs}) > 1]
    names = {run.name.removesuffix(f" @ step {run.step}") for run in runs}
    leaves = [k.rsplit(".", 1)[-1] for k in varying]
    short = {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in
             zip(varying, leaves, strict=True)}
    for run in runs:
        name = run.name.removesuffix(f" @ step {run.step}")
        point = ", ".join(f"{short[k]}={_short(run.sweep[k])}" for k in varying
                          if run.sweep.get(k) is not None)
        # a sweep point is named by the swept values that vary (the subject name is kept when
        # several subjects share them, unless it is itself a job's parameter string)
        keep_name = len(names) > 1 and "=" not in name or not point
        run.series = f"{name} ({point})" if keep_name and point else (point or name)
    steps_by_series: dict[str, set] = {}
    for run in runs:
        steps_by_series.setdefault(run.series, set()).add(run.step)
    for run in runs:
        several_steps = len(steps_by_series[run.series]) > 1
        run.label = f"{run.series} @ step {run.step}" if several_steps else run.series
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} #{seen[run.label]}"
    return runs


def theorem_entries(runs: Sequence[Run]) -> list[TheoremEntry]:
    """Theorems in first-seen order, each with its rows across runs."""
    entries: dict[str, TheoremEntry] = {}
    for run in runs:
        for r in run.results:
            tid = r["theorem"]
            if tid not in entries:
                entries[tid] = TheoremEntry(tid, dict(run.data.get("theorems", {}).get(tid, {})))
            entries[tid].rows.append((run, r))
    return list(entries.values())


def distinct_subjects(runs: Sequence[Run]) -> list[tuple[dict[str, Any], int]]:
    """Each distinct subject (name, architecture, size, data, loss) with its number of runs."""
    keys = ("name", "architecture", "num_params", "num_samples", "loss")
    found: dict[tuple, list] = {}
    for run in runs:
        subject = dict(run.data["subject"])
        subject["name"] = run.name.removesuffix(f" @ step {run.step}")
        key = tuple(repr(subject.get(k)) for k in keys)
        found.setdefault(key, [subject, 0])[1] += 1
    return [(subject, count) for subject, count in found.values()]


def seeds_text(provenance: dict[str, Any]) -> str:
    """``"subject 0, recipe 0, verify 0"`` from a run's provenance."""
    seeds = provenance.get("seeds")
    if isinstance(seeds, dict) and seeds:
        return ", ".join(f"{k} {v}" for k, v in seeds.items())
    return str(provenance.get("seed", "–"))


def verdict_totals(runs: Sequence[Run]) -> dict[str, int]:
    totals = {"HOLDS": 0, "VIOLATED": 0, "INCONCLUSIVE": 0, "NOT_APPLICABLE": 0}
    for run in runs:
        for r in run.results:
            totals[r["verdict"]] = totals.get(r["verdict"], 0) + 1
    return totals


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
