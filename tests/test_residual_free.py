"""Which Hessian blocks have no residual part (boundcheck.engines.residual_free), against brute
force: for every tensor the graph reader calls free, the dense ``H_pp − G_pp`` (reverse-over-
reverse Hessian minus the Gauss–Newton block from per-sample Jacobians, float64) is zero; every
planted spoiler (a square, a division, a shared weight, batch statistics, a smooth or unknown
operation) is caught and really has ``R_pp ≠ 0``; and ``hessian.trace`` takes the exact
``tr G`` route only where all blocks are free."""

import pytest
import torch
from brute_force import dense_gauss_newton, dense_loss_hessian
from torch import nn

import boundcheck as bc
from boundcheck.engines.residual_free import residual_free
from boundcheck.harness.zoo import build_model
from boundcheck.quantities import Budget


class PiecewiseLinearNet(nn.Module):
    """Convolution, eval-mode batch norm, ReLU, max pooling, a residual add, leaky ReLU,
    concatenation, average pooling, hardtanh, scaling by constants, two linear layers."""

    def __init__(self, outputs=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.fc1 = nn.Linear(8, 5)
        self.fc2 = nn.Linear(5, outputs)
        with torch.no_grad():  # running statistics and affine parameters away from 0 / 1
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
        h = nn.functional.leaky_relu(h + self.conv2(h), 0.1)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.fc2(nn.functional.hardtanh(self.fc1(pooled)) * 0.5 / 3.0)


class Spoiled(nn.Module):
    """A ReLU net whose hidden features pass through ``twist`` before the last layer."""

    def __init__(self, twist, shared=False):
        super().__init__()
        self.fc1, self.fc2, self.twist = nn.Linear(48, 4), nn.Linear(4, 3), twist
        self.mid = nn.Linear(4, 4) if shared else None

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        if self.mid is not None:  # the same weights applied twice
            h = self.mid(torch.relu(self.mid(h)))
        return self.fc2(self.twist(h))


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


def _subject(net, shape=(3, 4, 4), n=6, outputs=3):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, outputs, (n,), generator=g)
    return bc.Subject(net, (x, y), "cross_entropy", eval_mode=True)


def _residual_blocks(subject) -> dict[str, float]:
    """max |H_pp − G_pp| / max |H| per parameter tensor, from the dense brute force."""
    r = dense_loss_hessian(subject) - dense_gauss_newton(subject)
    scale = float(dense_loss_hessian(subject).abs().max())
    out, o = {}, 0
    for name, p in zip(subject.param_names, subject.params, strict=True):
        block = r[o:o + p.numel(), o:o + p.numel()]
        out[name] = float(block.abs().max()) / scale
        o += p.numel()
    return out


def _classify(subject):
    return residual_free(subject.net, subject.params, subject.param_names,
                         [b.x for b in subject.batches])


def test_piecewise_linear_net_has_no_residual_block_and_trace_is_exact_tr_g():
    torch.manual_seed(0)
    s = _subject(PiecewiseLinearNet().double())
    free = _classify(s)
    assert free.all_free and len(free.free) == len(s.params)
    blocks = _residual_blocks(s)
    assert max(blocks.values()) < 1e-13, blocks
    # and the test is not vacuous: R itself is far from 0 (its off-diagonal blocks)
    r = dense_loss_hessian(s) - dense_gauss_newton(s)
    assert float(r.abs().max()) > 1e-3
    truth = float(torch.trace(dense_loss_hessian(s)))
    est = bc.measure(s, ["hessian.trace", "residual.trace"], budget=Budget(max_dense_params=0))
    tr = est["hessian.trace"]
    assert tr.kind == "exact" and tr.details["route"] == "exact-structured"
    assert "tr R = 0" in tr.details["route_reason"]
    slack = 1e-10 * abs(truth)
    assert tr.lower - slack <= truth <= tr.upper + slack, (tr, truth)
    assert est["residual.trace"].value == 0.0 and est["residual.trace"].kind == "exact"


def test_resnet18_zoo_with_relu_is_free_and_with_tanh_is_not():
    relu = build_model({"model": "resnet18", "seed": 0, "width": 1, "activation": "relu"},
                       input_shape=(3, 4, 4), output_dim=3)
    s = _subject(relu)
    assert _classify(s).all_free
    assert max(_residual_blocks(s).values()) < 1e-13
    tanh = build_model({"model": "resnet18", "seed": 0, "width": 1, "activation": "tanh"},
                       input_shape=(3, 4, 4), output_dim=3)
    free = _classify(_subject(tanh))
    assert free.free == ("head.weight", "head.bias")  # the head alone stays free
    assert "neither linear nor piecewise linear" in free.spoiled["stem.0.weight"]


def _spoiler_cases():
    return {
        "square": (Spoiled(lambda h: h * h), "fc1.weight", "multiplies two factors"),
        "division": (Spoiled(lambda h: h / (1.0 + h.abs().sum(1, keepdim=True))),
                     "fc1.weight", "divides"),
        "shared weight": (Spoiled(lambda h: h, shared=True), "mid.weight",
                          "multiplies two factors"),
        "softplus": (Spoiled(nn.functional.softplus), "fc1.weight", "Softplus"),
        "custom function": (Spoiled(Cube.apply), "fc1.weight", "neither linear"),
    }


@pytest.mark.parametrize("case", list(_spoiler_cases()))
def test_each_planted_spoiler_is_caught_and_really_has_a_residual_block(case):
    torch.manual_seed(1)
    net, tensor, why = _spoiler_cases()[case]
    s = _subject(net.double())
    free = _classify(s)
    assert tensor in free.spoiled and why in free.spoiled[tensor], free
    blocks = _residual_blocks(s)
    assert blocks[tensor] > 1e-6, blocks  # the spoiled block is really nonzero
    for name in free.free:  # and what stays free really is
        assert blocks[name] < 1e-13, (name, blocks)
    assert "fc2.weight" in free.free  # the last layer is always linear in its own weights
    est = bc.measure(s, ["hessian.trace"])
    assert est["hessian.trace"].details.get("route") != "exact-structured"


def test_batch_norm_on_batch_statistics_spoils_what_feeds_it():
    net = PiecewiseLinearNet().double().train()
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    params = list(net.parameters())
    names = [k for k, _ in net.named_parameters()]
    free = residual_free(net, params, names, [x])
    assert "batch statistics" in free.spoiled["conv1.weight"]
    assert "fc2.weight" in free.free
    assert residual_free(net.eval(), params, names, [x]).all_free


def test_vit_keeps_only_what_follows_its_last_layer_norm_free():
    vit = build_model({"model": "vit", "seed": 0, "patch_size": 2, "dim": 4, "depth": 1,
                       "heads": 2, "mlp_ratio": 1}, input_shape=(3, 4, 4), output_dim=3)
    s = _subject(vit)
    free = _classify(s)
    assert not free.all_free
    blocks = _residual_blocks(s)
    for name in free.free:
        assert blocks[name] < 1e-13, (name, blocks)
    assert any(name.startswith("head") for name in free.free)


def test_many_outputs_leave_the_trace_to_the_estimators_unless_tr_g_is_wanted():
    """The exact tr G costs K reverse passes: above GGN_TRACE_MAX_OUTPUTS outputs the
    matrix-free route is the cheaper (and the dense one within its budget)."""
    from boundcheck.quantities.routes import GGN_TRACE_MAX_OUTPUTS
    k = GGN_TRACE_MAX_OUTPUTS + 1
    torch.manual_seed(2)
    s = _subject(PiecewiseLinearNet(outputs=k).double(), outputs=k)
    est = bc.measure(s, ["hessian.trace"])
    assert est["hessian.trace"].details.get("route") != "exact-structured"
    both = bc.measure(s, ["ggn.trace", "hessian.trace"])  # tr G planned
    assert both["hessian.trace"].details["route"] == "exact-structured"
    assert both["hessian.trace"].value == both["ggn.trace"].value
    from boundcheck.quantities.registry import Context
    ctx = Context(s)  # tr G already measured (not planned): free to reuse
    ctx.get("ggn.trace")
    assert ctx.get("hessian.trace").details.get("route") == "exact-structured"
