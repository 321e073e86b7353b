"""T2: the closed-form tr H and ‖H‖_F² (Tier A) against dense Hessians, its derivation, the
Wolkowicz–Styan bound from it, and the norm-level Tier B bound."""

import math

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.engines import closed_form as cf
from boundcheck.engines.curvature import dense_hessian
from boundcheck.harness.models import mlp
from boundcheck.harness.training import Recipe, train
from derivations import closed_form_ce as tier_a
from derivations import closed_form_ce_tier_b as tier_b
from derivations.proof import Step, StepFailed

ACTIVATIONS = {
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus, "gelu": nn.GELU,
    "identity": nn.Identity,
    "softplus_b3": lambda: nn.Softplus(beta=3.0, threshold=2.0),
}


def two_layer(d, h, k, act, bias=True, seed=0, scale=1.0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, h, bias=bias), ACTIVATIONS[act](),
                        nn.Linear(h, k, bias=bias)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def dense_reference(subject):
    h = dense_hessian(subject).to(torch.float64)
    h = 0.5 * (h + h.T)
    return h, float(torch.trace(h)), float((h * h).sum())


# --- the derivation -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("step", tier_a.DERIVATION.steps, ids=lambda s: s.name[:60])
def test_tier_a_step(step):
    step.verify()


def _at_random_integers(step: Step, rhs) -> Step:
    """The claim ``step.lhs = rhs`` (with the step's definitions substituted) at a random
    integer point: fast to refute, and a true identity still holds."""
    lhs = sympy.sympify(step.lhs).subs(step.substitutions)
    rhs = sympy.sympify(rhs).subs(step.substitutions)
    free = sorted(lhs.free_symbols | rhs.free_symbols, key=str)
    g = torch.Generator().manual_seed(0)
    point = {sym: int(v) for sym, v in zip(free, torch.randint(-5, 6, (len(free),),
                                                                generator=g), strict=True)}
    return Step(step.name, lhs, rhs, substitutions=point)


@pytest.mark.slow
def test_a_wrong_pair_formula_is_caught():
    """The pair step fails if the cross-block coefficient 2 is replaced by 1."""
    step = next(s for s in tier_a.DERIVATION.steps if s.name.startswith("⟨H_i,H_j⟩_F = Φ_ij (the"))
    _at_random_integers(step, step.rhs).verify()
    with pytest.raises(StepFailed):
        _at_random_integers(step, step.rhs - tier_a.GX * tier_a.CC_EXPR).verify()


def test_a_wrong_trace_formula_is_caught():
    step = next(s for s in tier_a.DERIVATION.steps if s.name.startswith("per-sample trace"))
    wrong = tier_a.TRA * tier_a.NA + tier_a.TBAB * tier_a.NX  # Σ_r q_ir dropped
    with pytest.raises(StepFailed):
        Step(step.name, step.lhs, wrong, substitutions=step.substitutions).verify()


def test_generated_torch_code_is_the_derived_expression():
    trace_fn, pair_fn = cf.generated()
    g = torch.Generator().manual_seed(0)
    args = torch.randn(len(tier_a.PAIR_SYMBOLS), 5, dtype=torch.float64, generator=g)
    got = pair_fn(*args)
    for col in range(5):
        point = {s: float(args[i, col]) for i, s in enumerate(tier_a.PAIR_SYMBOLS)}
        assert math.isclose(float(got[col]), float(tier_a.PAIR_EXPR.subs(point)), rel_tol=1e-12)
    targs = torch.randn(len(tier_a.TRACE_SYMBOLS), 5, dtype=torch.float64, generator=g)
    tgot = trace_fn(*targs)
    for col in range(5):
        point = {s: float(targs[i, col]) for i, s in enumerate(tier_a.TRACE_SYMBOLS)}
        assert math.isclose(float(tgot[col]), float(tier_a.TRACE_EXPR.subs(point)),
                            rel_tol=1e-12)


@pytest.mark.parametrize("module", [nn.Tanh(), nn.Sigmoid(), nn.Softplus(), nn.GELU(),
                                    nn.Softplus(beta=2.5, threshold=3.0), nn.Identity()],
                         ids=lambda m: repr(m))
def test_activation_derivatives_match_autograd(module):
    act = cf.activation_of(module)
    z = torch.cat([torch.linspace(-40, 40, 801), torch.tensor([-1e-3, 0.0, 1e-3])]).double()
    a, s1, s2, m1, m2 = act.derivatives(z)
    zz = z.clone().requires_grad_(True)
    out = module(zz)
    (d1,) = torch.autograd.grad(out.sum(), zz, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), zz) if d1.requires_grad else (torch.zeros_like(z),)
    assert torch.allclose(a, out.detach(), rtol=1e-13, atol=1e-15)
    assert torch.allclose(s1, d1.detach(), rtol=1e-12, atol=1e-15)
    assert torch.allclose(s2, d2, rtol=1e-10, atol=1e-15)
    assert (s1.abs() <= act.sup_d1 * (1 + 1e-12)).all()
    assert (s2.abs() <= act.sup_d2 * (1 + 1e-12) + 1e-300).all()
    assert (m1 >= s1.abs()).all() and (m2 >= s2.abs()).all()


# --- Tier A against dense Hessians ------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=25)
@given(d=st.integers(1, 5), h=st.integers(1, 6), k=st.integers(2, 5), n=st.integers(1, 12),
       act=st.sampled_from(sorted(ACTIVATIONS)), bias=st.booleans(),
       scale=st.sampled_from([0.1, 1.0, 4.0]), xscale=st.sampled_from([0.1, 1.0, 10.0]),
       seed=st.integers(0, 10_000))
def test_tier_a_equals_dense(d, h, k, n, act, bias, scale, xscale, seed):
    g = torch.Generator().manual_seed(seed)
    x = xscale * torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    s = bc.Subject(two_layer(d, h, k, act, bias, seed, scale), (x, y), "cross_entropy")
    hess, trace, fro2 = dense_reference(s)
    ref = bc.measure(s, ["hessian.trace", "hessian.fro2", "hessian.lambda_max"],
                     budget=bc.Budget(route="exact"))  # dense: λ_max exact, not an interval
    results = [cf.closed_form_traces(cf.two_layer_net(s), *cf.subject_data(s), route=r)
               for r in ("h", "K")]
    for r in results:
        # accurate to 1e-10 of the scale, or (deep cancellation, values near underflow: the
        # dense reference is then no better) within the closed form's own rounding bound
        assert abs(r.trace - trace) <= 1e-10 * max(abs(trace), math.sqrt(fro2 * s.num_params)) \
            + r.trace_error + 1e-300
        assert abs(r.fro2 - fro2) <= 1e-10 * fro2 + r.fro2_error + 1e-300
        # the error bars cover the disagreement with the dense path's own interval
        assert abs(r.trace - trace) <= r.trace_error + ref["hessian.trace"].half_width + 1e-300
        assert abs(r.fro2 - fro2) <= r.fro2_error + ref["hessian.fro2"].half_width + 1e-300
    lam = ref["hessian.lambda_max"].upper
    est = bc.measure(s, ["closed_form.ws_lambda_max", "closed_form.tier_b_lambda_max",
                         "closed_form.tier_b_sat_lambda_max"])
    for name, e in est.items():
        assert e.lower >= lam - 1e-12 * max(1.0, abs(lam)), (name, e, lam)


def test_saturated_net_matches_the_50_digit_reference():
    """The closed form against a 50-digit hyper-dual Hessian of a net with 1 − p_y ≈ 1e-13
    (tests/test_cross_entropy_numerics.py builds it and shows plain autograd is off there)."""
    numerics = pytest.importorskip("test_cross_entropy_numerics")
    import mpmath

    mpmath.mp.dps = numerics.DIGITS
    net, x, y = numerics.saturated_problem()
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    base = [mpmath.mpf(float(v)) for v in flat]
    p = len(base)
    trace, fro2 = mpmath.mpf(0), mpmath.mpf(0)
    for i in range(p):
        for j in range(i, p):
            theta = [numerics.HyperDual(v) for v in base]
            if i == j:
                theta[i] = numerics.HyperDual(base[i], 1, 1, 0)
            else:
                theta[i] = numerics.HyperDual(base[i], 1, 0, 0)
                theta[j] = numerics.HyperDual(base[j], 0, 1, 0)
            hij = numerics.mp_loss(theta, x, y).d
            trace += hij if i == j else 0
            fro2 += hij**2 * (1 if i == j else 2)
    s = bc.Subject(net, (x, y), "cross_entropy")
    est = bc.measure(s, ["closed_form.trace", "closed_form.fro2"])
    assert est["closed_form.trace"].contains(float(trace))
    assert est["closed_form.fro2"].contains(float(fro2))
    assert abs(est["closed_form.fro2"].value - float(fro2)) <= 1e-10 * float(fro2)


@pytest.fixture(scope="module")
def trained_digits():
    """A 64→12→10 softplus net trained on 200 digits until the softmax saturates."""
    x, y = bc.data.bundled("digits", n=200)
    net = mlp([64, 12, 10], "softplus", seed=0)
    train(net, x, y, recipe=Recipe(optimizer="adam", lr=0.05, steps=600), progress=False)
    return bc.Subject(net, (x, y), "cross_entropy")


def test_trained_saturated_net_equals_dense(trained_digits):
    s = trained_digits
    with torch.no_grad():
        p = torch.softmax(s.net(s.x_all), 1).gather(1, s.y_all.view(-1, 1))
    assert float((1 - p).min()) < 1e-8  # saturated samples are present
    _, trace, fro2 = dense_reference(s)
    r = cf.subject_traces(s)
    assert abs(r.trace - trace) <= 1e-10 * abs(trace)
    assert abs(r.fro2 - fro2) <= 1e-10 * fro2
    res = {t.theorem_id: t for t in bc.verify(s, "hessian.closed_form")}
    assert all(t.verdict == bc.Verdict.HOLDS for t in res.values()), res


# --- applicability ----------------------------------------------------------------------------
def _subject(net, loss="cross_entropy", x=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64) if x is None else x
    y = torch.randint(0, 3, (6,), generator=g) if loss == "cross_entropy" else torch.randn(6, 3)
    return bc.Subject(net, (x, y), loss)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))) + x


@pytest.mark.parametrize("make, words", [
    (lambda: _subject(mlp([3, 4, 3], "relu")), "ReLU"),
    (lambda: _subject(mlp([3, 4, 3], "tanh"), loss="mse"), "cross-entropy"),
    (lambda: _subject(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(),
                                    nn.Linear(4, 3))), "ReLU"),  # depth 2 applies since #17
    (lambda: _subject(nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh"),
                                    nn.Linear(4, 3))), "approximate"),
    (lambda: _subject(Custom()), "nn.Sequential"),
    (lambda: bc.MatrixSubject(torch.eye(3)), "network subject"),
])
def test_not_applicable_with_reason(make, words):
    subject = make()
    for r in bc.verify(subject, "hessian.closed_form"):
        assert r.verdict == bc.Verdict.NOT_APPLICABLE
        assert words in r.reason, r.reason


def test_frozen_parameters_are_in_h_unless_trainable_only():
    """H is over all parameters by default (issue 12), so T2's closed form applies to a model
    with a frozen bias; over the trainable ones only it does not (it is for all of W, b, V,
    c)."""
    net = mlp([3, 4, 3], "tanh")
    net[0].bias.requires_grad_(False)
    s = _subject(net)
    assert cf.architecture_reason(s) is None
    _, trace, fro2 = dense_reference(s)
    r = cf.subject_traces(s)
    assert math.isclose(r.trace, trace, rel_tol=1e-10)
    assert math.isclose(r.fro2, fro2, rel_tol=1e-10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    only = bc.Subject(net, (x, torch.randint(0, 3, (6,), generator=g)), trainable_only=True)
    assert "frozen" in cf.architecture_reason(only)


def test_flatten_first_and_dropout_are_transparent():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.Tanh(), nn.Dropout(0.3),
                        nn.Linear(5, 3)).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 2, 2, generator=g, dtype=torch.float64)
    s = bc.Subject(net, (x, torch.randint(0, 3, (7,), generator=g)))
    _, trace, fro2 = dense_reference(s)
    r = cf.subject_traces(s)
    assert math.isclose(r.trace, trace, rel_tol=1e-10)
    assert math.isclose(r.fro2, fro2, rel_tol=1e-10)


def test_theorems_are_listed_with_latex():
    ids = {t.id for t in bc.theorems()}
    assert {"hessian.closed_form_ws_lambda_max", "hessian.tier_b_lambda_max",
            "hessian.tier_b_sat_lambda_max"} <= ids
    assert r"\sqrt{P - 1}" in bc.get("hessian.closed_form_ws_lambda_max").latex()


# --- Tier B -------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", tier_b.DERIVATION.steps, ids=lambda s: s.name[:60])
def test_tier_b_step(step):
    step.verify(samples=100)


def test_tier_b_end_to_end_on_random_small_networks():
    """λ_max(H) ≤ Tier B (both variants) on random small networks, λ_max from the dense
    Hessian (end to end through the engine; the derivation's steps are checked above)."""
    from boundcheck.engines.closed_form import tier_b_point

    r = np.random.default_rng(0)
    for _ in range(60):
        act = ["tanh", "sigmoid", "softplus", "gelu"][int(r.integers(4))]
        d, hh, k, nn_ = (int(r.integers(1, 4)), int(r.integers(1, 5)), int(r.integers(2, 4)),
                         int(r.integers(2, 7)))
        net = mlp([d, hh, k], act, bias=bool(r.integers(2)), seed=int(r.integers(1 << 30)))
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(float(r.choice([0.3, 1.0, 4.0])))
        rho_target = float(r.uniform(0, 1))
        x = torch.tensor(r.normal(size=(nn_, d)) + rho_target * r.normal(size=(1, d)) * 3)
        y = torch.tensor(r.integers(0, k, nn_))
        s = bc.Subject(net, (x, y), "cross_entropy")
        lam = float(bc.measure(s, ["hessian.lambda_max"])["hessian.lambda_max"].upper)
        for sat in (False, True):
            assert lam <= tier_b_point(s, saturation=sat)


def test_a_halved_tier_b_lemma_is_caught():
    for name in ("‖M‖_F ≤", "‖C‖_F ≤", "2×2 block bound"):
        step = next(s for s in tier_b.DERIVATION.steps if s.name.startswith(name))
        if step.evaluate is not None:
            halved = Step(step.name, step.lhs, step.rhs, relation="<=", check="numeric",
                          evaluate=lambda rng, f=step.evaluate: (f(rng)[0], 0.5 * f(rng)[1]))
        else:
            halved = Step(step.name, step.lhs, step.rhs / 2, relation="<=", check="numeric",
                          sampler=step.sampler)
        with pytest.raises(StepFailed):
            halved.verify(samples=200)


def test_tier_b_interval_and_ingredients():
    s = _subject(mlp([3, 5, 3], "sigmoid", seed=2))
    est = bc.measure(s, ["closed_form.tier_b_lambda_max", "closed_form.tier_b_sat_lambda_max",
                         "hessian.lambda_max"])
    b, bs = est["closed_form.tier_b_lambda_max"], est["closed_form.tier_b_sat_lambda_max"]
    assert b.lower <= b.value <= b.upper and b.width <= 1e-9 * b.value
    assert bs.value <= b.value  # ε ≤ 1 only tightens
    assert b.details["rho"] <= 1 and b.details["max_x_norm"] > 0
    assert b.lower >= est["hessian.lambda_max"].upper
    point = sympy.lambdify(list(tier_b.INGREDIENTS), tier_b.tier_b_expression(True), "mpmath",
                           cse=True)
    vals = [b.details[tier_b.INGREDIENTS[sym]] for sym in tier_b.INGREDIENTS]
    assert math.isclose(float(point(*vals)), b.value, rel_tol=1e-12)


def test_over_budget_is_inconclusive_with_reason():
    s = _subject(mlp([3, 5, 3], "tanh", seed=3))
    (r,) = bc.verify(s, ["hessian.closed_form_ws_lambda_max"],
                     budget=bc.Budget(max_closed_form_flops=10.0))
    assert r.verdict == bc.Verdict.INCONCLUSIVE
    assert "max_closed_form_flops" in r.reason


def test_a_module_used_twice_is_seen_as_it_runs():
    """``net.modules()`` lists a reused Linear once: Sequential(L1, tanh, L2, tanh, L2) would
    look like one hidden layer. T2 must see the two hidden layers it runs and refuse."""
    l2 = nn.Linear(4, 4)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), l2, nn.Tanh(), l2)
    reason = cf.architecture_reason(_subject(net))
    assert reason is not None and "used twice" in reason
    act = nn.Tanh()  # one activation module used twice: two hidden layers
    deep = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 3))
    assert "one hidden layer" in cf.architecture_reason(_subject(deep))
    inputs = nn.Sequential(nn.Tanh(), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    assert "one hidden layer" in cf.architecture_reason(_subject(inputs))  # σ on the input
