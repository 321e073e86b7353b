"""Measurable quantities: the public vocabulary theorems are written in.

Each quantity has a stable dotted name (``hessian.trace``, ``hessian.lambda_max``...) and a
measuring function ``(Context) -> Estimate``. A :class:`Context` measures each quantity once
per subject, caches expensive intermediates (the dense Hessian, its spectrum) and carries the
options (confidence, seed, budgets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..estimate import Estimate


class NotApplicableError(Exception):
    """The quantity is undefined for this subject (reason in the message)."""


class NotAffordableError(Exception):
    """The quantity cannot be measured within the budget (reason in the message)."""


@dataclass(frozen=True)
class Quantity:
    name: str
    description: str
    measure: Callable[[Context], Estimate]
    latex: str = ""


QUANTITIES: dict[str, Quantity] = {}


def quantity(name: str, description: str, latex: str = ""):
    """Decorator registering a measuring function under ``name``."""

    def wrap(fn: Callable[[Context], Estimate]) -> Callable[[Context], Estimate]:
        if name in QUANTITIES:
            raise ValueError(f"quantity {name!r} registered twice")
        QUANTITIES[name] = Quantity(name, description, fn, latex)
        return fn

    return wrap


@dataclass
class Budget:
    """How much work measurement may do before it reports an interval instead."""

    max_dense_params: int = 6000


@dataclass
class Context:
    subject: Any
    confidence: float = 0.99
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)
    _artifacts: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Estimate:
        if name in self.estimates:
            return self.estimates[name]
        if name in self.failures:
            raise self.failures[name]
        if name not in QUANTITIES:
            raise KeyError(f"unknown quantity {name!r}; known: {', '.join(sorted(QUANTITIES))}")
        try:
            est = QUANTITIES[name].measure(self)
        except (NotApplicableError, NotAffordableError) as err:
            self.failures[name] = err
            raise
        self.estimates[name] = est
        return est

    def artifact(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._artifacts:
            self._artifacts[key] = build()
        return self._artifacts[key]


def _register_builtins() -> None:
    from . import hessian, spectral  # noqa: F401


_register_builtins()
