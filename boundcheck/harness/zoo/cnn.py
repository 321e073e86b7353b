"""Convolutional networks for (C, H, W) images: LeNet-style and small VGG-style.

LeNet (LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE
1998): one convolution per stage, each followed by 2×2 subsampling (average pooling), then
fully connected layers. VGG (Simonyan & Zisserman, "Very deep convolutional networks for
large-scale image recognition", ICLR 2015): stages of several 3×3 convolutions, each stage
ending in 2×2 max pooling. Both are plain ``nn.Sequential``s ending in ``Linear(…, K)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from boundcheck.harness.zoo.mlp import activation_layer

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def conv_net(input_shape: Sequence[int], output_dim: int, stages: Sequence[Sequence[int]],
             kernel_size: int, stride: int, padding: int, pool: str, hidden: Sequence[int],
             activation: str, bias: bool) -> nn.Sequential:
    """Stages of convolutions (``stages[s]`` lists their channel counts), each stage ending in
    2×2 pooling (``pool`` = "max", "avg" or "none"); the first convolution of a stage uses
    ``stride``. Then flatten, fully connected ``hidden`` layers and ``Linear(…, output_dim)``."""
    channels = image_channels(input_shape)
    if pool not in (*POOLS, "none"):
        raise ValueError(f"unknown pool {pool!r}; choose from max, avg, none")
    if not stages or any(not stage for stage in stages):
        raise ValueError(f"a CNN needs at least one stage of convolutions, got {stages}")
    layers: list[nn.Module] = []
    for stage in stages:
        for i, width in enumerate(stage):
            layers += [nn.Conv2d(channels, int(width), kernel_size, stride=stride if i == 0 else 1,
                                 padding=padding, bias=bias), activation_layer(activation)]
            channels = int(width)
        if pool != "none":
            layers.append(POOLS[pool](2))
    layers.append(nn.Flatten())
    features = _flat_size(nn.Sequential(*layers), input_shape)
    for width in hidden:
        layers += [nn.Linear(features, int(width), bias=bias), activation_layer(activation)]
        features = int(width)
    layers.append(nn.Linear(features, output_dim, bias=bias))
    return nn.Sequential(*layers)


def lenet(input_shape: Sequence[int], output_dim: int, channels: Sequence[int] = (6, 16),
          kernel_size: int = 5, stride: int = 1, padding: int = 2, pool: str = "avg",
          hidden: Sequence[int] = (120, 84), activation: str = "tanh",
          bias: bool = True) -> nn.Sequential:
    """LeNet-style: ``conv → act → pool`` per entry of ``channels``, then an MLP head."""
    return conv_net(input_shape, output_dim, [[c] for c in channels], kernel_size, stride,
                    padding, pool, hidden, activation, bias)


def vgg(input_shape: Sequence[int], output_dim: int,
        stages: Sequence[Sequence[int]] = ((16, 16), (32, 32)), kernel_size: int = 3,
        stride: int = 1, padding: int = 1, pool: str = "max", hidden: Sequence[int] = (64,),
        activation: str = "relu", bias: bool = True) -> nn.Sequential:
    """Small VGG-style: stages of 3×3 convolutions, 2×2 max pooling after each stage."""
    return conv_net(input_shape, output_dim, stages, kernel_size, stride, padding, pool,
                    hidden, activation, bias)


def image_channels(input_shape: Sequence[int]) -> int:
    """C of a (C, H, W) input shape; a clear error for anything else."""
    if len(input_shape) != 3:
        raise ValueError(f"this architecture needs image inputs of shape (C, H, W), got "
                         f"{tuple(input_shape)}; use an image data set (digits, mnist, "
                         "fashion_mnist, cifar10)")
    return int(input_shape[0])


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, *input_shape)).shape[1])
    except RuntimeError as err:
        raise ValueError(f"the input {tuple(input_shape)} is too small for these convolutions, "
                         f"strides and poolings: {err}") from err
