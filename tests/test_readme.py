"""The README's Python examples run as written (on a small subject)."""

import sympy
import torch

import boundcheck as bc
from boundcheck.harness import data, models, training


def test_readme_api_example_and_own_theorem():
    x, y = data.bundled("digits", n=150)
    net = models.mlp([64, 8, 10], "tanh", seed=0)
    training.train(net, x, y, "cross_entropy",
                   training.Recipe(lr=0.5, momentum=0.9, steps=100, target_loss=1e-3),
                   progress=False)
    subject = bc.Subject(net, (x, y), "cross_entropy")
    res = bc.verify(subject, ["hessian.ws"], confidence=0.99, seed=0)
    assert "hessian.ws_lambda_max" in res.table()
    est = bc.measure(subject, ["hessian.trace", "hessian.lambda_max"])
    assert est["hessian.lambda_max"].kind == "exact" and est["hessian.trace"].kind == "exact"

    lam, t = sympy.symbols("lambda_max t", positive=True)
    mine = bc.Theorem(
        id="mine.lambda_max_le_trace", title="λ_max ≤ tr H for PSD H",
        lhs=lam, rhs=t, symbols={lam: "hessian.lambda_max", t: "hessian.trace"},
        source="folklore", slack="ratio")
    bc.register(mine, replace=True)
    try:
        psd = bc.MatrixSubject(torch.diag(torch.tensor([3.0, 1.0, 0.5])))
        assert bc.verify(psd, ["mine.lambda_max_le_trace"])[mine.id].verdict == bc.Verdict.HOLDS
        bc.assert_bounds_hold(psd, ["mine.lambda_max_le_trace"])
    finally:
        bc.unregister(mine.id)
