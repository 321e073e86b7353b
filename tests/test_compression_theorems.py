"""T3–T7 (THEOREMS.md): their derivations, and their verdicts on networks of every family.

What must hold: every dense-layer bound HOLDS on random MLPs (the tr G forms at any θ), on the
dense heads of CNNs and transformers, and at zero-loss minima, and is never VIOLATED; the
sharpness (tr H) forms are NOT_APPLICABLE off a minimum of a smooth net; a planted variant with
a too-small constant is VIOLATED on the tight subjects THEOREMS.md names, where the true bound
is HOLDS or INCONCLUSIVE-tight; −∞ log-volumes hold trivially (never NaN).
"""

import math
from fractions import Fraction

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.harness import zoo
from boundcheck.harness.models import mlp
from boundcheck.harness.training import Recipe, train
from boundcheck.outputs import strategies as bst
from derivations import (
    centered_sensitivity,
    input_gradient,
    local_sensitivity,
    network_sensitivity,
    network_volume,
    volume,
)
from derivations.volume import am_gm_instance, jensen_instance

MODULES = (input_gradient, local_sensitivity, network_sensitivity, volume, network_volume,
           centered_sensitivity)
TRUE_FORMS = ("compression.input_gradient", "compression.input_gradient_fro",
              "compression.input_gradient_layers", "compression.input_gradient_layers_fro",
              "compression.mls", "compression.mls_layers", "compression.nmls",
              "compression.lvr", "compression.lvr_layers", "compression.nvr")
SHARPNESS_FORMS = ("compression.mls_sharpness", "compression.nmls_sharpness",
                   "compression.lvr_sharpness", "compression.nvr_sharpness")
CROSS_ENTROPY_FORMS = ("compression.mls_cross_entropy", "compression.nmls_cross_entropy")
DENSE_ONLY = ("compression.input_gradient_layers", "compression.input_gradient_layers_fro",
              "compression.mls_layers", "compression.nmls", "compression.lvr_layers",
              "compression.nvr")


# --- derivations -----------------------------------------------------------------------------
@pytest.mark.parametrize("step", [(m.__name__, s) for m in MODULES for s in m.DERIVATION.steps],
                         ids=lambda p: f"{p[0].split('.')[-1]}: {p[1].name}")
def test_derivation_step(step):
    step[1].verify(samples=60)


def test_every_theorem_is_registered_with_its_family():
    ids = {t.id for t in bc.theorems()}
    assert set(TRUE_FORMS) | set(SHARPNESS_FORMS) <= ids
    for tid in SHARPNESS_FORMS:
        assert bc.get(tid).assumptions, tid


@settings(max_examples=200)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=1,
                max_size=60))
def test_cauchy_schwarz_with_means(pairs):
    """(1/n)Σab ≤ √((1/n)Σa²)√((1/n)Σb²), squared and in exact rational arithmetic."""
    a = [Fraction(p) for p, _ in pairs]
    b = [Fraction(q) for _, q in pairs]
    n = len(pairs)
    mean_ab = sum(x * y for x, y in zip(a, b, strict=True)) / n
    assert mean_ab <= 0 or mean_ab**2 <= (sum(x * x for x in a) / n) * (sum(y * y for y in b) / n)


@settings(max_examples=200)
@given(st.integers(0, 2**32 - 1))
def test_am_gm_and_jensen_instances(seed):
    import random

    for instance in (am_gm_instance, jensen_instance):
        lhs, rhs = instance(random.Random(seed))
        assert lhs <= rhs + 1e-9 * max(1.0, abs(rhs))


# --- subjects --------------------------------------------------------------------------------
@st.composite
def mse_subjects(draw, activations=("tanh", "gelu", "sigmoid", "softplus", "relu"),
                 output_dim=(1, 4)):
    """A random MLP on random regression data with an MSE loss of random scale c."""
    net = draw(bst.mlps((1, 5), output_dim, activations=activations))
    d, k = net[0].in_features, net[-1].out_features
    x, y = draw(bst.datasets((2, 10), d, k, targets="regression", kinds=("bounded",)))
    x = x * draw(st.sampled_from([0.01, 1.0, 10.0]))  # saturation: test_underflowing_gradient_norms
    c = draw(st.sampled_from(["mse", "mse:0.37", "mse:2", "mse:0.01"]))
    return bc.Subject(net, (x, y), c)


def _check_no_violation(results, ids):
    for tid in ids:
        r = results[tid]
        assert r.verdict != bc.Verdict.VIOLATED, (tid, r.reason, r.lhs, r.rhs)
        if r.verdict == bc.Verdict.NOT_APPLICABLE:
            assert "zero" in r.reason or "dead" in r.reason, (tid, r.reason)
        elif r.verdict == bc.Verdict.INCONCLUSIVE:
            floor = r.quantities.get("loss.output_curvature_floor")
            if floor is not None and floor.lower <= 0:  # a saturated softmax: √(tr G / 0)
                assert "undefined on the measured intervals" in r.reason, (tid, r.reason)
            else:
                assert "tight within measurement error" in r.reason, (tid, r.reason)
        elif r.lhs.value == -math.inf:  # rank-deficient: slack +∞, or none if rhs is −∞ too
            assert "−∞" in r.reason
            assert (r.slack is None and r.rhs.value == -math.inf) or r.slack.value == math.inf
        else:
            assert r.slack is not None and math.isfinite(r.slack.value), (tid, r.slack)


@settings(max_examples=25)
@given(mse_subjects())
def test_tr_g_forms_hold_on_random_mlps(subject):
    _check_no_violation(bc.verify(subject, list(TRUE_FORMS)), TRUE_FORMS)


@settings(max_examples=15)
@given(mse_subjects(activations=("tanh", "gelu", "relu")), st.integers(0, 2**31 - 1))
def test_all_forms_hold_at_a_zero_loss_minimum(subject, seed):
    """Targets y = f(x): the loss is 0, a global minimum, so R = 0 and tr H = tr G."""
    with torch.no_grad():
        y = subject.net(subject.x_all)
    at_min = bc.Subject(subject.net, (subject.x_all, y), subject.loss)
    res = bc.verify(at_min, list(TRUE_FORMS) + list(SHARPNESS_FORMS), seed=seed)
    _check_no_violation(res, TRUE_FORMS + SHARPNESS_FORMS)
    for tid in SHARPNESS_FORMS:
        r = res[tid]
        degenerate = "ggn.trace" in r.quantities and r.quantities["ggn.trace"].value == 0
        assert r.verdict != bc.Verdict.NOT_APPLICABLE or "zero-loss" not in r.reason or (
            degenerate and "tr G = 0" in r.reason), (tid, r.reason)


def test_trained_minimum():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(3, 24), nn.Tanh(), nn.Linear(24, 2)).double()
    torch.manual_seed(0)
    for layer in net:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    info = train(net, x, y, "mse", Recipe(optimizer="gd", lr=0.2, momentum=0.9, steps=20000,
                                          target_loss=1e-16), progress=False)
    assert info["final_loss"] < 1e-12
    res = bc.verify(bc.Subject(net, (x, y), "mse"), list(TRUE_FORMS) + list(SHARPNESS_FORMS))
    for tid in TRUE_FORMS + SHARPNESS_FORMS:
        assert res[tid].verdict == bc.Verdict.HOLDS, (tid, res[tid].reason)


@settings(max_examples=15)
@given(mse_subjects(activations=("tanh", "softplus", "sigmoid")))
def test_sharpness_forms_are_guarded_off_a_minimum(subject):
    """A smooth net off its minimum: tr R ≠ 0, so the tr H forms must not be judged."""
    ctx = bc.Context(subject)
    res = bc.verify(subject, list(SHARPNESS_FORMS), context=ctx)
    g, r = ctx.get("ggn.trace"), ctx.get("residual.trace")
    far = max(abs(r.lower), abs(r.upper)) > 1e-3 * g.lower
    for tid in SHARPNESS_FORMS:
        if far:
            assert res[tid].verdict == bc.Verdict.NOT_APPLICABLE, (tid, res[tid].reason)
        assert res[tid].verdict != bc.Verdict.VIOLATED


def test_guard_reports_the_measured_ratio():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.randn(20, 2, generator=gen)
    net = mlp([3, 6, 2], "tanh", seed=0)
    res = bc.verify(bc.Subject(net, (x, y), "mse"), ["compression.mls_sharpness"])
    r = res["compression.mls_sharpness"]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE
    assert "|tr R|/tr G is up to" in r.reason and "τ = 0.001" in r.reason
    # the tr G form is a theorem there
    assert bc.verify(bc.Subject(net, (x, y), "mse"), ["compression.mls"])[
        "compression.mls"].verdict == bc.Verdict.HOLDS


def test_tolerance_is_a_budget_field():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.randn(20, 2, generator=gen)
    subject = bc.Subject(mlp([3, 6, 2], "tanh", seed=0), (x, y), "mse")
    loose = bc.verify(subject, ["compression.mls_sharpness"], budget=bc.Budget(
        residual_rel_tol=0.9))["compression.mls_sharpness"]
    assert loose.verdict == bc.Verdict.HOLDS
    assert loose.quantities["sharpness.residual_tolerance"].value == 0.9


@st.composite
def ce_subjects(draw):
    net = draw(bst.mlps((1, 5), (2, 4)))
    d, k = net[0].in_features, net[-1].out_features
    x, y = draw(bst.datasets((2, 10), d, k, kinds=("bounded",)))
    return bc.Subject(net, (x * draw(st.sampled_from([0.01, 1.0, 10.0, 300.0])), y))


@settings(max_examples=20)
@given(ce_subjects())
def test_cross_entropy_forms_hold_on_random_mlps(subject):
    _check_no_violation(bc.verify(subject, list(CROSS_ENTROPY_FORMS)), CROSS_ENTROPY_FORMS)


def ce_tight_subject(seed: int, n: int = 8, dim: int = 3, scale: float = 1.3):
    """K = 2, f = Wx with W = s[w; −w] and every x_i ⟂ w of equal norm: p_i = (½, ½), and the
    cross-entropy forms hold with equality."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=gen, dtype=torch.float64)
    w = w / w.norm()
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    x = x - (x @ w)[:, None] * w[None, :]
    x = 2.0 * x / x.norm(dim=1, keepdim=True)
    net = nn.Linear(dim, 2, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(scale * torch.stack([w, -w]))
    return bc.Subject(net, (x, torch.randint(0, 2, (n,), generator=gen)))


@settings(max_examples=8)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12), st.integers(2, 6),
       st.sampled_from([0.01, 1.0, 20.0]))
def test_cross_entropy_forms_planted_violated_on_tight_subjects(seed, n, dim, scale):
    ctx = bc.Context(ce_tight_subject(seed, n, dim, scale))
    for tid in CROSS_ENTROPY_FORMS:
        true = bc.verify_one(bc.get(tid), ctx)
        assert true.verdict in (bc.Verdict.HOLDS, bc.Verdict.INCONCLUSIVE), (tid, true.reason)
        assert abs(true.slack.value - 1.0) < 1e-9
        fake = bc.verify_one(planted(bc.get(tid), lambda r: r / 2), ctx)
        assert fake.verdict == bc.Verdict.VIOLATED, (tid, fake.reason)


def test_cross_entropy_forms_are_not_applicable_for_mse():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=gen), torch.randn(10, 3, generator=gen)
    res = bc.verify(bc.Subject(mlp([3, 4, 3], "tanh", seed=0), (x, y), "mse"),
                    list(CROSS_ENTROPY_FORMS))
    for tid in CROSS_ENTROPY_FORMS:
        assert res[tid].verdict == bc.Verdict.NOT_APPLICABLE and "A_i 1 ≠ 0" in res[tid].reason


def test_cross_entropy_is_not_applicable_with_the_reason():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    res = bc.verify(bc.Subject(mlp([3, 5, 3], "tanh", seed=0), (x, y)),
                    ["compression"])
    assert res["compression.input_gradient"].verdict == bc.Verdict.HOLDS  # no loss in T3
    for tid in TRUE_FORMS[4:] + SHARPNESS_FORMS:
        assert res[tid].verdict == bc.Verdict.NOT_APPLICABLE, tid
        assert "not MSE" in res[tid].reason


# --- architectures ---------------------------------------------------------------------------
def _image_subject(model: dict, loss="mse:0.5", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 1, 8, 8, generator=gen, dtype=torch.float64)
    net = zoo.build_model(model, input_shape=(1, 8, 8), output_dim=3).double().eval()
    y = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    return bc.Subject(net, (x, y), loss)


@settings(max_examples=8)
@given(st.sampled_from([
    {"model": "lenet", "channels": [2, 3], "hidden": [6], "kernel_size": 3, "padding": 1},
    {"model": "lenet", "channels": [2], "hidden": [], "activation": "relu"},
    {"model": "vgg", "stages": [[2]], "hidden": [5]},
    {"model": "vit", "dim": 4, "depth": 1, "heads": 2, "patch_size": 4, "mlp_ratio": 1},
]), st.integers(0, 1000))
@pytest.mark.slow
def test_dense_heads_of_cnns_and_transformers(model, seed):
    subject = _image_subject({**model, "seed": seed}, seed=seed)
    res = bc.verify(subject, ["compression"])
    for tid in ("compression.input_gradient", "compression.mls", "compression.lvr"):
        r = res[tid]
        assert r.verdict == bc.Verdict.NOT_APPLICABLE and "first layer" in r.reason, tid
    _check_no_violation(res, DENSE_ONLY)  # HOLDS, or NOT_APPLICABLE for a dead ReLU layer
    layers = res["compression.mls_layers"]
    if layers.verdict == bc.Verdict.HOLDS:
        excluded = layers.quantities["compression.mls_layers_ratio"].details["excluded"]
        assert excluded and all("weight-shared" in why for why in excluded.values())
    # at a zero-loss minimum (targets f(x)) the sharpness forms of the dense head apply too
    with torch.no_grad():
        y = subject.net(subject.x_all)
    at_min = bc.verify(bc.Subject(subject.net, (subject.x_all, y), subject.loss),
                       list(DENSE_ONLY) + ["compression.nmls_sharpness",
                                           "compression.nvr_sharpness"])
    _check_no_violation(at_min, DENSE_ONLY)
    for tid in ("compression.nmls_sharpness", "compression.nvr_sharpness"):
        r = at_min[tid]
        assert r.verdict == bc.Verdict.HOLDS or "zero for" in r.reason, (tid, r.reason)


def test_underflowing_gradient_norms():
    # ‖∇_W f‖ ≈ 1e-187 at a saturated GELU: its square underflows; never a false VIOLATED
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.GELU(),
                        nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.fill_(0.28403001325618815)
        net[2].weight.fill_(-0.4804841696473694)
    x = torch.tensor([[-103.854], [82.0696]], dtype=torch.float64)
    r = bc.verify(bc.Subject(net, (x, net(x).detach()), "mse"), ["compression.input_gradient"])
    assert r["compression.input_gradient"].verdict != bc.Verdict.VIOLATED


def test_input_skip_connection_is_not_applicable():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.out, self.skip = nn.Linear(3, 5), nn.Linear(5, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.first(x))) + self.skip(x)

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=gen), torch.randn(10, 2, generator=gen)
    res = bc.verify(bc.Subject(Skip(), (x, y), "mse"), ["compression.input_gradient"])
    r = res["compression.input_gradient"]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE and "skip" in r.reason


# --- tight subjects and planted violations ---------------------------------------------------
def tight_subject(seed: int, n: int = 12, dim: int = 5, radius: float = 1.7, c: str = "mse:0.5"):
    """Bias-free linear model, K = 1, inputs of equal norm: T3–T8 hold with equality."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    x = radius * x / x.norm(dim=1, keepdim=True)
    net = nn.Linear(dim, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.randn(1, dim, generator=gen, dtype=torch.float64))
    return bc.Subject(net, (x, torch.randn(n, 1, generator=gen, dtype=torch.float64)), c)


def planted(theorem: bc.Theorem, halve) -> bc.Theorem:
    return bc.Theorem(id=f"planted.{theorem.id}", title="planted: " + theorem.title,
                      lhs=theorem.lhs, rhs=halve(theorem.rhs), symbols=theorem.symbols,
                      source="planted", assumptions=theorem.assumptions, slack=theorem.slack,
                      applies_to=theorem.applies_to)


HALVED = {  # a too-small constant: ratio forms halved, log forms lowered by log 2
    "compression.input_gradient": lambda r: r / 2,
    "compression.input_gradient_fro": lambda r: r / 2,
    "compression.input_gradient_layers": lambda r: r / 2,
    "compression.mls": lambda r: r / 2,
    "compression.mls_layers": lambda r: r / 2,
    "compression.mls_sharpness": lambda r: r / 2,
    "compression.nmls": lambda r: r / 2,
    "compression.lvr": lambda r: r - sympy.log(2),
    "compression.lvr_layers": lambda r: r - sympy.log(2),
    "compression.lvr_sharpness": lambda r: r - sympy.log(2),
    "compression.nvr": lambda r: r - sympy.log(2),
    "relative_flatness.mls": lambda r: r / 2,
}


@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1), st.integers(1, 20), st.integers(1, 6),
       st.sampled_from([0.01, 1.0, 30.0]))
def test_planted_variants_are_violated_on_tight_subjects(seed, n, dim, radius):
    subject = tight_subject(seed, n, dim, radius)
    ctx = bc.Context(subject)
    for tid, halve in HALVED.items():
        true = bc.verify_one(bc.get(tid), ctx)
        assert true.verdict in (bc.Verdict.HOLDS, bc.Verdict.INCONCLUSIVE), (tid, true.reason)
        if true.verdict == bc.Verdict.INCONCLUSIVE:
            assert "tight within measurement error" in true.reason
        fake = bc.verify_one(planted(bc.get(tid), halve), ctx)
        assert fake.verdict == bc.Verdict.VIOLATED, (tid, fake.reason, fake.lhs, fake.rhs)


def test_tight_subject_is_tight():
    res = bc.verify(tight_subject(0), list(HALVED))
    for tid in HALVED:
        s = res[tid].slack
        assert s is not None
        if "sharpness" in tid:  # the 1/(1 − τ) allowance of the guard
            assert res[tid].verdict == bc.Verdict.HOLDS
        else:
            assert abs(s.value - (1.0 if s.kind == "ratio" else 0.0)) < 1e-12, (tid, s)


# --- −∞ log-volumes --------------------------------------------------------------------------
def test_rank_deficient_jacobian_holds_trivially():
    """The second output ignores the input: J_x has a zero row, rank 1 < r = 2, log LVR = −∞
    at every sample (and at both layers, for NVR)."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[2].weight[1].zero_()
    x, y = torch.randn(10, 4, generator=gen), torch.randn(10, 2, generator=gen)
    res = bc.verify(bc.Subject(net, (x, y), "mse"), ["compression.lvr", "compression.nvr"])
    for tid in ("compression.lvr", "compression.nvr"):
        r = res[tid]
        assert r.verdict == bc.Verdict.HOLDS and "−∞" in r.reason, (tid, r.reason)
        assert r.lhs.value == -math.inf and r.slack.value == math.inf


def test_both_sides_minus_infinity_hold_without_nan():
    """All hidden ReLUs dead and no biases: J_x = 0 and tr G = 0, so both sides are −∞."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(),
                        nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(-torch.rand(4, 3, generator=gen, dtype=torch.float64))
    x = torch.rand(10, 3, generator=gen, dtype=torch.float64) + 0.1
    res = bc.verify(bc.Subject(net, (x, torch.randn(10, 2, generator=gen)), "mse"),
                    ["compression.lvr", "compression.mls", "compression.input_gradient"])
    r = res["compression.lvr"]
    assert r.verdict == bc.Verdict.HOLDS and r.rhs.value == -math.inf and r.slack is None
    for t in res:
        assert t.verdict == bc.Verdict.HOLDS, (t.theorem_id, t.reason)


# --- the experiment --------------------------------------------------------------------------
def test_local_dimensionality_moves_either_way_while_sharpness_falls():
    from boundcheck.harness.experiments.compression import local_dimensionality_demo

    falls, rises = local_dimensionality_demo(points=4)["paths"].values()
    for path in (falls, rises):
        for q in ("hessian.trace", "ggn.trace", "hessian.lambda_max"):
            values = [p[q] for p in path]
            assert all(a > b for a, b in zip(values, values[1:], strict=False)), q
    dims = [[p["jacobian.local_dim"] for p in path] for path in (falls, rises)]
    assert all(a > b for a, b in zip(dims[0], dims[0][1:], strict=False))
    assert all(a < b for a, b in zip(dims[1], dims[1][1:], strict=False))


TINY_SWEEP = """
name = "tiny-compression"
[subject]
dataset = "digits"
n_samples = 24
loss = "mse"
[recipe]
optimizer = "sgd"
steps = 6
checkpoints = [3]
target_loss = 0.0
[sweep.grid]
"recipe.lr" = [0.05, 0.1, 0.2]
[[sweep.list]]
"subject.model" = "mlp"
"subject.hidden" = [4]
[[sweep.list]]
"subject.model" = "lenet"
"subject.model_options" = { channels = [1], kernel_size = 3, padding = 1, hidden = [] }
"""


@pytest.mark.slow
def test_experiment_runs_and_analyses(tmp_path):
    import json

    from boundcheck.harness.experiments import compression as experiment

    config = tmp_path / "tiny.toml"
    config.write_text(TINY_SWEEP)
    out = tmp_path / "out"
    assert experiment.main([str(config), "-o", str(out), "--workers", "1"]) == 0
    for name in ("records.jsonl", "summary.md", "correlations.csv", "analysis.json",
                 "sharpness_vs_compression.pdf", "slack_vs_step.png",
                 "local_dimensionality_demo.pdf"):
        assert (out / name).is_file(), name
    analysis = json.loads((out / "analysis.json").read_text())
    medians = analysis["median_slack"]
    assert set(medians) == {"mlp", "lenet"}
    assert medians["mlp"]["compression.mls"]["verdicts"] == {"HOLDS": 3}
    assert medians["lenet"]["compression.mls"]["verdicts"] == {"NOT_APPLICABLE": 3}
    assert medians["lenet"]["compression.nmls"]["verdicts"] == {"HOLDS": 3}
    pairs = {(c["architecture"], c["sharpness"], c["measure"]) for c in
             analysis["correlations"]}
    assert ("mlp", "ggn.trace", "network.nmls") in pairs
    assert ("lenet", "ggn.trace", "layer.1.mls") in pairs  # a convolution: empirical only
    assert ("mlp", "paper.sharpness", "paper.nmls") in pairs  # the papers' dialect too
    # both definitions side by side, and every empty cell explained
    summary = (out / "summary.md").read_text()
    section = summary.split("## Correlations in boundcheck's and in the papers' definitions")[1]
    section = section.split("\n## ")[0]
    explained = {tuple(line[2:].split(":")[0].replace(" (", ", ").rstrip(")").split(", "))
                 for line in section.splitlines() if line.startswith("- ")}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("mlp", "lenet"):
            for dialect, cell in zip(("boundcheck", "paper"), cells[2:], strict=True):
                if cell == "—":
                    assert (cells[0], cells[1], dialect) in explained, (line, explained)
    # resuming finds every job done
    assert experiment.main([str(config), "-o", str(out), "--workers", "1", "--resume"]) == 0


def test_mse_only_forms_refuse_cross_entropy_before_measuring_tr_g():
    """T4/T5/T6's tr G / c forms need an MSE loss: on cross-entropy they are NOT_APPLICABLE
    from loss.mse_scale before tr G is measured (69 s of per-sample Jacobians on ResNet-18)."""
    from boundcheck.quantities import Context

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    s = bc.Subject(net, (x, torch.arange(10) % 3), "cross_entropy")
    ctx = Context(s)
    res = bc.verify(s, ["compression.mls", "compression.nmls", "compression.lvr"], context=ctx)
    for r in res.results:
        assert r.verdict.name == "NOT_APPLICABLE" and "MSE" in r.reason, r.reason
    assert "ggn.trace" not in ctx.estimates
