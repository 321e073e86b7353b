"""Tight subjects for the planted-violation suite (THEOREMS.md, "How a verdict is reached"), each
with its independent reference (brute_force.py). Built directly here, never from boundcheck's
own zoo, so that the reference shares nothing with what it checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from brute_force import Ref, mlp_reference, spectral_reference
from torch import nn

import boundcheck as bc


def _equal_norm_inputs(n: int, d: int, norm: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return norm * x / x.norm(dim=1, keepdim=True)


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=0.8)
    return module.double()


def mat_n2():
    """N = 2: all four T1 bounds hold with equality."""
    a = np.array([[3.0, 1.0], [1.0, 0.5]])
    return bc.MatrixSubject(a, name="mat_n2"), spectral_reference(a)


def mat_rank1():
    """An exactly rank-one PSD matrix (N = 6): T1's λ_max bound and T12's are attained."""
    u = np.array([1.0, -2.0, 0.5, 1.5, 0.0, 1.0])
    a = 3.0 * np.outer(u, u)
    return bc.MatrixSubject(a, name="mat_rank1"), spectral_reference(a)


def mat_wishart():
    """A generic PSD matrix (N = 8): nothing tight."""
    g = np.random.default_rng(3).standard_normal((8, 5))
    a = g @ g.T
    return bc.MatrixSubject(a, name="mat_wishart"), spectral_reference(a)


def mat_n1():
    """N = 1, where T1's and T12's precondition N ≥ 2 fails."""
    a = np.array([[2.0]])
    return bc.MatrixSubject(a, name="mat_n1"), spectral_reference(a)


def _mlp_subject(net: nn.Sequential, x, y, kind: str, name: str):
    return bc.Subject(net, (x, y), kind, name=name), mlp_reference(net, x, y, kind)


def lin1_mse():
    """Bias-free Linear(3, 1), inputs of equal norm, targets = outputs (a zero-loss MSE
    minimum): T3, T4, T6 (and their layer and sharpness forms, T5, T7, T8) with equality."""
    net = nn.Sequential(_seeded(nn.Linear(3, 1, bias=False), 0))
    x = _equal_norm_inputs(4, 3, 2.0, 0)
    with torch.no_grad():
        y = net(x).clone()
    return _mlp_subject(net, x, y, "mse", "lin1_mse")


def deep_mse():
    """Bias-free 3 → 4 → 2 tanh net at a zero-loss MSE minimum (targets = outputs)."""
    net = nn.Sequential(_seeded(nn.Linear(3, 4, bias=False), 1), nn.Tanh(),
                        _seeded(nn.Linear(4, 2, bias=False), 2))
    x = _equal_norm_inputs(5, 3, 1.5, 1)
    with torch.no_grad():
        y = net(x).clone()
    return _mlp_subject(net, x, y, "mse", "deep_mse")


def deep_mse_off():
    """The same net far from a minimum (random targets): the sharpness (tr H) forms' precondition
    fails, and tr H ≠ tr G."""
    net = nn.Sequential(_seeded(nn.Linear(3, 4, bias=False), 1), nn.Tanh(),
                        _seeded(nn.Linear(4, 2, bias=False), 2))
    x = _equal_norm_inputs(5, 3, 1.5, 1)
    y = 3.0 * torch.randn(5, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return _mlp_subject(net, x, y, "mse", "deep_mse_off")


def ce_one_hidden():
    """f = Vσ(Wx + b) + c, tanh, cross-entropy, K = 2, n = 1: G is rank one (T2's regime)."""
    net = nn.Sequential(_seeded(nn.Linear(2, 2), 3), nn.Tanh(), _seeded(nn.Linear(2, 2), 4))
    x = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    y = torch.tensor([1])
    return _mlp_subject(net, x, y, "cross_entropy", "ce_one_hidden")


def ce_linear():
    """Bias-free Linear(3, 2) with rows w and −w, cross-entropy, inputs of equal norm: the
    centred T4/T5 forms hold with equality (P W = W, tr A = a = 2p(1 − p) for K = 2)."""
    lin = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        w = torch.tensor([0.6, -0.3, 0.9], dtype=torch.float64)
        lin.weight.copy_(torch.stack([w, -w]))
    x = _equal_norm_inputs(3, 3, 1.0, 4)
    return _mlp_subject(nn.Sequential(lin), x, torch.tensor([0, 1, 1]), "cross_entropy",
                        "ce_linear")


def ce_three_class():
    """A 3 → 4 → 3 tanh net with cross-entropy on five samples (T2, the CE forms of T4/T5)."""
    net = nn.Sequential(_seeded(nn.Linear(3, 4), 5), nn.Tanh(), _seeded(nn.Linear(4, 3), 6))
    x = _equal_norm_inputs(5, 3, 1.0, 2)
    y = torch.tensor([0, 1, 2, 1, 0])
    return _mlp_subject(net, x, y, "cross_entropy", "ce_three_class")


def ce_relu():
    """A ReLU one-hidden-layer net: T2's smooth-activation precondition fails."""
    net = nn.Sequential(_seeded(nn.Linear(2, 3), 8), nn.ReLU(), _seeded(nn.Linear(3, 2), 9))
    x = torch.tensor([[0.7, -0.4], [0.2, 0.9]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    return _mlp_subject(net, x, y, "cross_entropy", "ce_relu")


FAST: dict[str, Callable[[], tuple[object, Ref]]] = {
    "mat_n2": mat_n2, "mat_rank1": mat_rank1, "lin1_mse": lin1_mse,
    "ce_one_hidden": ce_one_hidden, "ce_linear": ce_linear}
SLOW: dict[str, Callable[[], tuple[object, Ref]]] = {
    "deep_mse_off": deep_mse_off, "mat_wishart": mat_wishart, "mat_n1": mat_n1,
    "deep_mse": deep_mse, "ce_three_class": ce_three_class, "ce_relu": ce_relu}
