"""A small residual network for (C, H, W) images.

He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016: basic blocks
``act(F(x) + S(x))`` with ``F = conv3×3 → norm → act → conv3×3 → norm`` and ``S`` the identity,
or a 1×1 projection where the shape changes. A stem convolution, one stage per entry of
``widths`` (stages after the first halve the resolution), global average pooling, Linear.

``norm``: "none" (default: the network is a fixed function of its parameters, train and eval
modes agree), "batch" (BatchNorm; measured in eval mode with running statistics) or "layer"
(GroupNorm with one group: normalises each sample over C, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from boundcheck.harness.zoo.cnn import image_channels
from boundcheck.harness.zoo.mlp import activation_layer

NORMS = ("none", "batch", "layer")


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose from {NORMS}")


class BasicBlock(nn.Module):
    """``act(F(x) + S(x))``: two 3×3 convolutions plus a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str,
                 norm: str, bias: bool):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias),
            norm_layer(norm, out_channels), activation_layer(activation),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            norm_layer(norm, out_channels))
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                norm_layer(norm, out_channels))
        else:
            self.shortcut = nn.Identity()
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.residual(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, output_dim: int, widths: Sequence[int],
                 blocks_per_stage: int, activation: str, norm: str, bias: bool):
        super().__init__()
        if not widths or blocks_per_stage < 1:
            raise ValueError(f"a ResNet needs ≥ 1 stage and ≥ 1 block per stage, got widths="
                             f"{list(widths)}, blocks_per_stage={blocks_per_stage}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, int(widths[0]), 3, padding=1, bias=bias),
            norm_layer(norm, int(widths[0])), activation_layer(activation))
        blocks: list[nn.Module] = []
        channels = int(widths[0])
        for s, width in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(channels, int(width), stride, activation, norm, bias))
                channels = int(width)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, output_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


def resnet(input_shape: Sequence[int], output_dim: int, widths: Sequence[int] = (8, 16),
           blocks_per_stage: int = 1, activation: str = "relu", norm: str = "none",
           bias: bool = True) -> ResNet:
    """A small ResNet: stem, ``len(widths)`` stages of ``blocks_per_stage`` basic blocks."""
    return ResNet(image_channels(input_shape), output_dim, widths, blocks_per_stage,
                  activation, norm, bias)
