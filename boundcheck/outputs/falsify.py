"""``boundcheck falsify``: search for a counterexample to a theorem, or its tightest instance.

Two searches share one time budget and one objective (the verify slack, see
:mod:`boundcheck.harness.falsify`): first the derivative-free local search over the weights,
inputs and targets (or matrix entries) of small subjects, then a hypothesis-driven search over
architectures, spectra and data (:mod:`boundcheck.outputs.strategies`), guided by
``hypothesis.target`` towards larger scores (targeted property-based testing, Löscher &
Sagonas, ISSTA 2017). The tightest instance is written as a reproducible subject file; a
violation is reported as a counterexample only when a fresh :func:`boundcheck.verify` at the
run's confidence certifies it VIOLATED.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from boundcheck.core.theorem import Theorem
from boundcheck.core.verdict import TheoremResult, Verdict
from boundcheck.harness import falsify as search
from boundcheck.harness.planted import variant
from boundcheck.outputs import strategies as bst
from boundcheck.verification.api import verify
from boundcheck.verification.registry import get


@dataclass
class FalsifyReport:
    theorem_id: str
    theorem: Theorem
    plant: str | None
    best: search.Instance | None
    counterexample: TheoremResult | None
    evaluations: int
    applicable: int
    by_search: dict[str, int]
    families: list[str]
    seconds: float
    record: dict | None = field(default=None)
    crashes: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        name = self.theorem_id if not self.plant else f"{self.theorem_id} [planted {self.plant}]"
        lines = [f"falsify {name}: {self.evaluations} evaluations "
                 f"({self.applicable} where it applies) in {self.seconds:.1f} s; "
                 f"families: {', '.join(self.families) or 'none applicable'}"]
        lines.extend(f"verify crashed ({where}): {msg}" for msg, where in self.crashes.items())
        if self.best is None:
            lines.append("no subject on which the theorem applies was found")
            return "\n".join(lines)
        b = self.best
        kind = "log(lhs/rhs)" if self.theorem.slack == "ratio" else "lhs − rhs"
        lines.append(f"tightest instance ({b.search}): {kind} = {b.score:.6g}, verdict "
                     f"{b.result.verdict.value}" + (f" ({b.result.reason})"
                                                     if b.result.reason else ""))
        if self.counterexample is not None:
            r = self.counterexample
            lines.append(f"COUNTEREXAMPLE: certified VIOLATED (lhs ∈ [{r.lhs.lower:.6g}, "
                         f"{r.lhs.upper:.6g}], rhs ∈ [{r.rhs.lower:.6g}, {r.rhs.upper:.6g}])")
        else:
            lines.append("no counterexample found")
        if self.record:
            lines.append(f"subject file: {self.record['subject_file']}\n"
                         f"re-verify: {self.record['replay']}")
        return "\n".join(lines)


def resolve(theorem_id: str, plant: str | None = None) -> Theorem:
    """A registered theorem, or its planted variant called ``plant``."""
    thm = get(theorem_id)
    return variant(thm, plant).theorem if plant else thm


class _Stop(Exception):
    """Out of time, or a certified violation found: ends the hypothesis search."""


def _at_minimum(subject):
    """The same network and inputs with targets set to its outputs (a zero-loss MSE minimum)."""
    from boundcheck.core.subject import Subject

    x, _ = subject.data
    y = subject.model(x).detach().clone()
    return Subject(subject.model, (x, y), "mse", name=subject.name)


def _strategy(families: list[search.Family]) -> st.SearchStrategy | None:
    small = {"n": (1, 6), "input_dim": (1, 4), "width": (1, 5), "depth": (1, 2)}
    options = []
    for fam in families:
        spec = fam.spec
        if spec["kind"] == "matrix":
            options.append(bst.matrix_subjects(min_size=2, max_size=6))
        elif spec["loss"] == "mse":
            s = bst.subjects(losses=("mse",), output_dim=(1, 3), **small,
                             bias=st.just(spec["bias"]))
            options.append(s.map(_at_minimum) if spec["targets"] == "outputs" else s)
        else:
            options.append(bst.subjects(losses=("cross_entropy",), output_dim=(2, 3), **small,
                                        activations=("tanh", "softplus", "gelu", "sigmoid")))
    return st.one_of(options) if options else None


def hypothesis_search(tracker: search.Tracker, families: list[search.Family],
                      seed: int) -> None:
    """Draw subjects of the applicable kinds until the deadline or a certified violation,
    steering by ``hypothesis.target(score)``."""
    strategy = _strategy(families)
    if strategy is None or tracker.out_of_time():
        return

    @hypothesis_seed(seed)
    @settings(max_examples=100_000, database=None, deadline=None, verbosity=Verbosity.quiet,
              phases=(Phase.generate, Phase.target), suppress_health_check=list(HealthCheck))
    @given(subject=strategy)
    def probe(subject):
        if tracker.out_of_time():
            raise _Stop
        inst = tracker.evaluate(subject, "hypothesis")
        if inst is None:
            return
        if math.isfinite(inst.score):
            target(inst.score, label="score")
        if inst.violated:
            raise _Stop

    try:
        probe()
    except _Stop:
        pass


def falsify(theorem_id: str, *, budget: float = 10.0, seed: int = 0,
            confidence: float = 0.99, out: str | Path | None = None,
            plant: str | None = None) -> FalsifyReport:
    """Search ``budget`` seconds for a counterexample to ``theorem_id`` (or to its planted
    variant ``plant``); write the tightest instance to ``out`` (a folder) when given."""
    if budget <= 0:
        raise ValueError(f"budget must be positive seconds, got {budget}")
    thm = resolve(theorem_id, plant)
    rng = np.random.default_rng(seed)
    start = time.monotonic()
    tracker = search.Tracker(thm, start + budget, confidence, seed)
    fams = search.applicable_families(tracker, rng)
    now = time.monotonic()  # half of what the probes left to the local search
    search.local_search(tracker, fams, rng, now + max(0.0, start + budget - now) / 2)
    if not (tracker.best and tracker.best.violated):
        hypothesis_search(tracker, fams, seed)
    best, certified = tracker.best, None
    if best is not None and best.violated:
        again = verify(best.subject, [thm], confidence=confidence, seed=seed)[thm.id]
        if again.verdict == Verdict.VIOLATED:
            certified = again
    record = None
    if out is not None and best is not None:
        stem = "counterexample" if certified else "tightest"
        path = Path(out) / f"{thm.id}.{stem}.pt"
        record = search.save_instance(best, thm, theorem_id, plant, confidence, seed, path)
    return FalsifyReport(theorem_id, thm, plant, best, certified, tracker.evaluations,
                         tracker.applicable, dict(tracker.by_search), [f.name for f in fams],
                         time.monotonic() - start, record, dict(tracker.crashes))


def replay(theorem_id: str, path: str | Path, *, plant: str | None = None,
           confidence: float = 0.99, seed: int = 0) -> TheoremResult:
    """Re-verify a saved subject file."""
    thm = resolve(theorem_id, plant)
    return verify(search.load_instance(path), [thm], confidence=confidence, seed=seed)[thm.id]
