"""pytest plugin: assert that bounds hold, in a user's own test suite.

pytest loads this module through the ``pytest11`` entry point in every session of an
environment where boundcheck is installed, so it must import cheaply and never fail: it
defines fixtures only, and boundcheck's engine (torch, sympy) is imported when a fixture is
first used.

    def test_my_net(assert_bound_holds):
        assert_bound_holds(bc.Subject(net, (x, y), "mse"), "hessian.ws_lambda_max")

or without the fixture: ``from boundcheck import assert_bound_holds``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(name="assert_bound_holds")
def assert_bound_holds_fixture():
    """:func:`.check.assert_bound_holds`: ``(subject, theorem_id, **verify_kwargs)``
    raises AssertionError with the verdict, intervals and reason unless the bound HOLDS."""
    from boundcheck.outputs.check import assert_bound_holds

    return assert_bound_holds


@pytest.fixture(name="assert_bounds_hold")
def assert_bounds_hold_fixture():
    """:func:`.check.assert_bounds_hold`: every selected theorem holds (or does not
    apply)."""
    from boundcheck.outputs.check import assert_bounds_hold

    return assert_bounds_hold
