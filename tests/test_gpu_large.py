"""Matrix-free curvature, Jacobian quantities and T12 on convolutional nets and a ViT, on CPU
and CUDA.

Every test runs one body per device: ``cpu`` (without the ``gpu`` mark, so the code path the
GPU takes is exercised on every CI run; the longer ones are marked ``slow``) and ``cuda``
(marked ``gpu``, skipped without a CUDA device). Both measure in float64 and are checked
against a reference computed on the CPU: a dense truth where the net is small (the CNN:
torch.autograd.functional.hessian, eigvalsh, a dense G; input Jacobians by
torch.autograd.functional.jacobian), else the same measurement on the CPU with the same seed
(the tiny ResNet-18: the same Rademacher / Gaussian start vectors, so values agree to
rounding and intervals overlap).
"""

import math

import pytest
import torch
from brute_force import dense_gauss_newton, dense_loss_hessian

import boundcheck as bc
from boundcheck.harness.zoo import build_model
from boundcheck.quantities import Budget

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])
DEVICES = ["cpu", CUDA]

# matrix-free routes throughout (no dense Hessian), the benchmark's tolerances
MATRIX_FREE = Budget(max_dense_params=0, max_refinements=0, lanczos_rel_tol=1e-3,
                     trace_rel_half_width=0.05, max_probes=400)


def _cnn(device):
    """A LeNet-style CNN on 8 random 3×8×8 images (179 parameters)."""
    net = build_model({"model": "lenet", "seed": 0, "channels": [2, 3], "kernel_size": 3,
                       "padding": 1, "hidden": [4], "activation": "tanh"},
                      input_shape=(3, 8, 8), output_dim=3)
    return _subject(net, (3, 8, 8), 8, device)


def _resnet(device):
    """ResNet-18 (CIFAR stem, batch norm in eval mode) at width 1: 2,928 parameters."""
    net = build_model({"model": "resnet18", "seed": 0, "width": 1, "activation": "tanh"},
                      input_shape=(3, 4, 4), output_dim=3)
    return _subject(net, (3, 4, 4), 6, device)


def _vit(device):
    """A ViT (patch embedding, one pre-norm attention block, layer norm, mean-pooled head) on
    6 random 3×4×4 images: 2×2 patches, width 4, two heads (~300 parameters)."""
    net = build_model({"model": "vit", "seed": 0, "patch_size": 2, "dim": 4, "depth": 1,
                       "heads": 2, "mlp_ratio": 1}, input_shape=(3, 4, 4), output_dim=3)
    return _subject(net, (3, 4, 4), 6, device)


def _subject(net, shape, n, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return bc.Subject(net, (x, y), "cross_entropy", device=device, eval_mode=True)


def _contains(est, truth, rel=1e-9):
    slack = rel * max(1.0, abs(truth))
    assert est.lower - slack <= truth <= est.upper + slack, (est, truth)


def _agree(a, b, rel):
    """Two measurements of one quantity: values within ``rel`` and overlapping intervals."""
    assert math.isclose(a.value, b.value, rel_tol=rel, abs_tol=1e-12), (a, b)
    assert a.lower <= b.upper and b.lower <= a.upper, (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_cnn_curvature_intervals_contain_the_dense_truth(device):
    """λ_max, λ_min (Lanczos), tr H, tr H² (Hutchinson) and tr G (per-sample Jacobians) on
    the device, against eigvalsh / traces of torch.func's dense Hessian and a dense G."""
    subject = _cnn(device)
    h = dense_loss_hessian(subject)
    evals = torch.linalg.eigvalsh(h)
    est = bc.measure(subject, ["hessian.lambda_max", "hessian.lambda_min", "hessian.trace",
                               "hessian.fro2", "ggn.trace"], budget=MATRIX_FREE, seed=0)
    _contains(est["hessian.lambda_max"], float(evals[-1]))
    _contains(est["hessian.lambda_min"], float(evals[0]))
    _contains(est["hessian.trace"], float(torch.trace(h)))
    _contains(est["hessian.fro2"], float((h * h).sum()))
    for name in ("hessian.lambda_max", "hessian.lambda_min", "hessian.trace", "hessian.fro2"):
        assert est[name].kind in ("statistical", "certified", "exact"), est[name]
    g = dense_gauss_newton(subject)
    _contains(est["ggn.trace"], float(torch.trace(g)), rel=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_vit_curvature_and_jacobian_intervals_contain_the_dense_truth(device):
    """The transformer path (attention, layer norm, GELU) with the same code: λ_max, λ_min,
    tr H, tr H² and tr G intervals contain the dense values, and the input-Jacobian
    mean ‖J‖_F² torch.autograd.functional.jacobian's."""
    subject = _vit(device)
    h = dense_loss_hessian(subject)
    evals = torch.linalg.eigvalsh(h)
    est = bc.measure(subject, ["hessian.lambda_max", "hessian.lambda_min", "hessian.trace",
                               "hessian.fro2", "ggn.trace", "jacobian.fro2_mean"],
                     budget=MATRIX_FREE, seed=0)
    _contains(est["hessian.lambda_max"], float(evals[-1]))
    _contains(est["hessian.lambda_min"], float(evals[0]))
    _contains(est["hessian.trace"], float(torch.trace(h)))
    _contains(est["hessian.fro2"], float((h * h).sum()))
    _contains(est["ggn.trace"], float(torch.trace(dense_gauss_newton(subject))), rel=1e-10)
    model = subject.net.to("cpu")
    try:
        x = torch.cat([b.x for b in subject.batches]).cpu()
        fro2 = sum(float((torch.autograd.functional.jacobian(
            lambda xi: model(xi[None])[0], xi) ** 2).sum()) for xi in x) / x.shape[0]
    finally:
        model.to(subject.device)
    _contains(est["jacobian.fro2_mean"], fro2, rel=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_cnn_input_jacobians_match_autograd(device):
    """jacobian.fro2_mean and jacobian.mls_max against torch.autograd.functional.jacobian."""
    subject = _cnn(device)
    est = bc.measure(subject, ["jacobian.fro2_mean", "jacobian.mls_max", "jacobian.mls"])
    model = subject.net.to("cpu")
    try:
        x = torch.cat([b.x for b in subject.batches]).cpu()
        jacs = [torch.autograd.functional.jacobian(lambda xi: model(xi[None])[0], xi)
                .reshape(subject.output_dim, -1) for xi in x]
    finally:
        model.to(subject.device)
    fro2 = sum(float((j * j).sum()) for j in jacs) / len(jacs)
    sigma = [float(torch.linalg.matrix_norm(j, ord=2)) for j in jacs]
    _contains(est["jacobian.fro2_mean"], fro2, rel=1e-10)
    _contains(est["jacobian.mls_max"], max(sigma), rel=1e-10)
    _contains(est["jacobian.mls"], sum(sigma) / len(sigma), rel=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_cnn_trace_moment_bound_t12(device):
    """T12 (k = 3, 4) from the dense route on the device: its moments equal the dense truth's,
    and the verdict is the one the CPU reaches."""
    subject = _cnn(device)
    h = dense_loss_hessian(subject)
    evals = torch.linalg.eigvalsh(h)
    dense = Budget(max_dense_params=1000, max_refinements=0)
    est = bc.measure(subject, ["hessian.moment_1", "hessian.moment_2", "hessian.moment_3",
                               "moment_bound.lambda_max_k3", "moment_bound.lambda_max_k4"],
                     budget=dense)
    p = evals.numel()
    for j in (1, 2, 3):
        _contains(est[f"hessian.moment_{j}"], float((evals**j).sum()) / p, rel=1e-7)
    for k in (3, 4):  # an upper bound on λ_max
        assert est[f"moment_bound.lambda_max_k{k}"].upper >= float(evals[-1])
    res = bc.verify(subject, ["hessian.moment_lambda_max_k3", "hessian.moment_lambda_max_k4"],
                    budget=dense)
    for r in res.results:
        assert r.verdict.name != "VIOLATED", r


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_tiny_resnet18_matches_the_cpu(device):
    """ResNet-18 (width 1, batch norm in eval mode): λ_max, λ_min, tr H, tr H², tr G and the
    input-Jacobian quantities on the device agree with the same measurement on the CPU (same
    seed, float64 both), and every estimated quantity carries an interval."""
    names = ["hessian.lambda_max", "hessian.lambda_min", "hessian.trace", "hessian.fro2",
             "ggn.trace", "jacobian.fro2_mean", "jacobian.mls_max"]
    ref = bc.measure(_resnet("cpu"), names, budget=MATRIX_FREE, seed=3)
    est = ref if device == "cpu" else bc.measure(_resnet(device), names, budget=MATRIX_FREE,
                                                 seed=3)
    for name in names:
        e = est[name]
        assert math.isfinite(e.lower) and math.isfinite(e.upper) and e.lower <= e.upper, e
        assert e.kind in ("exact", "certified", "statistical"), e
    for name in ("ggn.trace", "jacobian.fro2_mean", "jacobian.mls_max"):
        _agree(est[name], ref[name], rel=1e-9)
    for name in ("hessian.lambda_max", "hessian.lambda_min"):
        _agree(est[name], ref[name], rel=1e-3)
    for name in ("hessian.trace", "hessian.fro2"):  # same probes: same samples to rounding
        _agree(est[name], ref[name], rel=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_products_through_batch_norm(device):
    """The batched product GPUs use (``matmat``: one vmapped double backward through batch
    norm, convolutions and residuals) equals one ``matvec`` per vector, run on the CPU too."""
    from boundcheck.engines.curvature import HessianOperator

    op = HessianOperator(_resnet(device))
    v = torch.randn(3, op.dim, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2)).to(device)
    batched = op.matmat(v)
    looped = torch.stack([op.matvec(row) for row in v])
    assert torch.allclose(batched, looped, rtol=1e-10, atol=1e-12)
