"""Issue 12, points 1–5: each wrong verdict reproduced as the user met it, now answered
honestly (NOT_APPLICABLE with the reason, an interval containing the truth, a refusal)."""

import math

import mpmath
import pytest
import sympy
import torch
from torch import nn

import boundcheck as bc
from boundcheck.core.subject import InvalidSubjectError
from boundcheck.verification.registry import unregister

D = torch.float64


@pytest.fixture
def registered():
    ids = []

    def add(theorem):
        bc.register(theorem)
        ids.append(theorem.id)
        return theorem.id

    yield add
    for i in ids:
        unregister(i)


# --- 1: a symbol's declared sign is a precondition, never a clip -----------------------------
def test_positive_symbols_on_a_negative_definite_matrix_are_not_applicable(registered):
    lam, t = sympy.symbols("lambda_max t", positive=True)
    tid = registered(bc.Theorem(id="user.lambda_max_le_trace", title="λ_max ≤ tr H", lhs=lam,
                                rhs=t, symbols={lam: "hessian.lambda_max", t: "hessian.trace"},
                                source="README example"))
    res = bc.verify(bc.MatrixSubject(-torch.diag(torch.tensor([1.0, 2, 3], dtype=D))), [tid])
    r = res[tid]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE  # was HOLDS: −1 and −6 clipped to [0, 0]
    assert "declared positive" in r.reason and "-1" in r.reason
    ok = bc.verify(bc.MatrixSubject(torch.diag(torch.tensor([1.0, 2, 3], dtype=D))), [tid])
    assert ok[tid].verdict == bc.Verdict.HOLDS


def test_nonnegative_symbol_with_negative_measurement_is_not_applicable(registered):
    m = sympy.Symbol("m", nonnegative=True)
    tid = registered(bc.Theorem(id="user.lambda_min_nonneg", title="0 ≤ λ_min",
                                lhs=sympy.Integer(0), rhs=m, symbols={m: "hessian.lambda_min"},
                                source="planted", slack="difference"))
    r = bc.verify(bc.MatrixSubject(torch.diag(torch.tensor([-5.0, 1, 2], dtype=D))), [tid])[tid]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE and "declared nonnegative" in r.reason


def test_straddle_rule():
    from boundcheck.core.intervals import assumption_failure, assumption_undecided

    p = sympy.Symbol("p", nonnegative=True)
    assert assumption_failure(p, 0.0, -1e-300, 1e-300, rounding_only=True) is None
    assert assumption_undecided(p, -1e-300, rounding_only=True) is None
    assert assumption_failure(p, 0.0, -1e-3, 1e-3, rounding_only=False) is None
    assert assumption_undecided(p, -1e-3, rounding_only=False)  # an estimate: undecided
    assert assumption_failure(p, -1e-20, -1e-18, 1e-18, rounding_only=True)  # value outside
    q = sympy.Symbol("q", positive=True)
    assert assumption_failure(q, 0.0, 0.0, 0.0, rounding_only=True)


# --- 2: an exact zero only where it is one ---------------------------------------------------
def _true_jacobian_summaries(net, x):
    mpmath.mp.dps = 60
    w, b, v = (t.detach().tolist() for t in (net[0].weight, net[0].bias, net[2].weight))
    mls, lvr = [], []
    for xi in x.tolist():
        z = [sum(mpmath.mpf(a) * c for a, c in zip(row, xi, strict=True)) + bb
             for row, bb in zip(w, b, strict=True)]
        jac = mpmath.matrix(v) * mpmath.diag([mpmath.sech(zz) ** 2 for zz in z]) \
            * mpmath.matrix(w)
        s = mpmath.svd_r(jac, compute_uv=False)
        mls.append(max(s))
        lvr.append(sum(mpmath.log(si) for si in s))
    return float(sum(mls) / len(mls)), float(sum(lvr) / len(lvr))


def _saturated_tanh_subject(bias=25.0, weight_scale=1.0):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(weight_scale)
        if bias:
            net[0].bias.fill_(bias)
    x = torch.randn(8, 2, dtype=D)
    return net, x, bc.Subject(net, (x, torch.randint(0, 2, (8,))), "cross_entropy")


def test_saturated_tanh_jacobian_is_not_an_exact_zero(registered):
    net, x, subject = _saturated_tanh_subject()
    est = bc.measure(subject, ["jacobian.mls", "jacobian.log_lvr"])
    mls, lvr = _true_jacobian_summaries(net, x)
    assert 1e-23 < mls < 1e-20  # the user's case: tiny, not 0
    assert est["jacobian.mls"].contains(mls) and est["jacobian.mls"].lower > 0
    assert est["jacobian.log_lvr"].contains(lvr) and math.isfinite(est["jacobian.log_lvr"].upper)
    m = sympy.Symbol("m", nonnegative=True)
    tid = registered(bc.Theorem(id="planted.mls_below_1e-25", title="MLS ≤ 1e-25", lhs=m,
                                rhs=sympy.Float(1e-25), symbols={m: "jacobian.mls"},
                                source="planted", slack="difference"))
    assert bc.verify(subject, [tid])[tid].verdict == bc.Verdict.VIOLATED  # was HOLDS


def test_underflowed_jacobian_gets_an_interval_containing_the_truth():
    net, x, subject = _saturated_tanh_subject(bias=0.0, weight_scale=1e-170)
    est = bc.measure(subject, ["jacobian.log_lvr"])["jacobian.log_lvr"]
    _, lvr = _true_jacobian_summaries(net, x)
    assert lvr < -700  # J ≈ 1e-340: underflows in float64
    assert est.contains(lvr) and math.isfinite(est.upper)  # was −∞ "exact"


def test_relu_zero_is_exact_only_when_a_dead_layer_proves_it():
    from boundcheck.engines.jacobians import dead_relu_samples

    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[0].weight.fill_(1e-170)
        net[0].bias.zero_()
        net[2].weight.fill_(1e-170)
        net[2].bias.zero_()
    x = torch.rand(4, 2, dtype=D) + 0.5  # every unit alive: J = 3e-340·… underflows to 0
    assert not dead_relu_samples(net, x).any()
    e = bc.measure(bc.Subject(net, (x, torch.randn(4, 2, dtype=D)), "mse"),
                   ["jacobian.mls"])["jacobian.mls"]
    assert e.value == 0.0 and e.upper > 0  # not "exact" 0
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
    assert dead_relu_samples(net, x).all()  # a dead layer: the zero is proven


def test_stable_activations_match_high_precision_derivatives():
    from boundcheck.core.activations import stable_sigmoid, stable_tanh

    mpmath.mp.dps = 60
    for z0 in (-30.0, -19.5, -3.0, -0.4, 0.0, 0.3, 0.5, 2.0, 19.5, 25.0, 300.0):
        z = torch.tensor(z0, dtype=D, requires_grad=True)
        g, = torch.autograd.grad(stable_tanh(z), z)
        assert float(g) == pytest.approx(float(mpmath.sech(z0) ** 2), rel=1e-13)
        g, = torch.autograd.grad(stable_sigmoid(z), z)
        e = mpmath.exp(-abs(mpmath.mpf(z0)))
        assert float(g) == pytest.approx(float(e / (1 + e) ** 2), rel=1e-13)


# --- 3: frozen parameters --------------------------------------------------------------------
def _frozen_first_layer():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 1)).double()
    net[0].weight.requires_grad_(False)
    x = torch.tensor([[1.0, 2.0, 2.0], [2.0, -1.0, 2.0]], dtype=D)  # ‖x‖ = 3
    y = torch.tensor([[0.5], [-0.3]], dtype=D)
    return net, x, y


def test_frozen_layer_is_in_the_hessian_by_default():
    net, x, y = _frozen_first_layer()
    subject = bc.Subject(net, (x, y), "mse")
    assert subject.num_params == 4 and any("frozen" in n for n in subject.describe()["notes"])
    res = bc.verify(subject, ["compression.mls", "compression.lvr", "compression.nmls"])
    for r in res.results:
        assert r.verdict in (bc.Verdict.HOLDS, bc.Verdict.NOT_APPLICABLE), (r.theorem_id, r)
    assert res["compression.mls"].verdict == bc.Verdict.HOLDS  # was VIOLATED
    assert not net[0].weight.requires_grad  # the user's model is untouched


def test_trainable_only_excludes_frozen_and_says_so():
    net, x, y = _frozen_first_layer()
    subject = bc.Subject(net, (x, y), "mse", trainable_only=True)
    assert subject.num_params == 1
    res = bc.verify(subject, ["compression.mls", "compression.lvr", "compression.nmls"])
    for r in res.results:
        assert r.verdict == bc.Verdict.NOT_APPLICABLE, (r.theorem_id, r)
        assert "frozen" in r.reason


# --- 4: losses measured as given, or refused -------------------------------------------------
def _ce_subject(loss, n=6, k=3):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(2, k)).double()
    x = torch.randn(n, 2, dtype=D)
    y = torch.tensor([0, 1, 2, 0, 0, 1])[:n]
    return net, x, y, bc.Subject(net, (x, y), loss)


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0, 0.5])),
                                  nn.CrossEntropyLoss(reduction="sum"),
                                  nn.CrossEntropyLoss(ignore_index=1),
                                  nn.NLLLoss(reduction="sum")])
def test_loss_modules_not_a_mean_over_samples_are_refused(loss):
    with pytest.raises(ValueError, match="refused"):
        _ce_subject(loss)


def test_a_batch_statistic_callable_is_refused():
    def weighted(z, y):
        w = torch.tensor([1.0, 3.0, 0.5], dtype=z.dtype)[y]
        return (w * nn.functional.cross_entropy(z, y, reduction="none")).sum() / w.sum()

    with pytest.raises(ValueError, match="not a mean over samples"):
        _ce_subject(weighted)


def test_label_smoothing_is_measured_exactly_as_the_module_computes():
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    net, x, y, subject = _ce_subject(loss)
    params = [p.detach().clone() for p in net.parameters()]

    def full(*ps):
        names = ["0.weight", "0.bias"]
        z = torch.func.functional_call(net, dict(zip(names, ps, strict=True)), (x,))
        return loss(z, y)

    blocks = torch.autograd.functional.hessian(full, tuple(params))
    sizes = [p.numel() for p in params]
    h = torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(2)], 1)
                   for i in range(2)])
    est = bc.measure(subject, ["hessian.lambda_max", "hessian.trace"])
    assert est["hessian.lambda_max"].contains(float(torch.linalg.eigvalsh(h)[-1]))
    assert est["hessian.trace"].contains(float(torch.trace(h)))


# --- 5: complex matrices, underflow, overflow ------------------------------------------------
def test_complex_hermitian_matrix_is_refused():
    a = torch.tensor([[1.0, 2j], [-2j, 1.0]], dtype=torch.complex128)
    with pytest.raises(InvalidSubjectError, match="complex"):
        bc.MatrixSubject(a)


def test_closed_form_fro2_below_the_smallest_double_is_not_exact_zero():
    """Saturated softmax (margin 400): H ≈ e^{-400}, ‖H‖_F² ≈ 1e-348 < 5e-324."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[2].bias.copy_(torch.tensor([400.0, 0.0]))
    x = torch.randn(4, 2, dtype=D)
    subject = bc.Subject(net, (x, torch.zeros(4, dtype=torch.long)), "cross_entropy")
    est = bc.measure(subject, ["closed_form.fro2", "closed_form.trace"])
    assert est["closed_form.trace"].lower > 0  # so ‖H‖_F² ≥ (tr H)²/P > 0
    assert est["closed_form.fro2"].value == 0.0 and est["closed_form.fro2"].upper > 0  # was [0, 0]


def test_huge_entries_give_an_interval_not_an_overflow(registered):
    a = torch.diag(torch.tensor([1e300, 2e300, 3e300], dtype=D))
    est = bc.measure(bc.MatrixSubject(a), ["hessian.fro2", "hessian.moment_4"])
    for e in est.values():
        assert e.upper == math.inf and e.lower > 1e308
    f = sympy.Symbol("f", nonnegative=True)
    tid = registered(bc.Theorem(id="user.fro2_small", title="‖H‖_F² ≤ 1", lhs=f,
                                rhs=sympy.Integer(1), symbols={f: "hessian.fro2"},
                                source="planted", slack="difference"))
    assert bc.verify(bc.MatrixSubject(a), [tid])[tid].verdict == bc.Verdict.VIOLATED
