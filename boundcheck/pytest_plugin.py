"""pytest plugin: ``assert_bound_holds`` for users' own test suites.

Loaded through the ``pytest11`` entry point; importing it is cheap (boundcheck loads lazily).
"""

from __future__ import annotations

import pytest


def assert_bound_holds(subject, theorem_id: str, **verify_kwargs) -> None:
    """Fail with the verdict, intervals and reason unless ``theorem_id`` HOLDS on ``subject``."""
    import boundcheck as bc

    result = bc.verify(subject, [theorem_id], **verify_kwargs)[theorem_id]
    if result.verdict != bc.Verdict.HOLDS:
        raise AssertionError(
            f"{theorem_id}: {result.verdict}"
            + (f" — lhs {result.lhs}, rhs {result.rhs}" if result.lhs else "")
            + (f" ({result.reason})" if result.reason else ""))


@pytest.fixture
def bound_holds():
    """The :func:`assert_bound_holds` function, as a fixture."""
    return assert_bound_holds
