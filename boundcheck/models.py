"""Small architectures built from a config: plain ``nn.Module``s (any user module works too)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}

SMOOTH = frozenset({"tanh", "gelu", "sigmoid", "softplus", "identity"})


def mlp(sizes: Sequence[int], activation: str = "tanh", bias: bool = True,
        seed: int | None = None) -> nn.Sequential:
    """``sizes = [D, h_1, ..., K]``: affine layers with ``activation`` between them."""
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"an MLP needs at least [in, out] sizes ≥ 1, got {list(sizes)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(int(a), int(b), bias=bias))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
    finally:
        if seed is not None:
            torch.random.set_rng_state(gen_state)
    return nn.Sequential(*layers)
