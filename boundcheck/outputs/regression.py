"""Regression of bounds: new results compared with a baseline, theorem by theorem.

A theorem **fails** the check when

* it HOLDS in the baseline and not now (VIOLATED, INCONCLUSIVE or NOT_APPLICABLE);
* it is VIOLATED now and was not in the baseline;
* it is in the baseline but missing from the new results;
* its verdict is unchanged but its slack moved beyond the tolerance ``tol``:

  - ratio slack (``rhs/lhs``, both sides positive): ``|ln(new/old)| > ln(1 + tol)``, i.e. the
    bound got more than ``(1 + tol)×`` tighter or looser;
  - difference slack (``rhs − lhs``): ``|new − old| > tol · max(|lhs|, |rhs|)`` of the
    baseline, i.e. measured against the size of the two sides, not against the slack itself
    (near 0 for a tight bound, where any relative change would look huge);
  - a slack whose kind changed (a side changed sign) has moved.

Everything else passes, with a note when something changed: a theorem that now holds, a
theorem new since the baseline, a change between INCONCLUSIVE and NOT_APPLICABLE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from boundcheck.core.verdict import Slack, TheoremResult, Verdict, group_reasons
from boundcheck.verification.results import Results

DEFAULT_TOLERANCE = 0.05
PASS, FAIL, NOTE = "ok", "FAIL", "note"


@dataclass
class TheoremCheck:
    """The comparison of one theorem: its status, a one-line message and the details."""

    theorem_id: str
    status: str  # ok | FAIL | note
    message: str
    old: TheoremResult | None = None
    new: TheoremResult | None = None
    slack_change: float | None = None  # in units of the tolerance's measure (see module doc)
    details: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass
class CheckReport:
    """All theorem comparisons of one check, with context for the messages."""

    checks: list[TheoremCheck]
    tolerance: float
    subject: str = ""
    notes: list[str] = field(default_factory=list)
    baseline: str = ""

    @property
    def failures(self) -> list[TheoremCheck]:
        return [c for c in self.checks if c.failed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        n = len(self.failures)
        head = (f"PASS: {len(self.checks)} theorem(s) as in the baseline" if n == 0 else
                f"FAIL: {n} of {len(self.checks)} theorem(s) regressed")
        where = f"baseline {self.baseline}, " if self.baseline else ""
        return f"boundcheck check: {head} ({where}tolerance {100 * self.tolerance:g}%)"

    def _unchanged(self) -> str:
        """One line for every theorem that passed: how many, by verdict."""
        ok = [c for c in self.checks if c.status == PASS]
        counts: dict[str, int] = {}
        for c in ok:
            v = str(c.new.verdict) if c.new is not None else "?"
            counts[v] = counts.get(v, 0) + 1
        by = ", ".join(f"{n} {v}" for v, n in counts.items())
        return (f"{len(ok)} theorem(s) as in the baseline ({by}; slacks within "
                f"±{100 * self.tolerance:g}%)")

    def _reasons(self) -> list[tuple[str, str, list[str]]]:
        """Why theorems do not hold now (each distinct reason once)."""
        return group_reasons((c.theorem_id, str(c.new.verdict), c.new.reason)
                             for c in self.checks if c.new is not None and c.new.reason)

    def text(self) -> str:
        """A readable diff for terminals and CI logs: the summary line, then every failure
        and note in full, one line for the theorems that passed, and each reason once."""
        lines = [self.summary()]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("")
        shown = [c for c in self.checks if c.status != PASS]
        width = max((len(c.theorem_id) for c in shown), default=0)
        order = {FAIL: 0, NOTE: 1}
        for c in sorted(shown, key=lambda c: order[c.status]):
            lines.append(f"  {c.status:<4}  {c.theorem_id:<{width}}  {c.message}")
            if c.details:
                lines += [f"  {'':<4}  {'':<{width}}  {d}" for d in c.details.splitlines()]
        if len(shown) < len(self.checks):
            lines.append(f"  {PASS:<4}  {self._unchanged()}")
        reasons = self._reasons()
        if reasons:
            lines += ["", "Reasons (each once):"]
            for v, reason, ids in reasons:
                lines.append(f"  {v} ({len(ids)}): {', '.join(ids)}")
                lines.append(f"      {reason}")
        if self.failures:
            lines += ["", "If the change is intended, accept it with --update-baseline."]
        return "\n".join(lines)

    def markdown(self) -> str:
        """The same diff in Markdown (for pull-request comments): failures and notes in a
        table, the theorems that passed collapsed, each reason once."""
        icon = {FAIL: "❌", NOTE: "ℹ️", PASS: "✅"}

        def row(c: TheoremCheck) -> str:
            msg = (c.message + (f" — {c.details}" if c.details else "")).replace("|", r"\|")
            return f"| {icon[c.status]} | `{c.theorem_id}` | {msg.replace(chr(10), ' ')} |"

        lines = [f"**{self.summary()}**", ""]
        lines += [f"- note: {n}" for n in self.notes]
        head = ["", "| | theorem | change |", "|---|---|---|"]
        shown = sorted((c for c in self.checks if c.status != PASS),
                       key=lambda c: c.status != FAIL)
        if shown:
            lines += head + [row(c) for c in shown]
        ok = [c for c in self.checks if c.status == PASS]
        if ok:
            lines += ["", f"<details><summary>✅ {self._unchanged()}</summary>", *head,
                      *(row(c) for c in ok), "", "</details>"]
        reasons = self._reasons()
        if reasons:
            lines += ["", "Reasons (each once):", ""]
            lines += [f"- {v}: {', '.join(f'`{i}`' for i in ids)} — {reason}"
                      for v, reason, ids in reasons]
        return "\n".join(lines) + "\n"


def format_number(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else ("∞" if x > 0 else "−∞")


def format_slack(s: Slack | None) -> str:
    if s is None:
        return "–"
    if s.kind == "ratio":
        return f"×{format_number(s.value)}"
    return ("+" if s.value >= 0 else "") + format_number(s.value)


def slack_movement(old: TheoremResult, new: TheoremResult) -> tuple[float, str]:
    """How far the slack moved, in the units the tolerance is stated in, and a description.

    Ratio slacks: ``ln(new/old)``; difference slacks: ``(new − old) / max(|lhs|, |rhs|)`` of
    the baseline. Infinite when the kind changed or one slack is infinite and the other not.
    """
    a, b = old.slack, new.slack
    assert a is not None and b is not None
    if a.kind != b.kind:
        return math.inf, f"slack kind changed from {a.kind} to {b.kind}"
    if a.value == b.value or (math.isnan(a.value) and math.isnan(b.value)):
        return 0.0, "unchanged"
    if not (math.isfinite(a.value) and math.isfinite(b.value)):
        return math.inf, "one slack is infinite"
    if a.kind == "ratio":
        if a.value <= 0 or b.value <= 0:
            return math.inf, "ratio slack not positive"
        change = math.log(b.value / a.value)
        return change, f"×{math.exp(change):.4g} ({100 * (math.exp(change) - 1):+.3g}%)"
    sides = [abs(e.value) for e in (old.lhs, old.rhs) if e is not None and math.isfinite(e.value)]
    scale = max(sides, default=0.0) or 1.0
    change = (b.value - a.value) / scale
    return change, f"{100 * change:+.3g}% of the bound's scale {scale:.3g}"


def _exceeds(change: float, kind: str, tolerance: float) -> bool:
    limit = math.log1p(tolerance) if kind == "ratio" else tolerance
    return abs(change) > limit * (1 + 1e-12)


def _sides(r: TheoremResult) -> str:
    from boundcheck.outputs.report.numbers import enclosure

    if r.lhs is None or r.rhs is None:
        return ""
    return (f"lhs {enclosure(r.lhs.to_dict(), 'text')} ({r.lhs.kind}), "
            f"rhs {enclosure(r.rhs.to_dict(), 'text')} ({r.rhs.kind})")


def _detail(r: TheoremResult) -> str:
    parts = [p for p in (_sides(r), r.reason) if p]
    return "; ".join(parts)


def compare_one(theorem_id: str, old: TheoremResult | None, new: TheoremResult | None,
                tolerance: float) -> TheoremCheck:
    """Compare one theorem's baseline and new result (see the module docstring)."""
    if new is None:
        return TheoremCheck(theorem_id, FAIL, "missing from the new results "
                            f"(baseline: {old.verdict})", old, new)
    if old is None:
        return TheoremCheck(theorem_id, NOTE, f"new theorem, not in the baseline: {new.verdict}",
                            old, new, details=_detail(new))
    ov, nv = old.verdict, new.verdict
    if ov == Verdict.HOLDS and nv != Verdict.HOLDS:
        return TheoremCheck(theorem_id, FAIL, f"HOLDS → {nv}", old, new, details=_detail(new))
    if nv == Verdict.VIOLATED and ov != Verdict.VIOLATED:
        return TheoremCheck(theorem_id, FAIL, f"{ov} → VIOLATED", old, new, details=_detail(new))
    if ov != nv:
        return TheoremCheck(theorem_id, NOTE, f"{ov} → {nv}", old, new, details=_detail(new))
    if old.slack is None or new.slack is None:
        return TheoremCheck(theorem_id, PASS, f"{nv}", old, new)  # reason: CheckReport._reasons
    change, how = slack_movement(old, new)
    moved = f"slack {format_slack(old.slack)} → {format_slack(new.slack)}: {how}"
    if _exceeds(change, old.slack.kind, tolerance):
        return TheoremCheck(theorem_id, FAIL, f"{nv}, but the {moved}, beyond ±"
                            f"{100 * tolerance:g}%", old, new, change, _sides(new))
    return TheoremCheck(theorem_id, PASS, f"{nv}, {moved}", old, new, change)


def compare(baseline: Results, new: Results, tolerance: float = DEFAULT_TOLERANCE,
            baseline_name: str | Path = "") -> CheckReport:
    """Compare every theorem of the baseline and the new results."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be ≥ 0, got {tolerance}")
    old_by_id = {r.theorem_id: r for r in baseline.results}
    new_by_id = {r.theorem_id: r for r in new.results}
    ids = list(old_by_id) + [t for t in new_by_id if t not in old_by_id]
    checks = [compare_one(t, old_by_id.get(t), new_by_id.get(t), tolerance) for t in ids]
    notes = []
    old_hash = baseline.provenance.get("config_hash")
    new_hash = new.provenance.get("config_hash")
    if old_hash and new_hash and old_hash != new_hash:
        notes.append(f"the baseline was made from config {old_hash}, these results from "
                     f"{new_hash}")
    return CheckReport(checks, tolerance, str(new.subject.get("name", "")), notes,
                       str(baseline_name))
