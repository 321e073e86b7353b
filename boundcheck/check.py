"""Checking that bounds hold: in CI against a baseline (``boundcheck check``), and in a
user's tests (:func:`assert_bound_holds`, also a pytest fixture).

Regression against a baseline compares new results with it theorem by theorem.

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

from .results import Results
from .verdict import Slack, TheoremResult, Verdict

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

    def text(self) -> str:
        """A readable diff for terminals and CI logs."""
        lines = [self.summary()]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("")
        width = max((len(c.theorem_id) for c in self.checks), default=0)
        order = {FAIL: 0, NOTE: 1, PASS: 2}
        for c in sorted(self.checks, key=lambda c: order[c.status]):
            lines.append(f"  {c.status:<4}  {c.theorem_id:<{width}}  {c.message}")
            if c.details:
                lines += [f"  {'':<4}  {'':<{width}}  {d}" for d in c.details.splitlines()]
        if self.failures:
            lines += ["", "If the change is intended, accept it with --update-baseline."]
        return "\n".join(lines)

    def markdown(self) -> str:
        """The same diff as a Markdown table (for pull-request comments)."""
        icon = {FAIL: "❌", NOTE: "ℹ️", PASS: "✅"}
        lines = [f"**{self.summary()}**", ""]
        lines += [f"- note: {n}" for n in self.notes]
        lines += ["", "| | theorem | change |", "|---|---|---|"]
        for c in self.checks:
            msg = (c.message + (f" — {c.details}" if c.details else "")).replace("|", r"\|")
            lines.append(f"| {icon[c.status]} | `{c.theorem_id}` | {msg.replace(chr(10), ' ')} |")
        return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else ("∞" if x > 0 else "−∞")


def format_slack(s: Slack | None) -> str:
    if s is None:
        return "–"
    if s.kind == "ratio":
        return f"×{_fmt(s.value)}"
    return ("+" if s.value >= 0 else "") + _fmt(s.value)


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
    from .report.numbers import enclosure

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
        return TheoremCheck(theorem_id, PASS, f"{nv}" + (f" ({new.reason})" if new.reason
                                                         else ""), old, new)
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


def import_user_modules(specs: list[str]) -> None:
    """Import modules (dotted names, found from the current folder too) or ``.py`` files
    that register a user's theorems with ``bc.register``, before a check runs."""
    import importlib
    import importlib.util
    import sys

    for spec in specs:
        path = Path(spec)
        if path.suffix == ".py":
            if not path.is_file():
                raise FileNotFoundError(f"module file not found: {path}")
            name = f"boundcheck_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            importlib.import_module(spec)


def run_check(baseline: str | Path, *, config: str | Path | None = None,
              results: str | Path | None = None, tolerance: float = DEFAULT_TOLERANCE,
              update_baseline: bool = False, junit: str | Path | None = None,
              markdown: str | Path | None = None, output: str | Path | None = None,
              progress: bool = True, log=print) -> int:
    """``boundcheck check``: get new results (``results`` as given, or a re-run of
    ``config``, or of the config recorded in the baseline; with checkpoints, the end of
    training is compared), compare them with the baseline, print the diff and write the
    requested files (``output``: a folder for the re-run's ``results.json``). Returns the exit
    status: 0 pass (or baseline updated), 1 regression."""
    import json

    from .results import write_json_atomic

    baseline = Path(baseline)
    if results is not None:
        with open(results, encoding="utf-8") as fh:
            new_data = json.load(fh)  # kept verbatim for --update-baseline
        new = Results.from_dict(new_data)
    else:
        from .config import RunConfig
        from .pipeline import train_and_verify

        if config is not None:
            cfg = RunConfig.from_toml(config)
        elif baseline.is_file() and (recorded := Results.load(baseline).provenance.get("config")):
            cfg = RunConfig.from_dict(recorded)
            log(f"re-running the config recorded in {baseline} ({cfg.name})")
        else:
            raise ValueError("give a CONFIG to re-run, or --results NEW.json (the baseline "
                             "records no config)")
        new = train_and_verify(cfg, progress=progress,
                               log=log if progress else (lambda _msg: None))[-1]
        new_data = new.to_dict()
        if output is not None:
            log(f"wrote {write_json_atomic(Path(output) / 'results.json', new_data)}")
    if not baseline.is_file():
        if not update_baseline:
            raise FileNotFoundError(f"baseline not found: {baseline} (create it with "
                                    "--update-baseline)")
        write_json_atomic(baseline, new_data)
        log(f"boundcheck check: no baseline yet; wrote {baseline} "
            f"({len(new.results)} theorems)")
        return 0
    report = compare(Results.load(baseline), new, tolerance, baseline)
    log(report.text())
    if junit is not None:
        from .junit import write_junit

        write_junit(report, junit)
        log(f"wrote {junit}")
    if markdown is not None:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(report.markdown(), encoding="utf-8")
        log(f"wrote {markdown}")
    if update_baseline:
        write_json_atomic(baseline, new_data)
        log(f"baseline updated: {baseline}")
        return 0
    return 0 if report.passed else 1


def describe_failure(result: TheoremResult, subject_name: str = "") -> str:
    """A multi-line account of a verdict: statement, both sides with intervals, slack,
    reason and the measured quantities (for assertion messages)."""
    from .report.numbers import enclosure
    from .theorem import UnknownTheoremError, get

    where = f" on {subject_name}" if subject_name else ""
    lines = [f"{result.theorem_id} does not hold{where}: {result.verdict}"]
    try:
        thm = get(result.theorem_id)
        lines.append(f"  {thm.title}: {thm.describe()['statement']}")
    except UnknownTheoremError:
        pass
    for label, est in (("lhs", result.lhs), ("rhs", result.rhs)):
        if est is not None:
            lines.append(f"  {label}   {est}")
    if result.slack is not None:
        lines.append(f"  slack {format_slack(result.slack)} in [{_fmt(result.slack.lower)}, "
                     f"{_fmt(result.slack.upper)}]")
    if result.reason:
        lines.append(f"  reason: {result.reason}")
    for name, est in result.quantities.items():
        lines.append(f"  {name} = {enclosure(est.to_dict(), 'text')} ({est.kind}, {est.method})")
    return "\n".join(lines)


def assert_bound_holds(subject, theorem, **verify_kwargs) -> TheoremResult:
    """Verify one theorem (an id or a :class:`boundcheck.Theorem`, registered or not) on a
    subject; raise ``AssertionError`` with the verdict, intervals and reason unless it HOLDS.

    ``verify_kwargs`` go to :func:`boundcheck.verify` (``confidence``, ``seed``, ``budget``).
    Returns the :class:`TheoremResult` when it holds.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    from .api import verify
    from .theorem import get

    thm = get(theorem)
    result = verify(subject, [thm], **verify_kwargs)[thm.id]
    if result.verdict != Verdict.HOLDS:
        raise AssertionError(describe_failure(result, getattr(subject, "name", "") or ""))
    return result


def assert_bounds_hold(subject, theorems=None, *, allow_not_applicable: bool = True,
                       **verify_kwargs) -> Results:
    """Verify several theorems (ids, a family prefix, or all); raise ``AssertionError``
    listing every one that is VIOLATED or INCONCLUSIVE (and NOT_APPLICABLE unless allowed)."""
    __tracebackhide__ = True
    from .api import verify

    results = verify(subject, theorems, **verify_kwargs)
    allowed = {Verdict.HOLDS} | ({Verdict.NOT_APPLICABLE} if allow_not_applicable else set())
    bad = [r for r in results if r.verdict not in allowed]
    if bad:
        name = getattr(subject, "name", "") or ""
        raise AssertionError(f"{len(bad)} of {len(results.results)} theorem(s) do not hold:\n"
                             + "\n".join(describe_failure(r, name) for r in bad))
    return results
