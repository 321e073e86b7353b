"""The block-diagonal trace estimator and the exact last-layer block trace
(boundcheck.engines.estimators.block_trace, boundcheck.engines.last_layer_trace), against
dense Hessians in float64."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import binom
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import SymmetricMatrixOperator, dense_hessian
from boundcheck.engines.estimators.block_trace import block_hutchinson_trace
from boundcheck.engines.last_layer_trace import last_layer_trace, module_groups
from boundcheck.engines.layer_probes import probed_modules, samples_independent
from boundcheck.harness.models import mlp
from boundcheck.quantities import Budget, Context, NotApplicableError
from boundcheck.quantities.hessian import matrix_free_trace


def tiny_cnn(seed: int, n: int = 16) -> bc.Subject:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 5), nn.Tanh(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return bc.Subject(net, (x, y))


def small_mlp(seed: int) -> bc.Subject:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    return bc.Subject(mlp([5, 12, 12, 3], "tanh", seed=seed).double(), (x, y))


def dense(subject: bc.Subject) -> torch.Tensor:
    h = dense_hessian(subject)
    return (h + h.T) / 2


@pytest.mark.parametrize("make", [tiny_cnn, small_mlp])
def test_last_layer_block_trace_equals_the_dense_block(make):
    subject = make(3)
    h = dense(subject)
    last = last_layer_trace(subject)
    assert not isinstance(last, str)
    block = float(torch.diagonal(h)[last.indices].sum())
    assert abs(last.value - block) <= last.abs_error + 1e-13 * abs(block)
    assert 0.0 < last.abs_error < 1e-10 * abs(block)
    # the groups partition every other coordinate, one group per module
    groups = module_groups(subject, last.indices)
    joined = torch.sort(torch.cat([*groups, last.indices])).values
    assert torch.equal(joined, torch.arange(subject.num_params))
    assert len(groups) == len(module_groups(subject)) - 1


def test_last_layer_trace_refuses_a_net_that_does_not_end_in_a_linear_layer():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g)
    y = torch.randint(0, 3, (10,), generator=g)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    reason = last_layer_trace(bc.Subject(net, (x, y)))
    assert isinstance(reason, str) and "last operation" in reason
    tied = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    tied[2].weight = tied[0].weight
    reason = last_layer_trace(bc.Subject(tied, (x, y % 4)))
    assert isinstance(reason, str) and "shared" in reason


def test_block_estimator_on_an_explicit_matrix_sums_the_diagonal_blocks():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 300, generator=g, dtype=torch.float64)
    a = a + a.T + 20.0 * torch.eye(300, dtype=torch.float64)
    op = SymmetricMatrixOperator(a)
    groups = [torch.arange(0, 120), torch.arange(120, 250)]
    truth = float(torch.diagonal(a)[:250].sum()) + 7.0
    est = block_hutchinson_trace(op, groups, 7.0, 0.0, rel_half_width=0.5, max_probes=400,
                                 seed=2)
    assert est.kind == "statistical" and est.contains(truth)
    assert est.details["groups"] == 2 and est.details["matvecs"] % 2 == 0
    # exhaustive when cheaper: every sampled coordinate, exact
    exact = block_hutchinson_trace(op, groups, 7.0, 0.0, rel_half_width=1e-6,
                                   max_probes=10**6, seed=2)
    assert exact.kind == "exact" and exact.contains(truth)
    assert abs(exact.value - truth) < 1e-10


def _block_context(subject, seed: int, width: float, groups: int) -> Context:
    # max_probes: the pilot (30 samples) plus the 50-sample minimum, so every run samples
    budget = Budget(max_dense_params=0, trace_method="block", trace_rel_half_width=width,
                    max_probes=80 * groups)
    return Context(subject, confidence=0.99, seed=seed, budget=budget)


@pytest.mark.parametrize("make", [tiny_cnn, small_mlp])
def test_block_trace_contains_the_dense_trace(make):
    subject = make(5)
    truth = float(torch.diagonal(dense(subject)).sum())
    k = len(module_groups(subject)) - 1
    est = matrix_free_trace(_block_context(subject, 0, 0.05, k))
    assert est.kind == "statistical" and est.contains(truth)
    assert est.details["exact_block"] and est.details["groups"] == k
    assert len(est.details["per_sample_layers"]) == k  # every other layer is linear


class MixesSamples(nn.Module):
    def forward(self, x):
        return x - x.mean(dim=0, keepdim=True)


def test_per_sample_probes_need_independent_samples():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g)
    y = torch.randint(0, 3, (10,), generator=g)
    mixed = bc.Subject(nn.Sequential(nn.Linear(4, 5), MixesSamples(), nn.Linear(5, 3)), (x, y))
    assert not samples_independent(mixed)
    assert samples_independent(bc.Subject(nn.Sequential(nn.Linear(4, 3)), (x, y)))
    assert [n for n, _ in probed_modules(mixed, {"2"})] == ["0"]


def test_auto_compares_the_block_estimator():
    subject = tiny_cnn(4)
    est = matrix_free_trace(Context(subject, budget=Budget(max_dense_params=0,
                                                           trace_rel_half_width=0.05,
                                                           max_probes=400)))
    costs = est.details["pilot_var_per_product"]
    assert set(costs) == {"hutchinson", "control_variate", "block"}
    assert est.details["selected"] == min(costs, key=costs.get)
    assert est.contains(float(torch.diagonal(dense(subject)).sum()))


@pytest.mark.slow
@pytest.mark.parametrize("make, seeds", [(tiny_cnn, 40), (small_mlp, 40)])
def test_block_trace_coverage(make, seeds):
    """Misses over independent seeds against the binomial bound at 99%: more than
    ``k`` misses has probability < 1e-3 if the coverage is at least 99%."""
    subject = make(7)
    truth = float(torch.diagonal(dense(subject)).sum())
    k = len(module_groups(subject)) - 1
    misses = 0
    for seed in range(seeds):
        est = matrix_free_trace(_block_context(subject, seed, 0.01, k))
        assert est.kind == "statistical" and est.details["samples"] >= 50
        misses += not est.contains(truth)
    allowed = int(binom.ppf(1 - 1e-3, seeds, 0.01))
    assert misses <= allowed, (misses, allowed)


def test_block_is_refused_with_working_precision_products_and_auto_skips_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 5), nn.Tanh(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 4, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    subject = bc.Subject(net, (x, y), product_dtype="float32")
    ctx = Context(subject, budget=Budget(max_dense_params=0, trace_method="block"))
    with pytest.raises(NotApplicableError, match="working-precision"):
        matrix_free_trace(ctx)
    est = matrix_free_trace(Context(subject, budget=Budget(max_dense_params=0,
                                                           trace_method="auto")))
    assert est.details["selected"] != "block"
    assert "working-precision" in est.details["block_skipped"]
    truth = float(torch.diagonal(dense(bc.Subject(net, (x, y)))).sum())
    assert est.lower <= truth <= est.upper
