"""ResNet-18 for CIFAR-sized images, the variant of He et al.'s CIFAR experiments.

He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016, Table 1
(18 layers: four stages of two basic blocks, widths 64, 128, 256, 512), with the stem used for
32×32 inputs in common CIFAR practice: one 3×3 convolution (stride 1) and no max pooling,
instead of ImageNet's 7×7 stride-2 convolution and 3×3 max pooling. Convolutions carry no bias
(batch norm follows each one); a projection shortcut (1×1 convolution + norm) where a block
changes the resolution or width; global average pooling; ``Linear(8·width, K)`` with bias.
At ``width = 64`` and K = 10 that is 11,173,962 parameters (torchvision's ``resnet18`` with
the CIFAR stem); ``width = 4`` gives the same network with ~44k parameters, for tests.

Batch norm is measured as every model with batch norm is (:class:`boundcheck.Subject`): in
eval mode, an affine map per channel with the running statistics, so the measured loss is a
fixed function of θ (a train-mode model needs ``Subject(..., eval_mode=True)``, recorded in
the results' notes). Its weight and bias are parameters of H like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from boundcheck.harness.zoo.cnn import image_channels
from boundcheck.harness.zoo.mlp import activation_layer
from boundcheck.harness.zoo.resnet import NORMS, BasicBlock, norm_layer

BLOCKS_PER_STAGE = (2, 2, 2, 2)  # 18 weight layers: the stem, 16 block convolutions, the head


class ResNet18(nn.Module):
    """Stem (3×3 conv → norm → act), four stages of two :class:`BasicBlock`s at widths
    ``width·(1, 2, 4, 8)`` (stages 2–4 start with stride 2), global average pooling, Linear."""

    def __init__(self, in_channels: int, output_dim: int, width: int, activation: str,
                 norm: str):
        super().__init__()
        if not (isinstance(width, int) and width >= 1):
            raise ValueError(f"resnet18 width must be an integer ≥ 1, got {width!r}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            norm_layer(norm, width), activation_layer(activation))
        blocks: list[nn.Module] = []
        channels = width
        for stage, count in enumerate(BLOCKS_PER_STAGE):
            out = width * 2**stage
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(channels, out, stride, activation, norm, bias=False))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


def resnet18(input_shape: Sequence[int], output_dim: int, width: int = 64,
             activation: str = "relu", norm: str = "batch") -> ResNet18:
    """ResNet-18 (CIFAR stem) with base width ``width`` (64: the standard 11.2M parameters);
    ``norm`` "batch" (standard), "layer" (GroupNorm, one group) or "none"."""
    return ResNet18(image_channels(input_shape), output_dim, width, activation, norm)
