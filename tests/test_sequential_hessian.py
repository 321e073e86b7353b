"""Exact curvature of sequential MLPs against brute force.

The layer-block dense Hessian, its diagonal and trace against
``torch.autograd.functional.hessian`` (and the independent graph-reusing autograd route
``HessianOperator.dense``) on hypothesis-drawn MLPs: depths 1–4, bias on and off, six
activations, MSE, cross-entropy and a generic callable loss, several batches of unequal size.
Then the cases that break shortcuts: every supported elementwise module, a leading Flatten with
image-shaped inputs, trailing activations, dead ReLU units, a saturated cross-entropy net,
forced slicing and chunking, float32. The rounding bounds are checked against references of
higher precision: a 40-digit mpmath Hessian from hyper-dual numbers (no truncation error), and
the float64 result for float32 subjects. Unsupported networks get reasons, not answers.
"""

import math

import mpmath
import pytest
import torch
from hyperdual import HyperDual, hd_exp, hd_log, hd_tanh, seeded
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

import boundcheck as bc
import boundcheck.engines.sequential_hessian as sh
from boundcheck.engines.curvature import HessianOperator, dense_hessian
from boundcheck.engines.sequential import sequential_structure, subject_structure
from boundcheck.harness.models import mlp
from boundcheck.quantities import Budget, Context
from boundcheck.quantities.hessian import dense_spectrum, matrix_free_trace

ACTS = ["tanh", "gelu", "softplus", "sigmoid", "relu", "identity"]


def log_cosh(z, y):
    """A generic callable loss (mean over the batch) with a non-constant output Hessian."""
    return torch.log(torch.cosh(z - y)).sum(dim=1).mean()


def autograd_hessian(subject: bc.Subject) -> torch.Tensor:
    """``torch.autograd.functional.hessian`` of the sample-weighted loss in flat parameters."""
    names, shapes = subject.param_names, [p.shape for p in subject.params]
    sizes = [p.numel() for p in subject.params]

    def loss(theta):
        parts = torch.split(theta, sizes)
        params = {k: t.reshape(s) for k, t, s in zip(names, parts, shapes, strict=True)}
        total = sum(subject.loss_fn.per_sample(functional_call(subject.net, params, (b.x,)),
                                               b.y).sum() for b in subject.batches)
        return total / subject.n

    return torch.autograd.functional.hessian(loss, subject.flat_params())


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.abs().max())
    diff = float((a - b).abs().max())
    return diff / scale if scale > 0 else diff


def assert_matches(subject: bc.Subject, reference: torch.Tensor, tol: float = 1e-10) -> None:
    """Dense, diagonal and trace of the exact route against ``reference``, each within ``tol``
    and within the route's own rounding bounds (plus the reference's rounding)."""
    reference = 0.5 * (reference + reference.T)
    dense = sh.exact_dense_hessian(subject)
    assert torch.equal(dense.matrix, dense.matrix.T)
    assert rel_diff(dense.matrix, reference) <= tol
    diag = sh.exact_diagonal(subject)
    assert rel_diff(diag.value, torch.diagonal(reference)) <= tol
    trace = sh.exact_trace(subject)
    truth = float(torch.trace(reference))
    scale = max(abs(truth), float(torch.diagonal(reference).abs().sum()) * 1e-6, 1e-300)
    assert abs(trace.value - truth) <= tol * scale, (trace, truth)
    assert math.isclose(trace.value, float(diag.value.sum()), rel_tol=1e-12, abs_tol=1e-300)


def make_subject(sizes, act="tanh", bias=True, loss="cross_entropy", n=9, seed=0, cuts=(),
                 scale=1.0) -> bc.Subject:
    g = torch.Generator().manual_seed(seed)
    net = mlp(sizes, act, bias=bias, seed=seed).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    x = torch.randn(n, sizes[0], generator=g, dtype=torch.float64)
    if loss == "cross_entropy":
        y = torch.randint(0, sizes[-1], (n,), generator=g)
    else:
        y = torch.randn(n, sizes[-1], generator=g, dtype=torch.float64)
    bounds = [0, *cuts, n]
    batches = [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return bc.Subject(net, batches, loss=log_cosh if loss == "generic" else loss)


def saturated_problem(sizes, margin: float | None, n: int = 3, seed: int = 0):
    """A tanh MLP with labels its argmax; with ``margin``, the last layer is scaled until the
    smallest logit margin is ``margin`` (saturated softmax, ``1 − p_y ≲ K e^{−margin}``)."""
    torch.manual_seed(seed)
    net = mlp(sizes, "tanh", seed=seed).double()
    x = torch.randn(n, sizes[0], dtype=torch.float64)
    with torch.no_grad():
        z = net(x)
        y = z.argmax(dim=1)
        if margin is not None:
            top2 = z.topk(2, dim=1).values
            factor = margin / float((top2[:, 0] - top2[:, 1]).min())
            net[-1].weight.mul_(factor)
            net[-1].bias.mul_(factor)
    return net, x, y


# --- brute force ---------------------------------------------------------------------------
@st.composite
def mlp_problems(draw):
    depth = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 5), min_size=depth + 1, max_size=depth + 1))
    n = draw(st.integers(1, 8))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=2)))) if n > 1 \
        else []
    return dict(sizes=sizes, act=draw(st.sampled_from(ACTS)), bias=draw(st.booleans()),
                loss=draw(st.sampled_from(["cross_entropy", "mse", "mse:0.3", "generic"])),
                n=n, seed=draw(st.integers(0, 2**16)), cuts=tuple(cuts),
                scale=draw(st.sampled_from([0.5, 1.0, 2.0])))


@settings(max_examples=40)
@given(mlp_problems())
def test_exact_curvature_matches_autograd_on_drawn_mlps(problem):
    subject = make_subject(**problem)
    assert_matches(subject, autograd_hessian(subject))


@pytest.mark.parametrize("sizes", [[3, 4], [3, 5, 2], [3, 5, 4, 2], [2, 6, 3, 5, 3], [3, 2, 4],
                                   [12, 2, 3]],
                         ids=["depth1", "depth2", "depth3", "depth4", "narrow-hidden",
                              "wide-input"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_exact_curvature_matches_the_autograd_route(sizes, bias):
    """Low-rank and full recursions (K below / above the hidden widths), Kronecker and
    expanded blocks (``[12, 2, 3]``: 13 rows per unit against 2·2 pairs), two batches."""
    subject = make_subject(sizes, "tanh", bias, n=11, seed=len(sizes), cuts=(4,))
    assert_matches(subject, HessianOperator(subject).dense())


@pytest.mark.parametrize("act", [nn.Tanh(), nn.Sigmoid(), nn.ReLU(), nn.LeakyReLU(0.1), nn.ELU(),
                                 nn.SELU(), nn.CELU(0.7), nn.GELU(), nn.GELU("tanh"), nn.SiLU(),
                                 nn.Softplus(beta=3.0), nn.Mish(), nn.Softsign(),
                                 nn.Tanhshrink(), nn.Hardtanh(-0.5, 0.7), nn.ReLU6(),
                                 nn.ReLU(inplace=True)], ids=lambda m: repr(m))
def test_every_supported_elementwise_module(act):
    """The same module instance three times (hidden twice and after the output), with eval
    Dropout and Identity in between: a module listed once by ``named_children`` runs thrice."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), act, nn.Dropout(0.3), nn.Linear(5, 4), nn.Identity(),
                        act, nn.Linear(4, 3), act).double().eval()
    x = 2 * torch.randn(9, 3, dtype=torch.float64)
    subject = bc.Subject(net, (x, torch.randint(0, 3, (9,))))
    structure = subject_structure(subject)
    assert [len(a) for a in structure.activations] == [1, 1, 1]
    assert_matches(subject, autograd_hessian(subject))


def test_flatten_nested_sequentials_and_image_batches_of_unequal_size():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 6), nn.GELU()),
                        nn.Sequential(nn.Sequential(nn.Linear(6, 5), nn.Softplus()),
                                      nn.Linear(5, 3))).double()
    x = torch.randn(13, 3, 2, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (13,))
    subject = bc.Subject(net, [(x[:2], y[:2]), (x[2:10], y[2:10]), (x[10:], y[10:])])
    assert subject_structure(subject).depth == 3
    assert_matches(subject, autograd_hessian(subject))


def test_trailing_activation_with_mse():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), nn.Sigmoid()).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    subject = bc.Subject(net, (x, torch.rand(10, 3, dtype=torch.float64)), loss="mse")
    assert_matches(subject, autograd_hessian(subject))


def test_dead_relu_units():
    net = mlp([4, 6, 5, 3], "relu", seed=3).double()
    with torch.no_grad():
        net[0].bias[:3] = -100.0  # three units of the first hidden layer never fire
        net[2].bias[0] = -100.0
    x = torch.randn(12, 4, dtype=torch.float64)
    subject = bc.Subject(net, (x, torch.randint(0, 3, (12,))))
    assert_matches(subject, autograd_hessian(subject))
    rows = slice(0, 3 * 4)  # the dead units' weights have zero curvature
    assert torch.all(sh.exact_diagonal(subject).value[rows] == 0)


def test_saturated_cross_entropy_agrees_with_the_stable_autograd_route():
    """1 − p_y < 1e-10 for every sample: autograd through ``F.cross_entropy`` would cancel;
    both routes use the stable loss, and agree to 1e-8 (diagonal and trace)."""
    net, x, y = saturated_problem([3, 5, 4], margin=28.0, n=8, seed=4)
    with torch.no_grad():
        p = torch.softmax(net(x), dim=1)
    gaps = 1 - p.gather(1, y[:, None])
    assert 1e-16 < float(gaps.max()) < 1e-10
    subject = bc.Subject(net, (x, y))
    ref = HessianOperator(subject).dense()
    ref = 0.5 * (ref + ref.T)
    diag = sh.exact_diagonal(subject)
    assert rel_diff(diag.value, torch.diagonal(ref)) <= 1e-8
    trace = sh.exact_trace(subject)
    assert math.isclose(trace.value, float(torch.trace(ref)), rel_tol=1e-8)
    assert rel_diff(sh.exact_dense_hessian(subject).matrix, ref) <= 1e-8


def test_slicing_and_chunking(monkeypatch):
    """Tiny memory budgets: one or two samples per chunk, single-unit row slices."""
    subject = make_subject([3, 5, 4, 2], "gelu", True, n=7, seed=5, cuts=(3,))
    reference = autograd_hessian(subject)
    monkeypatch.setattr(sh, "CHUNK_BYTES", 4000)
    monkeypatch.setattr(sh, "BLOCK_BYTES", 3000)
    assert_matches(subject, reference)


# --- rounding bounds against higher precision -----------------------------------------------
def mp_loss(theta, net: nn.Sequential, x, y):
    """Mean cross-entropy of a tanh MLP (``mlp``'s layout) at hyper-dual parameters."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    total = HyperDual(mpmath.mpf(0))
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        a = [HyperDual(mpmath.mpf(v)) for v in xi]
        pos = 0
        for idx, lin in enumerate(linears):
            o, i = lin.weight.shape
            w = theta[pos:pos + o * i]
            b = theta[pos + o * i:pos + o * i + o]
            pos += o * i + o
            s = [sum((w[r * i + k] * a[k] for k in range(i)), b[r]) for r in range(o)]
            a = s if idx == len(linears) - 1 else [hd_tanh(v) for v in s]
        top = max(range(len(a)), key=lambda k: a[k].a)
        lse = sum(hd_exp(v - a[top]) for v in a)
        total = total + hd_log(lse) + a[top] - a[yi]
    return total * (mpmath.mpf(1) / len(y))


def mp_hessian_entry(net, x, y, base, i, j):
    return mp_loss(seeded(base, i, j), net, x, y).d


@pytest.mark.parametrize("margin", [None, 30.0], ids=["plain", "saturated"])
def test_bounds_contain_the_40_digit_hessian(margin):
    mpmath.mp.dps = 40
    net, x, y = saturated_problem([2, 3, 3], margin, seed=0)
    subject = bc.Subject(net, (x, y))
    base = [mpmath.mpf(float(v)) for v in subject.flat_params()]
    p = len(base)
    ref = [[None] * p for _ in range(p)]
    for i in range(p):
        for j in range(i, p):
            ref[i][j] = ref[j][i] = mp_hessian_entry(net, x, y, base, i, j)
    dense = sh.exact_dense_hessian(subject)
    ours = dense.matrix.tolist()
    err = mpmath.sqrt(mpmath.fsum((mpmath.mpf(ours[i][j]) - ref[i][j]) ** 2
                                  for i in range(p) for j in range(p)))
    norm = mpmath.sqrt(mpmath.fsum(ref[i][j] ** 2 for i in range(p) for j in range(p)))
    assert err <= dense.frobenius_error
    assert dense.frobenius_error <= 1e-10 * norm  # and not vacuous
    trace = sh.exact_trace(subject)
    ref_trace = mpmath.fsum(ref[i][i] for i in range(p))
    assert abs(mpmath.mpf(trace.value) - ref_trace) <= trace.abs_error <= 1e-10 * abs(ref_trace)
    diag = sh.exact_diagonal(subject)
    for i in range(p):
        assert abs(mpmath.mpf(float(diag.value[i])) - ref[i][i]) <= float(diag.abs_error[i])
    measured = bc.measure(subject, ["hessian.trace"], budget=Budget(max_dense_params=0))
    assert measured["hessian.trace"].contains(float(ref_trace))


def test_trace_bound_contains_the_40_digit_trace_of_a_deeper_saturated_net():
    mpmath.mp.dps = 40
    net, x, y = saturated_problem([2, 3, 2, 3], 25.0, seed=1)
    subject = bc.Subject(net, (x, y))
    base = [mpmath.mpf(float(v)) for v in subject.flat_params()]
    ref = [mp_hessian_entry(net, x, y, base, i, i) for i in range(len(base))]
    trace = sh.exact_trace(subject)
    assert abs(mpmath.mpf(trace.value) - mpmath.fsum(ref)) <= trace.abs_error
    diag = sh.exact_diagonal(subject)
    for i, r in enumerate(ref):
        assert abs(mpmath.mpf(float(diag.value[i])) - r) <= float(diag.abs_error[i])


@pytest.mark.parametrize("act", ["tanh", "gelu", "relu"])
def test_float32_bounds_contain_the_float64_result(act):
    net = mlp([5, 8, 6, 3], act, seed=6)
    x = torch.randn(40, 5)
    y = torch.randint(0, 3, (40,))
    single = bc.Subject(net, (x, y), dtype=torch.float32)
    double = bc.Subject(net, (x, y))
    t32, t64 = sh.exact_trace(single), sh.exact_trace(double)
    assert abs(t32.value - t64.value) <= t32.abs_error + t64.abs_error
    assert t32.abs_error <= 1e-3 * abs(t64.value)
    d32, d64 = sh.exact_dense_hessian(single), sh.exact_dense_hessian(double)
    assert d32.matrix.dtype == torch.float32
    gap = float(torch.linalg.matrix_norm(d32.matrix.double() - d64.matrix))
    assert gap <= d32.frobenius_error + d64.frobenius_error
    g32, g64 = sh.exact_diagonal(single), sh.exact_diagonal(double)
    assert torch.all((g32.value.double() - g64.value).abs()
                     <= g32.abs_error.double() + g64.abs_error)


# --- which networks ---------------------------------------------------------------------------
class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("net, reason", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)), "Conv2d at net.0"),
    (nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)), "LayerNorm at net.1"),
    (nn.Sequential(nn.Linear(4, 5), nn.Sequential(nn.Tanh(), nn.Softmax(dim=1)),
                   nn.Linear(5, 3)), "Softmax at net.1.1"),
    (nn.Sequential(nn.Linear(4, 5), nn.Flatten(), nn.Linear(5, 3)), "Flatten at net.1 after"),
    (nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.5).train(), nn.Linear(5, 3)),
     "Dropout at net.1 is in train mode"),
    (nn.Sequential(nn.Tanh()), "no Linear layer"),
    (Custom(), "the network is Custom"),
], ids=["conv", "layernorm", "softmax", "late-flatten", "train-dropout", "no-linear", "custom"])
def test_unsupported_networks_get_reasons(net, reason):
    found = sequential_structure(net)
    assert isinstance(found, str) and reason in found, found


def test_frozen_shared_and_token_inputs_are_refused():
    net = mlp([4, 5, 3], "tanh", seed=7).double()
    net[0].weight.requires_grad_(False)
    assert "0.weight is frozen" in sequential_structure(net)
    lin = nn.Linear(4, 4)
    assert "used twice" in sequential_structure(nn.Sequential(lin, nn.Tanh(), lin))
    odd = mlp([4, 5, 3], "tanh", seed=7)
    odd[1].scale = nn.Parameter(torch.ones(()))
    assert "outside its Linear layers" in sequential_structure(odd)
    hooked = mlp([4, 5, 3], "tanh", seed=7)
    hooked[1].register_forward_hook(lambda m, i, o: 2 * o)
    assert "forward hooks" in sequential_structure(hooked)
    tokens = bc.Subject(nn.Sequential(nn.Linear(4, 3), nn.Flatten()),
                        (torch.randn(5, 2, 4), torch.randint(0, 6, (5,))))
    reason = subject_structure(tokens)
    assert isinstance(reason, str) and "acts per position" in reason
    with pytest.raises(ValueError, match="per position"):
        sh.exact_trace(tokens)
    assert subject_structure(bc.MatrixSubject(torch.eye(3))) == "not a network subject"


# --- wiring ------------------------------------------------------------------------------------
def test_trace_quantity_above_the_dense_budget_is_exact_for_mlps():
    subject = make_subject([4, 7, 3], "tanh", n=20, seed=8)
    truth = float(torch.trace(autograd_hessian(subject)))
    est = bc.measure(subject, ["hessian.trace"], budget=Budget(max_dense_params=0))
    t = est["hessian.trace"]
    assert t.kind == "exact" and "pre-activation" in t.method and t.contains(truth)
    assert t.half_width <= 1e-11 * abs(truth)
    forced = Context(subject, budget=Budget(max_dense_params=0, trace_method="hutchinson",
                                            trace_rel_half_width=0.2, max_probes=60))
    assert forced.get("hessian.trace").kind == "statistical"
    auto = matrix_free_trace(Context(subject, budget=Budget(max_dense_params=0,
                                                            trace_rel_half_width=0.2,
                                                            max_probes=60)))
    assert auto.kind == "statistical"


def test_dense_hessian_routes_mlps_to_layer_blocks_and_others_to_autograd():
    subject = make_subject([4, 6, 3], "tanh", n=10, seed=9)
    h = dense_hessian(subject)
    assert torch.equal(h, sh.exact_dense_hessian(subject).matrix)
    torch.manual_seed(9)
    cnn = bc.Subject(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(),
                                   nn.Linear(8, 3)).double(),
                     (torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (6,))))
    assert torch.equal(dense_hessian(cnn), HessianOperator(cnn).dense())
    spectrum = dense_spectrum(Context(subject))
    assert spectrum.perturbation * spectrum.scale >= sh.exact_dense_hessian(
        subject).frobenius_error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda():
    net = mlp([5, 8, 6, 3], "gelu", seed=10).double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    gpu = bc.Subject(net, (x, y), device="cuda")
    cpu = bc.Subject(net, (x, y))
    d_gpu, d_cpu = sh.exact_dense_hessian(gpu), sh.exact_dense_hessian(cpu)
    assert d_gpu.matrix.device.type == "cuda"
    assert rel_diff(d_gpu.matrix.cpu(), d_cpu.matrix) <= 1e-12
    assert math.isclose(sh.exact_trace(gpu).value, sh.exact_trace(cpu).value, rel_tol=1e-12)
