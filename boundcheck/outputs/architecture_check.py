"""``bc.check_architecture``: every registered theorem on a user's model, in the spirit of
scikit-learn's ``check_estimator``: one call, a verdict per theorem, and NOT_APPLICABLE with
its reason for every theorem whose preconditions the model does not meet.

It never crashes on an unsupported layer: a theorem whose measurement raises anything other
than NotApplicable/NotAffordable comes back INCONCLUSIVE with the error's type and message
(and is listed under ``errors``), and the other theorems are still checked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from boundcheck.core.subject import MatrixSubject, Subject
from boundcheck.core.verdict import TheoremResult, Verdict
from boundcheck.quantities import Budget, Context
from boundcheck.verification.api import verify_one
from boundcheck.verification.registry import select
from boundcheck.verification.results import Results, provenance, reason_lines

ORDER = (Verdict.VIOLATED, Verdict.INCONCLUSIVE, Verdict.HOLDS, Verdict.NOT_APPLICABLE)


@dataclass
class ArchitectureReport:
    """The outcome of :func:`check_architecture`; ``str()`` gives a grouped summary."""

    results: Results
    errors: dict[str, str] = field(default_factory=dict)  # theorem id -> unexpected error

    def _with(self, verdict: Verdict) -> list[TheoremResult]:
        return [r for r in self.results if r.verdict == verdict]

    @property
    def holds(self) -> list[TheoremResult]:
        return self._with(Verdict.HOLDS)

    @property
    def violated(self) -> list[TheoremResult]:
        return self._with(Verdict.VIOLATED)

    @property
    def inconclusive(self) -> list[TheoremResult]:
        return self._with(Verdict.INCONCLUSIVE)

    @property
    def not_applicable(self) -> dict[str, str]:
        """Theorem id -> the reason it does not apply."""
        return {r.theorem_id: r.reason for r in self._with(Verdict.NOT_APPLICABLE)}

    @property
    def ok(self) -> bool:
        """No theorem is VIOLATED (a violation means a wrong theorem or a measurement bug)."""
        return not self.violated

    def assert_ok(self) -> None:
        """Raise AssertionError with the summary if any theorem is VIOLATED."""
        if not self.ok:
            raise AssertionError(str(self))

    def summary(self) -> str:
        s = self.results.subject
        size = s.get("num_params", s.get("dimension"))
        head = (f"check_architecture: {s.get('name', 'subject')} ({size} parameters"
                + (f", {s['num_samples']} samples" if s.get("num_samples") else "")
                + (f", {s['loss']}" if s.get("loss") else "") + ")")
        counts = ", ".join(f"{len(self._with(v))} {v}" for v in ORDER)
        lines = [head, f"  {counts} of {len(self.results.results)} theorems", ""]
        width = max((len(r.theorem_id) for r in self.results), default=0)
        for verdict in ORDER:
            for r in self._with(verdict):
                note = ""
                if verdict == Verdict.HOLDS and r.slack is not None:
                    note = f"slack {_slack(r)}"
                lines.append(f"  {verdict.value:<14}  {r.theorem_id:<{width}}  {note}".rstrip())
        reasons = reason_lines((r.theorem_id, r.verdict.value, r.reason) for r in self.results)
        return "\n".join(lines + (["", "Reasons (each once):", *reasons] if reasons else []))

    __str__ = summary


def _slack(r: TheoremResult) -> str:
    v = r.slack.value
    return f"×{v:.4g}" if r.slack.kind == "ratio" else f"{v:+.4g}"


def check_architecture(model, data=None, loss="cross_entropy", *,
                       theorems: str | Sequence | None = None, confidence: float = 0.99,
                       seed: int = 0, budget: Budget | None = None, name: str | None = None,
                       **subject_options) -> ArchitectureReport:
    """Verify every registered theorem (or ``theorems``) on ``model`` with ``data`` and
    ``loss``, as :class:`boundcheck.Subject` takes them (``subject_options``: ``eval_mode``,
    ``device``, ``dtype``). ``model`` may also be a ready Subject or MatrixSubject.

    Invalid input (NaN weights, mismatched data) raises :class:`InvalidSubjectError` as
    ``Subject`` does; anything a theorem's measurement cannot handle is reported, not raised.
    """
    if isinstance(model, (Subject, MatrixSubject)):
        subject = model
    else:
        if data is None:
            raise TypeError("check_architecture needs data: (X, Y) or an iterable of batches")
        subject = Subject(model, data, loss, name=name, **subject_options)
    ctx = Context(subject, confidence=confidence, seed=seed, budget=budget or Budget())
    start = time.perf_counter()
    results, errors = [], {}
    for theorem in select(theorems):
        try:
            result = verify_one(theorem, ctx)
        except Exception as err:  # an unsupported layer or a bug: report it, check the rest
            errors[theorem.id] = f"{type(err).__name__}: {err}"
            result = TheoremResult(theorem.id, Verdict.INCONCLUSIVE,
                                   f"could not be checked: {errors[theorem.id]}")
        results.append(result)
    return ArchitectureReport(
        Results(subject.describe(), results, provenance(
            seed=seed, confidence=confidence, elapsed_s=time.perf_counter() - start)),
        errors)
