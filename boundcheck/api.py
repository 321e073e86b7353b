"""The Python entry points: ``measure`` and ``verify``."""

from __future__ import annotations

import time
from collections.abc import Iterable

from .estimate import Estimate
from .quantities import QUANTITIES, Budget, Context, NotAffordableError, NotApplicableError
from .results import Results, provenance
from .theorem import Theorem, select
from .verdict import TheoremResult, Verdict, decide


def measure(subject, quantities: Iterable[str], *, confidence: float = 0.99, seed: int = 0,
            budget: Budget | None = None) -> dict[str, Estimate]:
    """Measure named quantities on a subject; each comes back as an :class:`Estimate`."""
    names = [quantities] if isinstance(quantities, str) else list(quantities)
    unknown = [q for q in names if q not in QUANTITIES]
    if unknown:
        raise KeyError(f"unknown quantities {unknown}; known: {', '.join(sorted(QUANTITIES))}")
    ctx = Context(subject, confidence=confidence, seed=seed, budget=budget or Budget())
    return {name: ctx.get(name) for name in names}


def verify_one(theorem: Theorem, ctx: Context) -> TheoremResult:
    """Decide one theorem on the context's subject."""
    if theorem.applies_to is not None:
        reason = theorem.applies_to(ctx.subject)
        if reason:
            return TheoremResult(theorem.id, Verdict.NOT_APPLICABLE, reason)
    values: dict[str, Estimate] = {}
    for name in theorem.needs:
        try:
            values[name] = ctx.get(name)
        except NotApplicableError as err:
            return TheoremResult(theorem.id, Verdict.NOT_APPLICABLE, f"{name}: {err}",
                                 quantities=values)
        except NotAffordableError as err:
            return TheoremResult(theorem.id, Verdict.INCONCLUSIVE, f"{name}: {err}",
                                 quantities=values)
        except (RuntimeError, ValueError, FloatingPointError, NotImplementedError) as err:
            # an unexpected failure is reported, never turned into a verdict on the bound
            return TheoremResult(theorem.id, Verdict.INCONCLUSIVE,
                                 f"measuring {name} failed: {type(err).__name__}: {err}",
                                 quantities=values)
    for assumption in theorem.assumptions:
        reason = assumption.check(values, ctx.subject)
        if reason:
            return TheoremResult(theorem.id, Verdict.NOT_APPLICABLE,
                                 f"precondition '{assumption.name}' fails: {reason}",
                                 quantities=values)
    return decide(theorem, values)


def verify(subject, theorems=None, *, confidence: float = 0.99, seed: int = 0,
           budget: Budget | None = None, context: Context | None = None) -> Results:
    """Verify theorems (ids, a family prefix like ``"hessian.ws"``, or all) on a subject."""
    chosen = select(theorems)
    ctx = context or Context(subject, confidence=confidence, seed=seed,
                             budget=budget or Budget())
    start = time.perf_counter()
    results = [verify_one(t, ctx) for t in chosen]
    return Results(
        subject=subject.describe(),
        results=results,
        provenance=provenance(seed=ctx.seed, confidence=ctx.confidence,
                              elapsed_s=time.perf_counter() - start),
    )
