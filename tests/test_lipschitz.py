"""T11b, c: the Lipschitz sandwich and the KR check, against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.core.activations import GELU_SUP_D1, lipschitz_constant, slope_bounds
from boundcheck.core.subject import InvalidSubjectError
from boundcheck.engines import lipschitz as lip
from boundcheck.engines.transport import wasserstein1
from boundcheck.quantities import Context, NotApplicableError
from derivations import lipschitz as fam
from derivations.proof import Step, StepFailed


class Skip(nn.Module):
    """x + Wx + b: not a chain."""

    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return self.lin(x) + x


def _net(*mods) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*mods).double()


def _subject(net, n=40, d=None, k=3, test=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = d or net[0].in_features
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % k
    xt = torch.randn(n // 2, d, generator=g, dtype=torch.float64) + 0.3
    yt = torch.arange(n // 2) % k
    return bc.Subject(net, (x, y), "cross_entropy", test_data=(xt, yt) if test else None)


# -- activation constants -------------------------------------------------------------------
@pytest.mark.parametrize("module, lip_const", [
    (nn.Tanh(), 1.0), (nn.ReLU(), 1.0), (nn.Sigmoid(), 0.25), (nn.GELU(), 1.1290),
    (nn.Softplus(), 1.0), (nn.LeakyReLU(0.1), 1.0)])
def test_activation_slopes_against_autograd(module, lip_const):
    z = torch.linspace(-8, 8, 400001, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(module(z).sum(), z)
    a, b = slope_bounds(module)
    assert a <= float(d.min()) and float(d.max()) <= b
    assert float(d.max()) > b - 1e-3  # tight (softplus reaches 1, tanh's 0 only at infinity)
    assert lipschitz_constant(module) == pytest.approx(lip_const, abs=1e-4)


def test_gelu_constant_is_not_one():
    assert GELU_SUP_D1 == pytest.approx(1.12890414518, abs=1e-10)
    assert isinstance(slope_bounds(nn.GELU(approximate="tanh")), str)
    assert isinstance(slope_bounds(nn.Softmax(dim=1)), str)


# -- chains ---------------------------------------------------------------------------------
def test_chain_reasons():
    assert "not an nn.Sequential" in lip.chain(Skip(2))
    assert "overlaps" in lip.chain(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(3, 1)))
    assert "Softmax" in lip.chain(nn.Sequential(nn.Linear(2, 2), nn.Softmax(dim=1)))
    ops = lip.chain(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                                  nn.Linear(8, 2)))
    assert [o.kind for o in ops] == ["affine", "activation", "linear", "linear", "affine"]
    assert lip.product_factor(ops) == pytest.approx(0.5)


def test_segments_match_the_network():
    net = _net(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
               nn.Linear(32, 3))
    mats, slopes, widths = lip.segments(lip.chain(net), (1, 8, 8))
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    h = torch.tanh(net[0](x)).flatten(1).detach().numpy()
    assert widths == [128]
    pre = x.flatten(1).numpy() @ mats[0].T + net[0].bias.detach().repeat_interleave(64).numpy()
    np.testing.assert_allclose(np.tanh(pre), h, atol=1e-12)
    assert mats[1].shape == (3, 128)


# -- LipSDP ---------------------------------------------------------------------------------
def test_lipsdp_exact_for_a_linear_net():
    """σ = identity: Lip(f) = ‖W2 W1‖₂ exactly; the certified bound is above it and close."""
    net = _net(nn.Linear(4, 5), nn.Identity(), nn.Linear(5, 3))
    ops = [lip.Op("affine", net[0]), lip.Op("activation", net[1], 1.0, 1.0),
           lip.Op("affine", net[2])]
    mats, slopes, _ = lip.segments(ops, (4,))
    exact = float(np.linalg.norm(mats[1] @ mats[0], 2))
    res = lip.lipsdp(mats, slopes)
    assert exact <= res.value <= exact * 1.01


@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["tanh", "relu", "sigmoid", "gelu"]))
def test_lipsdp_above_brute_force_lipschitz(seed, act):
    """1-hidden-layer nets on R²: the certified bound is ≥ sup ‖J_x‖ over a fine grid and
    ≥ every sampled difference quotient, and ≤ the product bound (up to rounding)."""
    torch.manual_seed(seed)
    mod = {"tanh": nn.Tanh(), "relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU()}[act]
    net = nn.Sequential(nn.Linear(2, 4), mod, nn.Linear(4, 2)).double()
    ops = lip.chain(net)
    mats, slopes, _ = lip.segments(ops, (2,))
    res = lip.lipsdp(mats, slopes)
    g = torch.linspace(-6, 6, 121, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    jac = torch.stack([torch.autograd.functional.jacobian(net, p) for p in grid[::7]])
    brute = float(torch.linalg.matrix_norm(jac, 2).max())
    a, b = grid[torch.randperm(len(grid))[:500]], grid[torch.randperm(len(grid))[:500]]
    keep = (a - b).norm(dim=1) > 0
    q = float(lip.quotients(net, a[keep], b[keep]).max())
    product = math.prod(float(np.linalg.norm(m, 2)) for m in mats) * lip.product_factor(ops)
    assert res.value >= brute and res.value >= q
    assert res.value <= product * (1 + 1e-6)


def test_certificate_rejects_too_small_rho():
    net = _net(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    mats, slopes, _ = lip.segments(lip.chain(net), (3,))
    res = lip.lipsdp(mats, slopes)
    t = np.ones(4) * 10.0
    m, m_abs = lip.lmi(mats, slopes, res.rho * 1e-3, t)
    assert lip.certified_psd_margin(-m, m_abs, 10) < 0


# -- lower bounds ---------------------------------------------------------------------------
def test_jacobian_lower_against_autograd():
    net = _net(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    s = _subject(net)
    est = Context(s).get("lipschitz.jacobian_lower")
    brute = max(float(torch.linalg.matrix_norm(
        torch.autograd.functional.jacobian(s.net, x), 2)) for x in s.x_all)
    assert est.lower <= brute <= est.upper
    assert est.upper - est.lower < 1e-10


def test_kinks_are_left_out():
    """f(x) = |x| by two ReLUs: at x = 0 autograd's J is 0 (not a derivative): excluded."""
    net = _net(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[0.0], [1.0], [-2.0]], dtype=torch.float64)
    mask = lip.differentiable_mask(lip.chain(net), x, 1e-14)
    assert mask.tolist() == [False, True, True]
    s = bc.Subject(net, (torch.zeros(2, 1), torch.zeros(2, 1)), "mse")
    with pytest.raises(NotApplicableError, match="differentiable"):
        Context(s).get("lipschitz.jacobian_lower")
    q = Context(s).get("lipschitz.quotient_lower")  # Lip(|x|) = 1: ascent leaves x = 0
    assert 0.99 <= q.value and q.lower <= 1.0


def test_quotient_search_finds_linear_lipschitz():
    net = _net(nn.Linear(6, 4), nn.Identity(), nn.Linear(4, 3))
    exact = float(torch.linalg.matrix_norm((net[2].weight @ net[0].weight).detach(), 2))
    x = torch.randn(30, 6, dtype=torch.float64)
    res = lip.search_quotient(net, x, 1e-14)
    assert res.lower <= exact * (1 + 1e-12)
    assert res.value >= 0.99 * exact


# -- the theorems -------------------------------------------------------------------------
def test_sandwich_holds_and_planted_violation():
    net = _net(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    s = _subject(net)
    res = bc.verify(s, ["lipschitz"])
    for r in res.results:
        assert r.verdict.name == "HOLDS", (r.theorem_id, r.reason)
    lo, up = sympy.symbols("lo up", positive=True)
    planted = bc.Theorem(id="planted.lip_quarter", title="planted", lhs=lo, rhs=up / 10,
                         symbols={lo: "lipschitz.lower", up: "lipschitz.lipsdp"}, source="x")
    assert bc.verify(s, [planted]).results[0].verdict.name == "VIOLATED"


def test_not_applicable_reasons():
    s = _subject(Skip(3).double(), d=3)
    r = bc.verify(s, ["lipschitz.sandwich"]).results[0]
    assert r.verdict.name == "NOT_APPLICABLE" and "Sequential" in r.reason
    s = _subject(_net(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)), test=False)
    r = bc.verify(s, ["lipschitz.kr_cross_entropy"]).results[0]
    assert r.verdict.name == "NOT_APPLICABLE" and "held-out" in r.reason


def test_test_data_is_validated():
    net = _net(nn.Linear(3, 2))
    with pytest.raises(InvalidSubjectError, match="test inputs"):
        bc.Subject(net, (torch.randn(4, 3), torch.zeros(4, dtype=torch.long)),
                   test_data=(torch.randn(4, 5), torch.zeros(4, dtype=torch.long)))


def test_kr_against_direct_computation():
    net = _net(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    s = _subject(net, n=30)
    est = Context(s).get("kr.cross_entropy_ratio_max")
    ratios = []
    for k in range(3):
        a, b = s.y_all == k, s.test_y == k
        w = wasserstein1(s.x_all[a], s.test_x[b], "linprog").value
        with torch.no_grad():
            ga = nn.functional.cross_entropy(s.net(s.x_all[a]), s.y_all[a])
            gb = nn.functional.cross_entropy(s.net(s.test_x[b]), s.test_y[b])
        ratios.append(abs(float(gb - ga)) / (math.sqrt(2) * w))
    assert est.lower <= max(ratios) <= est.upper


# -- W_1 --------------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 10**6))
def test_w1_linprog_matches_assignment(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    lp, asg = wasserstein1(a, b, "linprog"), wasserstein1(a, b, "assignment")
    assert lp.value == pytest.approx(asg.value, rel=1e-9, abs=1e-12)
    assert lp.lower <= asg.value <= lp.upper and asg.lower <= lp.value <= asg.upper


def test_w1_unequal_sizes_and_identity():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(7, 3, generator=g, dtype=torch.float64)
    assert wasserstein1(a, a).value == pytest.approx(0.0, abs=1e-12)
    # duplicating every point leaves the empirical measure unchanged: same W_1
    b = torch.randn(5, 3, generator=g, dtype=torch.float64)
    one = wasserstein1(a, b)
    two = wasserstein1(a, torch.cat([b, b]))
    assert one.lower <= two.upper and two.lower <= one.upper
    with pytest.raises(ValueError, match="equal sizes"):
        wasserstein1(a, b, "assignment")


# -- the derivation -------------------------------------------------------------------------
def test_derivation_steps_check():
    checked = fam.DERIVATION.verify()
    assert len(checked) == len(fam.DERIVATION.steps)


def test_planted_lipsdp_step_fails():
    def halved(rng):
        q, bound = fam._lipsdp_sound(rng)
        return q, bound / 4

    step = Step("planted", sympy.Symbol("q"), sympy.Symbol("r"), relation="<=",
                check="numeric", evaluate=halved)
    with pytest.raises(StepFailed):
        step.verify()


# -- harness: held-out split and recorded quantities ------------------------------------------
def test_split_held_out_and_config():
    from boundcheck.harness.config import RunConfig
    from boundcheck.harness.pipeline import split_held_out

    x, t = torch.arange(40.0).reshape(20, 2), torch.arange(20)
    xtr, ttr, (xte, tte) = split_held_out(x, t, 0.25, seed=3)
    assert len(xte) == 5 and len(xtr) == 15
    assert sorted(torch.cat([ttr, tte]).tolist()) == list(range(20))
    assert torch.equal(xtr[:, 0], 2.0 * ttr)  # rows stay paired with their targets
    assert split_held_out(x, t, 0.0, seed=0)[2] is None
    with pytest.raises(ValueError, match="test_fraction"):
        split_held_out(x, t, 1.0, seed=0)
    cfg = RunConfig.from_dict({"subject": {"test_fraction": 0.2},
                               "record": ["jacobian.fro2_mean"]})
    assert cfg.subject.test_fraction == 0.2 and cfg.record == ["jacobian.fro2_mean"]


def test_record_quantities_skips_what_cannot_be_measured():
    from boundcheck.harness.pipeline import record_quantities

    s = _subject(_net(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)), test=False)
    out = record_quantities(Context(s), ["jacobian.fro2_mean", "kr.cross_entropy_ratio_max"])
    assert list(out) == ["jacobian.fro2_mean"] and out["jacobian.fro2_mean"]["value"] > 0


def test_quotients_in_chunks_equal_one_pass(monkeypatch):
    """The quotient search's forward passes go FORWARD_CHUNK inputs at a time (memory on big
    nets); the numbers do not depend on the chunk (beyond GEMM rounding)."""
    from boundcheck.engines import lipschitz as engine

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                              torch.nn.Linear(6, 3)).double()
    a, b = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    whole = engine.quotients(net, a, b)
    monkeypatch.setattr(engine, "FORWARD_CHUNK", 3)
    assert torch.allclose(engine.quotients(net, a, b), whole, rtol=1e-13, atol=0.0)


class _RowCounter(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.net(x)


def test_quotient_search_forwards_each_segment_point_once():
    """Segment pairs reuse the grid's outputs: n + top·points + 2·top·(steps + 1) rows forward
    (the old search pushed both ends of all 528 pairs per segment, twice: 17k ResNet images),
    and the reported pair's quotient is the one recomputed from scratch."""
    from boundcheck.engines import lipschitz as engine

    torch.manual_seed(1)
    net = _RowCounter(torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                                          torch.nn.Linear(7, 3)).double())
    x = torch.randn(20, 5, dtype=torch.float64)
    res = engine.search_quotient(net, x, 1e-14, top=4, segment_points=9, ascent_steps=6)
    assert net.rows == 20 + 4 * 9 + 2 * 4 * (6 + 1)
    again = float(engine.quotients(net, res.a[None], res.b[None])[0])
    assert abs(again - res.value) <= 1e-12 * again
    assert res.lower <= res.value and res.value >= res.sample_best * (1 - 1e-12)


def test_quotient_ascent_stops_at_the_time_limit(monkeypatch):
    from boundcheck.engines import lipschitz as engine
    from boundcheck.engines.estimators import clock

    net = _RowCounter(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                                          torch.nn.Linear(4, 2)).double())
    x = torch.randn(6, 3, dtype=torch.float64)
    monkeypatch.setattr(clock, "expired", lambda: True)
    res = engine.search_quotient(net, x, 1e-14, top=2, segment_points=5, ascent_steps=100)
    assert net.rows == 6 + 2 * 5 + 2 * 2 * (1 + 1)  # one ascent step, then the final pass
    assert res.lower > 0


def test_chain_theorems_refuse_a_non_chain_before_measuring():
    """A model that is no nn.Sequential chain: the four chain theorems are NOT_APPLICABLE up
    front, and the costly quotient search never runs (it took minutes on ResNet-18)."""

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(x + torch.tanh(self.a(x)))

    torch.manual_seed(0)
    x = torch.randn(12, 4, dtype=torch.float64)
    s = bc.Subject(Skip().double(), (x, torch.arange(12) % 3), "cross_entropy")
    ctx = Context(s)
    res = bc.verify(s, ["lipschitz.sandwich", "lipschitz.jacobian_le_lipsdp",
                        "lipschitz.jacobian_le_product", "lipschitz.quotient_le_lipsdp"],
                    context=ctx)
    for r in res.results:
        assert r.verdict.name == "NOT_APPLICABLE" and "nn.Sequential" in r.reason, r.reason
    assert "lipschitz.quotient_lower" not in ctx.estimates
    assert "quotient_search" not in ctx._artifacts
