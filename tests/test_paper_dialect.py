"""The papers' dialect (boundcheck.quantities.paper_dialect) against an implementation written
here from the formulas, sample by sample and output by output with plain autograd, as the
authors' code does (float64, to 1e-12 relative)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import boundcheck as bc
from boundcheck.harness import data, models
from boundcheck.quantities import Budget
from boundcheck.quantities.paper_dialect import subset_indices

NAMES = ["paper.sharpness", "paper.mls", "paper.nmls", "paper.log_volume",
         "paper.harmonic_factor", "paper.nmls_bound", "paper.num_samples"]


def reference(net: nn.Module, x: torch.Tensor, k: int, eps: float) -> dict[str, float]:
    """The formulas, one sample and one output at a time."""
    net = net.double()
    affine = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    all_dense = not any(isinstance(m, nn.Conv2d) for m in affine)
    sharp = mls = nmls = logvol = harmonic = 0.0
    for xi in x:
        xi = xi.unsqueeze(0).double().requires_grad_(True)
        inputs, outputs = [], []

        def keep(module, inp, out, inputs=inputs, outputs=outputs):
            inputs.append(inp[0])
            outputs.append(out)

        hooks = [m.register_forward_hook(keep) for m in affine]
        z = net(xi).reshape(-1)
        for h in hooks:
            h.remove()
        rows_x, rows_h = [], [[] for _ in affine]
        for j in range(z.numel()):
            grads = torch.autograd.grad(z[j], [xi, *inputs, *net.parameters()],
                                        retain_graph=True, allow_unused=True)
            rows_x.append(grads[0].reshape(-1))
            for layer, g in enumerate(grads[1:1 + len(affine)]):
                rows_h[layer].append(g.reshape(-1))
            sharp += sum(float(g.pow(2).sum()) for g in grads[1 + len(affine):])
        s = torch.linalg.svdvals(torch.stack(rows_x))
        mls += float(s[0])
        logvol += float(torch.log(s[:k]).sum())
        nmls += sum(float(torch.linalg.svdvals(torch.stack(r))[0]) for r in rows_h)
        for m, h, out in zip(affine, inputs, outputs, strict=True):
            if all_dense:
                omega = float(torch.linalg.matrix_norm(m.weight.detach().double(), 2)) ** 2
            else:
                positions = out[0, 0].numel() if isinstance(m, nn.Conv2d) else 1
                omega = float(m.weight.detach().double().pow(2).sum()) * positions
            harmonic += omega / (float(h.detach().pow(2).sum()) + eps)
    n = len(x)
    out = {"paper.sharpness": math.sqrt(sharp / n), "paper.mls": mls / n,
           "paper.nmls": nmls / n, "paper.log_volume": logvol / n,
           "paper.harmonic_factor": harmonic / n, "paper.num_samples": float(n)}
    out["paper.nmls_bound"] = out["paper.sharpness"] * math.sqrt(out["paper.harmonic_factor"])
    return out


def _check(subject, budget: Budget, net: nn.Module, x: torch.Tensor) -> None:
    est = bc.measure(subject, NAMES, budget=budget, seed=3)
    idx = subset_indices(len(x), budget.paper_samples, budget.paper_subset, 3)
    ref = reference(net, x[idx], budget.paper_top_k, budget.paper_epsilon)
    for name in NAMES:
        e, r = est[name], ref[name]
        assert e.lower <= r <= e.upper or math.isclose(e.value, r, rel_tol=1e-12), (name, e, r)
        assert math.isclose(e.value, r, rel_tol=1e-12, abs_tol=1e-300), (name, e.value, r)
        assert e.upper - e.lower <= 1e-9 * max(1.0, abs(r)), (name, e)


def test_mlp_first_samples_against_the_formulas():
    x, y = data.bundled("digits")
    x, y = x[:40].double(), y[:40]
    net = models.mlp([64, 12, 8, 10], "tanh", seed=1)
    _check(bc.Subject(net, (x, y), "cross_entropy"), Budget(paper_samples=6), net, x)


def test_cnn_random_subset_top2_epsilon_against_the_formulas():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(3 * 5 * 5, 4)).double()
    x = torch.randn(12, 1, 5, 5, dtype=torch.float64)
    y = torch.randn(12, 4, dtype=torch.float64)
    budget = Budget(paper_samples=5, paper_subset="random", paper_top_k=2, paper_epsilon=1e-2)
    _check(bc.Subject(net, (x, y), "mse"), budget, net, x)


def test_sharpness_is_loss_independent_and_is_sqrt_trace_g_only_for_mse():
    x, y = data.bundled("digits")
    x, y = x[:30].double(), y[:30]
    net = models.mlp([64, 10, 10], "tanh", seed=2)
    budget = Budget(paper_samples=30)
    ce = bc.measure(bc.Subject(net, (x, y), "cross_entropy"), ["paper.sharpness", "ggn.trace"],
                    budget=budget)
    target = torch.nn.functional.one_hot(y, 10).double()
    mse = bc.measure(bc.Subject(net, (x, target), "mse"), ["paper.sharpness", "ggn.trace"],
                     budget=budget)
    assert math.isclose(ce["paper.sharpness"].value, mse["paper.sharpness"].value,
                        rel_tol=1e-13)
    assert math.isclose(mse["paper.sharpness"].value ** 2, mse["ggn.trace"].value,
                        rel_tol=1e-12)  # ½-sum MSE: c = 1, tr G = mean ‖J_i‖_F²
    assert not math.isclose(ce["paper.sharpness"].value ** 2, ce["ggn.trace"].value,
                            rel_tol=1e-2)


def test_top_k_log_volume_is_finite_where_the_full_one_is_not():
    """A 2-unit bottleneck: J_x has rank 2 < r = min(K, D) = 10, so boundcheck's log LVR is −∞
    while the top-2 log-volume is finite (the rows the summary must explain)."""
    x, y = data.bundled("digits")
    x, y = x[:20].double(), y[:20]
    net = models.mlp([64, 2, 10], "tanh", seed=0)
    s = bc.Subject(net, (x, y), "cross_entropy")
    est = bc.measure(s, ["jacobian.log_lvr", "paper.log_volume"],
                     budget=Budget(paper_top_k=2))
    assert est["jacobian.log_lvr"].value == -math.inf
    assert math.isfinite(est["paper.log_volume"].value)


@pytest.mark.parametrize("options, message", [
    ({"paper_subset": "last"}, "paper_subset"), ({"paper_samples": 0}, "paper_samples"),
    ({"paper_top_k": 0}, "paper_top_k"), ({"paper_epsilon": -1e-4}, "paper_epsilon")])
def test_bad_dialect_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Budget(**options)
