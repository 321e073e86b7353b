"""Losses, per sample, built so that their first and second derivatives are accurate.

Convention (THEOREMS.md): ``L(θ) = (1/n) Σ_i ℓ(f(x_i), y_i)``.

* MSE ``ℓ = (c/2)‖z − y‖²``: ``c`` is read from the loss the user gives, never assumed
  (PyTorch's ``MSELoss(reduction="mean")`` has ``c = 2/K``).
* Cross-entropy ``ℓ = −log softmax(z)_y``, written around the largest logit r:
  ``ℓ = (z_r − z_y) + log1p(Σ_{l≠r} exp(z_l − z_r))``. Autograd through this form never
  subtracts two numbers near 1: ``1 − p_r`` is computed as ``S/(1+S)`` with ``S`` summed
  directly, so gradients and output Hessians stay accurate once the softmax saturates
  (``1 − p_y < 1e-6``), where autograd through ``F.cross_entropy`` loses tens of percent.
* Any other callable ``loss(z_batch, y_batch) -> mean loss`` is used as given ("generic").
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
    ``nn.CrossEntropyLoss()`` (mean reduction, no weights or smoothing); ``nn.MSELoss()``
    (mean → c read from its output Hessian); or any callable ``loss(z_batch, y_batch)``
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
    if isinstance(spec, nn.CrossEntropyLoss):
        plain = (spec.weight is None and spec.label_smoothing == 0.0
                 and spec.reduction == "mean" and spec.ignore_index < 0)
        if plain:
            return cross_entropy()
        return _generic(spec, "nn.CrossEntropyLoss with weights/smoothing (used as given)")
    if isinstance(spec, nn.MSELoss):
        if spec.reduction == "mean":
            return _mse_from_callable(spec, "nn.MSELoss(reduction='mean')")
        raise ValueError("nn.MSELoss must use reduction='mean' (the loss is an average over "
                         "samples); pass 'mse' for the ½-sum convention")
    if callable(spec):
        return _generic(spec, getattr(spec, "__name__", type(spec).__name__))
    raise TypeError(f"cannot use {type(spec).__name__} as a loss")


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

    return Loss("generic", per_sample, None, description)


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
        return Loss("mse", loss.generic.per_sample, c, f"{loss.description}, c = {c:g}")
    return loss
