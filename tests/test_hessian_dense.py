"""The exact (dense) Hessian path against torch.autograd.functional.hessian in float64."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.core.losses import make_loss
from boundcheck.engines.curvature import HessianOperator
from boundcheck.harness.models import mlp


def reference_hessian(subject: bc.Subject) -> torch.Tensor:
    """Brute force: autograd.functional.hessian of the full-data loss of a flat θ."""
    net = subject.net
    names = subject.param_names
    shapes = [p.shape for p in subject.params]
    sizes = [p.numel() for p in subject.params]
    x, y = subject.x_all, subject.y_all

    def loss(theta):
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        z = torch.func.functional_call(net, params, (x,))
        return subject.loss_fn.per_sample(z, y).mean()

    return torch.autograd.functional.hessian(loss, subject.flat_params())


@settings(max_examples=15)
@given(width=st.integers(1, 6), act=st.sampled_from(["tanh", "relu", "gelu", "softplus"]),
       loss=st.sampled_from(["cross_entropy", "mse", "mse:0.3"]), bias=st.booleans(),
       seed=st.integers(0, 1000))
def test_dense_hessian_matches_autograd(width, act, loss, bias, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    net = mlp([3, width, 3], act, bias=bias, seed=seed)
    y = torch.randint(0, 3, (9,), generator=g) if loss == "cross_entropy" else torch.randn(
        9, 3, generator=g, dtype=torch.float64)
    subject = bc.Subject(net, (x, y), loss)
    h = HessianOperator(subject).dense()
    ref = reference_hessian(subject)
    assert torch.allclose(h, ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max() + 1e-300))


def test_uneven_batches_are_weighted_by_samples():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    net = mlp([4, 5, 3], "tanh", seed=1)
    whole = HessianOperator(bc.Subject(net, (x, y))).dense()
    batches = [(x[:1], y[:1]), (x[1:8], y[1:8]), (x[8:], y[8:])]
    split = HessianOperator(bc.Subject(net, batches)).dense()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
    via_loader = HessianOperator(bc.Subject(net, loader)).dense()
    assert torch.allclose(whole, split, rtol=1e-12, atol=1e-14)
    assert torch.allclose(whole, via_loader, rtol=1e-12, atol=1e-14)


def test_hessian_quantities_enclose_brute_force():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (20,), generator=g)
    subject = bc.Subject(mlp([5, 6, 4], "tanh", seed=3), (x, y))
    ref = reference_hessian(subject).numpy()
    eig = np.linalg.eigvalsh(0.5 * (ref + ref.T))
    p = len(eig)
    m = eig.mean()
    truth = {"hessian.trace": np.trace(ref), "hessian.fro2": float((ref**2).sum()),
             "hessian.lambda_max": eig[-1], "hessian.lambda_min": eig[0],
             "hessian.eigenvalue_mean": m, "hessian.eigenvalue_variance": ((eig - m)**2).mean(),
             "hessian.eigenvalue_std": np.sqrt(((eig - m)**2).mean()), "hessian.dim": p}
    est = bc.measure(subject, list(truth))
    for name, value in truth.items():
        e = est[name]
        assert e.kind == "exact"
        assert e.contains(float(value)), (name, e, value)
        assert abs(e.value - value) <= 1e-8 * max(abs(value), 1e-12), name


def test_mse_scale_is_read_from_torch_loss():
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randn(6, 4, dtype=torch.float64)
    net = mlp([3, 4], "identity", seed=0)
    subject = bc.Subject(net, (x, y), nn.MSELoss())
    assert subject.loss_fn.kind == "mse"
    assert subject.loss_fn.mse_scale == pytest.approx(2 / 4)
    # and its Hessian equals that of the ½-sum convention scaled by c
    h_torch = HessianOperator(subject).dense()
    h_half = HessianOperator(bc.Subject(net, (x, y), "mse")).dense()
    assert torch.allclose(h_torch, 0.5 * h_half, rtol=1e-12)


def test_generic_callable_loss():
    def huber(z, y):
        return nn.functional.huber_loss(z, y, reduction="none").sum(-1).mean()

    loss = make_loss(huber)
    assert loss.kind == "generic"
    z = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    per = loss.per_sample(z, y)
    assert torch.allclose(per.mean(), huber(z, y))
