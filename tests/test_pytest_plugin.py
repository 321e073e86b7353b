"""The pytest plugin: cheap to load, fixtures that assert bounds hold with a useful message;
and the lazily loaded top-level names it relies on."""

import subprocess
import sys

import numpy as np
import pytest
import sympy

import boundcheck as bc
from boundcheck.outputs.check import assert_bound_holds, assert_bounds_hold
from derivations import wolkowicz_styan as ws

pytest_plugins = ["pytester"]

PLANTED = bc.Theorem(
    id="planted.plugin_tight", title="T1's λ_max bound with 1/√(N−1) (false)",
    lhs=ws.lam_max, rhs=ws.m + ws.s / sympy.sqrt(ws.N - 1), source="planted",
    symbols={k: v for k, v in ws.SYMBOLS.items() if k in (ws.lam_max, ws.m, ws.s, ws.N)},
    slack="difference")


@pytest.fixture
def matrix():
    a = np.random.default_rng(1).standard_normal((10, 10))
    return bc.MatrixSubject(a + a.T, name="matrix")


def test_plugin_import_is_cheap_and_loads_no_engine():
    code = ("import sys, boundcheck.outputs.pytest_plugin; "
            "print(sorted(m for m in ('torch', 'sympy', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_every_exported_name_resolves():
    for name in bc.__all__:
        assert getattr(bc, name) is not None
    assert bc.quantities.QUANTITIES is bc.QUANTITIES  # submodules still reachable
    with pytest.raises(AttributeError):
        bc.no_such_name  # noqa: B018


def test_assert_bound_holds_returns_the_result(matrix):
    result = assert_bound_holds(matrix, "hessian.ws_lambda_max")
    assert result.verdict == bc.Verdict.HOLDS
    assert bc.assert_bound_holds is assert_bound_holds


def test_assert_bound_holds_explains_a_failure(matrix):
    with pytest.raises(AssertionError) as info:
        assert_bound_holds(matrix, PLANTED)
    msg = str(info.value)
    assert msg.startswith("planted.plugin_tight does not hold on matrix: VIOLATED")
    assert "lhs   " in msg and "rhs   " in msg and "(exact)" in msg
    assert "reason: lhs exceeds rhs by at least" in msg
    assert "hessian.lambda_max = " in msg
    with pytest.raises(bc.UnknownTheoremError):
        assert_bound_holds(matrix, "no.such_theorem")


def test_assert_bounds_hold(matrix):
    assert len(assert_bounds_hold(matrix, "hessian.ws").results) == 4
    with pytest.raises(AssertionError, match="1 of 5 theorem"):
        assert_bounds_hold(matrix, ["hessian.ws", PLANTED])
    one = bc.MatrixSubject(np.eye(1))  # N = 1: T1 does not apply
    assert_bounds_hold(one, "hessian.ws")
    with pytest.raises(AssertionError, match="NOT_APPLICABLE"):
        assert_bounds_hold(one, "hessian.ws", allow_not_applicable=False)


def test_fixtures_in_a_users_test_suite(pytester):
    pytester.makepyfile(test_user="""
        import numpy as np
        import sympy
        import boundcheck as bc
        from derivations import wolkowicz_styan as ws

        def subject():
            a = np.random.default_rng(0).standard_normal((8, 8))
            return bc.MatrixSubject(a + a.T, name="users-matrix")

        def test_true_bound(assert_bound_holds):
            assert_bound_holds(subject(), "hessian.ws_lambda_max")

        def test_family(assert_bounds_hold):
            assert_bounds_hold(subject(), "hessian.ws")

        def test_too_tight(assert_bound_holds):
            mine = bc.Theorem(id="mine.tight", title="too tight", lhs=ws.lam_max,
                              rhs=ws.m, symbols={ws.lam_max: "hessian.lambda_max",
                                                 ws.m: "hessian.eigenvalue_mean"},
                              source="me", slack="difference")
            assert_bound_holds(subject(), mine)
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*mine.tight does not hold on users-matrix: VIOLATED*",
                                 "*reason: lhs exceeds rhs*"])
