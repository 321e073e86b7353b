"""Multi-layer perceptrons: affine layers with one activation between them.

``mlp([D, h_1, ..., K])`` is the network of THEOREMS.md's smooth-net theorems (T2: one hidden
layer, ``f(x) = V σ(Wx + b) + c``) when it has one hidden layer and a smooth activation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from boundcheck.harness.zoo._seed import seeded

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}

SMOOTH = frozenset({"tanh", "gelu", "sigmoid", "softplus", "identity"})


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name (see :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], activation: str = "tanh", bias: bool = True,
        seed: int | None = None) -> nn.Sequential:
    """``sizes = [D, h_1, ..., K]``: affine layers with ``activation`` between them."""
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"an MLP needs at least [in, out] sizes ≥ 1, got {list(sizes)}")
    activation_layer(activation)
    with seeded(seed):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(int(a), int(b), bias=bias))
            if i < len(sizes) - 2:
                layers.append(activation_layer(activation))
    return nn.Sequential(*layers)


def build_mlp(input_shape: Sequence[int], output_dim: int, hidden: Sequence[int] = (32,),
              activation: str = "tanh", bias: bool = True) -> nn.Sequential:
    """An MLP for inputs of any shape (flattened first when they are not vectors)."""
    net = mlp([math.prod(input_shape), *hidden, output_dim], activation, bias)
    if len(input_shape) > 1:
        return nn.Sequential(nn.Flatten(), *net)
    return net
