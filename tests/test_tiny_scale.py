"""Hessians near float64's underflow range (entries ~1e-212: squares underflow). Found by
`boundcheck falsify`: a bias-free Linear(3, 2) under cross-entropy at large logits gave
λ_max by Lanczos 1/2000 of the truth (β = 0: torch's vector norm squares without scaling)
and s² = 0 "exact" from ‖H‖_F²/P − m², so true Wolkowicz–Styan bounds were VIOLATED."""

import math

import pytest
import torch

import boundcheck as bc
from boundcheck.engines.curvature import SymmetricMatrixOperator
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue

SCALE = 1e-212


def tiny_matrix(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    lam = torch.tensor([6.0, 1e-16, -2e-16, 3e-16, 0.0, 1e-17], dtype=torch.float64)
    return (q * lam) @ q.T * SCALE


@pytest.mark.parametrize("seed", range(4))
def test_lanczos_finds_lambda_max_of_a_tiny_rank_one_matrix(seed):
    a = tiny_matrix(seed)
    for which, truth in (("largest", 6.0 * SCALE), ("smallest", None)):
        r = extreme_eigenvalue(SymmetricMatrixOperator(a), which, rel_tol=1e-6, seed=seed)
        if truth is not None:
            assert r.lower <= truth <= r.upper, r
            assert math.isclose(r.value, truth, rel_tol=1e-6)
        assert r.details.get("rescaled_by", 1.0) > 1.0


@pytest.mark.parametrize("route", ["auto", "interval", "exact"])
def test_wolkowicz_styan_bounds_are_never_violated_at_tiny_scale(route):
    subject = bc.MatrixSubject(tiny_matrix(0))
    for thm in ("hessian.ws_lambda_max", "hessian.ws_lambda_max_lower", "hessian.ws_lambda_min",
                "hessian.ws_lambda_min_upper"):
        r = bc.verify(subject, [thm], budget=bc.Budget(route=route))[thm]
        assert r.verdict != bc.Verdict.VIOLATED, (thm, r.reason)


def test_linear_cross_entropy_at_tiny_curvature():
    """The instance the falsifier found, rebuilt: a bias-free Linear(3, 2) with huge logits."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[80.0, -30.0, 20.0], [-80.0, 30.0, -20.0]]))
    x = torch.tensor([[3.0, 1.0, 0.5], [2.5, -0.2, 1.0]], dtype=torch.float32)
    y = torch.tensor([0, 0])
    subject = bc.Subject(net, (x, y), "cross_entropy")
    for route in ("auto", "interval"):
        res = bc.verify(subject, ["hessian.ws_lambda_max_lower", "hessian.ws_lambda_min"],
                        budget=bc.Budget(route=route))
        for r in res.results:
            assert r.verdict != bc.Verdict.VIOLATED, (route, r.theorem_id, r.reason)


def test_matrix_free_squares_never_claim_zero_where_they_underflow():
    """At ~1e-191 curvature ‖Hv‖² underflows to 0 in every probe; the matrix-free ‖H‖_F² and s²
    must still hold the truth (~1e-380, which float64 cannot even hold), not read [0, 0]: a
    zero spread made the λ_min bound VIOLATED on a true instance."""
    net = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[80.0, -30.0, 20.0], [-80.0, 30.0, -20.0]]))
    x = torch.tensor([[3.0, 1.0, 0.5], [2.5, -0.2, 1.0]], dtype=torch.float32)
    subject = bc.Subject(net, (x, torch.tensor([0, 0])), "cross_entropy")
    est = bc.measure(subject, ["hessian.fro2", "hessian.eigenvalue_variance", "hessian.trace"],
                     budget=bc.Budget(route="interval"))
    assert est["hessian.trace"].lower > 0  # the curvature is there
    for name in ("hessian.fro2", "hessian.eigenvalue_variance"):
        assert est[name].upper > 0, (name, est[name])
