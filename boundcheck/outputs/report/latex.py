"""LaTeX slack reports: a standalone document and an ``\\input``-able fragment (tables and
figures only), from the same Jinja macros.

Templates use LaTeX-safe delimiters (``((* block *))``, ``((( variable )))``, ``((= note =))``)
and StrictUndefined, so a missing field fails loudly. Every number is formatted here, in
Python (:mod:`boundcheck.outputs.report.numbers`); the packages used are booktabs, amsmath, array,
longtable and graphicx (Debian's texlive-latex-base and -recommended).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import jinja2

from boundcheck.core import typeset
from boundcheck.core.verdict import bare_reason, group_reasons
from boundcheck.outputs.report import numbers
from boundcheck.outputs.report.document import Report
from boundcheck.outputs.report.model import distinct_subjects, seeds_text
from boundcheck.outputs.report.text import heading, latex_escape, latex_text

# A table with more rows than this breaks across pages (longtable) instead of floating.
LONG_TABLE_ROWS = 24
# A fragment's table holds at most this many theorems (or runs); the rest continue in
# further floats, which work in two-column papers where longtable does not.
FRAGMENT_TABLE_ROWS = 12
# Quantity tables are listed per run up to this many runs (beyond: the JSON has them).
MAX_QUANTITY_TABLES = 4
VERDICTS = {"HOLDS": r"\textsc{holds}", "VIOLATED": r"\textbf{\textsc{violated}}",
            "INCONCLUSIVE": r"\textsc{incon\-clusive}", "NOT_APPLICABLE": r"\textsc{n/a}"}

VERDICT_WORDS = {"HOLDS": "hold", "VIOLATED": r"\textbf{violated}", "INCONCLUSIVE": "inconcl.",
                 "NOT_APPLICABLE": "n/a"}


def identifier(name: object) -> str:
    """A dotted identifier in typewriter type that may break after ``.`` and ``_``."""
    return r"\texttt{" + latex_escape(name).replace(".", r".\allowbreak{}").replace(
        r"\_", r"\_\allowbreak{}") + "}"


def breakable(text: object) -> str:
    """Escaped text that may break after commas and underscores (run labels)."""
    return latex_escape(text).replace(",", r",\allowbreak{}").replace(r"\_", r"\_\allowbreak{}")


def wrappable(math: str) -> str:
    """A formatted number or interval (math mode) that may wrap after its comma."""
    return math.replace(r",\,", r",\allowbreak\,")


def _chunks(rows: Sequence[Any], size: int = FRAGMENT_TABLE_ROWS) -> list[list[Any]]:
    """Rows in near-equal consecutive pieces of at most ``size``."""
    rows = list(rows)
    pieces = max(1, -(-len(rows) // size))
    step = -(-len(rows) // pieces) if rows else 1
    return [rows[i:i + step] for i in range(0, len(rows), step)] or [[]]


def verdict(v: str) -> str:
    return VERDICTS.get(v, latex_escape(v))


def symbol(name: str) -> str:
    """A theorem symbol's stored name as LaTeX (``lam_max`` → ``lam_{max}``; a name that is
    LaTeX already, ``\\|W_1\\|_2``, as written)."""
    try:
        return typeset.symbol_latex(name)
    except Exception:  # a name sympy cannot typeset: show it as text
        return r"\text{" + latex_escape(name) + "}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("boundcheck.outputs.report", "templates"),
        block_start_string="((*", block_end_string="*))",
        variable_start_string="(((", variable_end_string=")))",
        comment_start_string="((=", comment_end_string="=))",
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        autoescape=False, keep_trailing_newline=True,
    )
    env.filters.update(
        e=latex_escape, text=latex_text, heading=heading, num=numbers.number,
        enclosure=numbers.enclosure, slack=numbers.slack, integer=numbers.integer,
        verdict=verdict, symbol=symbol, tt=identifier, label=breakable, paren=lambda s: f"({s})",
        wrap=wrappable)
    return env


def _quantity_description(name: str) -> str:
    from boundcheck.quantities import QUANTITIES

    q = QUANTITIES.get(name)
    return q.description if q else ""


def _summary_row(entry) -> dict[str, Any]:
    slacks = [r["slack"] for _, r in entry.rows if r.get("slack")]
    finite = sorted(float(s["value"]) for s in slacks if numbers.finite_number(s["value"]))
    counts = entry.verdict_counts
    verdicts = ", ".join(f"{counts[v]} {VERDICT_WORDS[v]}" for v in VERDICTS if counts.get(v))
    row = {"entry": entry, "verdicts": verdicts, "slack": None, "range": None}
    if len(entry.rows) == 1:
        row["slack"] = numbers.slack(entry.rows[0][1].get("slack"))
    elif finite:
        kind = slacks[0]["kind"]
        row["slack"] = numbers.slack({"kind": kind, "value": statistics.median(finite)})
        row["range"] = (numbers.slack({"kind": kind, "value": finite[0]}),
                        numbers.slack({"kind": kind, "value": finite[-1]}))
    return row


def _reasons(entries, total: int) -> dict[str, list[tuple[str, str, str]]]:
    """Per theorem, (verdict, where, reason as LaTeX); identical reasons across runs are
    listed once per theorem, and a reason already given for an earlier theorem is not
    repeated: it points back to that theorem."""
    first: dict[tuple[str, str], str] = {}
    out: dict[str, list[tuple[str, str, str]]] = {}
    for e in entries:
        items = [(run.label, r["verdict"], r["reason"]) for run, r in e.rows if r.get("reason")]
        out[e.id] = []
        for v, reason, labels in group_reasons(items):
            if total == 1:
                where = ""
            elif len(labels) == total:
                where = "on every run"
            elif len(labels) <= 3:
                where = "on " + "; ".join(labels)
            else:
                where = f"on {len(labels)} runs"
            key = (v, bare_reason(reason))
            if key in first:
                text = "the same reason as for " + identifier(first[key])
            else:
                first[key] = e.id
                text = latex_text(reason)
            out[e.id].append((v, where, text))
    return out


def _environment_lines(runs) -> list[str]:
    """Versions and machine, once when shared by all runs, else per run."""
    def describe(prov: dict[str, Any]) -> str:
        versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
        machine = prov.get("machine") or {}
        where = machine.get("platform", "unknown machine")
        if machine.get("cpu_count"):
            where += f", {machine['cpu_count']} CPUs"
        if machine.get("torch_threads"):
            where += f", {machine['torch_threads']} torch thread(s)"
        return f"{versions}; {where}"

    described = [describe(run.data.get("provenance") or {}) for run in runs]
    if len(set(described)) == 1:
        return [described[0]]
    return [f"{run.label}: {d}" for run, d in zip(runs, described, strict=True)]


def context(report: Report) -> dict[str, Any]:
    """Everything the templates show, with per-format choices made here."""
    runs = report.runs
    entries = report.entries
    # with checkpoints, tables list the last one of each series (the figures show the rest)
    checkpoints = len({run.series for run in runs}) < len(runs)
    table_rows = {e.id: e.latest_rows() if checkpoints else e.rows for e in entries}
    return {
        "runs": runs,
        "entries": entries,
        "summary": [_summary_row(e) for e in entries],
        "single_run": len(runs) == 1,
        "subjects": distinct_subjects(runs),
        "figures": report.figures,
        "figure_dir": report.figure_dir,
        "correlations": report.correlations,
        "totals": report.totals,
        "table_rows": table_rows,
        "reasons": _reasons(entries, len(runs)),
        "checkpoints": checkpoints,
        "long": {e.id: len(table_rows[e.id]) > LONG_TABLE_ROWS for e in entries},
        "long_summary": len(entries) > LONG_TABLE_ROWS // 2,
        "long_subjects": len(runs) > LONG_TABLE_ROWS,
        "quantity_runs": runs if len(runs) <= MAX_QUANTITY_TABLES else [],
        "describe_quantity": _quantity_description,
        "seeds": seeds_text,
        "environment": _environment_lines(runs),
        "title": report.title,
        "chunks": _chunks,
    }


def render_latex(report: Report | Sequence[Any], standalone: bool = True) -> str:
    """The report as LaTeX source; ``report`` may also be a list of Results (no figures)."""
    if not isinstance(report, Report):
        report = Report.from_results(list(report))
    template = "report.tex.j2" if standalone else "fragment.tex.j2"
    return _environment().get_template(template).render(**context(report))
