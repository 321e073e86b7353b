"""The exact trace of the loss Hessian's block for the network's last affine layer, and the
parameter groups (one per module) of the block-diagonal trace estimator
(:mod:`boundcheck.engines.estimators.block_trace`).

When the network's output is ``z_i = W ā_i`` (``nn.Linear`` applied last, ``ā_i = [a_i; 1]``
with a bias), z is linear in ``(W, b)``, so ``∇²_{W} z = 0`` and that block of
``H = G + Σ_k (∂ℓ/∂z_k) ∇²z_k`` equals the Gauss–Newton block
``(1/n) Σ_i (ā_i ā_iᵀ) ⊗ A_i`` (``A_i = ∇²_z ℓ_i``, THEOREMS.md conventions). Its trace is

    tr H_WW + tr H_bb = (1/n) Σ_i (‖a_i‖² + [bias]) tr A_i,

one forward pass and the output Hessians. Conditions, each checked (else a reason string):
the module runs exactly once per forward pass, its input is (n, d), its output tensor *is*
the network's output, and its parameters are not shared with another module.

Rounding (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §3.1): every
term is a sum of d + K + n products of non-negative magnitudes or of ``tr A_i``, so the
computed value is within ``γ_N Σ_i (‖a_i‖² + 1) Σ_k |A_i,kk| / n``, N = d + K + n + 8; we
use ``8 u N`` for ``γ_N`` (as the Gauss–Newton trace does) and add the same for the forward
pass that produced ``a_i`` (its own error scales with the same magnitudes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.subject import Subject


@dataclass(frozen=True)
class LastLayerTrace:
    """``tr`` of the last affine layer's Hessian block, its rounding bound, the flat
    indices of its parameters (in ``subject.params`` order) and the module's name."""

    value: float
    abs_error: float
    indices: torch.Tensor
    module: str


def _flat_offsets(subject: Subject) -> dict[int, tuple[int, int]]:
    out, o = {}, 0
    for p in subject.params:
        out[id(p)] = (o, o + p.numel())
        o += p.numel()
    return out


def _last_linear(subject: Subject) -> tuple[str, nn.Linear] | str:
    linears = [(n, m) for n, m in subject.net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return "the network has no nn.Linear layer"
    name, module = linears[-1]
    owners: dict[int, int] = {}
    for _, m in subject.net.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    if any(owners.get(id(p), 0) > 1 for p in module.parameters(recurse=False)):
        return f"the parameters of {name} are shared with another module"
    return name, module


def last_layer_trace(subject: Subject) -> LastLayerTrace | str:
    """The exact block trace (module docstring), or why it does not apply."""
    found = _last_linear(subject)
    if isinstance(found, str):
        return found
    name, module = found
    offsets = _flat_offsets(subject)
    params = [p for p in module.parameters(recurse=False) if id(p) in offsets]
    if not params:
        return f"the parameters of {name} are not measured (trainable_only)"
    has_weight = id(module.weight) in offsets
    has_bias = module.bias is not None and id(module.bias) in offsets
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_module, inputs, output):
        seen.append((inputs[0].detach(), output))

    handle = module.register_forward_hook(hook)
    u = UNIT_ROUNDOFF["float64"] if subject.dtype == torch.float64 else UNIT_ROUNDOFF["float32"]
    total, magnitude = 0.0, 0.0
    k = subject.output_dim
    try:
        with torch.no_grad():
            for b in subject.batches:
                seen.clear()
                z = subject.net(b.x)
                if len(seen) != 1 or seen[0][1] is not z:
                    return (f"{name} is not applied exactly once as the network's last "
                            "operation")
                a = seen[0][0]
                if a.dim() != 2:
                    return f"the input of {name} is not (samples, features)"
                trace_a = torch.diagonal(subject.loss_fn.output_hessian(z, b.y), dim1=1,
                                         dim2=2)
                sq = (a * a).sum(dim=1) if has_weight else torch.zeros_like(a[:, 0])
                weight = sq + (1.0 if has_bias else 0.0)
                total += float((weight * trace_a.sum(dim=1)).sum())
                magnitude += float((weight * trace_a.abs().sum(dim=1)).sum())
                d = a.shape[1]
    finally:
        handle.remove()
    n = subject.n
    value, magnitude = total / n, magnitude / n
    err = 2 * 8.0 * u * (d + k + n + 8) * magnitude
    indices = torch.cat([torch.arange(*offsets[id(p)]) for p in params])
    return LastLayerTrace(value, err, indices, name)


def module_groups(subject: Subject, exclude: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Flat parameter indices grouped by owning module (a module's weight and bias together),
    in ``subject.params`` order, without the indices in ``exclude``."""
    groups: dict[str, list[torch.Tensor]] = {}
    o = 0
    for name, p in zip(subject.param_names, subject.params, strict=True):
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        groups.setdefault(owner, []).append(torch.arange(o, o + p.numel()))
        o += p.numel()
    out = []
    drop = None
    if exclude is not None and len(exclude):
        drop = torch.zeros(o, dtype=torch.bool)
        drop[exclude] = True
    for parts in groups.values():
        idx = torch.cat(parts)
        if drop is not None:
            idx = idx[~drop[idx]]
        if len(idx):
            out.append(idx)
    return out
