"""Planted variants of a theorem: the same statement with one deliberate defect.

Built from the theorem's sympy sides, never written by hand, so every registered theorem gets
them (issue 12):

- ``constant``: the bound made tighter by a factor of two — the right side halved, or the left
  side doubled when the bound sits on the left (a lower bound such as ``m + s/√(N−1) ≤ λ_max``);
  for a side that is a sum, one term at a time (``m + s√(N−1)/2``); for a difference-slack bound
  whose side may be negative, the factor 2 is tried both ways, and its right side is also
  lowered by ``log 2`` (a log-form bound whose constant inside the log is halved, e.g.
  ``gap ≤ 0 → gap ≤ −log 2``);
- ``exponent``: one power in a side with its exponent doubled or halved (``√(N−1) → (N−1)¹ᐟ⁴``);
- ``drop``: one term of a sum dropped;
- ``precondition``: every precondition removed (``assumptions`` and ``applies_to``), to be run
  on subjects that fail them.

A variant is a *candidate* violation: whether it is false on a given subject is for an
independent reference to decide (a doubled exponent of a quantity below 1 loosens the bound).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy

from boundcheck.core.theorem import Theorem

KINDS = ("constant", "exponent", "drop", "precondition")
MAX_PER_KIND = 8


@dataclass(frozen=True)
class Variant:
    """A planted variant: ``name`` is ``KIND:DETAIL``, ``theorem`` the altered statement."""

    name: str
    kind: str
    theorem: Theorem
    original: str


def _terms(side: sympy.Expr) -> tuple[sympy.Expr, ...]:
    return sympy.Add.make_args(side)


def _is_bound_side(side: sympy.Expr) -> bool:
    """A side carrying a formula (not a single measured symbol)."""
    return not isinstance(side, sympy.Symbol)


def _bound_sides(thm: Theorem) -> list[str]:
    sides = [name for name in ("rhs", "lhs") if _is_bound_side(getattr(thm, name))]
    return sides or ["rhs"]


def _constant_mutations(thm: Theorem) -> list[tuple[str, str, sympy.Expr]]:
    out = []
    for side in _bound_sides(thm):
        expr = getattr(thm, side)
        factors = [sympy.Rational(1, 2) if side == "rhs" else sympy.Integer(2)]
        if thm.slack == "difference":
            factors.append(1 / factors[0])
        terms = _terms(expr)
        if thm.slack == "difference" and side == "rhs":
            out.append(("rhs−log2", side, expr - sympy.log(2)))
        for f in factors:
            out.append((f"{side}×{f}", side, expr * f))
            if len(terms) > 1:
                for i, t in enumerate(terms):
                    out.append((f"{side}.term{i}×{f}", side, expr - t + t * f))
    return out


def _exponent_mutations(thm: Theorem) -> list[tuple[str, str, sympy.Expr]]:
    out = []
    for side in _bound_sides(thm):
        expr = getattr(thm, side)
        pows = sorted((p for p in expr.atoms(sympy.Pow) if p.exp.is_Number), key=sympy.srepr)
        for p in pows:
            for f in (2, sympy.Rational(1, 2)):
                new = expr.xreplace({p: sympy.Pow(p.base, p.exp * f, evaluate=False)})
                out.append((f"{side}:{sympy.sstr(p)}→^{sympy.sstr(p.exp * f)}", side, new))
    return out


def _drop_mutations(thm: Theorem) -> list[tuple[str, str, sympy.Expr]]:
    out = []
    for side in _bound_sides(thm):
        terms = _terms(getattr(thm, side))
        if len(terms) > 1:
            for i, t in enumerate(terms):
                out.append((f"{side}.drop:{sympy.sstr(t)}", side,
                            sympy.Add(*(u for j, u in enumerate(terms) if j != i))))
    return out


def planted_variants(thm: Theorem, kinds: tuple[str, ...] = KINDS) -> list[Variant]:
    """Every planted variant of ``thm`` of the given kinds (distinct statements only, at most
    ``MAX_PER_KIND`` per kind, in a fixed order)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown variant kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    builders = {"constant": _constant_mutations, "exponent": _exponent_mutations,
                "drop": _drop_mutations}
    seen = {(sympy.srepr(thm.lhs), sympy.srepr(thm.rhs))}
    out: list[Variant] = []
    for kind in kinds:
        if kind == "precondition":
            if thm.assumptions or thm.applies_to is not None:
                out.append(_variant(thm, "precondition:ignored", kind,
                                    assumptions=(), applies_to=None))
            continue
        count = 0
        for detail, side, expr in builders[kind](thm):
            if count >= MAX_PER_KIND:
                break
            key = (sympy.srepr(expr if side == "lhs" else thm.lhs),
                   sympy.srepr(expr if side == "rhs" else thm.rhs))
            if key in seen or (expr.is_number and not expr.is_finite):
                continue
            seen.add(key)
            out.append(_variant(thm, f"{kind}:{detail}", kind, **{side: expr}))
            count += 1
    return out


def _variant(thm: Theorem, name: str, kind: str, **changes) -> Variant:
    tag = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    planted = dataclasses.replace(
        thm, id=f"planted.{thm.id}.{tag}", title=f"{thm.title} [planted {name}]",
        source=f"planted variant of {thm.id} ({name})", **changes)
    return Variant(name, kind, planted, thm.id)


def variant(thm: Theorem, name: str) -> Variant:
    """The planted variant of ``thm`` called ``name`` (as listed by :func:`planted_variants`)."""
    found = {v.name: v for v in planted_variants(thm)}
    if name not in found:
        raise KeyError(f"{thm.id} has no planted variant {name!r}; it has: "
                       + ", ".join(found))
    return found[name]
