"""hessian.fro2 = ‖H‖_F² = tr H² by the exact pair form (boundcheck.quantities.frobenius) at any
size for sequential smooth-σ cross-entropy nets, against the float64 autograd Hessian; the
route choice (cached dense spectrum, pair form within the flop budget, dense, estimator) and
its reason in the details; μ_2 and s² built on it beyond the dense budget."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.quantities.registry import Budget

ACTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus, "gelu": nn.GELU}
NO_DENSE = Budget(max_dense_params=0)  # the pair form (or the estimator) at every size


def mlp(sizes, act, bias=True, seed=0, relu=False):
    torch.manual_seed(seed)
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU() if relu else ACTS[act]())
    return nn.Sequential(*mods).double()


def subject(net, n, seed=0, loss="cross_entropy"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, net[0].in_features, generator=g, dtype=torch.float64)
    k = net[-1].out_features
    y = torch.randint(0, k, (n,), generator=g)
    if loss != "cross_entropy":
        y = torch.randn(n, k, generator=g, dtype=torch.float64)
    return bc.Subject(net, (x, y), loss)


def dense_hessian(s) -> torch.Tensor:
    """The float64 Hessian of the mean loss by torch.autograd.functional.hessian."""
    net = s.net
    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    x, y = s.x_all, s.y_all

    def loss(theta):
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = math.prod(shape)
            params[name] = theta[offset:offset + size].view(shape)
            offset += size
        out = torch.func.functional_call(net, params, (x,))
        if s.loss_fn.kind == "cross_entropy":
            return nn.functional.cross_entropy(out, y)
        return 0.5 * ((out - y) ** 2).sum(1).mean()

    return torch.autograd.functional.hessian(loss, flat)


@settings(max_examples=10, deadline=None)
@given(depth=st.integers(1, 3), widths=st.lists(st.integers(1, 6), min_size=4, max_size=4),
       k=st.integers(2, 4), n=st.integers(1, 24), act=st.sampled_from(sorted(ACTS)),
       bias=st.booleans(), seed=st.integers(0, 10_000))
def test_pair_form_contains_the_dense_value(depth, widths, k, n, act, bias, seed):
    s = subject(mlp([widths[0], *widths[1:depth + 1], k], act, bias, seed), n, seed)
    h = dense_hessian(s)
    truth = float((h * h).sum())
    est = bc.measure(s, ["hessian.fro2"], budget=NO_DENSE)["hessian.fro2"]
    assert est.kind == "exact" and est.details["route"] == "pair form"
    assert est.lower <= truth <= est.upper or math.isclose(est.value, truth, rel_tol=1e-12)
    assert abs(est.value - truth) <= 1e-10 * truth + 1e-300
    assert est.half_width <= 1e-6 * truth + 1e-300  # the rounding bar is honest, not absurd


@pytest.mark.parametrize(("act", "depth"), [("tanh", 1), ("sigmoid", 2), ("softplus", 3),
                                             ("gelu", 2)])
def test_above_max_dense_params_the_pair_form_is_used(act, depth):
    """P above a small max_dense_params: the new route, its interval around the dense truth,
    and the estimate's details state the route, the reason and the cost."""
    bias = depth != 2
    s = subject(mlp([5, *([6] * depth), 3], act, bias, seed=depth), 40, seed=depth)
    budget = Budget(max_dense_params=s.num_params - 1)
    est = bc.measure(s, ["hessian.fro2"], budget=budget)["hessian.fro2"]
    h = dense_hessian(s)
    truth = float((h * h).sum())
    assert est.kind == "exact" and est.lower <= truth <= est.upper
    d = est.details
    assert d["route"] == "pair form" and "max_closed_form_flops" in d["reason"]
    assert d["flops"] > 0 and d["seconds"] >= 0


def test_estimator_when_the_flop_budget_is_exceeded():
    s = subject(mlp([4, 5, 3], "tanh"), 30)
    budget = Budget(max_dense_params=0, max_closed_form_flops=1.0, trace_rel_half_width=0.2)
    est = bc.measure(s, ["hessian.fro2"], budget=budget)["hessian.fro2"]
    assert est.details["route"] == "estimator"  # (exhaustive over the basis at this P)
    assert "max_closed_form_flops" in est.details["reason"]
    h = dense_hessian(s)
    assert est.lower <= float((h * h).sum()) <= est.upper  # 99 % interval, fixed seed


def test_other_nets_keep_dense_or_estimator_with_the_reason():
    relu = subject(mlp([4, 5, 3], "tanh", relu=True), 20)
    mse = subject(mlp([4, 5, 3], "tanh"), 20, loss="mse")
    for s, word in ((relu, "ReLU"), (mse, "cross-entropy")):
        est = bc.measure(s, ["hessian.fro2"])["hessian.fro2"]
        assert est.details["route"] == "dense" and word in est.details["reason"]
        h = dense_hessian(s)
        assert est.lower <= float((h * h).sum()) <= est.upper


def test_a_cached_dense_spectrum_is_used():
    s = subject(mlp([4, 5, 3], "softplus"), 20)
    est = bc.measure(s, ["hessian.lambda_max", "hessian.fro2"])["hessian.fro2"]
    assert est.details["route"] == "dense" and "already computed" in est.details["reason"]
    alone = bc.measure(s, ["hessian.fro2"])["hessian.fro2"]  # nothing cached: the pair form
    assert alone.details["route"] == "pair form"
    assert max(est.lower, alone.lower) <= min(est.upper, alone.upper)


def test_second_moment_and_variance_exact_beyond_the_dense_budget():
    s = subject(mlp([4, 6, 6, 3], "gelu"), 25, seed=3)
    est = bc.measure(s, ["hessian.moment_2", "hessian.eigenvalue_variance"], budget=NO_DENSE)
    h = dense_hessian(s)
    p = s.num_params
    mu2 = float((h * h).sum()) / p
    m = float(torch.trace(h)) / p
    var = float(((h - m * torch.eye(p, dtype=h.dtype)) ** 2).sum()) / p
    for name, truth in (("hessian.moment_2", mu2), ("hessian.eigenvalue_variance", var)):
        e = est[name]
        assert e.kind == "exact" and e.lower <= truth <= e.upper, (name, e, truth)
        assert e.half_width <= 1e-8 * truth


def test_spread_does_not_estimate_fro2_only_to_discard_it():
    """Where ‖H‖_F² has no exact route (a ReLU MLP: no pair form; no dense Hessian), s² takes
    the centred estimate at once: an estimated ‖H‖_F² would be thrown away (it cost 702 of
    the 990 s of s² on ResNet-18). The interval still contains the dense truth."""
    from boundcheck.quantities.registry import Context
    s = subject(mlp([20, 40, 40, 3], "tanh", relu=True), 12)  # P = 2,603: probes < P
    ctx = Context(s, budget=Budget(max_dense_params=0, trace_rel_half_width=0.1))
    est = ctx.get("hessian.eigenvalue_variance")
    assert "hessian.fro2" not in ctx.estimates and est.kind == "statistical", est
    h = bc.measure(s, ["hessian.eigenvalue_variance"], budget=Budget(route="exact"))
    truth = h["hessian.eigenvalue_variance"]
    assert truth.kind == "exact" and est.lower <= truth.value <= est.upper
    # a cached ‖H‖_F² is still used when it is exact (the pair form of a smooth net)
    t = subject(mlp([3, 5, 4, 3], "tanh"), 12)
    ctx = Context(t, budget=NO_DENSE)
    assert ctx.get("hessian.eigenvalue_variance").kind == "exact"
    assert ctx.estimates["hessian.fro2"].kind == "exact"
