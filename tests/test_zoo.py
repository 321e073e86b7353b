"""The architecture zoo: every model outputs (batch, K), works with Subject, and its Hessian
through the engine equals brute-force autograd in float64."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import boundcheck as bc
from boundcheck.engines.curvature import dense_hessian
from boundcheck.harness.zoo import ACTIVATIONS, ARCHITECTURES, build_model

# Tiny instances of every architecture, with inputs of the kind each takes.
TINY = {
    "mlp": ({"hidden": [3, 2]}, (5,)),
    "lenet": ({"channels": [2], "kernel_size": 3, "padding": 1, "hidden": [3]}, (1, 4, 4)),
    "vgg": ({"stages": [[2, 2]], "hidden": [3], "activation": "tanh"}, (1, 4, 4)),
    "resnet": ({"widths": [2, 3], "activation": "tanh"}, (1, 4, 4)),
    "resnet18": ({"width": 1, "activation": "tanh"}, (1, 4, 4)),
    "vit": ({"patch_size": 2, "dim": 4, "depth": 1, "heads": 2, "mlp_ratio": 1}, (1, 4, 4)),
    "sequence_transformer": ({"dim": 4, "depth": 1, "heads": 2, "mlp_ratio": 1}, (3, 4)),
}


def _inputs(name, shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name == "sequence_transformer":
        ids = torch.randint(0, shape[1], (n, shape[0]), generator=g)
        return nn.functional.one_hot(ids, shape[1]).float()
    return torch.randn(n, *shape, generator=g)


def test_every_architecture_is_covered():
    assert set(TINY) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(TINY))
def test_outputs_batch_by_k_and_subject_accepts_it(name):
    options, shape = TINY[name]
    net = build_model({"model": name, "seed": 0, **options}, input_shape=shape, output_dim=3)
    x = _inputs(name, shape, 5)
    assert net(x).shape == (5, 3)
    subject = bc.Subject(net.eval(), (x, torch.tensor([0, 1, 2, 0, 1])), "cross_entropy")
    assert subject.output_dim == 3
    assert next(subject.net.parameters()).dtype == torch.float64
    assert next(net.parameters()).dtype == torch.float32  # the user's model is untouched
    assert not subject.net.training
    assert subject.num_params == sum(p.numel() for p in net.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_engine_hessian_matches_brute_force(name):
    """The dense Hessian through each architecture (double backward through convolutions,
    residuals, attention, layer norm) equals torch.autograd.functional.hessian in float64."""
    if name == "resnet18":
        pytest.skip("2,928 parameters at width 1 (two dense Hessians: minutes); its blocks and "
                    "batch norm are checked on a small ResNet in tests/test_resnet.py")
    options, shape = TINY[name]
    net = build_model({"model": name, "seed": 1, **options}, input_shape=shape, output_dim=3)
    x = _inputs(name, shape, 4, seed=1)
    y = torch.tensor([0, 2, 1, 2])
    subject = bc.Subject(net.eval(), (x, y), "cross_entropy")
    h = dense_hessian(subject)

    model = subject.net
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    xs = x.to(torch.float64)

    def loss(theta):
        parts = torch.split(theta, sizes)
        params = {k: v.reshape(s) for k, v, s in zip(names, parts, shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(model, params, (xs,)), y)

    brute = torch.autograd.functional.hessian(loss, flat)
    assert torch.allclose(h, brute, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_activations_and_bias(activation, bias):
    net = build_model({"model": "mlp", "hidden": [4, 3], "activation": activation,
                       "bias": bias}, input_shape=(6,), output_dim=2)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 4), (4, 3), (3, 2)]
    assert all((m.bias is not None) == bias for m in linears)
    acts = [m for m in net if not isinstance(m, nn.Linear)]
    assert len(acts) == 2 and all(type(a) is ACTIVATIONS[activation] for a in acts)


def test_mlp_flattens_images_and_keeps_plain_layout_for_vectors():
    assert isinstance(build_model({"model": "mlp"}, input_shape=(8,), output_dim=2)[0],
                      nn.Linear)
    net = build_model({"model": "mlp", "hidden": [4]}, input_shape=(1, 3, 3), output_dim=2)
    assert isinstance(net[0], nn.Flatten) and net[1].in_features == 9
    assert net(torch.randn(2, 1, 3, 3)).shape == (2, 2)


def test_legacy_models_module_still_works():
    from boundcheck.harness.models import mlp

    net = mlp([4, 3, 2], "tanh", seed=0)
    assert isinstance(net, nn.Sequential) and len(net) == 3


def test_seed_reproducible_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model({"model": "vit", "seed": 7, "dim": 4, "heads": 2, "depth": 1},
                    input_shape=(1, 4, 4), output_dim=2)
    after = torch.rand(3)
    b = build_model({"model": "vit", "seed": 7, "dim": 4, "heads": 2, "depth": 1},
                    input_shape=(1, 4, 4), output_dim=2)
    assert torch.equal(expected, after)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    c = build_model({"model": "vit", "seed": 8, "dim": 4, "heads": 2, "depth": 1},
                    input_shape=(1, 4, 4), output_dim=2)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_cnn_stride_padding_and_pooling_shape_the_features():
    def conv_shapes(**options):
        net = build_model({"model": "lenet", "hidden": [], **options}, input_shape=(1, 8, 8),
                          output_dim=2)
        x = torch.randn(1, 1, 8, 8)
        shapes = []
        for m in net:
            x = m(x)
            if isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)):
                shapes.append(tuple(x.shape[1:]))
        return shapes

    assert conv_shapes(channels=[3], kernel_size=3, padding=1) == [(3, 8, 8), (3, 4, 4)]
    assert conv_shapes(channels=[3], kernel_size=3, padding=0, pool="none") == [(3, 6, 6)]
    assert conv_shapes(channels=[3], kernel_size=3, padding=1, stride=2, pool="max") == [
        (3, 4, 4), (3, 2, 2)]
    vgg = build_model({"model": "vgg", "stages": [[2, 3], [4]]}, input_shape=(3, 8, 8),
                      output_dim=5)
    assert [m.out_channels for m in vgg if isinstance(m, nn.Conv2d)] == [2, 3, 4]
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg) == 2


def test_resnet_blocks_are_residual():
    net = build_model({"model": "resnet", "widths": [2, 4], "seed": 0}, input_shape=(1, 6, 6),
                      output_dim=3).eval()
    first, second = net.blocks
    assert isinstance(first.shortcut, nn.Identity)  # same shape: identity shortcut
    assert isinstance(second.shortcut[0], nn.Conv2d) and second.shortcut[0].stride == (2, 2)
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        assert torch.allclose(first(x), first.act(first.residual(x) + x))
    for norm, layer in [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm)]:
        net = build_model({"model": "resnet", "widths": [2], "norm": norm},
                          input_shape=(1, 4, 4), output_dim=2)
        assert any(isinstance(m, layer) for m in net.modules())


def test_transformers_have_layer_norm_and_ids_equal_one_hot():
    vit = build_model({"model": "vit", "dim": 4, "heads": 2, "depth": 2, "pool": "cls"},
                      input_shape=(3, 4, 4), output_dim=2)
    assert sum(isinstance(m, nn.LayerNorm) for m in vit.modules()) == 5  # 2 per block + final
    assert vit(torch.randn(2, 3, 4, 4)).shape == (2, 2)
    seq_ids = build_model({"model": "sequence_transformer", "vocab_size": 5, "dim": 4,
                           "heads": 2, "seed": 3}, input_shape=(6,), output_dim=2).eval()
    seq_hot = build_model({"model": "sequence_transformer", "dim": 4, "heads": 2, "seed": 3},
                          input_shape=(6, 5), output_dim=2).eval()
    ids = torch.randint(0, 5, (3, 6))
    with torch.no_grad():
        a = seq_ids(ids)
        b = seq_hot(nn.functional.one_hot(ids, 5).float())
        c = seq_ids(ids.to(torch.float32))  # ids survive Subject's float copy
    assert torch.allclose(a, b, atol=1e-6) and torch.equal(a, c)
    with pytest.raises(ValueError, match="token ids must be integers"):
        seq_ids(ids.float() + 0.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\)"):
        seq_ids(ids + 5)


@pytest.mark.parametrize("config, shape, match", [
    ({"model": "perceptron"}, (4,), "unknown model 'perceptron'"),
    ({"model": "mlp", "channels": [2]}, (4,), "does not take option"),
    ({"model": "mlp", "activation": "swish"}, (4,), "unknown activation"),
    ({"model": "lenet"}, (64,), r"image inputs of shape \(C, H, W\)"),
    ({"model": "lenet", "kernel_size": 5, "padding": 0, "channels": [2, 2]}, (1, 6, 6),
     "too small"),
    ({"model": "vit", "patch_size": 3}, (1, 8, 8), "must divide"),
    ({"model": "vit", "dim": 6, "heads": 4}, (1, 8, 8), "divisible"),
    ({"model": "resnet", "norm": "instance"}, (1, 8, 8), "unknown norm"),
    ({"model": "sequence_transformer"}, (6,), "vocab_size"),
    ({"model": "sequence_transformer"}, (1, 8, 8), "token inputs"),
    ({"model": "mlp", "hidden": [0]}, (4,), "sizes ≥ 1"),
])
def test_bad_configs_give_clear_errors(config, shape, match):
    with pytest.raises(ValueError, match=match):
        build_model(config, input_shape=shape, output_dim=2)
