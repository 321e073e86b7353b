"""The Python entry points: ``measure`` and ``verify``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from boundcheck.core.estimate import Estimate
from boundcheck.core.theorem import Theorem
from boundcheck.core.verdict import TheoremResult, Verdict, decide
from boundcheck.quantities import (
    QUANTITIES,
    Budget,
    Context,
    MemoryBudgetError,
    NotAffordableError,
    NotApplicableError,
)
from boundcheck.verification.registry import select
from boundcheck.verification.results import Results, provenance


def measure(subject, quantities: Iterable[str], *, confidence: float = 0.99, seed: int = 0,
            budget: Budget | None = None) -> dict[str, Estimate]:
    """Measure named quantities on a subject; each comes back as an :class:`Estimate`."""
    names = [quantities] if isinstance(quantities, str) else list(quantities)
    unknown = [q for q in names if q not in QUANTITIES]
    if unknown:
        raise KeyError(f"unknown quantities {unknown}; known: {', '.join(sorted(QUANTITIES))}")
    ctx = Context(subject, confidence=confidence, seed=seed, budget=budget or Budget())
    ctx.planned.update(names)
    return {name: ctx.get(name) for name in names}


def verify_one(theorem: Theorem, ctx: Context) -> TheoremResult:
    """Decide one theorem; while INCONCLUSIVE on estimated (non-exact) inputs, refine.

    Round k = 0, 1, … measures the theorem's statistical inputs at failure probability
    ``(1 − confidence)·6/(π²(k+1)²)`` (these sum to less than ``1 − confidence``, so the stated
    confidence holds for whichever round's answer is reported); round k ≥ 1 re-measures with
    a tightened budget (:meth:`Budget.tightened`, where route "auto" becomes "exact": the
    dense spectrum runs only now, and only if affordable) and fresh probes (seed + k). Exact
    estimates and budget-independent intermediates are kept.
    """
    delta = 1.0 - ctx.confidence
    rounds = ctx.budget.max_refinements
    if rounds <= 0 or not 0 < delta < 1:
        return _decide_once(theorem, ctx)
    share = [6.0 / (math.pi**2 * (k + 1) ** 2) for k in range(rounds + 1)]
    current = _with(ctx, ctx.budget, 1.0 - delta * share[0], ctx.seed)
    result = _decide_once(theorem, current)
    for k in range(1, rounds + 1):
        if result.verdict != Verdict.INCONCLUSIVE or not _refinable(result, theorem):
            break
        current = _with(current, current.budget.tightened(), 1.0 - delta * share[k],
                        ctx.seed + k)
        result = _decide_once(theorem, current)
        result.reason = (result.reason + f" (after {k} refinement"
                         f"{'s' if k > 1 else ''})").strip()
    for name, est in current.estimates.items():  # share what was measured exactly
        if est.kind == "exact":
            ctx.estimates.setdefault(name, est)
    spectrum = current.cached("hessian.dense_spectrum")  # a refinement built: later theorems
    if spectrum is not None:  # take it for free (boundcheck.quantities.routes)
        ctx._artifacts.setdefault("hessian.dense_spectrum", spectrum)
    return result


def _refinable(result: TheoremResult, theorem: Theorem) -> bool:
    """Estimated inputs, and not already decided as exceeded (INCONCLUSIVE only because the
    theorem cannot be refuted by one subject: more precision would not change it)."""
    if theorem.exceeded_reason and theorem.exceeded_reason in result.reason:
        return False
    return any(e.kind != "exact" for e in result.quantities.values())


def _with(ctx: Context, budget: Budget, confidence: float, seed: int) -> Context:
    """A context for one decision round: exact estimates carried over, the rest re-measured."""
    if budget is ctx.budget and confidence == ctx.confidence and seed == ctx.seed:
        return ctx
    fresh = Context(ctx.subject, confidence=confidence, seed=seed, budget=budget)
    fresh.planned = ctx.planned
    fresh.estimates = {k: v for k, v in ctx.estimates.items() if v.kind == "exact"}
    fresh._artifacts = ctx._artifacts if budget is ctx.budget else {
        k: v for k, v in ctx._artifacts.items() if k.startswith(EXACT_ARTIFACTS)}
    return fresh


# Cached intermediates that do not depend on the budget or the seed.
EXACT_ARTIFACTS = ("hessian.dense_spectrum", "hessian.operator", "ggn.operator", "jacobian",
                   "layer", "weights", "data", "closed_form", "moment_bound",
                   "lipschitz", "kr")


def _decide_once(theorem: Theorem, ctx: Context) -> TheoremResult:
    """Decide one theorem on the context's subject, measuring what it needs."""
    if isinstance(theorem.applies_to, str):
        try:
            ctx.get(theorem.applies_to)
        except NotApplicableError as err:
            return TheoremResult(theorem.id, Verdict.NOT_APPLICABLE, str(err))
    elif theorem.applies_to is not None:
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
        except (NotAffordableError, MemoryBudgetError) as err:
            return TheoremResult(theorem.id, Verdict.INCONCLUSIVE, f"{name}: {err}",
                                 quantities=values)
        except (RuntimeError, ValueError, ArithmeticError, NotImplementedError) as err:
            # ArithmeticError: OverflowError of a quantity beyond the float64 range (issue 12)
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
    for t in chosen:  # what the routes weigh one dense spectrum against (quantities.routes)
        ctx.planned.update(t.needs)
        if isinstance(t.applies_to, str):
            ctx.planned.add(t.applies_to)
    start = time.perf_counter()
    results = [verify_one(t, ctx) for t in chosen]
    return Results(
        subject=subject.describe(),
        results=results,
        provenance=provenance(seed=ctx.seed, confidence=ctx.confidence,
                              elapsed_s=time.perf_counter() - start),
    )
