"""Hessian-vector products in a working precision (float32, bfloat16) under float64 estimators:
the calibrated error model (boundcheck.engines.product_error) against float64 products, and the
λ_max / λ_min / tr H intervals built on such products against the float64 dense truth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import boundcheck as bc
from boundcheck.core.subject import InvalidSubjectError
from boundcheck.engines.curvature import dense_hessian, hessian_operator
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue
from boundcheck.engines.estimators.trace import hutchinson_trace, squared_frobenius
from boundcheck.engines.working_precision import WorkingPrecisionOperator, float64_products
from boundcheck.quantities import Budget, Context
from boundcheck.quantities.ggn import hessian_operator_of

QUANTITIES = ("hessian.lambda_max", "hessian.lambda_min", "hessian.trace")


def _subject(kind: str, loss: str, seed: int, product_dtype, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if kind == "mlp":  # 8→12→4, tanh: 160 parameters (R-operator products)
        net = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4))
        x = torch.randn(32, 8, generator=g)
    else:  # conv 1→3 (3×3) on 5×5, tanh, linear 27→4: 142 parameters (autograd products)
        net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(27, 4))
        x = torch.randn(32, 1, 5, 5, generator=g)
    y = (torch.randint(0, 4, (32,), generator=g) if loss == "cross_entropy"
         else torch.randn(32, 4, generator=g))
    return bc.Subject(net, (x, y), loss, product_dtype=product_dtype, device=device)


def _truth(subject) -> dict[str, float]:
    h = dense_hessian(subject)
    ev = torch.linalg.eigvalsh(0.5 * (h + h.T)).cpu()
    return {"hessian.lambda_max": float(ev[-1]), "hessian.lambda_min": float(ev[0]),
            "hessian.trace": float(ev.sum())}


def _measure(subject, seed: int) -> dict:
    budget = Budget(max_dense_params=0, trace_method="hutchinson", trace_rel_half_width=0.2,
                    lanczos_rel_tol=1e-4)
    ctx = Context(subject, 0.99, seed, budget)
    return {q: ctx.get(q) for q in QUANTITIES}


def _misses(kind: str, loss: str, dtype, seeds, device: str = "cpu") -> tuple[int, int]:
    misses = total = 0
    for seed in seeds:
        s = _subject(kind, loss, seed, dtype, device)
        truth = _truth(s)
        for q, est in _measure(s, seed).items():
            total += 1
            misses += not est.lower <= truth[q] <= est.upper
            assert f"{str(dtype).replace('torch.', '')} products" in est.method
    return misses, total


@pytest.mark.parametrize(("kind", "loss", "dtype"), [
    ("mlp", "cross_entropy", torch.float32), ("cnn", "mse", torch.float32),
    ("cnn", "cross_entropy", torch.bfloat16)])
def test_intervals_contain_the_float64_truth(kind, loss, dtype):
    misses, total = _misses(kind, loss, dtype, range(1))
    assert misses == 0, f"{misses} of {total} intervals missed the dense truth"


@pytest.mark.slow
def test_intervals_contain_the_float64_truth_over_many_seeds():
    """Nominal 99% per interval (the eigenvalue ones are nearly certified in practice): over
    8 configurations × 6 seeds × 3 quantities = 144 intervals, at most 3 misses (P(Bin(144,
    0.01) > 3) ≈ 0.06; 0 were seen)."""
    misses = total = 0
    for kind in ("mlp", "cnn"):
        for loss in ("cross_entropy", "mse"):
            for dtype in (torch.float32, torch.bfloat16):
                m, t = _misses(kind, loss, dtype, range(100, 106))
                misses, total = misses + m, total + t
    assert total == 144 and misses <= 3, f"{misses} of {total} missed"


def _ops(kind: str, loss: str, dtype, seed: int = 0):
    s = _subject(kind, loss, seed, dtype)
    op = hessian_operator_of_subject(s)
    return s, op, hessian_operator(s)


def hessian_operator_of_subject(subject):
    return hessian_operator_of(Context(subject, 0.99, 0, Budget(max_dense_params=0)))


@pytest.mark.parametrize(("kind", "loss", "dtype"), [
    ("mlp", "cross_entropy", torch.float32), ("cnn", "mse", torch.float32),
    ("cnn", "cross_entropy", torch.bfloat16), ("mlp", "mse", torch.bfloat16)])
def test_error_model_bounds_fresh_products(kind, loss, dtype):
    """ε bounds ‖H̃v − Hv‖/‖v‖ and η bounds |vᵀ(H̃ − H)v|/‖v‖² on ≥ 99% of fresh vectors
    (Rademacher, Gaussian, unit, sparse, the top eigenvector); 0 exceedances were seen."""
    s, op, exact = _ops(kind, loss, dtype)
    assert isinstance(op, WorkingPrecisionOperator)
    model = op.product_error
    assert model.dtype == str(dtype).replace("torch.", "") and model.vectors == 8
    assert model.measured_norm > 0 and model.quadratic <= model.norm
    reference = float64_products(op)  # what the moments μ_j use
    assert reference.dtype == torch.float64 and not isinstance(reference, type(op))
    g = torch.Generator().manual_seed(7)
    n = 60
    vs = [torch.randint(0, 2, (n, s.num_params), generator=g).double() * 2 - 1,
          torch.randn(n, s.num_params, generator=g, dtype=torch.float64)]
    vs.append(vs[1] / vs[1].norm(dim=1, keepdim=True) * 1e-3)
    vs.append(vs[1] * (torch.rand(n, s.num_params, generator=g) < 0.05))
    h = dense_hessian(s)
    vs.append(torch.linalg.eigh(0.5 * (h + h.T))[1][:, -4:].T.contiguous())
    over_norm = over_quad = trials = quad_trials = 0
    for k, v in enumerate(vs):
        v = v[v.norm(dim=1) > 0]
        diff = op.matmat(v) - exact.matmat(v)
        sq = (v * v).sum(dim=1)
        over_norm += int((diff.norm(dim=1) > model.norm * sq.sqrt()).sum())
        trials += len(v)
        if k == 0:  # the probe allowance is for Rademacher probes
            over_quad += int(((v * diff).sum(dim=1).abs() > model.quadratic * sq).sum())
            quad_trials += len(v)
    assert over_norm <= 0.01 * trials, f"ε exceeded on {over_norm} of {trials} vectors"
    assert over_quad <= 0.01 * quad_trials, f"η exceeded on {over_quad} of {quad_trials}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_same_probes_differ_by_at_most_the_allowance_and_widen_by_it(dtype):
    """With the same seed and probe count, float64 and working-precision Hutchinson use the
    same probes: the means differ by the products' mean error, which the allowance (η·P per
    probe) must bound, and the half-width grows by about that allowance."""
    s = _subject("cnn", "cross_entropy", 3, dtype)
    op = hessian_operator_of_subject(s)
    common = {"rel_half_width": 1e-9, "max_probes": 80, "seed": 3}
    t64 = hutchinson_trace(hessian_operator(s), **common)
    tw = hutchinson_trace(op, **common)
    assert tw.details["samples"] == t64.details["samples"] == 50
    allowance = op.product_error.quadratic * s.num_params
    assert abs(tw.value - t64.value) <= allowance
    extra = tw.half_width - t64.half_width
    assert 0.5 * allowance <= extra <= 1.5 * allowance + 0.1 * t64.half_width
    assert tw.details["products"] == f"{str(dtype).replace('torch.', '')} products"
    assert tw.details["calibration_products"] == 16
    f64 = squared_frobenius(hessian_operator(s), **common)
    fw = squared_frobenius(op, **common)
    e = op.product_error.norm
    root_p = s.num_params**0.5  # ‖v‖ of a Rademacher probe; mean ‖H̃v‖ ≤ √(mean ‖H̃v‖²)
    bound = e * root_p * (2 * fw.value**0.5 + e * root_p)
    assert abs(fw.value - f64.value) <= bound and fw.half_width > f64.half_width
    assert "products" in fw.method
    lw = extreme_eigenvalue(op, rel_tol=1e-4, seed=3)
    l64 = extreme_eigenvalue(hessian_operator(s), rel_tol=1e-4, seed=3)
    assert lw.upper - lw.lower >= 2 * op.product_error.norm + (l64.upper - l64.lower) / 10


@pytest.mark.parametrize("method", ["hutchpp", "control_variate"])
def test_other_trace_estimators_carry_the_allowance(method):
    s = _subject("cnn", "mse", 4, torch.float32)
    truth = _truth(s)["hessian.trace"]
    budget = Budget(max_dense_params=0, trace_method=method, trace_rel_half_width=0.2)
    est = Context(s, 0.99, 4, budget).get("hessian.trace")
    assert est.lower <= truth <= est.upper and est.method.endswith("float32 products")
    assert est.details["product_error_norm"] > 0


def test_float64_products_are_unchanged():
    a = _subject("cnn", "mse", 5, None)
    assert _subject("cnn", "mse", 5, torch.float64).product_dtype == torch.float64
    b = _subject("cnn", "mse", 5, "float64")
    assert b.product_dtype == torch.float64 and b.describe()["product_dtype"] == "float64"
    assert not isinstance(hessian_operator_of_subject(b), WorkingPrecisionOperator)
    ea, eb = _measure(a, 5), _measure(b, 5)
    for q in QUANTITIES:
        assert (ea[q].lower, ea[q].upper) == (eb[q].lower, eb[q].upper)
        assert "products" not in ea[q].details and "float64" not in ea[q].method


@pytest.mark.parametrize(("bad", "match"), [
    (torch.int32, "product_dtype must be one of"), ("float16", "use bfloat16"),
    (torch.float16, "use bfloat16"), ("double precision", "product_dtype must be one of"),
    (32, "product_dtype must be one of")])
def test_bad_product_dtype_is_refused(bad, match):
    with pytest.raises(InvalidSubjectError, match=match):
        _subject("mlp", "mse", 0, bad)


def test_product_dtype_needs_a_float64_subject():
    net = nn.Linear(3, 2)
    with pytest.raises(InvalidSubjectError, match="needs dtype=torch.float64"):
        bc.Subject(net, (torch.randn(4, 3), torch.randn(4, 2)), "mse", dtype=torch.float32,
                   product_dtype="float64")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_float32_products_contain_the_truth():
    """The CPU tests' code path on CUDA (the wrapper and the estimators are device-agnostic)."""
    for kind, loss in (("mlp", "cross_entropy"), ("cnn", "mse")):
        misses, total = _misses(kind, loss, torch.float32, range(3), device="cuda")
        assert misses == 0, f"{misses} of {total} intervals missed on CUDA"
