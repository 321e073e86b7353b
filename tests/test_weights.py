"""Spectral norms (linear exact, convolution bracket) and data geometry against brute force.

The convolution's operator norm is checked against the singular values of its dense matrix,
built with torch.autograd.functional.jacobian on the actual input shape.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.harness.models import mlp
from boundcheck.quantities import Context, NotApplicableError
from boundcheck.quantities.data_geometry import gram_matrix
from boundcheck.quantities.weights import conv_norm_bracket, conv_operator_norm, linear_norm


def dense_conv_norm(module, input_shape):
    x = torch.zeros((1, *input_shape), dtype=torch.float64)
    w = module.weight.detach()
    mat = torch.autograd.functional.jacobian(lambda v: module._conv_forward(v, w, None), x)
    out_numel = mat.shape[:mat.dim() // 2].numel()
    return float(torch.linalg.svdvals(mat.reshape(out_numel, -1))[0])


def make_conv(dims, c_in, c_out, kernel, stride, padding, dilation, groups, mode, seed):
    torch.manual_seed(seed)
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return cls(c_in * groups, c_out * groups, kernel, stride=stride, padding=padding,
               dilation=dilation, groups=groups, padding_mode=mode).double()


@settings(max_examples=40)
@given(dims=st.sampled_from([1, 2, 2, 3]), c_in=st.integers(1, 3), c_out=st.integers(1, 3),
       kernel=st.integers(1, 3), stride=st.integers(1, 3), padding=st.integers(0, 2),
       dilation=st.integers(1, 2), groups=st.integers(1, 2),
       mode=st.sampled_from(["zeros", "zeros", "circular", "reflect", "replicate"]),
       size=st.integers(3, 6), seed=st.integers(0, 10_000))
def test_conv_bracket_contains_dense_operator_norm(dims, c_in, c_out, kernel, stride, padding,
                                                   dilation, groups, mode, size, seed):
    if dims == 3:
        size = min(size, 4)
    if mode == "reflect":
        padding = min(padding, size - 1)
    if (kernel - 1) * dilation + 1 > size + 2 * padding:
        kernel = 1
    conv = make_conv(dims, c_in, c_out, kernel, stride, padding, dilation, groups, mode, seed)
    shape = (c_in * groups, *([size] * dims))
    true = dense_conv_norm(conv, shape)
    est = conv_norm_bracket(conv, shape, steps=200, seed=seed)
    assert est.kind == "certified"
    assert est.lower <= true <= est.upper, (est, true)
    assert est.value == pytest.approx(true, rel=1e-10)
    exact = conv_operator_norm(conv, shape, steps=200, dense_entries=2**22)
    assert exact.kind == "exact"
    assert exact.lower <= true <= exact.upper
    assert exact.value == pytest.approx(true, rel=1e-12)


@pytest.mark.parametrize("dims", [1, 2])
def test_circulant_bound_is_exact_for_pointwise_convolutions(dims):
    conv = make_conv(dims, 3, 4, 1, 1, 0, 1, 1, "zeros", 0)
    shape = (3, *([5] * dims))
    est = conv_norm_bracket(conv, shape, steps=200)
    true = dense_conv_norm(conv, shape)
    assert est.upper == pytest.approx(true, rel=1e-12)
    assert est.width <= 1e-10 * true


@pytest.mark.parametrize(("dims", "size", "rel"), [(1, 150, 1e-5), (2, 24, 1e-10)])
def test_bracket_is_tight_on_large_inputs(dims, size, rel):
    """Large zero-padded inputs: the circulant bound is within 1%; Lanczos converges (slowly
    for a long 1-d signal, whose top singular values cluster)."""
    conv = make_conv(dims, 2, 3, 3, 1, 1, 1, 1, "zeros", 0)
    shape = (2, *([size] * dims))
    est = conv_norm_bracket(conv, shape, steps=200)
    true = dense_conv_norm(conv, shape)
    assert est.lower <= true <= est.upper
    assert est.lower == pytest.approx(true, rel=rel)
    assert est.upper <= 1.01 * true


def test_lanczos_stops_at_its_budget():
    conv = make_conv(2, 2, 3, 3, 1, 1, 1, 1, "zeros", 1)
    est = conv_norm_bracket(conv, (2, 6, 6), steps=2)
    true = dense_conv_norm(conv, (2, 6, 6))
    assert est.lower <= true <= est.upper
    assert "2 steps" in est.method


@settings(max_examples=30)
@given(rows=st.integers(1, 8), cols=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_linear_norm_matches_numpy(rows, cols, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    ref = float(np.linalg.norm(w.numpy(), 2))
    est = linear_norm(w)
    assert est.lower <= ref <= est.upper
    assert est.value == pytest.approx(ref, rel=1e-12)


def test_cnn_weight_norms_and_product():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(3, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    subject = bc.Subject(net, (x, torch.randint(0, 3, (5,))))
    f = subject.net
    truths = [dense_conv_norm(f[0], (1, 6, 6)), dense_conv_norm(f[2], (3, 3, 3)),
              float(np.linalg.norm(f[5].weight.detach().numpy(), 2))]
    for dense_entries, kind in ((2**22, "exact"), (0, "certified")):
        ctx = Context(subject, budget=bc.Budget(max_dense_operator_entries=dense_entries))
        for l, true in enumerate(truths, start=1):
            e = ctx.get(f"layer.{l}.weight_norm")
            assert e.lower <= true <= e.upper
            assert e.value == pytest.approx(true, rel=1e-10)
        prod = ctx.get("network.weight_norm_product")
        assert prod.lower <= math.prod(truths) <= prod.upper
        assert prod.kind == kind


def test_layer_index_out_of_range_is_not_applicable():
    subject = bc.Subject(mlp([2, 3, 2], seed=0), (torch.randn(4, 2), torch.randint(0, 2, (4,))))
    with pytest.raises(NotApplicableError, match="2 affine"):
        Context(subject).get("layer.3.weight_norm")


# -- data geometry ------------------------------------------------------------------------
@settings(max_examples=25)
@given(n=st.integers(2, 12), shape=st.sampled_from([(3,), (1, 2, 2), (5,)]),
       seed=st.integers(0, 10_000))
def test_data_geometry_matches_numpy(n, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 2))
    ctx = Context(bc.Subject(net, (x, torch.randint(0, 2, (n,), generator=gen))))
    xs = x.reshape(n, -1).numpy()
    norms = np.linalg.norm(xs, axis=1)
    cos = xs @ xs.T / np.outer(norms, norms)
    np.fill_diagonal(cos, 0.0)
    refs = {"data.norm_min": norms.min(), "data.norm_max": norms.max(),
            "data.norm_mean": norms.mean(), "data.inv_sq_norm_mean": np.mean(norms**-2.0),
            "data.sq_norm_gmean": float(np.exp(np.mean(np.log(norms**2)))),
            "data.orthogonality": np.abs(cos).max(), "data.num_samples": n,
            "data.dim": xs.shape[1]}
    for name, ref in refs.items():
        e = ctx.get(name)
        assert e.value == pytest.approx(float(ref), rel=1e-8), name
        assert e.lower <= ref <= e.upper, (name, e, ref)
    assert np.allclose(gram_matrix(ctx).numpy(), xs @ xs.T, rtol=1e-12)


def test_orthogonal_data_has_rho_zero_and_zero_sample_is_not_applicable():
    x = torch.eye(4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]
    subject = bc.Subject(nn.Linear(4, 2), (x, torch.randint(0, 2, (4,))))
    assert Context(subject).get("data.orthogonality").upper < 1e-12
    x[2] = 0.0
    zero = bc.Subject(nn.Linear(4, 2), (x, torch.randint(0, 2, (4,))))
    for name in ("data.inv_sq_norm_mean", "data.sq_norm_gmean", "data.orthogonality"):
        with pytest.raises(NotApplicableError, match="zero"):
            Context(zero).get(name)
