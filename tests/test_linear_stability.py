"""T10 (linear stability of GD): the derivation, the trajectory GD training records, the
CONVERGED precondition (a flat loss is not convergence), the NOT_APPLICABLE cases, HOLDS on a
converged run, INCONCLUSIVE (never VIOLATED) above 2/η, and a planted λ_max ≤ 1/η VIOLATED."""

import copy
import dataclasses

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.core.trajectory import Trajectory
from boundcheck.engines.kinks import kink_distances
from boundcheck.engines.separation import separation_margin
from boundcheck.harness.training import Recipe, train
from derivations import linear_stability as ls

T10 = "stability.gd_lambda_max"
PLANTED = dataclasses.replace(ls.GD_LAMBDA_MAX, id="planted.gd_lambda_max_half",
                              title="planted: λ_max ≤ 1/η", rhs=1 / ls.eta, exceeded_reason="")


def test_derivation_steps_check():
    checked = ls.DERIVATION.verify()
    assert len(checked) == len(ls.DERIVATION.steps)
    assert any("numeric" in how for how in checked.values())


def test_registered_with_the_step_size_as_a_quantity():
    thm = bc.get(T10)
    assert thm.symbols[ls.eta] == "gd.step_size"
    assert thm.symbols[ls.lam_max] == "hessian.lambda_max"
    assert sympy.simplify(thm.rhs - sympy.Rational(2002, 1000) / ls.eta) == 0
    assert thm.describe()["exceeded_reason"]


# -- a least-squares subject: H = XᵀX/n exactly, so ηλ_max is chosen, not hoped for ----------
def _least_squares(seed=0, n=8, d=4):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    lam = float(np.linalg.eigvalsh((x.T @ x / n).numpy()).max())
    net = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.randn(1, d, generator=gen, dtype=torch.float64))
    return net, x, y, lam


def _trained_subject(net, x, y, loss, lr, steps):
    info = train(net, x, y, loss, Recipe(optimizer="gd", lr=lr, momentum=0.0, steps=steps,
                                         target_loss=None), progress=False)
    return bc.Subject(net, (x, y), loss, trajectory=info["trajectory"]), info


def test_training_records_each_full_batch_gradient_norm():
    net, x, y, _ = _least_squares()
    replay = copy.deepcopy(net)
    _, info = _trained_subject(net, x, y, "mse", 0.1, 5)
    traj = info["trajectory"]
    assert traj.steps == 5 and traj.plain_gd and traj.dtype == "float64"
    for t in range(6):  # θ_0 … θ_5, brute force by autograd on a replayed copy
        loss = 0.5 * ((replay(x) - y) ** 2).sum(1).mean()
        (g,) = torch.autograd.grad(loss, [replay.weight])
        assert traj.gradient_norms[t] == pytest.approx(float(g.norm()), rel=1e-12)
        assert traj.losses[t] == pytest.approx(float(loss.detach()), rel=1e-12)
        with torch.no_grad():
            replay.weight -= 0.1 * g
    assert info["gradient_norm_history"] == [(5, traj.gradient_norms[5])]


def test_flat_loss_period_two_oscillation_is_not_converged():
    """ηλ_max = 2: the top component flips sign forever at constant amplitude; the loss is
    flat but ‖∇L‖ stays ≈ λ·amplitude."""
    net, x, y, lam = _least_squares()
    subject, info = _trained_subject(net, x, y, "mse", 2.0 / lam, 1500)
    tail = info["trajectory"].losses[-1000:]
    assert (max(tail) - min(tail)) / tail[-1] < 0.01  # flat
    res = bc.verify(subject, [T10, PLANTED])
    for r in res:
        assert r.verdict == bc.Verdict.NOT_APPLICABLE, r.reason
        assert "CONVERGED" in r.reason and "flat loss is not convergence" in r.reason


def test_converged_run_holds_and_planted_half_is_violated():
    net, x, y, lam = _least_squares()
    subject, _ = _trained_subject(net, x, y, "mse", 1.9 / lam, 2000)
    res = bc.verify(subject, [T10, PLANTED])
    assert res[T10].verdict == bc.Verdict.HOLDS, res[T10].reason
    eta = res[T10].quantities["gd.step_size"].value
    ratio = eta * res[T10].quantities["hessian.lambda_max"].value / 2
    assert ratio == pytest.approx(0.95, rel=1e-9)
    assert res[T10].slack.value == pytest.approx(1.001 / 0.95, rel=1e-9)
    assert res[PLANTED.id].verdict == bc.Verdict.VIOLATED, res[PLANTED.id].reason


def test_above_two_over_eta_is_inconclusive_never_violated():
    net, x, y, lam = _least_squares()
    subject, info = _trained_subject(net, x, y, "mse", 1.9 / lam, 2000)
    subject.trajectory = dataclasses.replace(info["trajectory"], step_size=3.0 / lam)
    res = bc.verify(subject, [T10, PLANTED])
    assert res[T10].verdict == bc.Verdict.INCONCLUSIVE
    assert "not yet a GD limit" in res[T10].reason
    assert res[PLANTED.id].verdict == bc.Verdict.VIOLATED
    # with λ_max from Lanczos (statistical), no refinement rounds are spent on it
    lanczos = bc.verify(subject, T10, budget=bc.Budget(max_dense_params=1))[T10]
    assert lanczos.quantities["hessian.lambda_max"].kind != "exact"
    assert lanczos.verdict == bc.Verdict.INCONCLUSIVE and "refinement" not in lanczos.reason


# -- NOT_APPLICABLE -------------------------------------------------------------------------
def _blobs(separated: bool):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    y = (torch.arange(40) % 2).long()
    if separated:
        x[:, 0] += 6.0 * (2 * y - 1)
    else:  # XOR: no affine map separates it
        x = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]],
                         dtype=torch.float64).repeat(10, 1)
        y = torch.tensor([0, 0, 1, 1]).repeat(10)
    return x, y


def test_cross_entropy_on_separated_data_is_not_applicable():
    x, y = _blobs(separated=True)
    net = nn.Linear(2, 2).double()
    subject, _ = _trained_subject(net, x, y, "cross_entropy", 0.5, 300)
    r = bc.verify(subject, T10)[T10]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE
    assert "finite minimiser" in r.reason and "separated" in r.reason
    assert r.quantities["cross_entropy.separation_margin"].lower > 0


def test_cross_entropy_without_separation_converges_and_holds():
    x, y = _blobs(separated=False)
    net = nn.Linear(2, 2).double()
    subject, _ = _trained_subject(net, x, y, "cross_entropy", 1.0, 1500)
    r = bc.verify(subject, T10)[T10]
    assert r.quantities["cross_entropy.separation_margin"].lower <= 0
    assert r.verdict == bc.Verdict.HOLDS, r.reason


def _flat_trajectory(**kw) -> Trajectory:
    fields = {"optimizer": "gd", "step_size": 0.1, "momentum": 0.0, "full_batch": True,
              "dtype": "float64", "gradient_norms": (0.0,) * 1001, "losses": (1.0,) * 1001}
    return Trajectory(**{**fields, **kw})


def test_relu_on_a_kink_is_not_applicable():
    x = torch.tensor([[0.5, 1.0], [-1.0, 2.0], [2.0, -1.0]], dtype=torch.float64)
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.3, 0.7], [-0.2, 0.9]]))
        net[0].bias.copy_(torch.tensor([-0.5, 0.1, 0.2]))  # unit 1 is exactly 0 on x_0
    y = torch.zeros(3, 1, dtype=torch.float64)
    r = bc.verify(bc.Subject(net, (x, y), "mse", trajectory=_flat_trajectory()), T10)[T10]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE and "kink" in r.reason, r.reason
    assert r.quantities["activation.kink_distance"].value == 0.0


def test_kink_distance_against_direct_computation():
    gen = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.LeakyReLU(),
                        nn.Linear(4, 1)).double()
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        z1 = net[0](x)
        z2 = net[2](net[1](z1))
    expected = min(float(z.abs().min() / z.abs().max()) for z in (z1, z2))
    assert kink_distances(net, [x]).relative == pytest.approx(expected, rel=1e-15)
    smooth = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    assert kink_distances(smooth, [x]).relative == float("inf")


@pytest.mark.parametrize("what", ["sgd", "momentum", "none"])
def test_not_plain_gd_is_not_applicable(what):
    net, x, y, _ = _least_squares()
    traj = {"sgd": _flat_trajectory(optimizer="sgd", full_batch=False),
            "momentum": _flat_trajectory(momentum=0.9), "none": None}[what]
    r = bc.verify(bc.Subject(net, (x, y), "mse", trajectory=traj), T10)[T10]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE
    assert ("trajectory" if what == "none" else "not plain full-batch") in r.reason


def test_max_pooling_is_not_applicable():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8, 1)).double()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    y = torch.zeros(3, 1, dtype=torch.float64)
    r = bc.verify(bc.Subject(net, (x, y), "mse", trajectory=_flat_trajectory()), T10)[T10]
    assert r.verdict == bc.Verdict.NOT_APPLICABLE and "max pooling" in r.reason


# -- the separation LP against brute force (1-D features, two classes: a threshold) ----------
@settings(max_examples=40)
@given(values=st.lists(st.integers(-6, 6), min_size=2, max_size=12),
       labels=st.lists(st.integers(0, 1), min_size=12, max_size=12))
def test_separation_matches_threshold_brute_force(values, labels):
    y = torch.tensor(labels[:len(values)])
    h = torch.tensor(values, dtype=torch.float64)[:, None]
    a, b = h[y == 0, 0], h[y == 1, 0]
    if len(a) == 0 or len(b) == 0:
        truth = True
    else:
        truth = bool(a.max() < b.min() or b.max() < a.min())
    assert separation_margin(h, y, 2).separated == truth


def test_trajectory_validation():
    with pytest.raises(ValueError, match="one loss and one gradient norm"):
        Trajectory("gd", 0.1, 0.0, True, "float64", (1.0, 2.0), (1.0,))
    with pytest.raises(ValueError, match="step size"):
        _flat_trajectory(step_size=0.0)
    t = Trajectory.from_history("gd", 0.1, 0.0, True, "float32", [3.0, 2.0, 1.0],
                                [1.0, 0.5, 0.2])
    assert t.until(1).gradient_norms == (3.0, 2.0) and t.window_max(2) == 2.0
    with pytest.raises(ValueError, match="converged_window"):
        bc.Budget(converged_window=999)


# -- the report's λ_max(t) against 2/η figure, fed from results ------------------------------
def _checkpointed_runs(tmp_path):
    results = []
    for factor in (1.5, 1.9):
        net, x, y, lam = _least_squares()
        states: list = []

        def keep(step, model, states=states):
            states.append((step, copy.deepcopy(model.state_dict())))

        info = train(net, x, y, "mse",
                     Recipe(optimizer="gd", lr=factor / lam, momentum=0.0, steps=1200,
                            target_loss=None, checkpoints=[0, 600]),
                     progress=False, on_checkpoint=keep)
        for step, state in states:
            net.load_state_dict(state)
            subject = bc.Subject(net, (x, y), "mse", name=f"ls @ step {step}",
                                 trajectory=info["trajectory"].until(step))
            res = bc.verify(subject, T10)
            res.training = {"step": step}
            res.extras["sweep"] = {"recipe.lr": factor / lam}
            results.append(res)
    return results, lam


def test_stability_figure_from_results(tmp_path):
    from boundcheck.outputs.report.figures import _stability_figure, stability_panels
    from boundcheck.outputs.report.model import make_runs

    results, lam = _checkpointed_runs(tmp_path)
    panels = stability_panels(make_runs(results))
    (panel,) = panels.values()
    assert sorted(s.eta for s in panel.values()) == pytest.approx([1.5 / lam, 1.9 / lam])
    for s in panel.values():
        assert [p[0] for p in s.points] == [0, 600, 1200]
        assert s.end_ratio == pytest.approx(s.eta * lam / 2, rel=1e-9)  # H = XᵀX/n
    fig = _stability_figure(panels, tmp_path, ("png",), part=0)
    assert fig.name == "stability-lambda-max" and "0.95000" in fig.caption
    assert fig.files["png"].stat().st_size > 1000


# -- a tanh MLP on digits, trained by the harness: sharpening to the edge, then HOLDS ---------
@pytest.fixture
def planted_registered():
    bc.register(PLANTED, replace=True)
    yield PLANTED.id
    bc.unregister(PLANTED.id)


@pytest.mark.slow
def test_digits_mlp_converges_near_the_edge_and_holds(planted_registered):
    from boundcheck.harness.config import RunConfig
    from boundcheck.harness.pipeline import train_and_verify

    cfg = RunConfig.from_dict({
        "name": "t10-digits", "theorems": [T10, planted_registered],
        "subject": {"dataset": "digits", "n_samples": 32, "model": "mlp", "hidden": [16],
                    "activation": "tanh", "loss": "mse"},
        "recipe": {"optimizer": "gd", "lr": 0.3, "momentum": 0.0, "steps": 6000,
                   "target_loss": 0.0, "checkpoints": [0]}})
    start, end = train_and_verify(cfg, progress=False, log=lambda _: None)
    last = end[T10]
    assert last.verdict == bc.Verdict.HOLDS, last.reason
    lam_end = last.quantities["hessian.lambda_max"].value
    assert 0.95 < 0.3 * lam_end / 2 <= 1.001  # ended near the edge 2/η
    assert lam_end > 1.1 * start[T10].quantities["hessian.lambda_max"].value  # sharpening
    assert end[planted_registered].verdict == bc.Verdict.VIOLATED
