"""Derivations as chains of named, checked steps.

A step claims an identity (``lhs == rhs``) or an inequality (``lhs <= rhs``) between sympy
expressions. It is checked

* ``symbolic``: sympy proves it: an identity simplifies to 0; an inequality's ``rhs − lhs``
  is shown nonnegative from the symbols' assumptions, or equals a given sum-of-squares
  certificate ``witness`` (a form sympy can see is ≥ 0), or
* ``numeric``: when sympy cannot, the claim is tested on many random points of its symbols'
  domains (seeded), with a relative tolerance for rounding. Tests add hypothesis on top.
  A claim about objects sympy cannot write as an expression of scalar symbols (the spectral
  norm of a product of random matrices, say) gives ``evaluate(rng) -> (lhs, rhs)`` instead of
  a sampler; ``lhs`` and ``rhs`` are then only its readable form. ``−∞ ≤ b`` holds for any b
  (the log-volume of a rank-deficient map); NaN never holds.

An identity between sympy matrices holds when every entry of ``rhs − lhs`` simplifies to 0.

A :class:`Derivation` is the readable proof: ``print(derivation)`` shows it step by step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sympy

from boundcheck.core import typeset


class StepFailed(AssertionError):
    pass


Sampler = Callable[[random.Random], Mapping[sympy.Symbol, float]]
Evaluator = Callable[[random.Random], tuple[float, float]]


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
    evaluate: Evaluator | None = None  # for "numeric": draws an instance, returns its sides
    substitutions: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)

    def __str__(self) -> str:
        rel = "=" if self.relation == "==" else "≤"
        return f"{self.name}: {sympy.sstr(self.lhs)} {rel} {sympy.sstr(self.rhs)}" + (
            f"   [{self.because}]" if self.because else "")

    def latex(self) -> str:
        rel = "=" if self.relation == "==" else r"\le"
        return f"{typeset.latex(self.lhs)} {rel} {typeset.latex(self.rhs)}"

    def verify(self, samples: int = 200, seed: int = 0) -> str:
        """Check the step; returns how it was checked, raises :class:`StepFailed` if not."""
        if self.relation not in ("==", "<="):
            raise ValueError(f"unknown relation {self.relation!r}")
        lhs = sympy.sympify(self.lhs).subs(self.substitutions)
        rhs = sympy.sympify(self.rhs).subs(self.substitutions)
        if self.check == "symbolic":
            if isinstance(lhs, sympy.MatrixBase) or isinstance(rhs, sympy.MatrixBase):
                return self._verify_matrix_identity(lhs, rhs)
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
            if self.evaluate is not None:
                return self._verify_by_instances(samples, seed)
            if self.sampler is None:
                raise ValueError(f"{self.name}: a numeric step needs a sampler or evaluate")
            rng = random.Random(seed)
            f_l = sympy.lambdify(sorted(lhs.free_symbols | rhs.free_symbols, key=str),
                                 [lhs, rhs], "mpmath")
            names = sorted(lhs.free_symbols | rhs.free_symbols, key=str)
            for _ in range(samples):
                point = self.sampler(rng)
                a, b = (float(v) for v in f_l(*[point[s] for s in names]))
                if not _holds(a, b, self.relation):
                    raise StepFailed(f"{self.name}: fails at {dict(point)}: {a} vs {b}")
            return f"numeric ({samples} random points)"
        raise ValueError(f"unknown check {self.check!r}")

    def _verify_matrix_identity(self, lhs, rhs) -> str:
        if self.relation != "==":
            raise ValueError(f"{self.name}: matrices can only be claimed equal")
        if getattr(lhs, "shape", None) != getattr(rhs, "shape", None):
            raise StepFailed(f"{self.name}: shapes differ: {getattr(lhs, 'shape', ())} vs "
                             f"{getattr(rhs, 'shape', ())}")
        diff = sympy.Matrix(rhs - lhs).applyfunc(lambda e: sympy.simplify(sympy.expand(e)))
        bad = [(i, j) for i in range(diff.rows) for j in range(diff.cols) if diff[i, j] != 0]
        if bad:
            i, j = bad[0]
            raise StepFailed(f"{self.name}: entry {(i, j)} of rhs − lhs simplifies to "
                             f"{diff[i, j]}, not 0 ({len(bad)} nonzero entries)")
        return f"matrix identity (sympy simplify, {diff.rows}×{diff.cols} entries)"

    def _verify_by_instances(self, samples: int, seed: int) -> str:
        rng = random.Random(seed)
        for _ in range(samples):
            a, b = (float(v) for v in self.evaluate(rng))
            if not _holds(a, b, self.relation):
                raise StepFailed(f"{self.name}: fails on a random instance: {a} vs {b}")
        return f"numeric ({samples} random instances)"


def _holds(a: float, b: float, relation: str) -> bool:
    """``a == b`` or ``a <= b`` up to a relative 1e-9; −∞ ≤ anything; NaN never holds."""
    if math.isnan(a) or math.isnan(b):
        return False
    if relation == "<=" and a == -math.inf:
        return True
    if math.isinf(a) or math.isinf(b):
        return a == b if relation == "==" else a <= b
    tol = 1e-9 * max(1.0, abs(a), abs(b))
    return abs(a - b) <= tol if relation == "==" else a <= b + tol


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
