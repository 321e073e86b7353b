"""T8 (relative flatness): the identity against κ from its definition with G built densely, for
MSE and cross-entropy; the invariances THEOREMS.md states (and no more); the MLS bound."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.outputs import strategies as bst
from derivations import relative_flatness as t8


@pytest.mark.parametrize("step", t8.DERIVATION.steps, ids=lambda s: s.name)
def test_derivation_step(step):
    step.verify(samples=60)


def dense_ggn(subject: bc.Subject) -> torch.Tensor:
    """G = (1/n) Σ_i J_iᵀ A_i J_i (P×P), J_i from autograd one sample at a time, A_i written out
    (c·I for MSE; diag(p) − ppᵀ for cross-entropy, p in float64 from a non-saturated net)."""
    net, names = subject.net, subject.param_names
    params = dict(net.named_parameters())
    x = subject.x_all
    g = torch.zeros(subject.num_params, subject.num_params, dtype=torch.float64)
    for i in range(subject.n):
        def f(*flat, xi=x[i:i + 1]):
            return torch.func.functional_call(net, dict(zip(names, flat, strict=True)),
                                              (xi,))[0]
        jac = torch.autograd.functional.jacobian(f, tuple(params[k] for k in names))
        j = torch.cat([t.reshape(t.shape[0], -1) for t in jac], dim=1)
        with torch.no_grad():
            z = net(x[i:i + 1])[0]
        if subject.loss_fn.kind == "mse":
            a = subject.loss_fn.mse_scale * torch.eye(z.numel(), dtype=torch.float64)
        else:
            p = torch.softmax(z, 0)
            a = torch.diag(p) - torch.outer(p, p)
        g += j.T @ a @ j
    return g / subject.n


def kappa_by_definition(subject: bc.Subject, g: torch.Tensor, weight_name: str) -> float:
    """Σ_{s,s'} ⟨w_s, w_s'⟩ tr(G_{s,s'}) with explicit loops over the rows s, s' of W."""
    offsets, start = {}, 0
    for name, p in zip(subject.param_names, subject.params, strict=True):
        offsets[name] = (start, p.detach())
        start += p.numel()
    begin, w = offsets[weight_name]
    rows, cols = w.shape
    total = 0.0
    for s in range(rows):
        for t in range(rows):
            block = g[begin + s * cols: begin + (s + 1) * cols,
                      begin + t * cols: begin + (t + 1) * cols]
            total += float(w[s] @ w[t]) * float(torch.trace(block))
    return total


@st.composite
def small_subjects(draw, loss):
    net = draw(bst.mlps((1, 4), (2, 3), depth=(1, 2), width=(1, 5),
                        activations=("tanh", "gelu", "relu", "softplus")))
    d, k = net[0].in_features, net[-1].out_features
    x, y = draw(bst.datasets((1, 6), d, k, targets="classes" if loss == "cross_entropy"
                             else "regression", kinds=("bounded",)))
    return bc.Subject(net, (x, y), loss)


@settings(max_examples=12)
@given(st.sampled_from(["mse", "mse:0.3", "cross_entropy"]).flatmap(small_subjects))
def test_identity_against_the_definition_with_dense_ggn(subject):
    g = dense_ggn(subject)
    layers = [m for m in subject.net if isinstance(m, nn.Linear)]
    names = {id(p): n for n, p in subject.net.named_parameters()}
    ctx = bc.Context(subject)
    for index, layer in enumerate(layers, start=1):
        reference = kappa_by_definition(subject, g, names[id(layer.weight)])
        tol = 1e-10 * max(abs(reference), 1e-300) + 1e-300
        for name in (f"layer.{index}.kappa_ggn", f"layer.{index}.kappa_ggn_identity"):
            est = ctx.get(name)
            assert abs(est.value - reference) <= tol + 1e-12 * abs(reference), (name, est,
                                                                               reference)
            assert est.lower - tol <= reference <= est.upper + tol, (name, est, reference)


# --- invariances -----------------------------------------------------------------------------
def relu_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(),
                         nn.Linear(4, 2)).double()


def _measure(net: nn.Module, x, y) -> dict[str, float]:
    subject = bc.Subject(net, (x, y), "mse")
    names = [f"layer.{i}.kappa_ggn" for i in (1, 2, 3)] + ["hessian.trace"]
    return {k: v.value for k, v in bc.measure(subject, names).items()}


def _data(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(8, 3, generator=gen, dtype=torch.float64),
            torch.randn(8, 2, generator=gen, dtype=torch.float64))


@settings(max_examples=10)
@given(st.integers(0, 10**6), st.sampled_from([1, 2]),
       st.one_of(st.floats(0.2, 0.6), st.floats(1.8, 5.0)))
def test_layer_wise_rescaling_keeps_f_and_kappa_but_not_trace(seed, layer, alpha):
    """(W_l, b_l) → α(W_l, b_l), W_{l+1} → W_{l+1}/α on a ReLU net (l = layer).

    With a dead hidden layer only the last bias has curvature (tr H = K·c, unchanged), so
    such draws are skipped."""
    x, y = _data(seed)
    net = relu_net(seed)
    with torch.no_grad():
        assume(bool((net[:2](x) > 0).any()) and bool((net[:4](x) > 0).any()))
    scaled = relu_net(seed)
    first, second = scaled[2 * (layer - 1)], scaled[2 * layer]
    with torch.no_grad():
        first.weight.mul_(alpha)
        first.bias.mul_(alpha)
        second.weight.div_(alpha)
        assert torch.allclose(net(x), scaled(x), rtol=1e-12, atol=1e-12)
    before, after = _measure(net, x, y), _measure(scaled, x, y)
    for i in (1, 2, 3):
        k = f"layer.{i}.kappa_ggn"
        assert after[k] == pytest.approx(before[k], rel=1e-9, abs=1e-300), k
    assert abs(after["hessian.trace"] - before["hessian.trace"]) > 1e-6 * abs(
        before["hessian.trace"])


@settings(max_examples=10)
@given(st.integers(0, 10**6), st.booleans())
def test_neuron_wise_rescaling_changes_kappa_of_the_successor_only(seed, proportional):
    """Rows of (W_1, b_1) by D, columns of W_2 by D⁻¹: κ(W_1), κ(W_3) stay; κ(W_2) changes
    unless D ∝ I."""
    x, y = _data(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    d = (torch.full((5,), 2.5, dtype=torch.float64) if proportional
         else 0.2 + 4 * torch.rand(5, generator=gen, dtype=torch.float64))
    net, scaled = relu_net(seed), relu_net(seed)
    with torch.no_grad():
        scaled[0].weight.mul_(d[:, None])
        scaled[0].bias.mul_(d)
        scaled[2].weight.div_(d[None, :])
        assert torch.allclose(net(x), scaled(x), rtol=1e-12, atol=1e-12)
    before, after = _measure(net, x, y), _measure(scaled, x, y)
    for i in (1, 3):
        k = f"layer.{i}.kappa_ggn"
        assert after[k] == pytest.approx(before[k], rel=1e-9, abs=1e-300), k
    change = abs(after["layer.2.kappa_ggn"] - before["layer.2.kappa_ggn"]) / max(
        before["layer.2.kappa_ggn"], 1e-300)
    if proportional:
        assert change < 1e-9
    elif before["layer.2.kappa_ggn"] > 0:
        assert change > 1e-6


# --- the bound -------------------------------------------------------------------------------
@settings(max_examples=15)
@given(small_subjects("mse:0.7"))
def test_mls_bound_holds_at_every_dense_layer(subject):
    r = bc.verify(subject, ["relative_flatness.mls"])["relative_flatness.mls"]
    assert r.verdict != bc.Verdict.VIOLATED
    if r.verdict == bc.Verdict.NOT_APPLICABLE:
        assert "zero" in r.reason or "dead" in r.reason
    elif r.verdict == bc.Verdict.INCONCLUSIVE:
        assert "tight within measurement error" in r.reason
    else:
        assert math.isfinite(r.slack.value)
        per_layer = r.quantities["relative_flatness.mls_ratio"].details["layers"]
        assert all(v["upper"] <= 1.0 for v in per_layer.values())


def test_mls_bound_is_not_applicable_for_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=gen), torch.randint(0, 2, (10,), generator=gen)
    r = bc.verify(bc.Subject(relu_net(0), (x, y)), ["relative_flatness.mls"])[
        "relative_flatness.mls"]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE and "not MSE" in r.reason
