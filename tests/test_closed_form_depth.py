"""T2 at depth L: the closed-form tr H and ‖H‖_F² against the exact layer-block Hessian, its
derivation, Tier B at depth L (reduction to the one-layer Tier B at L = 1), and the theorems
applying (HOLDS) on two- and three-hidden-layer nets."""

import math
import random

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.core.formulas import closed_form_depth as fd
from boundcheck.engines import closed_form as cf
from boundcheck.engines import closed_form_depth as cd
from boundcheck.engines.sequential_hessian import exact_dense_hessian
from derivations import closed_form_ce_depth as tier_a
from derivations import closed_form_ce_depth_tier_b as tier_b
from derivations.proof import Step, StepFailed

ACTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus, "gelu": nn.GELU,
        "softplus3": lambda: nn.Softplus(beta=3.0, threshold=2.0)}


def deep(sizes, act, bias=True, seed=0, scale=1.0, out_scale=1.0):
    torch.manual_seed(seed)
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < len(sizes) - 2:
            mods.append(ACTS[act]())
    net = nn.Sequential(*mods).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
        net[-1].weight.mul_(out_scale)
    return net


def subject(net, n, seed=0, labels=None, k=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, net[0].in_features, generator=g, dtype=torch.float64)
    k = k or net[-1].out_features
    y = torch.randint(0, k, (n,), generator=g) if labels is None else labels(net, x)
    return bc.Subject(net, (x, y), "cross_entropy")


def exact(s):
    hess = exact_dense_hessian(s)
    h = hess.matrix
    return h, float(torch.trace(h)), float((h * h).sum())


# --- Tier A against the exact layer-block Hessian ---------------------------------------------
@settings(max_examples=20, deadline=None)
@given(depth=st.integers(1, 4), widths=st.lists(st.integers(1, 5), min_size=5, max_size=5),
       k=st.integers(2, 5), n=st.integers(1, 8), act=st.sampled_from(sorted(ACTS)),
       bias=st.booleans(), scale=st.sampled_from([0.3, 1.0, 3.0]),
       out_scale=st.sampled_from([1.0, 30.0]), seed=st.integers(0, 10_000))
def test_tier_a_equals_exact_hessian(depth, widths, k, n, act, bias, scale, out_scale, seed):
    sizes = [widths[0], *widths[1:depth + 1], k]
    s = subject(deep(sizes, act, bias, seed, scale, out_scale), n, seed)
    _, trace, fro2 = exact(s)
    r = cd.subject_deep_traces(s)
    scale_t = max(abs(trace), math.sqrt(fro2 * s.num_params), 1e-300)
    assert abs(r.trace - trace) <= 1e-10 * scale_t
    assert abs(r.fro2 - fro2) <= 1e-10 * fro2 + 1e-300
    # the rounding bars are honest and not absurd
    assert r.trace_error <= 1e-6 * scale_t and r.fro2_error <= 1e-6 * max(fro2, 1e-300)


def test_saturated_softmax_matches_exact():
    """Output weights ×1000, labels the predicted class: 1 − p_y far below 1e-6 on most
    samples (autograd through F.cross_entropy would round p_y to 1 there)."""
    for depth in (2, 3):
        net = deep([3, *([4] * depth), 3], "tanh", seed=depth, out_scale=1000.0)
        s = subject(net, 6, labels=lambda m, x: m(x).argmax(1))
        with torch.no_grad():
            p = torch.softmax(net(s.x_all), 1)
        assert float((1 - p.max(1).values).min()) < 1e-12  # saturated samples present
        _, trace, fro2 = exact(s)
        r = cd.subject_deep_traces(s)
        assert math.isclose(r.trace, trace, rel_tol=1e-10)
        assert math.isclose(r.fro2, fro2, rel_tol=1e-10)


def test_depth_one_equals_the_one_layer_engine():
    for act, bias in (("tanh", True), ("softplus", False), ("gelu", True)):
        s = subject(deep([3, 5, 4], act, bias, seed=1), 7)
        old = cf.subject_traces(s)
        new = cd.subject_deep_traces(s)
        assert math.isclose(old.trace, new.trace, rel_tol=1e-12)
        assert math.isclose(old.fro2, new.fro2, rel_tol=1e-12)
        for sat in (False, True):
            assert math.isclose(cf.tier_b_point(s, sat), cd.deep_tier_b_point(s, sat),
                                rel_tol=1e-12)


def test_generated_code_is_the_derived_expression():
    trace_fn, diag_fn, off_fn = cd.generated()
    g = torch.Generator().manual_seed(0)
    for fn, syms, expr in ((trace_fn, fd.DEPTH_TRACE_SYMBOLS, fd.DEPTH_TRACE_EXPR),
                           (diag_fn, fd.DEPTH_DIAG_SYMBOLS, fd.DEPTH_DIAG_EXPR),
                           (off_fn, fd.DEPTH_OFF_SYMBOLS, fd.DEPTH_OFF_EXPR)):
        args = torch.randn(len(syms), 4, dtype=torch.float64, generator=g)
        got = fn(*args)
        for col in range(4):
            point = {s: float(args[i, col]) for i, s in enumerate(syms)}
            assert math.isclose(float(got[col]), float(expr.subs(point)), rel_tol=1e-12)


# --- the derivations --------------------------------------------------------------------------
def _tier_a_steps(block: bool):
    steps = [*(tier_a._blocks_step(w, b) for w, b in tier_a.BLOCK_CASES)] if block else [
        *(tier_a._pair_step(w, b) for w, b in tier_a.PAIR_CASES),
        *(tier_a._trace_step(w, b) for w, b in tier_a.PAIR_CASES), *tier_a._sum_steps()]
    return steps


@pytest.mark.parametrize("step", _tier_a_steps(False), ids=lambda s: s.name[:60])
def test_tier_a_gram_step(step):
    step.verify()


@pytest.mark.slow
@pytest.mark.parametrize("case", tier_a.BLOCK_CASES, ids=str)
def test_tier_a_block_step(case):
    tier_a._blocks_step(*case).verify()


@pytest.mark.slow
def test_a_wrong_pair_formula_is_caught():
    """Dropping the (δ·δ)⟨E,E⟩ term, or the factor 2 on the off-diagonal blocks, fails."""
    widths, biases = (1, 2, 2, 2), (True, False, True)
    step = tier_a._pair_step(widths, biases)
    step.verify()
    fi, fj = (tier_a.generic_factors(t, widths, biases) for t in "ij")
    wrong = (fd.DEPTH_OFF_EXPR - fd.GUL * fd.DD * fd.EE).xreplace(
        tier_a._definitions(fi, fj, widths, 1, 2))
    subs = {k: (wrong if k.name.startswith(r"\Phi^{(1,2)}") else v)
            for k, v in step.substitutions.items()}
    assert subs != step.substitutions
    with pytest.raises(StepFailed):
        Step(step.name, step.lhs, step.rhs, substitutions=subs).verify()
    halved = step.rhs - sum(a for a in sympy.Add.make_args(step.rhs) if a.is_Mul) / 2
    with pytest.raises(StepFailed):
        Step(step.name, step.lhs, halved, substitutions=step.substitutions).verify()


def test_derivations_are_listed():
    from derivations import FAMILIES

    assert {"derivations.closed_form_ce_depth",
            "derivations.closed_form_ce_depth_tier_b"} <= set(FAMILIES)


@pytest.mark.slow
def test_tier_a_derivation_is_complete():
    assert len(tier_a.DERIVATION.steps) == len(tier_a.BLOCK_CASES) + 2 * len(
        tier_a.PAIR_CASES) + 2
    assert "depth L" in str(tier_a.DERIVATION)


FAST_B = ("block-norm matrix", "Perron", "WS over the box")


@pytest.mark.parametrize("name", FAST_B)
def test_tier_b_step_fast(name):
    step = next(s for s in tier_b._steps() if s.name.startswith(name))
    step.verify(samples=50)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(28))
def test_tier_b_step(index):
    tier_b.DERIVATION.steps[index].verify(samples=200)


@pytest.mark.slow
def test_tier_b_step_count():
    assert len(tier_b.DERIVATION.steps) == 28


@pytest.mark.slow
def test_a_halved_tier_b_lemma_is_caught():
    for name in ("‖J_l‖₂", "‖Q_l‖₂", "λ_max(P_ll)"):
        step = next(s for s in tier_b.DERIVATION.steps if s.name.startswith(name))
        halved = Step(step.name, step.lhs, step.rhs, relation="<=", check="numeric",
                      evaluate=lambda rng, f=step.evaluate: _halve(f(rng)))
        with pytest.raises(StepFailed):
            halved.verify(samples=200)


def _halve(pair):
    return pair[0], 0.5 * pair[1]


def test_assembled_sample_hessian_is_autograd():
    """The derivation's numpy block assembly (used by its end-to-end step) is the Hessian."""
    for seed in range(6):
        s = tier_b.DeepSample(random.Random(seed), samples=1)
        mods = []
        for i, (w, b) in enumerate(zip(s.W, s.b, strict=True)):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=s.bias[i]).double()
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(w))
                if s.bias[i]:
                    lin.bias.copy_(torch.tensor(b))
            mods.append(lin)
            if i < s.depth:
                mods.append(_module(s.act))
        sub = bc.Subject(nn.Sequential(*mods), (torch.tensor(s.x), torch.tensor(s.y)))
        h = exact_dense_hessian(sub).matrix.numpy()
        perm, off = [], 0
        for w, bias in zip(s.W, s.bias, strict=True):
            ho, hi = w.shape
            cols = hi + int(bias)
            perm += [off + r * cols + d for r in range(ho) for d in range(hi)]
            perm += [off + r * cols + hi for r in range(ho)] if bias else []
            off += ho * cols
        mine = s.hessian(0)[np.ix_(perm, perm)]
        assert np.allclose(mine, h, rtol=1e-9, atol=1e-11 * max(1.0, np.abs(h).max()))


def _module(act):
    if act.name.startswith("softplus"):
        return nn.Softplus(beta=act.params[0], threshold=act.params[1])
    return {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}[act.name]()


# --- soundness (small; benchmarks/stress_closed_form_depth.py runs ≥ 10,000 cases) -----------
@pytest.mark.slow
def test_bounds_above_lambda_max_on_random_deep_nets():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "stress_closed_form_depth.py"
    spec = importlib.util.spec_from_file_location("stress_closed_form_depth", script)
    stress = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stress)
    run = stress.run

    out = run(8, seed=123)
    assert out["failures"] == 0, out["failed"]


# --- the theorems apply and hold at depth 2 and 3 ---------------------------------------------
@pytest.mark.parametrize("sizes, act", [([4, 6, 5, 3], "softplus"), ([4, 5, 5, 4, 3], "tanh")])
def test_theorems_hold_at_depth(sizes, act):
    s = subject(deep(sizes, act, seed=3), 10)
    res = bc.verify(s, ["hessian.closed_form_ws_lambda_max", "hessian.tier_b_lambda_max",
                        "hessian.tier_b_sat_lambda_max"])
    for r in res:
        assert r.verdict == bc.Verdict.HOLDS, (r.theorem, r.reason)
    est = bc.measure(s, ["closed_form.depth", "closed_form.trace", "closed_form.fro2"])
    assert est["closed_form.depth"].value == len(sizes) - 2
    _, trace, fro2 = exact(s)
    assert est["closed_form.trace"].lower <= trace <= est["closed_form.trace"].upper
    assert est["closed_form.fro2"].lower <= fro2 <= est["closed_form.fro2"].upper


def test_depth_not_applicable_reasons():
    relu = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(),
                         nn.Linear(4, 3)).double()
    assert "ReLU" in cd.depth_reason(subject(relu, 4))
    head = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3), nn.Tanh()).double()
    assert "raw logits" in cd.depth_reason(subject(head, 4, k=3))


@pytest.mark.parametrize("sizes", [[3, 4, 3], [3, 4, 4, 3]], ids=["L1", "L2"])
def test_zero_confidence_gap_gives_a_valid_interval(sizes):
    """p_y rounds to exactly 1 (gap 0): ε's interval was [1e-300, 2e-308] (empty) before."""
    net = deep(sizes, "tanh", seed=0, scale=3.0, out_scale=1e4)
    s = subject(net, 5, labels=lambda m, x: m(x).argmax(1))
    est = bc.measure(s, ["closed_form.tier_b_sat_lambda_max", "hessian.lambda_max"])
    b = est["closed_form.tier_b_sat_lambda_max"]
    assert 0 <= b.lower <= b.value <= b.upper < math.inf
    assert b.lower >= est["hessian.lambda_max"].upper


@pytest.mark.parametrize("margin", [None, 25.0], ids=["plain", "saturated"])
def test_depth_two_closed_form_contains_the_40_digit_traces(margin):
    """tr H and ‖H‖_F² of a two-hidden-layer tanh net from the depth-L closed form against a
    40-digit hyper-dual Hessian (saturated softmax included): inside the closed form's own
    rounding interval, and that interval within 1e-10 relative."""
    import mpmath
    from test_sequential_hessian import mp_hessian_entry, saturated_problem

    mpmath.mp.dps = 40
    net, x, y = saturated_problem([2, 2, 2, 3], margin, n=3, seed=4)
    subject = bc.Subject(net, (x, y), "cross_entropy")
    base = [mpmath.mpf(float(v)) for v in subject.flat_params()]
    p = len(base)
    ref = [[None] * p for _ in range(p)]
    for i in range(p):
        for j in range(i, p):
            ref[i][j] = ref[j][i] = mp_hessian_entry(net, x, y, base, i, j)
    ref_trace = mpmath.fsum(ref[i][i] for i in range(p))
    ref_fro2 = mpmath.fsum(ref[i][j] ** 2 for i in range(p) for j in range(p))
    est = bc.measure(subject, ["closed_form.trace", "closed_form.fro2"])
    for name, truth in (("closed_form.trace", ref_trace), ("closed_form.fro2", ref_fro2)):
        e = est[name]
        assert mpmath.mpf(e.lower) <= truth <= mpmath.mpf(e.upper), (name, e, truth)
        assert e.upper - e.lower <= 1e-10 * abs(float(truth)), (name, e)
