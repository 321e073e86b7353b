"""The architecture zoo: plain ``nn.Module``s built by name from a small config.

    net = build_model({"model": "lenet", "channels": [4, 8], "seed": 0},
                      input_shape=(1, 8, 8), output_dim=10)

Every model maps a batch of inputs to ``(batch, K)`` outputs and works with
:class:`boundcheck.Subject`. Any user ``nn.Module`` works with the engine too: the zoo is a
convenience. ``input_kind`` says what inputs an architecture takes, so that a data set can be
laid out for it: "flat" (vectors; other shapes are flattened), "image" (C, H, W) or "tokens".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from boundcheck.harness.zoo._seed import seeded
from boundcheck.harness.zoo.cnn import lenet, vgg
from boundcheck.harness.zoo.mlp import ACTIVATIONS, SMOOTH, build_mlp, mlp
from boundcheck.harness.zoo.resnet import resnet
from boundcheck.harness.zoo.resnet18 import resnet18
from boundcheck.harness.zoo.transformer import sequence_transformer, vit


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[..., nn.Module]  # build(input_shape, output_dim, **options)
    input_kind: str  # "flat", "image" or "tokens"
    description: str

    @property
    def options(self) -> dict[str, Any]:
        """The options this architecture takes, with their defaults."""
        params = list(inspect.signature(self.build).parameters.values())[2:]
        return {p.name: p.default for p in params}


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("mlp", build_mlp, "flat", "multi-layer perceptron"),
    Architecture("lenet", lenet, "image", "LeNet-style CNN (conv → act → pool stages)"),
    Architecture("vgg", vgg, "image", "small VGG-style CNN (stages of 3×3 convolutions)"),
    Architecture("resnet", resnet, "image", "small ResNet (basic residual blocks)"),
    Architecture("resnet18", resnet18, "image",
                 "ResNet-18, CIFAR stem (3×3, no max pooling); width 64: 11.2M parameters"),
    Architecture("vit", vit, "image", "ViT-style transformer on image patches"),
    Architecture("sequence_transformer", sequence_transformer, "tokens",
                 "transformer classifier on token sequences"),
)}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise a clear error for an unknown model or an option it does not take."""
    known = architecture(name).options
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"model {name!r} does not take option(s) {unknown}; its options: "
                         f"{', '.join(f'{k}={v!r}' for k, v in known.items())}")


def build_model(config: Mapping[str, Any], *, input_shape: Sequence[int],
                output_dim: int) -> nn.Module:
    """Build ``config["model"]`` (default "mlp") with the remaining keys as its options;
    ``config["seed"]`` (optional) seeds the initialisation without touching the global RNG."""
    options = dict(config)
    name = options.pop("model", "mlp")
    seed = options.pop("seed", None)
    check_options(name, options)
    if output_dim < 1:
        raise ValueError(f"output_dim must be ≥ 1, got {output_dim}")
    with seeded(seed):
        return architecture(name).build(tuple(int(s) for s in input_shape), int(output_dim),
                                        **options)


__all__ = ["ACTIVATIONS", "ARCHITECTURES", "Architecture", "SMOOTH", "architecture",
           "build_model", "check_options", "lenet", "mlp", "resnet", "resnet18",
           "sequence_transformer", "vgg", "vit"]
