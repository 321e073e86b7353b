"""The finite-difference trace (THEOREMS.md T9(b)): no Hessian-vector products, an interval
``T̄ ± (c·s/√M + β)`` whose coverage of the exact trace (dense float64 Hessian at the same
parameters) is counted over seeds, for a random and a rank-one Hessian, in float64 and
float32. A coverage test passes when the misses are at most the 99.9% quantile of
Binomial(N, 1 − confidence)."""

import math

import pytest
import scipy.stats
import torch
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import dense_hessian
from boundcheck.engines.finite_difference_trace import (
    finite_difference_trace,
    has_kinks,
    step_rule,
    subject_evaluator,
)
from boundcheck.quantities import Budget


def subject_pair(kind: str, seed: int, dtype: torch.dtype):
    """A subject in ``dtype`` and the exact trace of its Hessian (float64, same θ).

    rank_one: a bias-free linear model on one sample with ½-sum MSE, H = x xᵀ;
    random: a tanh MLP with cross-entropy."""
    g = torch.Generator().manual_seed(seed)
    if kind == "rank_one":
        net = nn.Linear(20, 1, bias=False)
        x, y, loss = torch.randn(1, 20, generator=g), torch.randn(1, 1, generator=g), "mse"
    else:
        net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        x, y = torch.randn(30, 5, generator=g), torch.randint(0, 3, (30,), generator=g)
        loss = "cross_entropy"
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=g))
    s = bc.Subject(net, (x, y), loss, dtype=dtype)
    ref = bc.Subject(net, (x, y), loss)
    with torch.no_grad():
        for p, q in zip(ref.params, s.params, strict=True):
            p.copy_(q.double())  # the float32 parameters, exactly
    return s, float(torch.trace(dense_hessian(ref)))


def misses(kind: str, dtype: torch.dtype, seeds: range, m: int, confidence: float) -> int:
    out = 0
    for seed in seeds:
        s, exact = subject_pair(kind, seed, dtype)
        evaluate, theta = subject_evaluator(s)
        r = finite_difference_trace(evaluate, theta, num_directions=m, confidence=confidence,
                                    seed=10_000 + seed)
        out += not r.lower <= exact <= r.upper
    return out


def allowed(n: int, confidence: float) -> int:
    return int(scipy.stats.binom.ppf(0.999, n, 1.0 - confidence))


CASES = [(k, d) for k in ("random", "rank_one") for d in (torch.float64, torch.float32)]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "dtype"), CASES)
def test_coverage_fast(kind, dtype):
    n = 40
    assert misses(kind, dtype, range(n), 50, 0.9) <= allowed(n, 0.9)


@pytest.mark.slow
@pytest.mark.parametrize("confidence", [0.95, 0.99])
@pytest.mark.parametrize(("kind", "dtype"), CASES)
def test_coverage_over_200_seeds(kind, dtype, confidence):
    n = 200
    assert misses(kind, dtype, range(1000, 1000 + n), 50, confidence) <= allowed(n, confidence)


def test_step_rule_and_kinks():
    theta = torch.full((100,), 0.5, dtype=torch.float64)  # ‖θ‖ = 5
    assert step_rule(theta) == pytest.approx(2.0**-13.25 * 5 / 10)
    assert step_rule(torch.zeros(4, dtype=torch.float32)) == pytest.approx(2.0**-6 / 2)
    with pytest.raises(ValueError):
        step_rule(torch.zeros(3, dtype=torch.float16))
    assert has_kinks(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    assert not has_kinks(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))


def test_piecewise_linear_never_steps_beyond_the_rule():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    s = bc.Subject(net, (torch.randn(20, 4, generator=g), torch.randint(0, 2, (20,),
                                                                        generator=g)))
    est = bc.measure(s, ["hessian.trace_finite_difference"], budget=Budget(
        fd_trace_directions=20))["hessian.trace_finite_difference"]
    d = est.details
    assert d["piecewise_linear"] and d["check_epsilon"] == pytest.approx(d["epsilon_rule"])
    assert d["epsilon"] == pytest.approx(d["epsilon_rule"] / 2)


def test_as_hessian_trace_by_another_method():
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    s = bc.Subject(net, (torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,),
                                                                        generator=g)))
    exact = float(torch.trace(dense_hessian(s)))
    budget = Budget(trace_method="finite_difference", fd_trace_directions=100)
    est = bc.measure(s, ["hessian.trace", "hessian.trace_finite_difference"], budget=budget,
                     seed=4)
    t, fd = est["hessian.trace"], est["hessian.trace_finite_difference"]
    assert t.kind == "statistical" and t.value == fd.value and t.contains(exact)
    assert t.details["loss_evaluations"] == 401 and t.details["critical_value"] > 2.0
    assert math.isclose(t.half_width, t.details["critical_value"] * t.details["sample_sd"] / 10
                        + t.details["beta_rounding"] + t.details["beta_truncation"],
                        rel_tol=1e-9)
    assert Budget(fd_trace_directions=50).tightened().fd_trace_directions == 200


def test_needs_a_loss_and_enough_directions():
    m = bc.MatrixSubject(torch.eye(3).numpy())
    r = bc.verify(m, ["hessian.ws_lambda_max"],
                  budget=Budget(trace_method="finite_difference"))
    assert r["hessian.ws_lambda_max"].verdict == "NOT_APPLICABLE"
    s, _ = subject_pair("random", 0, torch.float64)
    evaluate, theta = subject_evaluator(s)
    with pytest.raises(ValueError, match="at least"):
        finite_difference_trace(evaluate, theta, num_directions=5, confidence=0.9, seed=0)
