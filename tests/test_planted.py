"""A planted false theorem must come out VIOLATED on generic subjects, never HOLDS."""

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import boundcheck as bc
from boundcheck.harness.models import mlp
from derivations import wolkowicz_styan as ws

PLANTED = bc.Theorem(
    id="planted.ws_lambda_max_inverted",
    title="T1's upper bound with √(N−1) replaced by 1/√(N−1) (false)",
    lhs=ws.lam_max, rhs=ws.m + ws.s / sympy.sqrt(ws.N - 1),
    symbols={k: v for k, v in ws.SYMBOLS.items() if k in (ws.lam_max, ws.m, ws.s, ws.N)},
    source="planted", assumptions=(ws.N_AT_LEAST_2,), slack="difference",
)


@pytest.fixture(autouse=True)
def planted():
    bc.register(PLANTED, replace=True)
    yield
    bc.unregister(PLANTED.id)


def test_registered_planted_theorem_is_listed():
    assert PLANTED.id in {t.id for t in bc.theorems()}


def test_violated_on_generic_matrix():
    a = np.random.default_rng(0).standard_normal((20, 20))
    res = bc.verify(bc.MatrixSubject(a @ a.T), [PLANTED.id])
    assert res[PLANTED.id].verdict == bc.Verdict.VIOLATED


def test_violated_on_a_trained_network():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    res = bc.verify(bc.Subject(mlp([4, 5, 3], "tanh", seed=0), (x, y)), [PLANTED.id,
                                                                      "hessian.ws_lambda_max"])
    assert res[PLANTED.id].verdict == bc.Verdict.VIOLATED
    assert res["hessian.ws_lambda_max"].verdict == bc.Verdict.HOLDS


@settings(max_examples=50)
@given(n=st.integers(2, 15), seed=st.integers(0, 10**6),
       scale=st.sampled_from([1e-6, 1.0, 1e6]))
def test_never_holds(n, seed, scale):
    # λ_max ≥ m + s/√(N−1) always, so the planted bound can at best be tight, never hold
    a = np.random.default_rng(seed).standard_normal((n, n)) * scale
    res = bc.verify(bc.MatrixSubject(a + a.T), [PLANTED.id])
    assert res[PLANTED.id].verdict != bc.Verdict.HOLDS
