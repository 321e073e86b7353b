"""``tr H`` from loss values only: central second differences along Gaussian directions.

Source: M. Böttcher and M. Wheeler, arXiv 2208.13219 (J. Stat. Mech. 2024); the step rule,
rounding allowance and calibration are THEOREMS.md T9(b), measured there.

``T_m = [L(θ + εδ_m) − 2L(θ) + L(θ − εδ_m)] / ε²`` with ``δ_m`` iid N(0, I), so
``T_m = δ_mᵀHδ_m + (ε²/12) ∇⁴L[δ_m⁴] + O(ε⁴)`` and ``E[δᵀHδ] = tr H``. No Hessian-vector
products: 1 + 4M loss evaluations (the centre, ±ε and ±2ε per direction).

* Step: ``ε = u^{1/4} · max(1, ‖θ‖) / √P`` (u the unit roundoff of the subject's dtype). A
  smaller step lets the rounding of the single centre value ``L(θ)``, which shifts every
  ``T_m`` alike and never averages out, dominate (at ε = 1e-8 the reference saw −31% bias).
* Interval: ``T̄ ± (c·s/√M + β)``, ``β = 8u·S/ε² + |mean(T_m(2ε) − T_m(ε))|/3`` with
  ``S = mean_i(|ℓ_i| + ‖z_i‖_∞ + ‖z_i‖_∞²)`` (rounding of the loss values; the second term
  estimates the ε² truncation bias, since ``T(2ε) − T(ε) ≈ 3·(ε²/12)∇⁴L[δ⁴]``), and
  ``c = c(M, α)`` the critical value calibrated on rank one
  (:func:`.estimators.trace.rank_one_critical_value`: for Gaussian δ a rank-one H gives χ²₁
  samples, the worst case for the studentised mean; 2.3568 / 3.7012 at M = 50 for 95 / 99%).
  Statistical, not certified.
* Piecewise-linear σ (ReLU, ...): a step that crosses a kink biases ``T_m`` by O(1), which β
  cannot see, so no step goes beyond the rule: the estimate uses ``ε/2`` and the bias check
  ``ε`` (for smooth nets ``ε`` and ``2ε``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.subject import Subject
from boundcheck.engines.estimators.trace import rank_one_critical_value

# Modules whose output is piecewise linear (or has kinks) in the parameters.
PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.PReLU, nn.Hardtanh, nn.Hardsigmoid,
                    nn.Hardswish, nn.Hardshrink, nn.Softshrink, nn.MaxPool1d, nn.MaxPool2d,
                    nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)

Evaluator = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class FiniteDifferenceTrace:
    value: float
    lower: float
    upper: float
    details: dict = field(default_factory=dict)


def step_rule(theta: torch.Tensor) -> float:
    """``ε = u^{1/4} · max(1, ‖θ‖) / √P`` for θ's dtype."""
    u = unit_roundoff(theta.dtype)
    norm = float(theta.double().norm())
    return u**0.25 * max(1.0, norm) / math.sqrt(theta.numel())


def unit_roundoff(dtype: torch.dtype) -> float:
    name = str(dtype).replace("torch.", "")
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"no unit roundoff known for {dtype} (float64 or float32)")
    return UNIT_ROUNDOFF[name]


def finite_difference_trace(evaluate: Evaluator, theta: torch.Tensor, *, num_directions: int,
                            confidence: float, seed: int,
                            piecewise_linear: bool = False) -> FiniteDifferenceTrace:
    """The interval of the module docstring for ``tr ∇²L`` at θ.

    evaluate(θ) -> (per-sample losses ℓ_i (n,), outputs z_i (n, K)), both in θ's dtype; the
    loss is their mean, formed in that dtype.
    """
    if theta.dim() != 1:
        raise ValueError("θ must be a flat parameter vector")
    c = rank_one_critical_value(num_directions, 1.0 - confidence)
    u = unit_roundoff(theta.dtype)
    eps_rule = step_rule(theta)
    h = eps_rule / 2 if piecewise_linear else eps_rule
    losses, outputs = evaluate(theta)
    n = losses.shape[0]

    def loss(at: torch.Tensor) -> float:
        return float(evaluate(at)[0].sum() / n)

    centre = float(losses.sum() / n)
    z_inf = outputs.reshape(n, -1).abs().amax(dim=1).double()
    scale = float((losses.double().abs() + z_inf + z_inf**2).mean())
    gen = torch.Generator().manual_seed(int(seed))
    t_main, t_check = [], []
    for _ in range(num_directions):
        d = torch.randn(theta.numel(), generator=gen, dtype=torch.float64)
        d = d.to(dtype=theta.dtype, device=theta.device)
        near = [loss(theta + h * d), loss(theta - h * d)]
        far = [loss(theta + 2 * h * d), loss(theta - 2 * h * d)]
        t_main.append((near[0] - 2 * centre + near[1]) / h**2)
        t_check.append((far[0] - 2 * centre + far[1]) / (2 * h) ** 2)
    t = torch.tensor(t_main, dtype=torch.float64)
    t2 = torch.tensor(t_check, dtype=torch.float64)
    mean = float(t.mean())
    sd = float(t.std())
    rounding = 8 * u * scale / h**2
    truncation = abs(float((t2 - t).mean())) / 3
    beta = rounding + truncation
    half = c * sd / math.sqrt(num_directions) + beta
    details = {"directions": num_directions, "loss_evaluations": 1 + 4 * num_directions,
               "epsilon_rule": eps_rule, "epsilon": h, "check_epsilon": 2 * h,
               "piecewise_linear": piecewise_linear, "critical_value": c, "sample_sd": sd,
               "beta_rounding": rounding, "beta_truncation": truncation, "loss_scale_S": scale,
               "unit_roundoff": u}
    return FiniteDifferenceTrace(mean, mean - half, mean + half, details)


def subject_evaluator(subject: Subject) -> tuple[Evaluator, torch.Tensor]:
    """``θ ↦ (ℓ_i, z_i)`` over all the subject's data (functional, its dtype), and θ now."""
    net = subject.net
    names = subject.param_names
    shapes = [p.shape for p in subject.params]
    sizes = [p.numel() for p in subject.params]
    loss_fn = subject.loss_fn

    @torch.no_grad()
    def evaluate(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pieces = torch.split(theta, sizes)
        params = {k: v.reshape(s) for k, v, s in zip(names, pieces, shapes, strict=True)}
        losses, outputs = [], []
        for b in subject.batches:
            z = functional_call(net, params, (b.x,))
            losses.append(loss_fn.per_sample(z, b.y))
            outputs.append(z)
        return torch.cat(losses), torch.cat(outputs)

    return evaluate, subject.flat_params()


def has_kinks(module: nn.Module) -> bool:
    """Whether the network has a piecewise-linear part (see :data:`PIECEWISE_LINEAR`)."""
    return any(isinstance(m, PIECEWISE_LINEAR) for m in module.modules())
