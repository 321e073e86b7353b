"""Theorems: a sympy inequality ``lhs <= rhs`` over scalar symbols, each bound to a quantity.

A theorem knows what it needs (quantity names), which preconditions must hold before its
inequality is a theorem at all (``Assumption``), where it comes from, and how to render itself.
The registry of theorems is ``boundcheck.verification.registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy

from boundcheck.core import typeset
from boundcheck.core.estimate import Estimate


class UnknownTheoremError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Assumption:
    """A precondition checked before the inequality is judged.

    ``check`` receives the measured estimates (by quantity name) of ``quantities`` and the
    subject, and returns ``None`` when the precondition holds, else the reason it fails.
    A failing assumption makes the verdict NOT_APPLICABLE with that reason.
    """

    name: str
    description: str
    check: Callable[[Mapping[str, Estimate], object], str | None]
    quantities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Theorem:
    """``lhs <= rhs``; ``symbols`` maps each free symbol to the quantity that measures it."""

    id: str
    title: str
    lhs: sympy.Expr
    rhs: sympy.Expr
    symbols: Mapping[sympy.Symbol, str]
    source: str
    assumptions: tuple[Assumption, ...] = ()
    slack: str = "ratio"  # "ratio" (rhs/lhs, sides positive) or "difference" (rhs - lhs)
    family: str = ""
    notes: str = ""
    # Whether the theorem applies to a subject at all, checked before anything is measured:
    # a callable ``subject -> reason | None``, or the name of a quantity whose
    # NotApplicableError gives the reason (for checks that need an engine to inspect the net).
    applies_to: Callable[[object], str | None] | str | None = field(default=None,
                                                                    compare=False)
    # Non-empty for a theorem one subject cannot refute (it holds for almost every
    # initialisation, say): a measured lhs > rhs is then INCONCLUSIVE with this explanation,
    # never VIOLATED. A planted or deterministic statement leaves it empty.
    exceeded_reason: str = ""

    def __post_init__(self) -> None:
        if self.slack not in ("ratio", "difference"):
            raise ValueError(f"slack must be 'ratio' or 'difference', got {self.slack!r}")
        free = (sympy.sympify(self.lhs).free_symbols | sympy.sympify(self.rhs).free_symbols)
        missing = free - set(self.symbols)
        if missing:
            names = sorted(map(str, missing))
            raise ValueError(f"theorem {self.id}: symbols without a quantity: {names}")
        if not self.id or " " in self.id:
            raise ValueError(f"theorem id must be a non-empty dotted name, got {self.id!r}")

    @property
    def statement(self) -> sympy.Rel:
        return sympy.Le(self.lhs, self.rhs, evaluate=False)

    @property
    def needs(self) -> tuple[str, ...]:
        names = list(dict.fromkeys(self.symbols.values()))
        for a in self.assumptions:
            names.extend(q for q in a.quantities if q not in names)
        return tuple(names)

    def latex(self) -> str:
        """The inequality as LaTeX; symbol names that are LaTeX are kept as written."""
        return f"{typeset.latex(self.lhs)} \\le {typeset.latex(self.rhs)}"

    def unicode(self) -> str:
        """The inequality as one line of readable Unicode math (for terminals)."""
        return f"{typeset.unicode(self.lhs)} ≤ {typeset.unicode(self.rhs)}"

    def legend(self) -> dict[str, str]:
        """Symbol (as LaTeX) -> quantity name, for reports."""
        return {typeset.symbol_latex(s.name): q for s, q in self.symbols.items()}

    def describe(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "family": self.family,
            "statement": f"{sympy.sstr(self.lhs)} <= {sympy.sstr(self.rhs)}",
            "latex": self.latex(),
            "symbols": {str(s): q for s, q in self.symbols.items()},
            "assumptions": [{"name": a.name, "description": a.description}
                            for a in self.assumptions],
            "source": self.source,
            "slack": self.slack,
            **({"exceeded_reason": self.exceeded_reason} if self.exceeded_reason else {}),
        }
