"""Curvature of real networks against brute force in float64.

Dense Hessians against ``torch.autograd.functional.hessian`` (MLPs drawn by hypothesis, a CNN
with stride and padding, an attention + LayerNorm block); the Gauss–Newton split against
``J_iᵀ A_i J_i`` built from ``torch.autograd.functional.jacobian``; the matrix-free
quantities (Lanczos, traces) against ``eigvalsh`` of the dense Hessian and against
curvlinops + scipy ``eigsh``; batches weighted by samples.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import GaussNewton, HessianOperator
from boundcheck.engines.sequential import subject_structure
from boundcheck.harness.models import mlp
from boundcheck.quantities import Budget, Context, NotAffordableError
from boundcheck.quantities.hessian import matrix_free_trace, spectral_density, top_eigenvalues

MATRIX_FREE = Budget(max_dense_params=0)


# --- subjects --------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self, stride: int = 2, padding: int = 1, classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, stride=stride, padding=padding)
        self.conv2 = nn.Conv2d(3, 2, 2, stride=1, padding=padding)
        self.act = nn.Tanh()
        with torch.no_grad():
            size = self.features(torch.zeros(1, 1, 7, 7)).shape[1]
        self.head = nn.Linear(size, classes)

    def features(self, x):
        return self.act(self.conv2(self.act(self.conv1(x)))).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


class AttentionBlock(nn.Module):
    """Self-attention with a residual connection, LayerNorm, mean pooling and a linear head."""

    def __init__(self, width: int = 4, heads: int = 2, classes: int = 3):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h, _ = self.attn(x, x, x, need_weights=False)
        return self.head(self.norm(x + h).mean(dim=1))


def cnn_subject(seed: int = 0, stride: int = 2, padding: int = 1, n: int = 6) -> bc.Subject:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SmallCNN(stride, padding).double().eval()
    x = torch.randn(n, 1, 7, 7, generator=g, dtype=torch.float64)
    return bc.Subject(net, (x, torch.randint(0, 3, (n,), generator=g)))


def attention_subject(seed: int = 0, n: int = 5) -> bc.Subject:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = AttentionBlock().double().eval()
    x = torch.randn(n, 4, 4, generator=g, dtype=torch.float64)
    return bc.Subject(net, (x, torch.randint(0, 3, (n,), generator=g)))


def mlp_subject(seed: int = 0, sizes=(4, 6, 3), activation: str = "tanh", n: int = 12,
                loss="cross_entropy", batches=None) -> bc.Subject:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=g, dtype=torch.float64)
    if loss == "cross_entropy":
        y = torch.randint(0, sizes[-1], (n,), generator=g)
    else:
        y = torch.randn(n, sizes[-1], generator=g, dtype=torch.float64)
    net = mlp(list(sizes), activation, seed=seed)
    data = (x, y) if batches is None else [(x[a:b], y[a:b]) for a, b in batches]
    return bc.Subject(net, data, loss)


# --- brute force -----------------------------------------------------------------------------
def flat_loss(subject: bc.Subject):
    names, shapes = subject.param_names, [p.shape for p in subject.params]
    sizes = [p.numel() for p in subject.params]
    x, y = subject.x_all, subject.y_all

    def outputs(theta, xs):
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
            return torch.func.functional_call(subject.net, params, (xs,))

    def loss(theta):
        return subject.loss_fn.per_sample(outputs(theta, x), y).mean()

    return loss, outputs


def reference_hessian(subject: bc.Subject) -> torch.Tensor:
    loss, _ = flat_loss(subject)
    return torch.autograd.functional.hessian(loss, subject.flat_params())


def reference_gauss_newton(subject: bc.Subject) -> torch.Tensor:
    """``(1/n) Σ_i J_iᵀ A_i J_i`` with J_i from autograd.functional.jacobian and A_i written
    out: ``diag(p) − ppᵀ`` (cross-entropy) or ``c·I`` (MSE)."""
    _, outputs = flat_loss(subject)
    theta = subject.flat_params()
    total = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64)
    for xi in subject.x_all:
        jac = torch.autograd.functional.jacobian(lambda t, xi=xi: outputs(t, xi[None])[0], theta)
        z = outputs(theta, xi[None])[0].detach()
        if subject.loss_fn.kind == "cross_entropy":
            p = torch.softmax(z, 0)
            a = torch.diag(p) - torch.outer(p, p)
        else:
            a = subject.loss_fn.mse_scale * torch.eye(len(z), dtype=torch.float64)
        total += jac.T @ a @ jac
    return total / subject.n


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-8) -> bool:
    return float(torch.linalg.matrix_norm(a - b)) <= rtol * float(torch.linalg.matrix_norm(b))


# --- dense Hessians --------------------------------------------------------------------------
@settings(max_examples=12)
@given(hidden=st.lists(st.integers(1, 5), min_size=1, max_size=2),
       act=st.sampled_from(["tanh", "gelu", "sigmoid", "softplus", "relu"]),
       loss=st.sampled_from(["cross_entropy", "mse", "mse:0.3"]),
       cuts=st.lists(st.integers(1, 10), min_size=0, max_size=3, unique=True),
       seed=st.integers(0, 10_000))
def test_dense_hessian_of_mlps(hidden, act, loss, cuts, seed):
    """Uneven batches (cut points drawn) must give the Hessian of the whole data set."""
    edges = [0, *sorted(cuts), 11]
    subject = mlp_subject(seed, (3, *hidden, 3), act, n=11, loss=loss,
                          batches=list(zip(edges[:-1], edges[1:], strict=True)))
    assert close(HessianOperator(subject).dense(), reference_hessian(subject))


@pytest.mark.slow
@pytest.mark.parametrize("stride,padding", [(2, 1), (1, 0), (3, 2)])
def test_dense_hessian_of_a_cnn(stride, padding):
    subject = cnn_subject(stride=stride, padding=padding)
    assert close(HessianOperator(subject).dense(), reference_hessian(subject))


def test_dense_hessian_of_an_attention_block():
    subject = attention_subject()
    assert close(HessianOperator(subject).dense(), reference_hessian(subject))


# --- the Gauss–Newton split ------------------------------------------------------------------
SPLIT_SUBJECTS = {
    "mlp_ce": lambda: mlp_subject(1, (4, 5, 3), "tanh"),
    "mlp_torch_mse": lambda: mlp_subject(2, (4, 5, 3), "gelu", loss=nn.MSELoss()),
    "cnn": lambda: cnn_subject(3),
    "attention": lambda: attention_subject(4),
}


@pytest.mark.parametrize("name", list(SPLIT_SUBJECTS))
def test_gauss_newton_matches_brute_force(name):
    subject = SPLIT_SUBJECTS[name]()
    ref = reference_gauss_newton(subject)
    est = bc.measure(subject, ["ggn.trace", "residual.trace", "hessian.trace"])
    truth = float(torch.trace(ref))
    assert est["ggn.trace"].kind == "exact" and est["ggn.trace"].contains(truth)
    assert abs(est["ggn.trace"].value - truth) <= 1e-10 * abs(truth)
    h = reference_hessian(subject)
    r = est["residual.trace"]
    assert r.contains(float(torch.trace(h) - torch.trace(ref)))
    v = torch.randn(3, subject.num_params, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    quad = GaussNewton(subject).quadratic_form(v)
    assert torch.allclose(quad, ((v @ ref) * v).sum(1), rtol=1e-10, atol=0)


def test_mse_output_hessian_scale_is_read_from_the_loss():
    """nn.MSELoss(mean) is (c/2)‖z − y‖² per sample with c = 2/K: tr G is 2/K times that of
    the ½-sum 'mse' on the same net and data."""
    for k in (2, 4):
        half_sum = mlp_subject(5, (3, 4, k), loss="mse")
        torch_mse = bc.Subject(half_sum.model, (half_sum.x_all, half_sum.y_all), nn.MSELoss())
        a = bc.measure(half_sum, ["ggn.trace"])["ggn.trace"].value
        b = bc.measure(torch_mse, ["ggn.trace"])["ggn.trace"].value
        assert math.isclose(b, a * 2 / k, rel_tol=1e-12)


def test_matrix_free_products_weight_uneven_batches_by_samples():
    whole = mlp_subject(6, (4, 5, 3), n=13)
    split = mlp_subject(6, (4, 5, 3), n=13, batches=[(0, 1), (1, 9), (9, 13)])
    v = torch.randn(2, whole.num_params, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    assert torch.allclose(HessianOperator(whole).matmat(v), HessianOperator(split).matmat(v),
                          rtol=1e-12, atol=1e-14)
    assert torch.allclose(GaussNewton(whole).quadratic_form(v),
                          GaussNewton(split).quadratic_form(v), rtol=1e-12)
    assert math.isclose(GaussNewton(whole).trace_terms()[0], GaussNewton(split).trace_terms()[0],
                        rel_tol=1e-12)


# --- matrix-free quantities against the dense truth ------------------------------------------
def dense_truth(subject: bc.Subject) -> dict[str, float]:
    h = reference_hessian(subject)
    ev = np.linalg.eigvalsh(0.5 * (h + h.T).numpy())
    m = ev.mean()
    return {"hessian.trace": ev.sum(), "hessian.fro2": float((ev**2).sum()),
            "hessian.lambda_max": ev[-1], "hessian.lambda_min": ev[0],
            "hessian.eigenvalue_mean": m, "hessian.eigenvalue_variance": ((ev - m) ** 2).mean(),
            "hessian.eigenvalue_std": ((ev - m) ** 2).mean() ** 0.5}


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda: mlp_subject(7, (6, 12, 4), "tanh", n=40),
                                  lambda: cnn_subject(8, n=12),
                                  lambda: attention_subject(9, n=10)],
                         ids=["mlp", "cnn", "attention"])
def test_quantities_beyond_the_dense_budget_use_estimators(make):
    subject = make()
    truth = dense_truth(subject)
    budget = Budget(max_dense_params=0, lanczos_rel_tol=1e-9, trace_rel_half_width=0.05,
                    max_probes=subject.num_params // 2)
    est = bc.measure(subject, list(truth), budget=budget)
    for name, value in truth.items():
        assert est[name].contains(float(value)), (name, est[name], value)
    for name in ("hessian.lambda_max", "hessian.lambda_min"):
        e = est[name]
        assert e.kind == "statistical" and e.half_width <= 1e-8 * abs(truth["hessian.lambda_max"])
    # sequential MLPs get the exact trace (boundcheck.engines.sequential_hessian), others estimators
    # (or, when probing every basis vector is cheaper than the probes the target needs, the
    # estimator's exhaustive sum, also exact)
    exact = not isinstance(subject_structure(subject), str)
    t = est["hessian.trace"]
    assert t.kind == "exact" if exact else (t.kind == "statistical" or "exhaustive" in t.method
                                            or "every basis vector" in t.method), t.method


def test_lanczos_agrees_with_curvlinops_and_eigsh():
    curvlinops = pytest.importorskip("curvlinops")
    from scipy.sparse.linalg import eigsh

    subject = mlp_subject(10, (8, 20, 4), "tanh", n=64)
    ctx = Context(subject, budget=Budget(max_dense_params=0, lanczos_rel_tol=1e-10))
    ours = ctx.get("hessian.lambda_max")
    data = [(subject.x_all, subject.y_all)]
    op = curvlinops.HessianLinearOperator(subject.net, nn.CrossEntropyLoss(), subject.params,
                                          data, check_deterministic=False).to_scipy()
    ref = float(eigsh(op, k=1, which="LA", return_eigenvectors=False)[0])
    assert ours.contains(ref) or abs(ours.value - ref) <= 1e-12 * abs(ref), (ours, ref)
    assert abs(ours.value - ref) <= 1e-10 * abs(ref)


def test_dense_lambda_brackets_are_cholesky_checked():
    subject = mlp_subject(11, (4, 6, 3), "tanh")
    truth = dense_truth(subject)
    est = bc.measure(subject, ["hessian.lambda_max", "hessian.lambda_min"])
    for name in est:
        e = est[name]
        assert e.kind == "exact" and e.contains(float(truth[name]))
        assert "cholesky_checked_at" in e.details
        rigorous = e.details["cholesky_rigorous_bound"]
        if name == "hessian.lambda_max":
            assert rigorous >= truth[name] and e.upper >= e.details["cholesky_checked_at"]
        else:
            assert rigorous <= truth[name] and e.lower <= e.details["cholesky_checked_at"]


def test_control_variate_is_chosen_near_a_minimum_and_is_narrower():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    net = mlp([4, 30, 3], "tanh", seed=12).double()
    bc.training.train(net, x, y, recipe=bc.training.Recipe(optimizer="adam", lr=0.05,
                                                            steps=600), progress=False)
    subject = bc.Subject(net, (x, y))
    truth = dense_truth(subject)["hessian.trace"]
    common = {"max_dense_params": 0, "trace_rel_half_width": 1e-3, "max_probes": 100}
    # auto's choice among the estimators (bc.measure would give the exact MLP trace)
    auto = matrix_free_trace(Context(subject, budget=Budget(**common)))
    plain = bc.measure(subject, ["hessian.trace"],
                       budget=Budget(trace_method="hutchinson", **common))["hessian.trace"]
    assert auto.details["selected"] == "control_variate"
    assert auto.kind == plain.kind == "statistical"
    assert auto.contains(truth) and plain.contains(truth)
    assert auto.half_width < 0.2 * plain.half_width


def test_hutchpp_method_on_a_network():
    subject = mlp_subject(13, (5, 10, 3), "tanh", n=30)
    truth = dense_truth(subject)["hessian.trace"]
    est = bc.measure(subject, ["hessian.trace"],
                     budget=Budget(max_dense_params=0, trace_method="hutchpp",
                                   trace_rel_half_width=0.05, max_probes=60))["hessian.trace"]
    assert est.contains(truth) and "Hutch++" in est.method


def test_variance_interval_covers_the_cancellation_in_a_large_mean():
    """THEOREMS.md T1 numerics: A = 1e4·I + 1e-5·diag(linspace(−1, 1, 50)); from traces,
    tr(A²)/N − m² cancels to 0 and a true bound comes out VIOLATED. Matrix-free, the
    interval must contain s² and the Wolkowicz–Styan verdicts must not be VIOLATED."""
    d = 1e4 + 1e-5 * torch.linspace(-1, 1, 50, dtype=torch.float64)
    g = torch.Generator().manual_seed(14)
    q, _ = torch.linalg.qr(torch.randn(50, 50, generator=g, dtype=torch.float64))
    subject = bc.MatrixSubject((q * d) @ q.T)
    s2 = float(((d - d.mean()) ** 2).mean())
    est = bc.measure(subject, ["hessian.eigenvalue_variance"],
                     budget=MATRIX_FREE)["hessian.eigenvalue_variance"]
    assert est.contains(s2) and est.lower >= 0.0
    res = bc.verify(subject, "hessian.ws", budget=MATRIX_FREE)
    assert all(r.verdict != bc.Verdict.VIOLATED for r in res.results), res.results


def test_spectral_artifacts_dense_and_matrix_free():
    subject = mlp_subject(15, (5, 8, 3), "tanh", n=30)
    ev = np.sort(np.linalg.eigvalsh(reference_hessian(subject).numpy()))
    dense_ctx = Context(subject)
    top = top_eigenvalues(dense_ctx, 3)
    assert np.allclose(top.values, ev[::-1][:3], rtol=1e-10, atol=1e-13)
    density = spectral_density(dense_ctx)
    assert math.isclose(density.moment(1), ev.mean(), rel_tol=1e-10)
    assert spectral_density(dense_ctx) is density  # cached artifact

    free_ctx = Context(subject, budget=Budget(max_dense_params=0))
    for largest in (True, False):
        ritz = top_eigenvalues(free_ctx, 3, largest=largest)
        for theta, r in zip(ritz.values, ritz.residuals, strict=True):
            assert np.min(np.abs(ev - theta)) <= r + 1e-12
    slq = spectral_density(free_ctx, num_probes=40, steps=30)
    # E[vᵀHv/vᵀv] = tr H / P for Rademacher v; 40 probes put the mean within a few %
    assert abs(slq.moment(1) - ev.mean()) <= 0.25 * np.abs(ev).mean()


def test_confidence_beyond_the_calibration_is_not_affordable_matrix_free():
    subject = mlp_subject(16, (4, 6, 3), "tanh")
    no_pair_form = dataclasses.replace(MATRIX_FREE, max_closed_form_flops=1.0)
    ctx = Context(subject, confidence=0.99999, budget=no_pair_form)
    with pytest.raises(NotAffordableError):
        matrix_free_trace(ctx)  # ctx.get would give the exact MLP trace
    with pytest.raises(NotAffordableError):
        ctx.get("hessian.eigenvalue_variance")
    # with the exact pair form of ‖H‖_F² (and the exact trace) s² needs no calibration
    pair = Context(subject, confidence=0.99999, budget=MATRIX_FREE)
    assert pair.get("hessian.eigenvalue_variance").kind == "exact"
    res = bc.verify(subject, "hessian.ws", confidence=0.99999, budget=no_pair_form)
    assert {r.verdict for r in res.results} == {bc.Verdict.INCONCLUSIVE}
    exact = bc.measure(subject, ["hessian.trace"], confidence=0.99999)["hessian.trace"]
    assert exact.kind == "exact"


def test_matrix_free_mean_and_variance_cover_at_their_stated_confidence():
    """Quantity level, over 150 seeds: m (Hutchinson) and s² (centred estimate with interval
    arithmetic over m) cover at their stated confidence (s² states the union, 1 − 2α)."""
    import scipy.stats

    ev = np.concatenate([np.linspace(-0.5, 1.0, 295), [3.0, 4.0, 5.0, 6.0, 8.0]])
    g = torch.Generator().manual_seed(17)
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=torch.float64))
    subject = bc.MatrixSubject((q * torch.as_tensor(ev)) @ q.T)
    truth = {"hessian.eigenvalue_mean": ev.mean(), "hessian.eigenvalue_variance": ev.var()}
    budget = Budget(max_dense_params=0, trace_rel_half_width=0.1, max_probes=250)
    misses = dict.fromkeys(truth, 0)
    stated = {}
    for seed in range(150):
        est = bc.measure(subject, list(truth), confidence=0.9, seed=seed, budget=budget)
        for name, value in truth.items():
            assert est[name].kind == "statistical"
            misses[name] += not est[name].contains(float(value))
            stated[name] = est[name].confidence
    assert math.isclose(stated["hessian.eigenvalue_variance"], 0.8)
    for name, count in misses.items():
        assert count <= scipy.stats.binom.ppf(0.999, 150, 1 - stated[name]), (name, count)
