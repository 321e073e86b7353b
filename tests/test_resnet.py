"""ResNet-18 in the zoo (its shape, batch norm measured in eval mode), the synthetic CIFAR-sized
images, and time limits that refuse trace-type estimates they cannot hold (what made the
11M-parameter example overrun). The 11M-parameter net is built, never measured, here."""

import pytest
import torch
from torch import nn

import boundcheck as bc
from boundcheck.core.subject import ModelModeError
from boundcheck.harness import data
from boundcheck.harness.zoo import build_model


def _resnet18(width, **options):
    return build_model({"model": "resnet18", "width": width, "seed": 0, **options},
                       input_shape=(3, 32, 32), output_dim=10)


def test_standard_width_has_resnet18_shape():
    """11,173,962 parameters (torchvision's resnet18 with the CIFAR stem); 3×3 stride-1 stem,
    no max pooling, 20 convolutions (stem, 16 in blocks, 3 projections), 20 batch norms."""
    net = _resnet18(64)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and all(c.bias is None for c in convs)
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 20
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [128, 256, 512]


def test_torchvision_resnet18_is_measured_too():
    """A user's torchvision ResNet-18 (ImageNet stem) is a Subject like any module."""
    try:
        import torchvision
    except Exception as err:  # not installed, or a build that does not match this torch
        pytest.skip(f"torchvision unusable here: {type(err).__name__}: {err}")
    net = torchvision.models.resnet18(num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 11_181_642
    x, y = data.gaussian_images(2, size=32, seed=0)
    with pytest.raises(ModelModeError):
        bc.Subject(net, (x, y), "cross_entropy")
    s = bc.Subject(net, (x, y), "cross_entropy", eval_mode=True)
    assert s.num_params == 11_181_642
    est = bc.measure(s, ["loss.gradient_norm"])
    assert est["loss.gradient_norm"].value > 0


def test_tiny_width_and_forward():
    net = _resnet18(4)
    assert 40_000 < sum(p.numel() for p in net.parameters()) < 50_000
    x, _ = data.gaussian_images(3, seed=1)
    assert net.eval()(x).shape == (3, 10)
    with pytest.raises(ValueError, match="width"):
        _resnet18(0)
    with pytest.raises(ValueError, match="norm"):
        _resnet18(4, norm="instance")


def test_batch_norm_is_measured_in_eval_mode():
    """A train-mode ResNet-18 is refused; eval_mode=True measures an eval-mode copy (running
    statistics), records the switch and leaves the user's model in train mode."""
    net = build_model({"model": "resnet18", "width": 1, "seed": 0}, input_shape=(3, 8, 8),
                      output_dim=3)
    with torch.no_grad():  # running statistics that differ from the batch's
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x, y = data.gaussian_images(6, size=8, classes=3, seed=2)
    assert net.training
    with pytest.raises(ModelModeError, match="BatchNorm2d"):
        bc.Subject(net, (x, y), "cross_entropy")
    s = bc.Subject(net, (x, y), "cross_entropy", eval_mode=True)
    assert net.training and not s.net.training
    assert any("eval-mode copy" in note and "BatchNorm2d" in note for note in s.notes)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(net.eval().double()(x.double()), y)
        train_mode = nn.functional.cross_entropy(net.train()(x.double()), y)
    measured = s.loss_fn.per_sample(s.net(s.batches[0].x), s.batches[0].y).mean()
    assert torch.allclose(measured.detach(), expected, rtol=1e-12)
    assert not torch.allclose(expected, train_mode, rtol=1e-3)


def test_gaussian_images_are_cifar_sized_and_seeded():
    x, y = data.gaussian_images(64, seed=0)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (64,) and int(y.max()) < 10
    assert 0.8 < float(x.var()) < 1.2  # pixels of unit variance over the mixture
    assert torch.equal(x, data.gaussian_images(64, seed=0)[0])
    loaded = data.load("gaussian_images", n=5, layout="image", size=8, classes=4)
    assert loaded.x.shape == (5, 3, 8, 8) and loaded.num_outputs == 4
    with pytest.raises(ValueError, match="positive"):
        data.gaussian_images(4, size=0)


@pytest.mark.slow
def test_hessian_through_batch_norm_blocks_matches_brute_force():
    """ResNet-18's blocks (BasicBlock with batch norm, eval mode, non-trivial running
    statistics, projection shortcut) on a small ResNet: the engine's dense Hessian equals
    torch.autograd.functional.hessian, and matrix-free λ_max / tr H intervals contain it."""
    from torch.func import functional_call

    from boundcheck.engines.curvature import dense_hessian
    from boundcheck.quantities import Budget

    net = build_model({"model": "resnet", "widths": [2, 3], "norm": "batch", "bias": False,
                       "activation": "tanh", "seed": 3}, input_shape=(1, 4, 4), output_dim=3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x, y = data.gaussian_images(5, channels=1, size=4, classes=3, seed=4)
    s = bc.Subject(net, (x, y), "cross_entropy", eval_mode=True)
    h = dense_hessian(s)
    model = s.net
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())

    def loss(theta):
        parts = torch.split(theta, sizes)
        params = {k: v.reshape(sh) for k, v, sh in zip(names, parts, shapes, strict=True)}
        z = functional_call(model, (params, buffers), (s.batches[0].x,))
        return nn.functional.cross_entropy(z, y)

    brute = torch.autograd.functional.hessian(loss, flat)
    assert torch.allclose(h, brute, rtol=1e-9, atol=1e-11)
    evals = torch.linalg.eigvalsh(0.5 * (brute + brute.T))
    est = bc.measure(s, ["hessian.lambda_max", "hessian.trace"],
                     budget=Budget(max_dense_params=0, max_refinements=0,
                                   trace_rel_half_width=0.05))
    lam, tr = est["hessian.lambda_max"], est["hessian.trace"]
    assert lam.lower - 1e-9 <= float(evals[-1]) <= lam.upper + 1e-9
    assert tr.lower - 1e-9 <= float(torch.trace(brute)) <= tr.upper + 1e-9


def _small_cnn_subject():
    net = build_model({"model": "lenet", "channels": [2], "kernel_size": 3, "padding": 1,
                       "hidden": [3], "seed": 0}, input_shape=(3, 4, 4), output_dim=3)
    x, y = data.gaussian_images(6, size=4, classes=3, seed=5)
    return bc.Subject(net.eval(), (x, y), "cross_entropy")


@pytest.mark.parametrize("name", ["hessian.trace", "hessian.fro2", "hessian.moment_3",
                                  "residual.trace", "projection.curvature_mean"])
def test_sampled_traces_refuse_what_the_time_limit_cannot_hold(name, monkeypatch):
    """With a time limit, a trace-type estimate whose minimum number of products (80 for a
    calibrated interval; 2 per projected plane) would not fit is refused up front with the
    numbers (NotAffordableError: the theorem is INCONCLUSIVE), instead of overrunning it."""
    from boundcheck.quantities import Budget, Context, NotAffordableError
    from boundcheck.quantities.time_budget import MIN_TRACE_PRODUCTS

    s = _small_cnn_subject()
    budget = Budget(max_dense_params=0, max_refinements=0, time_limit_s=100.0)
    from boundcheck.quantities import time_budget

    ctx = Context(s, budget=budget)
    slow = 100.0 / MIN_TRACE_PRODUCTS * 1.01
    ctx._artifacts["hessian.product_seconds"] = [slow]
    monkeypatch.setattr(time_budget, "_timed_product", lambda op: slow)  # the re-timing too
    with pytest.raises(NotAffordableError, match="Hessian-vector products"):
        ctx.get(name)


def test_a_refused_trace_leaves_its_theorem_inconclusive_and_nothing_refused_without_limit(
        monkeypatch):
    from boundcheck.quantities import Budget, Context, time_budget

    s = _small_cnn_subject()
    ctx = Context(s, budget=Budget(max_dense_params=0, max_refinements=0, time_limit_s=50.0))
    ctx._artifacts["hessian.product_seconds"] = [1.0]  # 80 products: 80 s > 50 s
    with monkeypatch.context() as m:
        m.setattr(time_budget, "_timed_product", lambda op: 1.0)
        r = bc.verify(s, ["hessian.ws_lambda_max"], context=ctx).results[0]
    assert r.verdict.name == "INCONCLUSIVE" and "time limit" in r.reason
    ctx = Context(s, budget=Budget(max_dense_params=0, max_refinements=0,
                                   trace_rel_half_width=0.2, time_limit_s=50.0))
    ctx._artifacts["hessian.product_seconds"] = [1e-4]  # fits: measured as before
    assert ctx.get("hessian.trace").kind in ("statistical", "exact")
    free = Context(s, budget=Budget(max_dense_params=0, trace_rel_half_width=0.2))
    free.get("hessian.trace")
    assert free.cached("hessian.product_seconds") is None  # no limit: nothing timed


def test_a_slow_first_timing_is_retimed_before_refusing():
    """One product timed while the machine was loaded (7.4 s against 2.8 s on ResNet-18)
    refused the example's s²: before refusing, a fresh product is timed and the fastest kept."""
    from boundcheck.quantities import Budget, Context

    s = _small_cnn_subject()
    ctx = Context(s, budget=Budget(max_dense_params=0, max_refinements=0,
                                   trace_rel_half_width=0.2, time_limit_s=50.0))
    ctx._artifacts["hessian.product_seconds"] = [10.0]  # a stale, slow timing
    assert ctx.get("hessian.trace").kind in ("statistical", "exact")
    timings = ctx.cached("hessian.product_seconds")
    assert len(timings) == 2 and timings[1] < 1.0
