"""Sequential MLPs: which networks are, and their per-layer forward and backward values.

A supported network is an ``nn.Sequential`` (nested ones flattened) of ``nn.Linear`` layers on
(batch, features) inputs with elementwise activations between them, an optional leading
``nn.Flatten``, and every parameter trained (:func:`sequential_structure` decides, or says
why not). For such nets the loss curvature has layer structure that autograd does not use:
:mod:`boundcheck.engines.sequential_hessian` (exact trace, diagonal, dense Hessian) and
:mod:`boundcheck.engines.sequential_products` (Hessian-vector products) build on
:func:`forward_backward`, which gives per sample, with ``s_l = W_l a_{l−1} + b_l`` and
``a_l = σ_l(s_l)``: the layer inputs ``a_{l−1}``, ``σ'_l``, ``σ''_l`` (by autograd on the
activation modules), ``g_l = ∂ℓ/∂a_l``, ``δ_l = ∂ℓ/∂s_l`` and the loss's output Hessian
``A = ∇²_z ℓ`` (``Loss.output_hessian``, built from stable pieces).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from boundcheck.core.subject import Subject

ELEMENTWISE = (nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
               nn.SiLU, nn.Softplus, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.Hardtanh, nn.ReLU6,
               nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class SequentialMLP:
    """``prefix`` (Flatten/elementwise, no parameters) → Linear → activation → … → Linear →
    ``activations[-1]`` (usually empty). ``activations[l]`` follows ``linears[l]``; Identity
    and eval-mode Dropout are dropped, so an empty tuple is the identity."""

    prefix: tuple[nn.Module, ...]
    linears: tuple[nn.Linear, ...]
    activations: tuple[tuple[nn.Module, ...], ...]

    @property
    def depth(self) -> int:
        return len(self.linears)

    def widths(self) -> list[tuple[int, int]]:
        return [(lin.in_features, lin.out_features) for lin in self.linears]


# --- which networks ---------------------------------------------------------------------------
def sequential_structure(net: nn.Module) -> SequentialMLP | str:
    """The layer structure of ``net`` if it is a supported sequential MLP, else the reason."""
    if not isinstance(net, nn.Sequential):
        return f"not a sequential MLP: the network is {type(net).__name__}, not nn.Sequential"
    prefix: list[nn.Module] = []
    linears: list[nn.Linear] = []
    activations: list[list[nn.Module]] = []
    for name, module in _leaves(net, "net"):
        if module._forward_hooks or module._forward_pre_hooks:
            return f"not a sequential MLP: {name} has forward hooks"
        kind = type(module)
        if kind is nn.Linear:
            if any(module is other for other in linears):
                return f"not a sequential MLP: the Linear at {name} is used twice"
            linears.append(module)
            activations.append([])
        elif kind is nn.Flatten:
            if linears:
                return (f"not a sequential MLP: Flatten at {name} after a Linear layer (that "
                        "Linear acts per position, not as a dense layer)")
            if (module.start_dim, module.end_dim) != (1, -1):
                return f"not a sequential MLP: Flatten at {name} does not flatten to (batch, D)"
            prefix.append(module)
        elif kind in ELEMENTWISE:
            if kind is nn.Dropout and module.training:
                return f"not a sequential MLP: Dropout at {name} is in train mode"
            if kind in (nn.Identity, nn.Dropout):
                continue
            (activations[-1] if linears else prefix).append(module)
        else:
            return f"not a sequential MLP: {kind.__name__} at {name}"
    if not linears:
        return "not a sequential MLP: no Linear layer"
    for name, p in net.named_parameters():
        if not p.requires_grad:
            return f"not a sequential MLP with all parameters trained: {name} is frozen"
    in_linears = sum(p.numel() for lin in linears for p in lin.parameters())
    if in_linears != sum(p.numel() for p in net.parameters()):
        return "not a sequential MLP: some parameters are outside its Linear layers"
    return SequentialMLP(tuple(prefix), tuple(linears), tuple(tuple(a) for a in activations))


def subject_structure(subject) -> SequentialMLP | str:
    """:func:`sequential_structure` of a subject's network (float32/float64 subjects)."""
    if not isinstance(subject, Subject):
        return "not a network subject"
    if subject.dtype not in (torch.float32, torch.float64):
        return f"dtype {subject.dtype} (float32 or float64 only)"
    # A Linear fed (batch, T, d) would need a Flatten after it to output (batch, K), which
    # sequential_structure refuses: every Linear of a supported net sees (batch, features).
    return sequential_structure(subject.net)


def _leaves(module: nn.Sequential, name: str):
    # _modules, not named_children(): a module used twice runs twice but is listed once
    for child_name, child in module._modules.items():
        full = f"{name}.{child_name}"
        if type(child) is nn.Sequential:
            yield from _leaves(child, full)
        else:
            yield full, child


def apply_modules(modules, x: torch.Tensor) -> torch.Tensor:
    for m in modules:
        x = m(x)
    return x


# --- per-layer values of a batch of samples ---------------------------------------------------
@dataclass
class LayerValues:
    """Per-layer quantities for n samples (values, or magnitudes for the error bound)."""

    weights: list[torch.Tensor]  # W_l (out_l, in_l)
    has_bias: list[bool]
    inputs: list[torch.Tensor]  # a_{l−1} (n, in_l)
    d1: list[torch.Tensor | None]  # σ'_l (n, out_l); None = identity
    d2: list[torch.Tensor | None]  # σ''_l (n, out_l); None = 0
    grads: list[torch.Tensor]  # g_l = ∂ℓ/∂a_l (n, out_l); g_L = ∂ℓ/∂z
    deltas: list[torch.Tensor]  # δ_l = ∂ℓ/∂s_l (n, out_l)
    output_hessian: torch.Tensor  # A (n, K, K)

    @property
    def n(self) -> int:
        return int(self.inputs[0].shape[0])


def activation_derivatives(acts: tuple[nn.Module, ...], s: torch.Tensor):
    """``(σ(s), σ'(s), σ''(s))`` of the composed elementwise modules, by autograd."""
    if not acts:
        return s, None, None
    x = s.detach().requires_grad_(True)
    with torch.enable_grad():
        y = apply_modules(acts, x.clone())  # in-place modules must not write into x
        (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        d2 = None
        if d1.requires_grad:
            (d2,) = torch.autograd.grad(d1.sum(), x, allow_unused=True)
    if d2 is None:
        d2 = torch.zeros_like(s)
    return y.detach(), d1.detach(), d2.detach()


def forward_backward(structure: SequentialMLP, x: torch.Tensor, y: torch.Tensor,
                     loss_fn) -> tuple[LayerValues, torch.Tensor]:
    """The per-layer values for the samples ``x`` (labels ``y``), and the network output z."""
    a = apply_modules(structure.prefix, x)
    weights, has_bias, inputs, d1s, d2s = [], [], [], [], []
    for lin, acts in zip(structure.linears, structure.activations, strict=True):
        w = lin.weight.detach()
        bias = None if lin.bias is None else lin.bias.detach()
        inputs.append(a)
        s = F.linear(a, w, bias)
        a, d1, d2 = activation_derivatives(acts, s)
        weights.append(w)
        has_bias.append(bias is not None)
        d1s.append(d1)
        d2s.append(d2)
    z = a.detach().requires_grad_(True)
    with torch.enable_grad():
        (dz,) = torch.autograd.grad(loss_fn.per_sample(z, y).sum(), z)
    out_hessian = loss_fn.output_hessian(z.detach(), y).detach()
    grads, deltas = backpropagate(weights, d1s, dz)
    return LayerValues(weights, has_bias, inputs, d1s, d2s, grads, deltas, out_hessian), z.detach()


def backpropagate(weights, d1s, dz):
    """``(g_l, δ_l)`` for every layer from ``∂ℓ/∂z``: ``δ_l = σ'_l ⊙ g_l``,
    ``g_{l−1} = δ_l W_l`` (``σ'_l`` None means the identity)."""
    depth = len(weights)
    grads: list[torch.Tensor] = [dz] * depth
    deltas: list[torch.Tensor] = [dz] * depth
    for l in range(depth - 1, -1, -1):
        if l < depth - 1:
            grads[l] = deltas[l + 1] @ weights[l + 1]
        deltas[l] = grads[l] if d1s[l] is None else grads[l] * d1s[l]
    return grads, deltas
