"""Training recipes (checked against hand-written update rules), checkpoints, determinism,
and the pipeline's per-checkpoint verification."""

import copy
import json

import pytest
import torch

from boundcheck.harness.config import RunConfig
from boundcheck.harness.data import gaussian_mixture
from boundcheck.harness.pipeline import train_and_verify
from boundcheck.harness.training import Recipe, train
from boundcheck.harness.zoo import mlp
from boundcheck.outputs.run import run


def _problem(n=40, seed=0):
    x, y = gaussian_mixture(n, 3, 3, seed=seed)
    return mlp([3, 5, 3], "tanh", seed=seed), x, y


def _flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_same_seed_gives_bit_identical_runs():
    runs = []
    for _ in range(2):
        net, x, y = _problem()
        info = train(net, x, y, "cross_entropy",
                     Recipe(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=7, steps=30,
                            seed=3), progress=False)
        runs.append((_flat(net), info["history"]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    net, x, y = _problem()
    train(net, x, y, "cross_entropy", Recipe(optimizer="sgd", lr=0.1, batch_size=7, steps=30,
                                             seed=4), progress=False)
    assert not torch.equal(_flat(net), runs[0][0])


def test_gd_with_momentum_is_the_heavy_ball_update():
    """Full-batch GD on MSE with scale c: θ ← θ − lr·v, v ← μv + ∇L, L = mean (c/2)‖f − y‖²."""
    net, x, _ = _problem()
    targets = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    manual = copy.deepcopy(net)
    lr, mu, c = 0.05, 0.5, 0.3
    train(net, x, targets, f"mse:{c}", Recipe(optimizer="gd", lr=lr, momentum=mu, steps=3),
          progress=False)
    velocity = [torch.zeros_like(p) for p in manual.parameters()]
    for _ in range(3):
        loss = (0.5 * c * (manual(x) - targets).pow(2).sum(1)).mean()
        grads = torch.autograd.grad(loss, list(manual.parameters()))
        with torch.no_grad():
            for p, v, g in zip(manual.parameters(), velocity, grads, strict=True):
                v.mul_(mu).add_(g)
                p.sub_(lr * v)
    assert torch.allclose(_flat(net), _flat(manual), atol=1e-6)


def test_sgd_with_the_whole_data_as_batch_is_gd():
    a, x, y = _problem()
    b = copy.deepcopy(a)
    train(a, x, y, "cross_entropy", Recipe(optimizer="gd", lr=0.2, steps=10), progress=False)
    train(b, x, y, "cross_entropy", Recipe(optimizer="sgd", lr=0.2, batch_size=40, steps=10),
          progress=False)
    assert torch.equal(_flat(a), _flat(b))


def test_adam_lowers_the_loss():
    net, x, y = _problem()
    info = train(net, x, y, "cross_entropy", Recipe(optimizer="adam", lr=0.05, steps=100,
                                                    log_every=10), progress=False)
    assert info["history"][-1][1] < 0.5 * info["history"][0][1]


def test_checkpoints_are_called_at_the_chosen_steps_and_the_end():
    net, x, y = _problem()
    seen = {}
    info = train(net, x, y, "cross_entropy",
                 Recipe(optimizer="gd", lr=0.1, steps=20, checkpoints=[15, 0, 5]),
                 progress=False, on_checkpoint=lambda s, m: seen.update({s: _flat(m)}))
    assert sorted(seen) == [0, 5, 15, 20] and [s for s, _ in info["checkpoints"]] == [0, 5, 15,
                                                                                      20]
    assert torch.equal(seen[20], _flat(net))
    # replaying 5 steps reproduces the step-5 snapshot exactly
    replay, _, _ = _problem()
    train(replay, x, y, "cross_entropy", Recipe(optimizer="gd", lr=0.1, steps=5),
          progress=False)
    assert torch.equal(seen[5], _flat(replay))


def test_target_loss_stops_early_and_the_end_is_a_checkpoint():
    net, x, y = _problem()
    seen = []
    info = train(net, x, y, "cross_entropy",
                 Recipe(optimizer="adam", lr=0.05, steps=5000, target_loss=0.3, log_every=10,
                        checkpoints=[10, 4000]),
                 progress=False, on_checkpoint=lambda s, m: seen.append(s))
    assert info["reached_target"] and info["steps"] < 4000
    assert seen == [10, info["steps"]] and info["final_loss"] <= 0.3


def test_training_runs_in_the_models_dtype():
    net, x, y = _problem()
    train(net, x.double(), y, "cross_entropy", Recipe(steps=2), progress=False)  # cast to f32
    assert next(net.parameters()).dtype == torch.float32 and not net.training


def test_divergence_is_reported():
    net, x, _ = _problem()
    with pytest.raises(FloatingPointError, match="diverged"):
        train(net, x * 1e3, torch.randn(40, 3) * 1e3, "mse",
              Recipe(optimizer="gd", lr=1e3, steps=200), progress=False)


@pytest.mark.parametrize("recipe, match", [
    (dict(optimizer="lbfgs"), "unknown optimizer"),
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(batch_size=0), "batch_size"),
    (dict(steps=10, checkpoints=[11]), "outside"),
])
def test_bad_recipes(recipe, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**recipe)


def test_empty_or_mismatched_data():
    net, x, y = _problem()
    with pytest.raises(ValueError, match="non-empty and matched"):
        train(net, x[:0], y[:0], progress=False)
    with pytest.raises(ValueError, match="non-empty and matched"):
        train(net, x, y[:5], progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_and_measurement():
    cfg = RunConfig.from_dict({"theorems": ["hessian.ws_lambda_max"], "device": "cuda",
                               "subject": {"dataset": "iris", "hidden": [3]},
                               "recipe": {"steps": 20}})
    (res,) = train_and_verify(cfg, progress=False, log=lambda _: None)
    assert res.subject["device"].startswith("cuda") and res.subject["dtype"] == "float64"


def test_bad_devices_are_refused_before_training():
    cfg = RunConfig.from_dict({"device": "gpu"})
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        train_and_verify(cfg, progress=False, log=lambda _: None)
    if not torch.cuda.is_available():
        cfg.device = "cuda"
        with pytest.raises(ValueError, match="CUDA is not available"):
            train_and_verify(cfg, progress=False, log=lambda _: None)


@pytest.mark.slow
def test_pipeline_verifies_every_checkpoint(tmp_path):
    cfg = RunConfig.from_dict({
        "name": "ckpt", "theorems": ["hessian.ws_lambda_max"],
        "subject": {"dataset": "iris", "hidden": [3]},
        "recipe": {"optimizer": "gd", "lr": 0.2, "momentum": 0.0, "steps": 30,
                   "target_loss": 0.0, "checkpoints": [0, 10]}})
    final, out = run(cfg, tmp_path, progress=False, pdf=False, log=lambda _: None)
    assert final.training["step"] == 30 and final.training["final"]
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert files == ["step-0000000.json", "step-0000010.json", "step-0000030.json"]
    at10 = json.loads((out / "checkpoints" / "step-0000010.json").read_text())
    assert at10["training"]["step"] == 10 and not at10["training"]["final"]
    assert at10["subject"]["name"] == "ckpt @ step 10"
    assert json.loads((out / "results.json").read_text())["training"]["step"] == 30
    assert (out / "report.tex").exists()
    # the step-10 measurement is of the step-10 network
    lam = {s: json.loads((out / "checkpoints" / f"step-{s:07d}.json").read_text())
           ["results"][0]["quantities"]["hessian.lambda_max"]["value"] for s in (0, 10, 30)}
    assert len(set(lam.values())) == 3
