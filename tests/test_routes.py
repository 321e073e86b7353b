"""Routes (boundcheck.quantities.routes): the cheaper of dense spectrum and Lanczos/Hutchinson
by the cost model, "exact"/"interval" honoured, and verify() going exact only where an
interval left a theorem INCONCLUSIVE."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import sympy
import torch

import boundcheck as bc
from boundcheck.engines.curvature import dense_hessian
from boundcheck.harness.models import mlp
from boundcheck.quantities import Budget, Context, NotAffordableError
from boundcheck.quantities.hessian import dense_spectrum
from boundcheck.quantities.routes import choose, lanczos_steps


def _subject(hidden: int) -> bc.Subject:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (64,), generator=g)
    return bc.Subject(mlp([10, hidden, hidden, 4], "tanh", seed=0), (x, y))


@cache
def small() -> bc.Subject:
    return _subject(8)  # P = 196: the dense spectrum is cheaper than one Lanczos run


@cache
def larger() -> bc.Subject:
    return _subject(24)  # P = 964: Lanczos is, for λ alone


@cache
def spectrum(which: str) -> np.ndarray:
    h = dense_hessian(small() if which == "small" else larger()).numpy()
    return np.linalg.eigvalsh(0.5 * (h + h.T))


def test_the_cost_model_picks_dense_for_a_small_net_and_lanczos_for_a_larger_one():
    assert small().num_params == 196 and larger().num_params == 964
    est = bc.measure(small(), ["hessian.lambda_max"])["hessian.lambda_max"]
    assert est.kind == "exact" and est.details["route"] == "dense"
    assert "cheaper" in est.details["route_reason"] and "Lanczos" in est.details["route_reason"]
    est = bc.measure(larger(), ["hessian.lambda_max"])["hessian.lambda_max"]
    assert est.kind == "statistical" and est.details["route"] == "lanczos"
    assert est.details["route_reason"].startswith("est. Lanczos")


@pytest.mark.parametrize("route", ["auto", "exact", "interval"])
@pytest.mark.parametrize("net", ["small", "larger"])
def test_every_route_encloses_the_dense_truth(route, net):
    subject = small() if net == "small" else larger()
    lam = spectrum(net)
    est = bc.measure(subject, ["hessian.lambda_max", "hessian.lambda_min"],
                     budget=Budget(route=route))
    expected = {"exact": "dense", "interval": "lanczos",
                "auto": "dense" if net == "small" else "lanczos"}[route]
    for name, truth in (("hessian.lambda_max", lam[-1]), ("hessian.lambda_min", lam[0])):
        e = est[name]
        assert e.details["route"] == expected, (name, e.details)
        assert e.kind == ("exact" if expected == "dense" else "statistical")
        assert e.contains(float(truth)), (name, e, truth)
        assert e.half_width <= 1e-5 * abs(lam).max()


def test_one_dense_spectrum_is_weighed_against_every_quantity_it_serves():
    names = ["hessian.lambda_max", "hessian.lambda_min", "hessian.eigenvalue_variance",
             "hessian.moment_3"]
    est = bc.measure(larger(), names)
    lam = spectrum("larger")
    assert all(est[n].details["route"] == "dense" for n in names)
    assert "3 quantities it serves" in est["hessian.lambda_max"].details["route_reason"]
    assert est["hessian.moment_3"].contains(float(np.mean(lam**3)))
    # a quantity that always reads the dense spectrum makes it certain (fro2 without its exact
    # pair form: here the pair form's flop budget is too small)
    ctx = Context(larger(), budget=Budget(max_closed_form_flops=1.0))
    ctx.planned.add("hessian.fro2")
    assert choose(ctx, "hessian.lambda_max").reason == ("hessian.fro2 builds the dense "
                                                       "spectrum anyway")
    # and once built it is free
    ctx = Context(larger())
    ctx.get("hessian.eigenvalue_std")
    assert ctx.get("hessian.lambda_max").details["route_reason"].startswith(
        "the dense spectrum is already built")


def test_interval_never_builds_the_dense_hessian():
    ctx = Context(small(), budget=Budget(route="interval"))
    with pytest.raises(NotAffordableError, match="interval"):
        dense_spectrum(ctx)
    est = ctx.get("hessian.eigenvalue_variance")  # from the exact pair-form ‖H‖_F² and tr H
    assert est.kind == "exact" and "dense" not in est.method
    assert "dense" not in ctx.get("hessian.fro2").method  # exhaustive products, not H
    assert ctx.cached("hessian.dense_spectrum") is None


def test_budget_route_is_validated_and_refinement_goes_exact():
    with pytest.raises(ValueError, match="route"):
        Budget(route="fastest")
    assert Budget().tightened().route == "exact"
    assert Budget(route="interval").tightened().route == "interval"


def test_a_hutchinson_route_that_cannot_reach_its_target_is_no_route():
    capped = Context(larger(), budget=Budget(max_probes=500))  # ±1% needs ~13,000 probes
    choice = choose(capped, "hessian.moment_2")
    assert choice.dense and "needs more than max_probes" in choice.reason
    loose = Context(larger(), budget=Budget(trace_rel_half_width=0.2, max_probes=500))
    assert not choose(loose, "hessian.moment_2").dense  # ±20%: ~35 probes


def test_lanczos_prediction_is_near_the_measured_counts():
    # issue 18: 40–78 products at rel_tol 1e-6 on the benchmark MLPs
    for p in (964, 2058, 73738):
        assert 40 <= lanczos_steps(p, 1e-6, 0.99, 300) <= 80
    assert lanczos_steps(10, 1e-6, 0.99, 300) == 10  # spans the space


def _theorem(bound: float) -> bc.Theorem:
    lam = sympy.Symbol("lambda_max", real=True)
    return bc.Theorem(id="test.routes_lambda_below", title="λ_max below a constant", lhs=lam,
                      rhs=sympy.Float(bound, 30), symbols={lam: "hessian.lambda_max"},
                      source="test", slack="difference")


@pytest.mark.parametrize("rounds", [2, 0])
def test_verify_goes_exact_only_where_the_interval_is_inconclusive(rounds):
    lam = float(spectrum("larger")[-1])
    # 10 Lanczos steps a run leave an interval wider than the dense bracket (at 300 the
    # interval is the narrower one: ±1e-11 against the layer-block rounding bound's ±2e-11)
    budget = Budget(max_refinements=rounds, lanczos_max_iter=10)
    # the interval verify's first round measures (confidence share 6/π² of 1 − 0.99, seed 0)
    first = 1 - 0.01 * (6 / np.pi**2 if rounds else 1)
    interval = Context(larger(), confidence=first, budget=budget).get("hessian.lambda_max")
    assert interval.details["route"] == "lanczos"
    dense = bc.measure(larger(), ["hessian.lambda_max"],
                       budget=Budget(route="exact"))["hessian.lambda_max"]
    assert interval.upper - lam > 10 * dense.half_width
    tight = _theorem(lam + (interval.upper - lam) / 2)  # inside the interval, above the dense
    bc.register(tight, replace=True)
    try:
        res = bc.verify(larger(), [tight.id], budget=budget)[tight.id]
    finally:
        bc.unregister(tight.id)
    est = res.quantities["hessian.lambda_max"]
    if rounds == 0:
        assert res.verdict == bc.Verdict.INCONCLUSIVE and est.details["route"] == "lanczos"
        return
    assert res.verdict == bc.Verdict.HOLDS and "after 1 refinement" in res.reason
    assert est.kind == "exact" and est.details["route"] == "dense"
    loose = _theorem(2 * lam)
    bc.register(loose, replace=True)
    try:
        res = bc.verify(larger(), [loose.id], budget=Budget(max_refinements=rounds))[loose.id]
    finally:
        bc.unregister(loose.id)
    assert res.verdict == bc.Verdict.HOLDS and "refinement" not in res.reason
    assert res.quantities["hessian.lambda_max"].details["route"] == "lanczos"


def test_matrix_subjects_are_routed_and_planted_violations_found_on_every_route():
    a = torch.diag(torch.linspace(-1.0, 3.0, 400, dtype=torch.float64))
    a[0, 1] = a[1, 0] = 0.5
    truth = float(torch.linalg.eigvalsh(a)[-1])
    for route in ("auto", "exact", "interval"):
        est = bc.measure(bc.MatrixSubject(a), ["hessian.lambda_max"],
                         budget=Budget(route=route))["hessian.lambda_max"]
        assert est.contains(truth) and est.details["route"] in ("dense", "lanczos")
    violated = _theorem(float(spectrum("larger")[-1]) * (1 - 1e-3))
    bc.register(violated, replace=True)
    try:
        for route in ("auto", "exact", "interval"):
            res = bc.verify(larger(), [violated.id], budget=Budget(route=route))[violated.id]
            assert res.verdict == bc.Verdict.VIOLATED, (route, res.reason)
    finally:
        bc.unregister(violated.id)


class _Skip(torch.nn.Module):
    """Not a sequential MLP: traces go through the dense diagonal or estimators."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.outer = torch.nn.Linear(6, 6), torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.outer(torch.tanh(self.inner(x)) + x)


def test_interval_route_never_labels_an_estimate_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    subject = bc.Subject(_Skip(), (x, y))
    names = ["hessian.trace", "residual.trace", "hessian.lambda_max"]
    exact = bc.measure(subject, names, budget=Budget(route="exact"))
    budget = Budget(route="interval", trace_rel_half_width=0.05, max_probes=20)
    est = bc.measure(subject, names, budget=budget)
    for name in names:
        assert exact[name].kind == "exact"
        assert est[name].kind == "statistical", (name, est[name].method)
        assert est[name].contains(exact[name].value), name
