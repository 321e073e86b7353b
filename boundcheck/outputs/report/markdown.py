"""A Markdown summary of a report, readable both raw (CI logs) and rendered (pull requests):
verdicts and slack per theorem, the reasons for anything that does not hold, figures as PNG,
correlations, and provenance in a collapsed block.
"""

from __future__ import annotations

import statistics
from typing import Any

from boundcheck.core.verdict import group_reasons
from boundcheck.outputs.report import numbers
from boundcheck.outputs.report.document import Report
from boundcheck.outputs.report.model import seeds_text
from boundcheck.outputs.report.text import SLACK_LEGEND

ICONS = {"HOLDS": "✅", "VIOLATED": "❌", "INCONCLUSIVE": "⚠️", "NOT_APPLICABLE": "➖"}


def cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", r"\|").replace("*", r"\*").replace("\n", " ")


def verdict(v: str) -> str:
    return f"{ICONS.get(v, '')} {v}".strip()


def _table(head: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" * len(head)
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(rule) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _slack_range(rows) -> tuple[str, str]:
    slacks = [r["slack"] for _, r in rows if r.get("slack")]
    finite = sorted(float(s["value"]) for s in slacks if numbers.finite_number(s["value"]))
    if not finite:
        return "–", "–"
    kind = slacks[0]["kind"]
    fmt = [numbers.slack({"kind": kind, "value": v}, "text") for v in (
        statistics.median(finite), finite[0], finite[-1])]
    return fmt[0], f"{fmt[1]} … {fmt[2]}"


def render_markdown(report: Report, figure_format: str = "png") -> str:
    """The report as GitHub-flavoured Markdown."""
    runs, entries, totals = report.runs, report.entries, report.totals
    out = [f"# {report.title}", ""]
    out.append(f"**{len(entries)} theorem{'s' if len(entries) != 1 else ''} on {len(runs)} "
               f"run{'s' if len(runs) != 1 else ''}: " + ", ".join(
                   f"{n} {v}" for v, n in totals.items() if n) + ".**")
    out.append("")
    if len(runs) == 1:
        rows = []
        for e in entries:
            r = e.rows[0][1]
            rows.append([f"`{e.id}`", cell(e.short_title), verdict(r["verdict"]),
                         numbers.enclosure(r.get("lhs"), "text"),
                         numbers.enclosure(r.get("rhs"), "text"),
                         numbers.slack(r.get("slack"), "text")])
        out += _table(["theorem", "title", "verdict", "lhs", "rhs", "slack"], rows)
    else:
        rows = []
        for e in entries:
            c = e.verdict_counts
            median, span = _slack_range(e.rows)
            rows.append([f"`{e.id}`", cell(e.short_title), *(str(c.get(v, 0)) for v in ICONS),
                         median, span])
        out += _table(["theorem", "title", "holds", "violated", "inconclusive", "n/a",
                       "median slack", "range"], rows, "llrrrrll")
    out.append("")
    out.append(SLACK_LEGEND)
    def reasons(rows) -> list[str]:
        """Each distinct reason once, after the theorems (and runs) that gave it."""
        items = [(f"`{e.id}`" + (f" on {cell(run.label)}" if len(runs) > 1 else ""),
                  r["verdict"], r.get("reason") or "–") for e, run, r in rows]
        return [f"- {', '.join(ids)}: {verdict(v)} — {reason}"
                for v, reason, ids in group_reasons(items)]

    rows = [(e, run, r) for e in entries for run, r in e.rows]
    failing = [row for row in rows if row[2]["verdict"] in ("VIOLATED", "INCONCLUSIVE")]
    skipped = [row for row in rows if row[2]["verdict"] == "NOT_APPLICABLE"]
    if failing:
        out += ["", "## Violated or inconclusive", "", *reasons(failing)]
    if skipped:
        out += ["", f"<details><summary>Not applicable ({len(skipped)})</summary>", "",
                *reasons(skipped), "", "</details>"]
    if len(runs) > 1:
        out += ["", "<details><summary>Per-run results</summary>", ""]
        for e in entries:
            out += [f"**`{e.id}`** {cell(e.title)}", ""]
            out += _table(["run", "verdict", "lhs", "rhs", "slack"], [
                [cell(run.label), verdict(r["verdict"]), numbers.enclosure(r.get("lhs"), "text"),
                 numbers.enclosure(r.get("rhs"), "text"), numbers.slack(r.get("slack"), "text")]
                for run, r in e.rows])
            out.append("")
        out.append("</details>")
    if report.correlations:
        out += ["", "## Correlations", ""]
        out += _table(["sharpness", "compression", "n", "Pearson r", "p", "Spearman ρ", "p"], [
            [f"`{c.x}`", f"`{c.y}`", str(c.n), f"{c.pearson:.3f}", f"{c.pearson_p:.2g}",
             f"{c.spearman:.3f}", f"{c.spearman_p:.2g}"] for c in report.correlations],
            "llrrrrr")
    if report.figures:
        out += ["", "## Figures", ""]
        for fig in report.figures:
            out += [f"![{fig.name}]({report.figure_dir}{fig.name}.{figure_format})", "",
                    f"*{fig.caption}*", ""]
    out += ["", "<details><summary>Statements and provenance</summary>", ""]
    for e in entries:
        if e.info.get("latex"):
            out.append(f"- `{e.id}`: ${e.info['latex']}$ — {e.info.get('source', '')}")
    out.append("")
    for run in runs:
        p = run.data.get("provenance") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (p.get("versions") or {}).items())
        seeds = seeds_text(p)
        out.append(f"- {cell(run.label)}: config hash `{p.get('config_hash', '–')}`, seeds "
                   f"{seeds}, device {p.get('device', run.data['subject'].get('device', 'cpu'))}"
                   f", created {p.get('created', '–')}; {versions}; "
                   f"{(p.get('machine') or {}).get('platform', '')}")
    out += ["", "</details>", ""]
    return "\n".join(out)
