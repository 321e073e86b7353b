"""INCONCLUSIVE on estimated inputs is refined (tighter budget, fresh probes) until decided."""

import sympy
import torch

import boundcheck as bc
from boundcheck.harness.models import mlp


def subject():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    return bc.Subject(mlp([10, 48, 3], "tanh", seed=0), (x, y))  # P = 675


def test_refinement_decides_what_a_loose_budget_cannot():
    s = subject()
    exact = bc.measure(s, ["hessian.trace"])["hessian.trace"].value
    t = sympy.Symbol("t", real=True)
    close = bc.Theorem(id="test.trace_below", title="tr H below a nearby constant", lhs=t,
                       rhs=sympy.Float(exact * 1.1), symbols={t: "hessian.trace"},
                       source="test", slack="ratio")
    bc.register(close, replace=True)
    try:
        loose = bc.Budget(max_dense_params=10, trace_rel_half_width=0.2,
                          trace_method="hutchinson")
        once = bc.verify(s, [close.id], budget=bc.Budget(**{**vars(loose),
                                                            "max_refinements": 0}))
        assert once[close.id].verdict == bc.Verdict.INCONCLUSIVE
        assert once[close.id].quantities["hessian.trace"].kind == "statistical"
        refined = bc.verify(s, [close.id], budget=loose)[close.id]
        assert refined.verdict == bc.Verdict.HOLDS, refined.reason
        assert "refinement" in refined.reason
        assert refined.quantities["hessian.trace"].contains(exact)
    finally:
        bc.unregister(close.id)


def test_exact_inputs_are_not_refined():
    res = bc.verify(subject(), ["hessian.ws_lambda_max"])["hessian.ws_lambda_max"]
    assert res.verdict == bc.Verdict.HOLDS and "refinement" not in res.reason
