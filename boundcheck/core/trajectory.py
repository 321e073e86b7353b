"""The record of a full-batch gradient-descent run that dynamics theorems (T10) read.

A :class:`Trajectory` is what training leaves behind about how the subject's parameters were
reached: the optimizer and its step size η, and per step t = 0, …, T the full-data loss
``L(θ_t)`` and gradient norm ``‖∇L(θ_t)‖`` (θ_T is the measured point). Training fills it
(:func:`boundcheck.harness.training.train` records both on every full-batch step and once
more at the end); a :class:`boundcheck.Subject` carries it as ``trajectory``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from boundcheck.core.estimate import UNIT_ROUNDOFF


@dataclass(frozen=True)
class Trajectory:
    """``gradient_norms[t] = ‖∇L(θ_t)‖`` and ``losses[t] = L(θ_t)``, t = 0..T, as computed
    in the training dtype; ``step_size`` is η as configured (training applies it in
    ``dtype``: within a relative ``unit_roundoff`` of η)."""

    optimizer: str  # "gd" (full batch), "sgd" or "adam"
    step_size: float
    momentum: float
    full_batch: bool
    dtype: str  # the training dtype, "float32" or "float64"
    gradient_norms: tuple[float, ...]
    losses: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.gradient_norms) != len(self.losses) or not self.gradient_norms:
            raise ValueError(f"a trajectory needs one loss and one gradient norm per step "
                             f"(got {len(self.losses)} and {len(self.gradient_norms)})")
        if not self.step_size > 0:
            raise ValueError(f"the step size must be > 0, got {self.step_size}")
        if self.dtype not in UNIT_ROUNDOFF:
            raise ValueError(f"unknown training dtype {self.dtype!r}; known: "
                             f"{', '.join(UNIT_ROUNDOFF)}")

    @property
    def steps(self) -> int:
        """T, the number of steps taken (θ_T is the last point)."""
        return len(self.gradient_norms) - 1

    @property
    def unit_roundoff(self) -> float:
        return UNIT_ROUNDOFF[self.dtype]

    @property
    def plain_gd(self) -> bool:
        """Full-batch gradient descent without momentum: θ_{t+1} = θ_t − η∇L(θ_t)."""
        return self.optimizer == "gd" and self.full_batch and self.momentum == 0.0

    def until(self, step: int) -> Trajectory:
        """The trajectory up to θ_step (for a checkpoint)."""
        if not 0 <= step <= self.steps:
            raise ValueError(f"step {step} outside the trajectory's 0..{self.steps}")
        return Trajectory(self.optimizer, self.step_size, self.momentum, self.full_batch,
                          self.dtype, self.gradient_norms[:step + 1], self.losses[:step + 1])

    def window_max(self, window: int) -> float:
        """max ‖∇L(θ_t)‖ over the last ``window`` steps t = T − window + 1, …, T (all of
        them when the trajectory is shorter: compare ``window`` with ``steps + 1``)."""
        if window < 1:
            raise ValueError(f"the window must be ≥ 1 step, got {window}")
        tail = self.gradient_norms[-window:]
        return math.inf if any(math.isnan(g) for g in tail) else max(tail)

    @classmethod
    def from_history(cls, optimizer: str, step_size: float, momentum: float, full_batch: bool,
                     dtype: str, gradient_norms: Sequence[float],
                     losses: Sequence[float]) -> Trajectory:
        return cls(optimizer, float(step_size), float(momentum), bool(full_batch), dtype,
                   tuple(float(g) for g in gradient_norms), tuple(float(v) for v in losses))
