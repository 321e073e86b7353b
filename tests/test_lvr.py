"""The finite-perturbation LVR (boundcheck.engines.lvr): exact for linear maps, converging to the
Jacobian form as the noise shrinks, −∞-safe, and with a replicate interval of tested coverage."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.engines.lvr import finite_log_lvr, finite_log_lvr_mean, perturbations_for
from boundcheck.harness.models import mlp


def _jacobian_form(net, x) -> float:
    return bc.measure(bc.Subject(net, (x, torch.zeros(len(x), net(x[:1]).shape[1])), "mse"),
                      ["jacobian.log_lvr"])["jacobian.log_lvr"].value


@settings(max_examples=20)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 10**6),
       st.sampled_from([1e-6, 1e-2, 10.0]))
def test_exact_for_a_linear_map_at_any_noise_scale(dim, k, seed, eps):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(k, dim, generator=gen, dtype=torch.float64)
    x = torch.randn(3, dim, generator=gen, dtype=torch.float64)
    values = finite_log_lvr(lambda v: v @ a.T, x, eps, perturbations_for(dim), gen)
    r = min(k, dim)
    expected = float(torch.log(torch.linalg.svdvals(a)[:r]).sum())
    assert torch.allclose(values, torch.full_like(values, expected), atol=1e-7 * (1 + abs(
        expected)))


@pytest.mark.parametrize("sizes", [[5, 8, 3], [3, 8, 6], [4, 7, 4], [6, 5, 5, 2]])
def test_converges_to_the_jacobian_form(sizes):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, sizes[0], generator=gen, dtype=torch.float64)
    net = mlp(sizes, "tanh", seed=1).double()
    reference = _jacobian_form(net, x)
    errors = [abs(finite_log_lvr_mean(net, x, eps, 0.99, seed=1).value - reference)
              for eps in (1e-1, 1e-3, 1e-5)]
    assert errors[2] < errors[1] < errors[0]
    assert errors[1] < 1e-2 and errors[2] < 1e-4 * (1 + abs(reference))


def test_cnn_converges_too():
    from boundcheck.harness import zoo

    gen = torch.Generator().manual_seed(0)
    net = zoo.build_model({"model": "lenet", "channels": [2], "hidden": [4], "seed": 0},
                          input_shape=(1, 4, 4), output_dim=3).double().eval()
    x = torch.randn(5, 1, 4, 4, generator=gen, dtype=torch.float64)
    reference = _jacobian_form(net, x)
    assert abs(finite_log_lvr_mean(net, x, 1e-6, 0.99, seed=0).value - reference) < 1e-4


def test_rank_deficient_map_goes_to_minus_infinity_without_nan():
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[2].weight[1].zero_()
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    values = [finite_log_lvr_mean(net, x, eps, 0.99, seed=0).value for eps in (1e-2, 1e-4)]
    assert all(v == -math.inf or v < -20 for v in values)
    assert not any(math.isnan(v) for v in values)


def test_interval_coverage_over_seeds():
    """The Student-t replicate interval covers E[log LVR_ε] (estimated from 400 replicates) at
    least at the nominal rate over repeated seeds, at a noise scale where f is visibly
    nonlinear (the estimator then has Monte Carlo error)."""
    gen = torch.Generator().manual_seed(0)
    net = mlp([3, 6, 2], "tanh", seed=2).double()
    x = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    eps, m, confidence = 0.5, 12, 0.9
    reference = finite_log_lvr_mean(net, x, eps, confidence, seed=10**6, perturbations=m,
                                    replicates=400, max_samples=10).value
    trials = 60
    covers = sum(finite_log_lvr_mean(net, x, eps, confidence, seed=s, perturbations=m,
                                     max_samples=10).contains(reference)
                 for s in range(trials))
    # nominal 0.9 · 60 = 54; allow binomial noise (P[Bin(60, 0.9) < 48] ≈ 0.5%)
    assert covers >= 48, covers


def test_registered_quantity_and_budget():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 4, generator=gen), torch.randn(10, 2, generator=gen)
    subject = bc.Subject(mlp([4, 6, 2], "tanh", seed=0), (x, y), "mse")
    est = bc.measure(subject, ["lvr.finite_perturbation", "jacobian.log_lvr"],
                     budget=bc.Budget(lvr_noise_scale=1e-5))
    lvr, jac = est["lvr.finite_perturbation"], est["jacobian.log_lvr"]
    assert lvr.kind == "statistical" and lvr.details["eps"] == 1e-5
    assert abs(lvr.value - jac.value) < 1e-4
