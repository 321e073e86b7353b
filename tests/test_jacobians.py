"""Jacobian, weight and data-geometry quantities against brute force in float64.

References are built independently of boundcheck.engines.jacobians: one sample at a time with
torch.autograd.functional.jacobian (input and layer-input Jacobians, the network split at the
layer), torch.autograd.grad per output (weight gradients), explicit output Hessians
(c·I, or diag(p) − ppᵀ from a softmax), a dense Gauss–Newton block for κ^G, and
torch.linalg.svdvals / numpy for norms. Every exact quantity must agree to 1e-8 relative and
its interval must contain the reference.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.core.layers import structure
from boundcheck.harness.models import mlp
from boundcheck.quantities import Context, NotApplicableError

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d)
RANK_TOL = 1e-9  # brute force: σ_k below this × σ_1 counts as numerically zero


# -- brute force --------------------------------------------------------------------------
def output_hessian(subject, z, y):
    k = z.shape[0]
    if subject.loss_fn.kind == "mse":
        return subject.loss_fn.mse_scale * torch.eye(k, dtype=z.dtype)
    p = torch.softmax(z, 0)
    return torch.diag(p) - torch.outer(p, p)


def log_volume(s):
    if s[0] == 0 or s[-1] <= RANK_TOL * s[0]:
        return -math.inf
    return float(torch.log(s).sum())


def participation(s):
    return float((s**2).sum() ** 2 / (s**4).sum()) if s[0] > 0 else None


def brute_force(subject):
    """Reference values of every quantity, for an nn.Sequential of affine layers and maps."""
    net, x, y = subject.net, subject.x_all, subject.y_all
    n, k = x.shape[0], subject.output_dim
    idx = [i for i, m in enumerate(net) if isinstance(m, AFFINE)]
    out = {"jx": [], "h": {j: [] for j in range(len(idx))}, "jh": {j: [] for j in range(len(idx))},
           "jw": {j: [] for j in range(len(idx))}, "a": []}
    for i in range(n):
        xi = x[i]
        out["jx"].append(torch.autograd.functional.jacobian(
            lambda v: net(v.unsqueeze(0))[0], xi).reshape(k, -1))
        with torch.no_grad():
            z = net(xi.unsqueeze(0))[0]
        out["a"].append(output_hessian(subject, z, y[i]))
        for j, start in enumerate(idx):
            with torch.no_grad():
                h = net[:start](xi.unsqueeze(0))[0]
            out["h"][j].append(h.reshape(-1))
            out["jh"][j].append(torch.autograd.functional.jacobian(
                lambda v, start=start: net[start:](v.unsqueeze(0))[0], h).reshape(k, -1))
            w = net[start].weight
            f = net(xi.unsqueeze(0))[0]
            rows = [torch.autograd.grad(f[c], w, retain_graph=True)[0].reshape(-1)
                    for c in range(k)]
            out["jw"][j].append(torch.stack(rows))
    return out, [net[i] for i in idx]


def reference_values(subject):
    bf, modules = brute_force(subject)
    n = len(bf["jx"])
    ref = {}
    sx = [torch.linalg.svdvals(j) for j in bf["jx"]]
    ref["jacobian.mls"] = float(sum(s[0] for s in sx)) / n
    ref["jacobian.mls_max"] = float(max(s[0] for s in sx))
    ref["jacobian.fro2_mean"] = float(sum((j**2).sum() for j in bf["jx"])) / n
    ref["jacobian.log_lvr"] = sum(log_volume(s) for s in sx) / n
    pr = [participation(s) for s in sx]
    ref["jacobian.local_dim"] = None if None in pr else sum(pr) / n
    xs = subject.x_all.flatten(1)
    gw1 = [float(torch.linalg.matrix_norm(j)) for j in bf["jw"][0]]
    ref["jacobian.sensitivity_ratio_max"] = max(
        ratio(float(s[0]) * float(xs[i].norm()), gw1[i]) for i, s in enumerate(sx))
    ref["jacobian.sensitivity_ratio_fro_max"] = max(
        ratio(float(j.norm()) * float(xs[i].norm()), gw1[i]) for i, j in enumerate(bf["jx"]))
    dense = []
    for j, module in enumerate(modules):
        l = j + 1
        w = module.weight.detach()
        w2 = w.reshape(w.shape[0], -1)
        hs, jhs, jws = bf["h"][j], bf["jh"][j], bf["jw"][j]
        sh = [torch.linalg.svdvals(m) for m in jhs]
        hn2 = [float((h**2).sum()) for h in hs]
        ref[f"layer.{l}.mls"] = float(sum(s[0] for s in sh)) / n
        ref[f"layer.{l}.log_lvr"] = sum(log_volume(s) for s in sh) / n
        prl = [participation(s) for s in sh]
        ref[f"layer.{l}.local_dim"] = None if None in prl else sum(prl) / n
        ref[f"layer.{l}.weighted_mls_sq"] = sum(a * float(s[0]) ** 2 for a, s in
                                                zip(hn2, sh, strict=True)) / n
        ref[f"layer.{l}.weighted_jac_fro2"] = sum(a * float((m**2).sum()) for a, m in
                                                  zip(hn2, jhs, strict=True)) / n
        dead = min(hn2) == 0
        ref[f"layer.{l}.input_inv_sq_mean"] = None if dead else sum(1 / a for a in hn2) / n
        ref[f"layer.{l}.input_sq_gmean"] = None if dead else math.exp(
            sum(math.log(a) for a in hn2) / n)
        gn = [float(torch.linalg.matrix_norm(m)) for m in jws]
        ref[f"layer.{l}.sensitivity_ratio_max"] = None if dead else max(
            ratio(float(s[0]) * math.sqrt(a), g) for s, a, g in zip(sh, hn2, gn, strict=True))
        ref[f"layer.{l}.sensitivity_ratio_fro_max"] = None if dead else max(
            ratio(float(m.norm()) * math.sqrt(a), g) for m, a, g in
            zip(jhs, hn2, gn, strict=True))
        ref[f"layer.{l}.grad_w_fro2"] = sum(g * g for g in gn) / n
        ref[f"layer.{l}.ggn_trace"] = sum(float(torch.trace(m @ m.T @ a)) for m, a in
                                          zip(jws, bf["a"], strict=True)) / n
        g_block = sum(m.T @ a @ m for m, a in zip(jws, bf["a"], strict=True)) / n
        rows, cols = w2.shape
        blocks = g_block.reshape(rows, cols, rows, cols).diagonal(dim1=1, dim2=3).sum(-1)
        ref[f"layer.{l}.kappa_ggn"] = float(((w2 @ w2.T) * blocks).sum())
        if isinstance(module, nn.Linear):
            ref[f"layer.{l}.kappa_ggn_identity"] = sum(
                h2 * float(torch.trace(m.T @ a @ m)) for h2, m, a in
                zip(hn2, jhs, bf["a"], strict=True)) / n
            ref[f"layer.{l}.weight_norm"] = float(np.linalg.norm(w2.numpy(), 2))
            dense.append(l)
    if dense:
        ref["network.nmls"] = sum(ref[f"layer.{l}.mls"] for l in dense)
        ref["network.nvr"] = sum(ref[f"layer.{l}.log_lvr"] for l in dense)
        if all(ref[f"layer.{l}.input_inv_sq_mean"] is not None for l in dense):
            ref["network.nmls_factor"] = sum(ref[f"layer.{l}.weight_norm"] ** 2
                                             * ref[f"layer.{l}.input_inv_sq_mean"]
                                             for l in dense)
            k = subject.output_dim
            terms = []
            for l in dense:
                r = min(k, bf["h"][l - 1][0].numel())
                g = ref[f"layer.{l}.grad_w_fro2"]
                terms.append(-math.inf if g == 0 else r / 2 * math.log(
                    ref[f"layer.{l}.weight_norm"] ** 2 * g
                    / (r * ref[f"layer.{l}.input_sq_gmean"])))
            ref["network.nvr_rhs"] = sum(terms)
        else:
            ref["network.nmls_factor"] = ref["network.nvr_rhs"] = None
    return ref


def ratio(a, b):
    if a == 0:
        return 0.0
    return math.inf if b == 0 else a / b


def assert_matches(name, est, ref, rel=1e-8):
    assert not math.isnan(est.value), name
    if math.isinf(ref):
        assert est.value == ref or est.lower == ref, (name, est, ref)
        return
    tol = rel * abs(ref) + (est.upper - est.lower)
    assert abs(est.value - ref) <= tol or (name.endswith("log_lvr") and est.lower == -math.inf
                                           ), (name, est, ref)
    assert est.lower <= ref <= est.upper, (name, est, ref)


def check_all(subject, ref):
    ctx = Context(subject)
    for name, value in ref.items():
        if value is None:
            with pytest.raises(NotApplicableError):
                ctx.get(name)
            continue
        assert_matches(name, ctx.get(name), value)
    return ctx


def make_targets(loss, n, k, gen):
    if loss == "cross_entropy":
        return torch.randint(0, k, (n,), generator=gen)
    return torch.randn(n, k, generator=gen, dtype=torch.float64)


# -- MLPs ---------------------------------------------------------------------------------
@settings(max_examples=20)
@given(d=st.integers(1, 4), hidden=st.lists(st.integers(1, 5), min_size=1, max_size=2),
       k=st.integers(1, 3), act=st.sampled_from(["tanh", "relu", "gelu", "sigmoid", "softplus",
                                                 "identity"]),
       bias=st.booleans(), loss=st.sampled_from(["mse", "mse:0.5", "cross_entropy"]),
       n=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_mlp_quantities_match_brute_force(d, hidden, k, act, bias, loss, n, seed):
    gen = torch.Generator().manual_seed(seed)
    k = max(k, 2) if loss == "cross_entropy" else k
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    subject = bc.Subject(mlp([d, *hidden, k], act, bias=bias, seed=seed),
                         (x, make_targets(loss, n, k, gen)), loss)
    ref = reference_values(subject)
    ctx = check_all(subject, ref)
    for layer in range(1, len(hidden) + 2):
        assert ctx.get(f"layer.{layer}.is_dense").value == 1
    assert ctx.get("jacobian.r").value == min(d, k)


def test_identity_matches_definition_on_cross_entropy():
    """T8's identity: κ^G from weight Jacobians equals (1/n) Σ ‖h‖² tr(J_hᵀ A J_h)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=gen)
    ctx = Context(bc.Subject(mlp([4, 6, 5, 3], "gelu", seed=2), (x, y)))
    for l in (1, 2, 3):
        a, b = ctx.get(f"layer.{l}.kappa_ggn"), ctx.get(f"layer.{l}.kappa_ggn_identity")
        assert abs(a.value - b.value) <= 1e-10 * abs(a.value)


# -- CNNs ---------------------------------------------------------------------------------
def small_cnn(c_in, size, channels, kernel, stride, padding, k, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, channels, kernel, stride=stride, padding=padding)
    side = (size + 2 * padding - kernel) // stride + 1
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(channels * side * side, k))


@settings(max_examples=10)
@given(size=st.integers(3, 5), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.integers(0, 1), channels=st.integers(1, 3),
       loss=st.sampled_from(["mse", "cross_entropy"]), seed=st.integers(0, 10_000))
def test_cnn_quantities_match_brute_force(size, kernel, stride, padding, channels, loss, seed):
    kernel = min(kernel, size + 2 * padding)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 2, size, size, generator=gen, dtype=torch.float64)
    net = small_cnn(2, size, channels, kernel, stride, padding, 3, seed)
    subject = bc.Subject(net, (x, make_targets(loss, 4, 3, gen)), loss)
    ref = reference_values(subject)
    ctx = check_all(subject, ref)
    assert ctx.get("layer.1.is_dense").value == 0
    assert ctx.get("layer.2.is_dense").value == 1
    assert ctx.get("jacobian.r").value == 3
    # the conv layer's identity form is not κ (weight sharing), the definition is measured
    assert ctx.get("layer.1.kappa_ggn").value == pytest.approx(ref["layer.1.kappa_ggn"],
                                                                rel=1e-8)


# -- a tiny transformer block -------------------------------------------------------------
class TinyTransformer(nn.Module):
    """Token embedding, one self-attention head with residual, mean pooling, dense head."""

    def __init__(self, d_in=3, d=4, k=2):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, k)

    def forward(self, x):  # x: (B, T, d_in)
        h = self.embed(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 2.0, dim=-1)
        h = self.norm(h + self.proj(att @ self.v(h)))
        return self.head(torch.tanh(h.mean(1)))


def test_tiny_transformer_against_brute_force():
    torch.manual_seed(0)
    net = TinyTransformer()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (5,), generator=gen)
    subject = bc.Subject(net, (x, y))
    ctx = Context(subject)
    f = subject.net
    jx = [torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0))[0], xi).reshape(2, -1)
          for xi in x]
    s = [torch.linalg.svdvals(j) for j in jx]
    assert_matches("jacobian.mls", ctx.get("jacobian.mls"), float(sum(v[0] for v in s)) / 5)
    assert_matches("jacobian.log_lvr", ctx.get("jacobian.log_lvr"),
                   sum(log_volume(v) for v in s) / 5)
    # the head (layer 6) is dense: its input is tanh(mean_t h)
    head = f.head
    with torch.no_grad():
        def pooled(v):
            h = f.embed(v)
            att = torch.softmax(f.q(h) @ f.k(h).transpose(1, 2) / 2.0, dim=-1)
            return torch.tanh(f.norm(h + f.proj(att @ f.v(h))).mean(1))
        hs = pooled(x)
    jh = [head.weight.detach()] * 5  # J_{h,head} = W_head exactly
    p = torch.softmax(f(x).detach(), 1)
    a = [torch.diag(q) - torch.outer(q, q) for q in p]
    hn2 = (hs**2).sum(1)
    names = [la.name for la in structure(subject).layers]
    l = names.index("head") + 1
    assert [ctx.get(f"layer.{i}.is_dense").value for i in range(1, 7)] == [0, 0, 0, 0, 0, 1]
    sv = float(torch.linalg.svdvals(head.weight.detach())[0])
    assert_matches("mls", ctx.get(f"layer.{l}.mls"), sv)
    assert_matches("identity", ctx.get(f"layer.{l}.kappa_ggn_identity"),
                   float(sum(h * torch.trace(j.T @ q @ j) for h, j, q in
                             zip(hn2, jh, a, strict=True))) / 5)
    # weight gradient of a token-wise layer (q) against autograd per output
    fro2 = 0.0
    for xi in x:
        out = f(xi.unsqueeze(0))[0]
        for c in range(2):
            (g,) = torch.autograd.grad(out[c], f.q.weight, retain_graph=True)
            fro2 += float((g**2).sum())
    q_index = names.index("q") + 1
    assert_matches("grad_w_fro2", ctx.get(f"layer.{q_index}.grad_w_fro2"), fro2 / 5)
    assert ctx.get(f"layer.{l}.kappa_ggn").value == pytest.approx(
        ctx.get(f"layer.{l}.kappa_ggn_identity").value, rel=1e-10)


# -- degenerate cases ---------------------------------------------------------------------
def dead_relu_subject():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(-torch.ones(4, 3))
        net[0].bias.fill_(-1.0)
    x = torch.rand(6, 3, dtype=torch.float64) + 0.1  # positive inputs: every unit dead
    return bc.Subject(net, (x, torch.randn(6, 2, dtype=torch.float64)), "mse")


@pytest.mark.parametrize("name", ["layer.2.input_inv_sq_mean", "layer.2.input_sq_gmean",
                                  "layer.2.sensitivity_ratio_max", "network.nmls_factor",
                                  "network.nvr_rhs", "jacobian.local_dim"])
def test_dead_relu_layer_is_not_applicable(name):
    with pytest.raises(NotApplicableError, match="zero"):
        Context(dead_relu_subject()).get(name)


def test_dead_relu_log_volume_is_minus_infinity_not_nan():
    ctx = Context(dead_relu_subject())
    for name in ("jacobian.log_lvr", "layer.1.log_lvr"):
        e = ctx.get(name)
        assert e.value == e.lower == e.upper == -math.inf
    assert ctx.get("jacobian.mls").value == 0.0
    assert ctx.get("network.nvr").value == -math.inf


def test_bottleneck_is_rank_deficient():
    """K = D = 3 through a width-1 layer: J_x has rank 1, log LVR = −∞ (interval from −∞)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    subject = bc.Subject(mlp([3, 1, 3], "tanh", seed=0), (x, torch.randn(7, 3, generator=gen,
                                                                       dtype=torch.float64)),
                         "mse")
    e = Context(subject).get("jacobian.log_lvr")
    assert e.value == -math.inf and e.lower == -math.inf
    assert e.details["rank_deficient_samples"] == 7
    assert not math.isnan(e.upper)


def test_chunking_does_not_change_results():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(23, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (23,), generator=gen)
    subject = bc.Subject(mlp([4, 8, 3], "tanh", seed=5), (x, y))
    names = ["jacobian.mls", "jacobian.log_lvr", "layer.2.mls", "layer.1.kappa_ggn",
             "layer.2.ggn_trace"]
    whole = bc.measure(subject, names)
    tiny = bc.measure(subject, names, budget=bc.Budget(jacobian_chunk_bytes=1))
    for name in names:
        assert tiny[name].value == pytest.approx(whole[name].value, rel=1e-12)


def test_float32_subject_uses_float32_rounding():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, generator=gen)
    y = torch.randint(0, 2, (8,), generator=gen)
    net = mlp([3, 4, 2], "tanh", seed=2)
    e64 = Context(bc.Subject(net, (x, y))).get("jacobian.mls")
    e32 = Context(bc.Subject(net, (x, y), dtype=torch.float32)).get("jacobian.mls")
    assert e32.lower <= e64.value <= e32.upper
    assert e32.width > 1e3 * e64.width
