"""Losses: conventions and the saturation-safe cross-entropy."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boundcheck.core.losses import make_loss, stable_cross_entropy


@settings(max_examples=30)
@given(seed=st.integers(0, 10**6), scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_stable_cross_entropy_equals_torch_when_not_saturated(seed, scale):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    ref = torch.nn.functional.cross_entropy(z, y, reduction="none")
    assert torch.allclose(stable_cross_entropy(z, y), ref, rtol=1e-12, atol=1e-14)
    a = make_loss("cross_entropy").output_hessian(z, y)
    p = torch.softmax(z, -1)
    expected = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    assert torch.allclose(a, expected, rtol=1e-10, atol=1e-14)


def test_saturated_gradient_is_accurate():
    # 1 − p_y ≈ 6e-18 < u: autograd through F.cross_entropy rounds p_y to 1
    z = torch.tensor([[40.0, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    (g,) = torch.autograd.grad(stable_cross_entropy(z, y).sum(), z)
    e = torch.exp(torch.tensor([-40.0, -39.0], dtype=torch.float64))
    s = e.sum()
    exact = torch.stack([-s / (1 + s), e[0] / (1 + s), e[1] / (1 + s)])
    assert torch.allclose(g[0], exact, rtol=1e-13, atol=0)
    # the plain route loses digits in 1 − p_y (this shows the test can tell them apart)
    (g_plain,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z, y), z)
    assert abs(float(g_plain[0, 0] / exact[0]) - 1) > 1e-6


def test_mse_conventions():
    z = torch.randn(4, 3, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64)
    half = make_loss("mse")
    assert half.mse_scale == 1.0
    assert torch.allclose(half.per_sample(z, y), 0.5 * ((z - y) ** 2).sum(-1))
    assert make_loss("mse:0.25").mse_scale == 0.25
    a = half.output_hessian(z, y)
    assert torch.allclose(a, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))


@settings(max_examples=30)
@given(seed=st.integers(0, 10**6), scale=st.sampled_from([0.1, 1.0, 10.0, 40.0, 300.0]),
       k=st.integers(1, 6))
def test_closed_form_output_hessians_equal_autograd_of_the_stable_losses(seed, scale, k):
    """Entry by entry, to 1e-13 relative, also deep in saturation (scale 300: margins of
    hundreds, 1 − p_r down to e^{−700}), where autograd of the stable form is accurate."""
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(6, k, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (6,), generator=g)
    targets = torch.randn(6, k, generator=g, dtype=torch.float64)
    for loss, y in ((make_loss("cross_entropy"), labels), (make_loss("mse:0.7"), targets)):
        closed = loss.output_hessian(z, y)
        auto = torch.vmap(torch.func.hessian(autograd_one(loss)))(z, y)
        assert closed.shape == auto.shape == (6, k, k)
        err = (closed - auto).abs()
        assert torch.all(err <= 1e-13 * auto.abs() + 1e-300), float((err / auto.abs()).max())


def autograd_one(loss):
    return lambda zi, yi: loss.per_sample(zi[None], yi[None])[0]


def test_saturated_softmax_hessian_keeps_the_top_diagonal_entry():
    z = torch.tensor([[40.0, 0.0, 1.0]], dtype=torch.float64)
    a = make_loss("cross_entropy").output_hessian(z, torch.tensor([0]))
    s = math.exp(-40.0) + math.exp(-39.0)
    assert math.isclose(float(a[0, 0, 0]), s / (1 + s) ** 2, rel_tol=1e-14)
    p = torch.softmax(z, -1)
    assert abs(float(p[0, 0] - p[0, 0] ** 2) / (s / (1 + s) ** 2) - 1) > 1e-3  # naive form
