"""Smooth activations as the closed forms see them: stable values and derivatives
(σ, σ′, σ″) of tanh, sigmoid, softplus, the erf GELU and the identity, and the constants the
parameter-level bounds need (sup|σ′|, sup|σ″|, sup|σ‴|, |σ(0)|, sup|σ|)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --- activations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activation:
    """A smooth σ: values and derivatives (stable forms), and the constants Tier B needs.

    ``derivatives(z)`` returns (σ, σ', σ'', m1, m2): m1, m2 majorise the magnitudes of the
    terms the σ', σ'' formulas add (for their rounding). ``lipschitz`` = (sup|σ'|, sup|σ''|,
    sup|σ'''|) bound how an error in z moves σ, σ', σ''.
    """

    name: str
    derivatives: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    sup_d1: float
    sup_d2: float
    sup_d3: float
    at_zero: float  # |σ(0)|
    sup_abs: float  # sup|σ| (inf when unbounded)
    params: tuple = ()


def _tanh(z):
    a = torch.tanh(z)
    e = torch.exp(-2.0 * z.abs())
    s1 = 4.0 * e / (1.0 + e) ** 2  # 1/cosh², no 1 − tanh² cancellation
    s2 = -2.0 * a * s1
    return a, s1, s2, s1.abs(), s2.abs()


def _sigmoid(z):
    a = torch.sigmoid(z)
    s1 = a * torch.sigmoid(-z)
    s2 = -s1 * torch.tanh(0.5 * z)  # σ'(1 − 2σ)
    return a, s1, s2, s1.abs(), s2.abs()


def _softplus(beta: float, threshold: float):
    def derivatives(z):
        a = torch.nn.functional.softplus(z, beta=beta, threshold=threshold)
        # PyTorch's linear branch σ = z, σ' = 1 is βz > threshold; its double backward also
        # treats βz = threshold as linear (σ'' = 0 there): match autograd exactly
        linear = beta * z > threshold
        sg = torch.sigmoid(beta * z)
        s1 = torch.where(linear, torch.ones_like(z), sg)
        s2 = torch.where(beta * z >= threshold, torch.zeros_like(z),
                         beta * sg * torch.sigmoid(-beta * z))
        return a, s1, s2, s1.abs(), s2.abs()

    return derivatives


def _gelu(z):
    cdf = 0.5 * torch.special.erfc(-z / _SQRT2)
    pdf = _INV_SQRT_2PI * torch.exp(-0.5 * z * z)
    a = z * cdf
    s1 = cdf + z * pdf
    s2 = pdf * (2.0 - z * z)
    return a, s1, s2, cdf + (z * pdf).abs(), pdf * (2.0 + z * z)


def _identity(z):
    zero = torch.zeros_like(z)
    return z, torch.ones_like(z), zero, torch.ones_like(z), zero


_PHI_SQRT2 = math.exp(-1.0) * _INV_SQRT_2PI
GELU_SUP_D1 = 0.5 * math.erfc(-1.0) + _SQRT2 * _PHI_SQRT2  # at z = √2: Φ(√2) + √2 φ(√2)


# --- autograd-accurate forwards for the measured copy -------------------------------------------
def stable_tanh(z: torch.Tensor) -> torch.Tensor:
    """tanh written so that autograd's derivatives are accurate where tanh saturates.

    Autograd differentiates ``torch.tanh`` as ``1 − tanh²``, which cancels: its relative error
    is about ``u·e^{2|z|}``, 100% by |z| ≈ 18, and it is exactly 0 beyond |z| ≈ 19 although
    tanh′ = 1/cosh² > 0 (issue 12: an "exact" zero Jacobian and a false HOLDS). For |z| ≥ ½
    this computes ``sign(z)·(1 − e)/(1 + e)``, ``e = e^{−2|z|} ≤ e^{−1}`` (so ``1 − e`` does not
    cancel), whose autograd derivative is a sum of positive terms equal to ``4e/(1 + e)²`` (not
    0 until e underflows, |z| > 372; ``expm1`` would not do: its backward is ``expm1 + 1``,
    which cancels); below ½ ``torch.tanh`` is already accurate.
    """
    small = z.abs() < 0.5
    e = torch.exp(-2.0 * z.abs().clamp_min(0.5))
    large = torch.sign(z) * (1.0 - e) / (1.0 + e)
    return torch.where(small, torch.tanh(torch.where(small, z, torch.zeros_like(z))), large)


def stable_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """σ with accurate autograd derivatives: ``1/(1 + e^{−z})`` for z ≥ 0, ``e^z/(1 + e^z)``
    below (autograd's ``σ(1 − σ)`` cancels for z ≳ 37 and gives an exact 0)."""
    pos = z >= 0
    zp, zn = z.clamp_min(0.0), z.clamp_max(0.0)
    en = torch.exp(zn)
    return torch.where(pos, 1.0 / (1.0 + torch.exp(-zp)), en / (1.0 + en))


def use_stable_forwards(net: nn.Module) -> None:
    """Give every ``nn.Tanh`` / ``nn.Sigmoid`` of ``net`` (a measured copy, never the user's
    model) the forwards above. The modules keep their type (structure checks and closed
    forms still recognise them); only the instance's ``forward`` changes."""
    for m in net.modules():
        if type(m) is nn.Tanh:
            m.forward = stable_tanh
        elif type(m) is nn.Sigmoid:
            m.forward = stable_sigmoid


def activation_of(module: nn.Module) -> Activation | str:
    """The :class:`Activation` for a module, or the reason it is not supported."""
    if isinstance(module, nn.Tanh):
        return Activation("tanh", _tanh, 1.0, 4 / (3 * math.sqrt(3)), 2.0, 0.0, 1.0)
    if isinstance(module, nn.Sigmoid):
        return Activation("sigmoid", _sigmoid, 0.25, 1 / (6 * math.sqrt(3)), 0.125, 0.5, 1.0)
    if isinstance(module, nn.Softplus):
        b, t = float(module.beta), float(module.threshold)
        if not b > 0:
            return f"Softplus with beta={b} is not supported (needs beta > 0)"
        return Activation(f"softplus(beta={b:g})", _softplus(b, t), 1.0, b / 4, b * b / 8,
                          math.log(2.0) / b, math.inf, (b, t))
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            return ("GELU(approximate='tanh') is not supported (the closed form uses the exact "
                    "erf GELU)")
        return Activation("gelu", _gelu, GELU_SUP_D1, math.sqrt(2 / math.pi), 0.8, 0.0, math.inf)
    if isinstance(module, nn.Identity):
        return Activation("identity", _identity, 1.0, 0.0, 0.0, 0.0, math.inf)
    return (f"activation {type(module).__name__} is not one of the smooth activations T2 "
            "covers (Tanh, Sigmoid, Softplus, GELU, Identity)")


# --- slope restriction (LipSDP, THEOREMS.md T11) -----------------------------------------------
# σ is slope-restricted in [α, β] when α ≤ (σ(a) − σ(b))/(a − b) ≤ β for all a ≠ b; then
# Lip(σ) = max(|α|, |β|). GELU′ ranges over [1 − GELU_SUP_D1, GELU_SUP_D1] (extremes at
# z = ∓√2, since GELU′ − ½ is odd), so Lip(GELU) = 1.1290, not 1.
GELU_INF_D1 = 1.0 - GELU_SUP_D1


def slope_bounds(module: nn.Module) -> tuple[float, float] | str:
    """(α, β) with σ slope-restricted in [α, β], for an elementwise activation module, or the
    reason it is not one. Each bound is rounded outward by a few ulps (it is a float)."""
    def widen(a: float, b: float) -> tuple[float, float]:
        return (a if a == int(a) else a - 4e-16 * abs(a) - 1e-300,
                b if b == int(b) else b + 4e-16 * abs(b) + 1e-300)

    if isinstance(module, (nn.Tanh, nn.ReLU, nn.Softplus, nn.Hardtanh)):
        return 0.0, 1.0
    if isinstance(module, nn.Sigmoid):
        return 0.0, 0.25
    if isinstance(module, nn.Identity):
        return 1.0, 1.0
    if isinstance(module, nn.LeakyReLU):
        s = float(module.negative_slope)
        return min(s, 1.0), max(s, 1.0)
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            return "GELU(approximate='tanh') has no slope bounds here (only the exact erf GELU)"
        return widen(GELU_INF_D1, GELU_SUP_D1)
    return (f"{type(module).__name__} is not an elementwise slope-restricted activation "
            "(Tanh, ReLU, LeakyReLU, Sigmoid, Softplus, GELU, Hardtanh, Identity)")


def lipschitz_constant(module: nn.Module) -> float | str:
    """Lip(σ) = max(|α|, |β|) (tanh, ReLU: 1; sigmoid: ¼; GELU: 1.1290), or the reason."""
    bounds = slope_bounds(module)
    if isinstance(bounds, str):
        return bounds
    return max(abs(bounds[0]), abs(bounds[1]))


def kinks(module: nn.Module) -> tuple[float, ...]:
    """Where a piecewise-linear σ is not differentiable (ReLU: 0; Hardtanh: its two ends)."""
    if isinstance(module, nn.LeakyReLU):
        return () if float(module.negative_slope) == 1.0 else (0.0,)
    if isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))
    if isinstance(module, nn.ReLU):
        return (0.0,)
    return ()
