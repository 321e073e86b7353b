"""Losses, per sample, built so that their first and second derivatives are accurate.

Convention (THEOREMS.md): ``L(θ) = (1/n) Σ_i ℓ(f(x_i), y_i)``.

* MSE ``ℓ = (c/2)‖z − y‖²``: ``c`` is read from the loss the user gives, never assumed
  (PyTorch's ``MSELoss(reduction="mean")`` has ``c = 2/K``).
* Cross-entropy ``ℓ = −log softmax(z)_y``, written around the largest logit r:
  ``ℓ = (z_r − z_y) + log1p(Σ_{l≠r} exp(z_l − z_r))``. Autograd through this form never
  subtracts two numbers near 1: ``1 − p_r`` is computed as ``S/(1+S)`` with ``S`` summed
  directly, so gradients and output Hessians stay accurate once the softmax saturates
  (``1 − p_y < 1e-6``), where autograd through ``F.cross_entropy`` loses tens of percent.
* Any other callable ``loss(z_batch, y_batch) -> mean loss`` is used as given ("generic"),
  per sample; the subject checks on its first batch that the callable's batch value is the
  mean of those per-sample values (:func:`check_mean_of_per_sample`), so a loss that is not
  an average over samples is refused rather than measured as something else (issue 12).
* ``nn`` loss modules are measured exactly as they compute, or refused with the reason:
  ``reduction`` must be ``"mean"`` (L is a mean; a sum would be n·L, silently averaged
  before), and class ``weight`` (a mean normalised by ``Σ_i w_{y_i}``, not by n) and
  ``ignore_index ≥ 0`` (a mean over the kept samples) are refused.
  ``CrossEntropyLoss(label_smoothing=ε)`` is a per-sample mean and is measured as given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


def stable_cross_entropy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``−log softmax(z)_y`` with saturation-safe derivatives. z: (n, K), y: (n,)."""
    r = z.detach().argmax(dim=-1, keepdim=True)
    z_r = z.gather(-1, r)
    z_y = z.gather(-1, y.long().unsqueeze(-1))
    others = torch.arange(z.shape[-1], device=z.device) != r
    s = torch.where(others, torch.exp(z - z_r), torch.zeros((), dtype=z.dtype,
                                                             device=z.device)).sum(-1)
    # (z_r − z_y) is structurally 0 when r = y: its ±1 gradients would otherwise be
    # accumulated with the tiny −S/(1+S) and swallow it.
    margin = torch.where(r == y.long().unsqueeze(-1), torch.zeros_like(z_r), z_r - z_y)
    return margin.squeeze(-1) + torch.log1p(s)


def stable_softmax_hessian(z: torch.Tensor) -> torch.Tensor:
    """``∇²_z (−log softmax(z)_y) = diag(p) − ppᵀ`` per sample (n, K, K), formed around the
    largest logit r like :func:`stable_cross_entropy`: ``p_l = e^{z_l − z_r}/(1 + S)`` with
    ``S = Σ_{l≠r} e^{z_l − z_r}``, the r-th diagonal entry ``p_r · S/(1 + S)`` (never
    ``p_r − p_r²``, which cancels once the softmax saturates) and the others ``p_k (1 − p_k)``
    with ``p_k ≤ 1/2``. Every entry is a product of relatively accurate factors."""
    r = z.argmax(dim=-1, keepdim=True)
    e = torch.exp(z - z.gather(-1, r))
    others = torch.ones_like(e).scatter_(-1, r, 0.0)
    s = (e * others).sum(-1, keepdim=True)
    p = e / (1.0 + s)
    diag = torch.where(others.bool(), p * (1.0 - p), p * (s / (1.0 + s)))
    hess = -p.unsqueeze(-1) * p.unsqueeze(-2)
    torch.diagonal(hess, dim1=-2, dim2=-1).copy_(diag)  # assigned: adding would cancel
    return hess


def half_squared_error(z: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-sample ``(c/2)‖z − y‖²``."""
    diff = z - y.reshape(z.shape).to(z.dtype)
    return 0.5 * scale * diff.pow(2).flatten(1).sum(-1)


@dataclass(frozen=True)
class Loss:
    """A per-sample loss with what the theorems need to know about it.

    kind: ``"mse"`` (with ``mse_scale`` = c), ``"cross_entropy"`` or ``"generic"``.
    """

    kind: str
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mse_scale: float | None = None
    description: str = ""
    closed_form_hessian: Callable[[torch.Tensor], torch.Tensor] | None = None  # of z only
    batch_fn: Callable | None = None  # the user's batch-mean callable, when there is one

    def mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.per_sample(z, y).mean()

    def output_hessian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``A_i = ∇²_z ℓ(z_i, y_i)`` for every sample: (n, K, K); in closed form where the
        loss has one (cross-entropy, ½-sum MSE), else by ``vmap(hessian)``."""
        if self.closed_form_hessian is not None:
            return self.closed_form_hessian(z)

        def one(zi, yi):
            return self.per_sample(zi.unsqueeze(0), yi.unsqueeze(0)).squeeze(0)

        return torch.vmap(torch.func.hessian(one))(z, y)


def make_loss(spec: str | nn.Module | Callable | Loss) -> Loss | _DeferredMSE:
    """Turn what the user passed into a :class:`Loss`.

    Accepted: ``"cross_entropy"``; ``"mse"`` (c = 1, the ½-sum convention) or ``"mse:C"``;
    ``nn.CrossEntropyLoss()`` (mean reduction; label smoothing measured per sample; class
    weights, ``ignore_index ≥ 0`` and sums refused); ``nn.MSELoss()`` (mean → c read from its
    output Hessian); or any callable ``loss(z_batch, y_batch)``
    returning the mean loss over the batch.
    """
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, str):
        name = spec.strip().lower().replace("-", "_")
        if name in ("cross_entropy", "ce", "crossentropy"):
            return cross_entropy()
        if name == "mse" or name.startswith("mse:"):
            scale = float(name.split(":", 1)[1]) if ":" in name else 1.0
            if not scale > 0:
                raise ValueError(f"MSE scale must be > 0, got {scale}")
            return _mse(scale)
        raise ValueError(f"unknown loss {spec!r}: use 'cross_entropy', 'mse', 'mse:C', an "
                         "nn.Module loss or a callable")
    if isinstance(spec, nn.modules.loss._Loss):
        why = _unmeasurable_module(spec)
        if why:
            raise ValueError(why)
    if isinstance(spec, nn.CrossEntropyLoss):
        if spec.label_smoothing == 0.0:
            return cross_entropy()
        return _generic(spec, f"nn.CrossEntropyLoss(label_smoothing={spec.label_smoothing:g}) "
                              "(per sample, as given)")
    if isinstance(spec, nn.MSELoss):
        return _mse_from_callable(spec, "nn.MSELoss(reduction='mean')")
    if callable(spec):
        return _generic(spec, getattr(spec, "__name__", type(spec).__name__))
    raise TypeError(f"cannot use {type(spec).__name__} as a loss")


def _unmeasurable_module(spec: nn.Module) -> str | None:
    """Why an ``nn`` loss module is not ``(1/n) Σ_i ℓ(z_i, y_i)`` as boundcheck measures, or
    None."""
    name = type(spec).__name__
    reduction = getattr(spec, "reduction", "mean")
    if reduction != "mean":
        return (f"nn.{name}(reduction={reduction!r}) is refused: boundcheck measures the mean "
                "loss L = (1/n) Σ ℓ (THEOREMS.md), and a sum is n·L (pass reduction='mean'; "
                "the Hessian of the sum is n times the measured one)")
    if getattr(spec, "weight", None) is not None and isinstance(spec, (nn.CrossEntropyLoss,
                                                                       nn.NLLLoss)):
        return (f"nn.{name}(weight=...) is refused: its mean is normalised by Σ_i w_(y_i), not "
                "by n, so it is not the mean of per-sample losses boundcheck measures (pass a "
                "callable that returns the mean of w_(y_i)·ℓ_i/w̄ over the batch, w̄ fixed)")
    if isinstance(spec, (nn.CrossEntropyLoss, nn.NLLLoss)) and spec.ignore_index >= 0:
        return (f"nn.{name}(ignore_index={spec.ignore_index}) is refused: its mean runs over the "
                "kept samples only; drop the ignored samples from the data instead")
    return None


def check_mean_of_per_sample(loss: Loss, net: nn.Module, x: torch.Tensor,
                             y: torch.Tensor) -> None:
    """Refuse (ValueError) a user loss whose batch value on ``(x, y)`` is not the mean of its
    per-sample values: boundcheck would measure another function than the one given."""
    if loss.batch_fn is None or x.shape[0] < 2:
        return
    with torch.no_grad():
        z = net(x)
        given = float(loss.batch_fn(z, y))
        ours = float(loss.per_sample(z, y).mean())
    tol = 1e-9 * max(abs(given), abs(ours), 1e-300) + 1e-300
    if not abs(given - ours) <= tol:
        raise ValueError(f"the loss {loss.description} returns {given:.10g} on a batch but the "
                         f"mean of its per-sample values is {ours:.10g}: it is not a mean over "
                         "samples (class weights? reduction='sum'? a batch statistic?), and "
                         "boundcheck measures L = (1/n) Σ ℓ(f(x_i), y_i)")


def cross_entropy() -> Loss:
    """Softmax cross-entropy in its saturation-safe form, with its closed-form Hessian."""
    return Loss("cross_entropy", stable_cross_entropy, None, "softmax cross-entropy",
                stable_softmax_hessian)


def _mse(scale: float) -> Loss:
    def hessian(z: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return (scale * eye).expand(*z.shape[:-1], -1, -1).clone()

    return Loss("mse", lambda z, y: half_squared_error(z, y, scale), scale, f"MSE (c={scale:g})",
                hessian)


def _generic(fn: Callable, description: str) -> Loss:
    def per_sample(z, y):
        return torch.vmap(lambda zi, yi: fn(zi.unsqueeze(0), yi.unsqueeze(0)))(z, y)

    return Loss("generic", per_sample, None, description, batch_fn=fn)


def _mse_from_callable(fn: Callable, description: str) -> Loss:
    """Read c from an MSE-like callable: ℓ(z) per sample must be (c/2)‖z − y‖²."""
    generic = _generic(fn, description)

    def scale_for(k: int) -> float:
        z = torch.zeros(1, k, dtype=torch.float64)
        y = torch.zeros(1, k, dtype=torch.float64)
        a = generic.output_hessian(z, y)[0]
        return float(a[0, 0])

    # c depends on K under mean reduction: read it once the output size is known.
    return _DeferredMSE(generic, scale_for, description)


class _DeferredMSE:
    """Placeholder resolved by :func:`resolve_for_output` once K is known."""

    def __init__(self, generic: Loss, scale_for: Callable[[int], float], description: str):
        self.generic = generic
        self.scale_for = scale_for
        self.description = description


def resolve_for_output(loss: Loss | _DeferredMSE, k: int) -> Loss:
    """Fix a loss whose constants depend on the output size K (e.g. ``nn.MSELoss``)."""
    if isinstance(loss, _DeferredMSE):
        c = loss.scale_for(k)
        if not c > 0:
            raise ValueError(f"{loss.description}: output Hessian scale {c} is not > 0")
        return Loss("mse", loss.generic.per_sample, c, f"{loss.description}, c = {c:g}",
                    batch_fn=loss.generic.batch_fn)
    return loss
