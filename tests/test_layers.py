"""Layer discovery: dense vs weight-shared layers, skip connections and tied weights."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import boundcheck as bc
from boundcheck.core.layers import discover
from boundcheck.harness.models import mlp
from boundcheck.quantities import Context, NotApplicableError


def probe(shape=(4,)):
    return torch.randn(3, *shape, dtype=torch.float64)


def flags(structure):
    return [(layer.name, layer.dense) for layer in structure.layers]


def test_mlp_layers_are_all_dense():
    st = discover(mlp([4, 5, 6, 2], "relu", seed=0).double(), probe())
    assert flags(st) == [("0", True), ("2", True), ("4", True)]
    assert st.input_only_through_first_layer and st.input_reason == ""
    assert [layer.input_shape for layer in st.layers] == [(4,), (5,), (6,)]


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 2, 2, stride=2)
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


def test_cnn_convolutions_are_shared_and_head_is_dense():
    st = discover(CNN().double(), probe((1, 4, 4)))
    assert flags(st) == [("c1", False), ("c2", False), ("fc", True)]
    assert all("convolution" in layer.reason for layer in st.layers[:2])
    assert not st.input_only_through_first_layer
    assert "not dense" in st.input_reason
    assert st.layers[1].input_shape == (3, 4, 4)


class Transformer(nn.Module):
    def __init__(self, d_in=3, d=4, k=2):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.head = nn.Linear(d, k)

    def forward(self, x):
        h = self.embed(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2), dim=-1)
        return self.head((h + att @ self.v(h)).mean(1))


def test_transformer_tokenwise_linears_are_shared_and_pooled_head_is_dense():
    st = discover(Transformer().double(), probe((5, 3)))
    assert flags(st) == [("embed", False), ("q", False), ("k", False), ("v", False),
                         ("head", True)]
    assert all("every token" in layer.reason for layer in st.layers[:4])
    assert st.layers[0].input_shape == (5, 3)


class InputSkip(nn.Module):
    """f(x) = g(W x + b) + U x: x reaches f other than through the first layer."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.u = nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))) + self.u(x)


class FunctionalSkip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))) + x.pow(2).sum(1, keepdim=True)


@pytest.mark.parametrize("model", [InputSkip, FunctionalSkip])
def test_input_skip_is_flagged(model):
    st = discover(model().double(), probe())
    assert not st.input_only_through_first_layer
    assert "skip" in st.input_reason
    assert st.layers[0].input_elsewhere and not st.layers[0].dense
    assert st.layers[1].dense


def test_input_skip_breaks_the_t3_ratio_that_holds_without_it():
    """Without the skip, max ‖J_x‖‖x‖/‖∇_{W_1} f‖ ≤ ‖W_1‖ always (T3); with it, not."""
    violations = 0
    for seed in range(6):
        torch.manual_seed(seed)
        x = torch.randn(20, 4, dtype=torch.float64)
        y = torch.randint(0, 2, (20,))
        skip = Context(bc.Subject(InputSkip(), (x, y)))
        ratio, w1 = skip.get("jacobian.sensitivity_ratio_max"), skip.get("layer.1.weight_norm")
        violations += ratio.lower > w1.upper
        plain = Context(bc.Subject(mlp([4, 6, 2], "tanh", seed=seed), (x, y)))
        assert plain.get("jacobian.sensitivity_ratio_max").upper <= \
            plain.get("layer.1.weight_norm").lower
    assert violations >= 3


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.c(h + torch.tanh(self.b(h)))


def test_residual_block_input_is_not_dense():
    st = discover(Residual().double(), probe())
    assert flags(st) == [("a", True), ("b", False), ("c", True)]
    assert "skip" in st.layers[1].reason and not st.layers[1].shared
    assert st.input_only_through_first_layer


class CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))


class FunctionalTie(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(torch.tanh(F.linear(h, self.a.weight)))


def test_reused_and_tied_weights_are_shared():
    st = discover(CalledTwice().double(), probe())
    assert st.layers[0].calls == 2 and "called 2 times" in st.layers[0].reason
    assert flags(st) == [("a", False), ("b", True)]
    st = discover(FunctionalTie().double(), probe())
    assert "tied" in st.layers[0].reason
    assert flags(st) == [("a", False), ("b", True)]


def test_layer_called_twice_has_no_single_input():
    x = torch.randn(5, 4, dtype=torch.float64)
    ctx = Context(bc.Subject(CalledTwice(), (x, torch.randint(0, 2, (5,)))))
    with pytest.raises(NotApplicableError, match="called 2 times"):
        ctx.get("layer.1.mls")
    assert ctx.get("layer.1.grad_w_fro2").value > 0  # the weight Jacobian is still defined


class Preprocessed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(2.0 * x)))


class Flattening(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.view(x.shape[0], -1))))


def test_first_layer_must_see_the_raw_input_up_to_views():
    st = discover(Preprocessed().double(), probe())
    assert not st.input_only_through_first_layer and "raw input" in st.input_reason
    assert flags(st) == [("a", True), ("b", True)]
    st = discover(Flattening().double(), probe((2, 3)))
    assert st.input_only_through_first_layer


class MergedTokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):  # x: (B, T, 3); the first linear sees (B·T, 3)
        return self.b(torch.tanh(self.a(x.reshape(-1, 3))).reshape(x.shape).mean(1))


def test_linear_on_merged_tokens_is_shared_without_per_sample_input():
    st = discover(MergedTokens().double(), probe((4, 3)))
    assert flags(st) == [("a", False), ("b", True)]
    assert st.layers[0].input_shape is None
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    ctx = Context(bc.Subject(MergedTokens(), (x, torch.randint(0, 2, (5,)))))
    with pytest.raises(NotApplicableError, match="one input row per sample"):
        ctx.get("layer.1.input_inv_sq_mean")
    assert ctx.get("layer.2.is_dense").value == 1


class WithMHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 1, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.mha(x, x, x, need_weights=False)[0].mean(1))


def test_functional_projections_are_not_listed():
    """nn.MultiheadAttention applies its projections functionally: only the head is seen."""
    st = discover(WithMHA().double().eval(), probe((3, 4)))
    assert flags(st) == [("head", True)]


def test_discovery_leaves_the_model_untouched():
    net = CNN().double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    discover(net, probe((1, 4, 4)))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_no_dense_layer_makes_network_sums_not_applicable():
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    net = nn.Sequential(nn.Conv2d(1, 2, 4))  # output (B, 2, 1, 1): not (B, K)
    flat = nn.Sequential(net, nn.Flatten())
    ctx = Context(bc.Subject(flat, (x, torch.randint(0, 2, (4,)))))
    with pytest.raises(NotApplicableError, match="no dense layer"):
        ctx.get("network.nmls")


class Branching(nn.Module):
    """Data-dependent control flow: torch.func.vmap refuses it, the per-sample loop does not."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if h.sum() > 0:
            h = 2 * h
        return self.b(h)


def test_models_vmap_cannot_batch_fall_back_to_a_loop():
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64)
    subject = bc.Subject(Branching(), (x, torch.randint(0, 2, (6,))))
    f = subject.net
    ref = sum(float(torch.linalg.svdvals(torch.autograd.functional.jacobian(
        lambda v: f(v.unsqueeze(0))[0], xi))[0]) for xi in x) / 6
    ctx = Context(subject)
    assert ctx.get("jacobian.mls").value == pytest.approx(ref, rel=1e-10)
    assert ctx.get("layer.2.mls").value > 0
    assert ctx.get("layer.1.grad_w_fro2").value > 0


def test_input_flag_quantity():
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (5,))
    skip = Context(bc.Subject(InputSkip(), (x, y))).get("network.input_through_first_layer")
    assert skip.value == 0 and "skip" in skip.method
    plain = Context(bc.Subject(mlp([4, 3, 2], seed=0), (x, y)))
    assert plain.get("network.input_through_first_layer").value == 1
