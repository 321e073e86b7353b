"""Time limits and progress for long measurements, without threading them through every call.

``with time_limit(60):`` gives the estimators inside it a deadline: Lanczos stops its run, the
trace estimators size their main stage to the time left, and each returns the interval it
reached (statistically valid: the stopping point depends on the clock, not on the samples)
with ``details["stopped"]`` saying so. Limits nest: the inner deadline is the earlier one.

``with progress_to(print):`` sends throttled one-line reports ("λ_max: 40 products, interval
width 3e-4") from the estimators to a callback; the command line prints them to stderr.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline",
                                                                         default=None)
_PROGRESS: contextvars.ContextVar[tuple[Callable[[str], None], float, list[float]] | None] = (
    contextvars.ContextVar("progress", default=None))


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Estimators inside stop at ``now + seconds`` (or an earlier enclosing deadline)."""
    if seconds is None:
        yield
        return
    if not seconds > 0 or math.isnan(seconds):
        raise ValueError(f"a time limit must be a positive number of seconds, got {seconds}")
    deadline = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float:
    """Seconds left before the deadline (``inf`` without one; ≤ 0 once it has passed)."""
    deadline = _DEADLINE.get()
    return math.inf if deadline is None else deadline - time.monotonic()


def expired() -> bool:
    return remaining() <= 0.0


@contextmanager
def progress_to(sink: Callable[[str], None], every_s: float = 2.0) -> Iterator[None]:
    """Send estimator progress lines to ``sink``, at most one every ``every_s`` seconds."""
    token = _PROGRESS.set((sink, every_s, [time.monotonic()]))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


SLOW_S = 5.0  # a measurement this long gets a line of its own when it ends


def finished(what: str, seconds: float) -> None:
    """A line when a measurement that took ≥ SLOW_S seconds ends (unthrottled): steps that
    report nothing while they run (Jacobians, dense blocks) still show where the time went."""
    state = _PROGRESS.get()
    if state is None or seconds < SLOW_S:
        return
    sink, _, last = state
    last[0] = time.monotonic()
    sink(f"  {what}: {seconds:.0f} s")


def report(what: str, products: int, width: float | None = None, unit: str = "products"
           ) -> None:
    """A progress line, if a sink is set and its interval has passed."""
    state = _PROGRESS.get()
    if state is None:
        return
    sink, every, last = state
    now = time.monotonic()
    if now - last[0] < every:
        return
    last[0] = now
    left = remaining()
    sink(f"  {what}: {products} {unit}"
         + (f", interval width {width:.3g}" if width is not None and math.isfinite(width)
            else "")
         + (f", {left:.0f} s left" if math.isfinite(left) else ""))
