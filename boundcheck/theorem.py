"""Theorems: a sympy inequality ``lhs <= rhs`` over scalar symbols, each bound to a quantity.

A theorem knows what it needs (quantity names), which preconditions must hold before its
inequality is a theorem at all (``Assumption``), where it comes from, and how to render itself.
The registry holds the built-in theorems (from ``derivations/``) and any the user registers.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy

from .estimate import Estimate


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
    applies_to: Callable[[object], str | None] | None = field(default=None, compare=False)

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
        return f"{sympy.latex(self.lhs)} \\le {sympy.latex(self.rhs)}"

    def legend(self) -> dict[str, str]:
        """Symbol (as LaTeX) -> quantity name, for reports."""
        return {sympy.latex(s): q for s, q in self.symbols.items()}

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
        }


_REGISTRY: dict[str, Theorem] = {}
_LOADED = False


def _load_builtins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from derivations import FAMILIES

    for module in FAMILIES:
        mod = importlib.import_module(module)
        for thm in mod.THEOREMS:
            _REGISTRY.setdefault(thm.id, thm)


def register(theorem: Theorem, *, replace: bool = False) -> Theorem:
    """Add a theorem to the registry (a user's own, or a planted variant in a test)."""
    if not isinstance(theorem, Theorem):
        raise TypeError(f"register() takes a boundcheck.Theorem, got {type(theorem).__name__}")
    _load_builtins()
    if theorem.id in _REGISTRY and not replace and _REGISTRY[theorem.id] != theorem:
        raise ValueError(f"a theorem with id {theorem.id!r} is already registered; "
                         "pass replace=True to overwrite it")
    _REGISTRY[theorem.id] = theorem
    return theorem


def unregister(theorem_id: str) -> None:
    _load_builtins()
    _REGISTRY.pop(theorem_id, None)


def theorems() -> list[Theorem]:
    """Every registered theorem, built-in and user-registered, sorted by id."""
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get(theorem_id: str | Theorem) -> Theorem:
    if isinstance(theorem_id, Theorem):
        return theorem_id
    _load_builtins()
    try:
        return _REGISTRY[theorem_id]
    except KeyError:
        close = difflib.get_close_matches(str(theorem_id), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownTheoremError(
            f"unknown theorem id {theorem_id!r}{hint} (`boundcheck theorems` lists them)"
        ) from None


def select(spec: str | list | None) -> list[Theorem]:
    """Theorems by id list, by family/id prefix (``"hessian.ws"``), or all when None."""
    if spec is None:
        return theorems()
    items = [spec] if isinstance(spec, (str, Theorem)) else list(spec)
    out: list[Theorem] = []
    for item in items:
        if isinstance(item, Theorem):
            out.append(item)
            continue
        _load_builtins()
        if item in _REGISTRY:
            out.append(_REGISTRY[item])
            continue
        matches = [t for k, t in sorted(_REGISTRY.items())
                   if k.startswith(item + ".") or k.startswith(item + "_")
                   or t.family == item]
        if not matches:
            get(item)  # raises with suggestions
        out.extend(m for m in matches if m not in out)
    return out
