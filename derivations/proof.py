"""Derivations as chains of named, checked steps.

A step claims an identity (``lhs == rhs``) or an inequality (``lhs <= rhs``) between sympy
expressions. It is checked

* ``symbolic``: sympy proves it: an identity simplifies to 0; an inequality's ``rhs − lhs``
  is shown nonnegative from the symbols' assumptions, or equals a given sum-of-squares
  certificate ``witness`` (a form sympy can see is ≥ 0), or
* ``numeric``: when sympy cannot, the claim is tested on many random points of its symbols'
  domains (seeded), with a relative tolerance for rounding. Tests add hypothesis on top.

A :class:`Derivation` is the readable proof: ``print(derivation)`` shows it step by step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sympy


class StepFailed(AssertionError):
    pass


Sampler = Callable[[random.Random], Mapping[sympy.Symbol, float]]


@dataclass(frozen=True)
class Step:
    name: str
    lhs: sympy.Expr
    rhs: sympy.Expr
    relation: str = "=="  # "==" or "<="
    because: str = ""
    check: str = "symbolic"  # "symbolic" or "numeric"
    witness: sympy.Expr | None = None  # for "<=": rhs - lhs == witness, witness visibly >= 0
    sampler: Sampler | None = None  # for "numeric": draws a point of the domain
    substitutions: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)

    def __str__(self) -> str:
        rel = "=" if self.relation == "==" else "≤"
        return f"{self.name}: {sympy.sstr(self.lhs)} {rel} {sympy.sstr(self.rhs)}" + (
            f"   [{self.because}]" if self.because else "")

    def latex(self) -> str:
        rel = "=" if self.relation == "==" else r"\le"
        return f"{sympy.latex(self.lhs)} {rel} {sympy.latex(self.rhs)}"

    def verify(self, samples: int = 200, seed: int = 0) -> str:
        """Check the step; returns how it was checked, raises :class:`StepFailed` if not."""
        if self.relation not in ("==", "<="):
            raise ValueError(f"unknown relation {self.relation!r}")
        lhs = sympy.sympify(self.lhs).subs(self.substitutions)
        rhs = sympy.sympify(self.rhs).subs(self.substitutions)
        if self.check == "symbolic":
            diff = sympy.simplify(sympy.expand(rhs - lhs))
            if self.relation == "==":
                if diff == 0:
                    return "identity (sympy simplify)"
                raise StepFailed(f"{self.name}: rhs − lhs simplifies to {diff}, not 0")
            if diff.is_nonnegative:
                return "inequality (sympy: rhs − lhs ≥ 0 from assumptions)"
            if self.witness is not None:
                if sympy.simplify(sympy.expand(rhs - lhs - self.witness)) != 0:
                    raise StepFailed(f"{self.name}: rhs − lhs ≠ the given witness")
                if sympy.sympify(self.witness).is_nonnegative:
                    return "inequality (sum-of-squares witness)"
                raise StepFailed(f"{self.name}: witness {self.witness} is not visibly ≥ 0")
            raise StepFailed(f"{self.name}: sympy cannot show {diff} ≥ 0; give a witness or "
                             "check it numerically")
        if self.check == "numeric":
            if self.sampler is None:
                raise ValueError(f"{self.name}: a numeric step needs a sampler")
            rng = random.Random(seed)
            f_l = sympy.lambdify(sorted(lhs.free_symbols | rhs.free_symbols, key=str),
                                 [lhs, rhs], "mpmath")
            names = sorted(lhs.free_symbols | rhs.free_symbols, key=str)
            for _ in range(samples):
                point = self.sampler(rng)
                a, b = (float(v) for v in f_l(*[point[s] for s in names]))
                tol = 1e-9 * max(1.0, abs(a), abs(b))
                ok = abs(a - b) <= tol if self.relation == "==" else a <= b + tol
                if not ok or math.isnan(a) or math.isnan(b):
                    raise StepFailed(f"{self.name}: fails at {dict(point)}: {a} vs {b}")
            return f"numeric ({samples} random points)"
        raise ValueError(f"unknown check {self.check!r}")


@dataclass(frozen=True)
class Derivation:
    """A proof: premises, then steps, ending in the theorem's statement."""

    title: str
    source: str
    steps: Sequence[Step]
    conclusion: str = ""

    def verify(self) -> dict[str, str]:
        return {step.name: step.verify() for step in self.steps}

    def __str__(self) -> str:
        lines = [self.title, f"source: {self.source}", ""]
        lines += [f"  {i + 1}. {s}" for i, s in enumerate(self.steps)]
        if self.conclusion:
            lines += ["", f"  ∴ {self.conclusion}"]
        return "\n".join(lines)
