"""Cross-entropy near saturation: the engine's Hessian against a 50-digit reference.

A tiny tanh net (21 parameters, 3 samples) is scaled until every sample has
``1 − p_y ≈ 1e-13``. The reference Hessian is computed in mpmath at 50 digits with hyper-dual
numbers (``a + b ε₁ + c ε₂ + d ε₁ε₂``, ``ε₁² = ε₂² = 0``: the ``ε₁ε₂`` part of ``L(θ + ε₁e_i +
ε₂e_j)`` is exactly ``∂²L/∂θ_i∂θ_j``, with no truncation error). The engine's dense Hessian
(stable cross-entropy) must match it to 1e-8 relative; plain autograd through
``F.cross_entropy`` must not (it cancels in ``1 − p``), which shows the test can tell.
"""

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F
from hyperdual import HyperDual, hd_exp, hd_log, hd_tanh, seeded
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import HessianOperator

DIGITS = 50
MARGIN = 30.0  # smallest logit margin: 1 − p_y ≈ 2·e^{-30} ≈ 2e-13


def saturated_problem():
    """A 2→3→3 tanh net whose last layer is scaled so the smallest margin is MARGIN."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    x = torch.randn(3, 2, dtype=torch.float64)
    with torch.no_grad():
        z = net(x)
        y = z.argmax(1)
        top2 = z.topk(2, dim=1).values
        scale = MARGIN / float((top2[:, 0] - top2[:, 1]).min())
        net[2].weight.mul_(scale)
        net[2].bias.mul_(scale)
    return net, x, y


def mp_logits(theta, x):
    w1 = [[theta[2 * i + j] for j in range(2)] for i in range(3)]
    b1 = theta[6:9]
    w2 = [[theta[9 + 3 * k + i] for i in range(3)] for k in range(3)]
    b2 = theta[18:21]
    xi = [mpmath.mpf(float(v)) for v in x]
    h = [hd_tanh(sum((w1[i][j] * xi[j] for j in range(2)), HyperDual(0)) + b1[i])
         for i in range(3)]
    return [sum((w2[k][i] * h[i] for i in range(3)), HyperDual(0)) + b2[k] for k in range(3)]


def mp_loss(theta, x, y):
    total = HyperDual(mpmath.mpf(0))
    for n in range(x.shape[0]):
        z = mp_logits(theta, x[n])
        top = max(range(3), key=lambda k: z[k].a)
        s = sum((hd_exp(z[k] - z[top]) for k in range(3)), HyperDual(0))
        total = total + hd_log(s) + z[top] - z[int(y[n])]
    return total * (mpmath.mpf(1) / x.shape[0])


@pytest.fixture(scope="module")
def problem():
    mpmath.mp.dps = DIGITS
    net, x, y = saturated_problem()
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    base = [mpmath.mpf(float(v)) for v in flat]
    p = len(base)
    ref = torch.zeros(p, p, dtype=torch.float64)
    for i in range(p):
        for j in range(i, p):
            ref[i, j] = ref[j, i] = float(mp_loss(seeded(base, i, j), x, y).d)
    return net, x, y, flat, base, ref


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a - ref) / torch.linalg.matrix_norm(ref))


def test_the_net_is_saturated(problem):
    """Every sample has 1 − p_y < 1e-8; the least saturated one (which dominates H) sits
    where float64 still resolves 1 − p_y but autograd's ``p − p²`` cancels."""
    net, x, y, _, base, _ = problem
    gaps = []
    for n in range(x.shape[0]):
        z = mp_logits([HyperDual(v) for v in base], x[n])
        denom = mpmath.fsum(mpmath.exp(zk.a) for zk in z)
        gaps.append(1 - mpmath.exp(z[int(y[n])].a) / denom)
    assert max(gaps) < 1e-8
    assert 1e-15 < max(gaps), gaps


def test_dense_hessian_matches_50_digit_reference(problem):
    net, x, y, _, _, ref = problem
    ours = HessianOperator(bc.Subject(net, (x, y), "cross_entropy")).dense()
    assert relative_error(ours, ref) < 1e-8


def test_plain_autograd_through_f_cross_entropy_is_off(problem):
    net, x, y, flat, _, ref = problem
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]

    def loss(theta):
        parts = torch.split(theta, [math.prod(s) for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return F.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    plain = torch.autograd.functional.hessian(loss, flat)
    assert relative_error(plain, ref) > 1e-6


def test_quantities_enclose_the_reference(problem):
    """The exact-kind quantities' intervals contain the 50-digit values."""
    net, x, y, _, base, ref = problem
    est = bc.measure(bc.Subject(net, (x, y)), ["hessian.trace", "hessian.fro2", "ggn.trace"])
    assert est["hessian.trace"].contains(float(torch.trace(ref)))
    assert est["hessian.fro2"].contains(float((ref**2).sum()))
    # tr G = (1/n) Σ_i tr(J_iᵀ A_i J_i), A_i = diag(p) − ppᵀ, from 50-digit first derivatives
    p = len(base)
    total = mpmath.mpf(0)
    for n in range(x.shape[0]):
        jac = []
        for j in range(p):
            theta = [HyperDual(v) for v in base]
            theta[j] = HyperDual(base[j], 1, 0, 0)
            jac.append([zk.b for zk in mp_logits(theta, x[n])])
        z = mp_logits([HyperDual(v) for v in base], x[n])
        denom = mpmath.fsum(mpmath.exp(zk.a) for zk in z)
        probs = [mpmath.exp(zk.a) / denom for zk in z]
        for k in range(3):
            for l in range(3):
                a_kl = (probs[k] if k == l else 0) - probs[k] * probs[l]
                total += a_kl * mpmath.fsum(jac[j][k] * jac[j][l] for j in range(p))
    ggn = float(total / x.shape[0])
    assert est["ggn.trace"].contains(ggn)
    assert abs(est["ggn.trace"].value - ggn) <= 1e-8 * abs(ggn)
