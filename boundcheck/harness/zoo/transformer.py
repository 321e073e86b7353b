"""Small transformers with layer norm: ViT-style on images, and a sequence classifier on tokens.

Blocks are pre-norm (Xiong et al., "On layer normalization in the transformer architecture",
ICML 2020): ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``. Attention is written out
(``softmax(QKᵀ/√d_h) V``, Vaswani et al., NeurIPS 2017) rather than taken from
``nn.MultiheadAttention``, so it runs in float64 and is twice differentiable on every path.
The vision model embeds non-overlapping patches with a strided convolution (Dosovitskiy et
al., "An image is worth 16x16 words", ICLR 2021); both models pool tokens ("mean", or "cls"
for the vision model's class token) and end in ``LayerNorm → Linear(d, K)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from boundcheck.harness.zoo.cnn import image_channels
from boundcheck.harness.zoo.mlp import activation_layer


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, activation: str, bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim, bias=bias),
                                 activation_layer(activation),
                                 nn.Linear(mlp_ratio * dim, dim, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Encoder(nn.Module):
    """Position embeddings, blocks, pooling and the head shared by both models."""

    def __init__(self, tokens: int, dim: int, depth: int, heads: int, mlp_ratio: int,
                 activation: str, pool: str, output_dim: int, bias: bool):
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"unknown pool {pool!r}; choose from mean, cls")
        if depth < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        self.pool = pool
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim)) if pool == "cls" else None
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens + (pool == "cls"), dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, activation, bias)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, output_dim, bias=bias)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        h = self.norm(self.blocks(tokens + self.position))
        return self.head(h[:, 0] if self.cls is not None else h.mean(dim=1))


class VisionTransformer(_Encoder):
    def __init__(self, input_shape: Sequence[int], output_dim: int, patch_size: int, dim: int,
                 depth: int, heads: int, mlp_ratio: int, activation: str, pool: str,
                 bias: bool):
        channels = image_channels(input_shape)
        height, width = int(input_shape[1]), int(input_shape[2])
        if patch_size < 1 or height % patch_size or width % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide the image size "
                             f"{height}×{width}")
        super().__init__((height // patch_size) * (width // patch_size), dim, depth, heads,
                         mlp_ratio, activation, pool, output_dim, bias)
        self.patches = nn.Conv2d(channels, dim, patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(self.patches(x).flatten(2).transpose(1, 2))


class SequenceTransformer(_Encoder):
    """Classifies token sequences: ids of shape (n, T) (integer-valued, any dtype) or one-hot /
    soft tokens of shape (n, T, V); both are embedded by the same (V, d) table."""

    def __init__(self, length: int, vocab_size: int, output_dim: int, dim: int, depth: int,
                 heads: int, mlp_ratio: int, activation: str, pool: str, bias: bool):
        super().__init__(length, dim, depth, heads, mlp_ratio, activation, pool, output_dim,
                         bias)
        self.vocab_size = vocab_size
        self.embed = nn.Parameter(torch.randn(vocab_size, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return self.encode(x.to(self.embed.dtype) @ self.embed)
        ids = x.long()
        if x.is_floating_point() and not torch.equal(ids.to(x.dtype), x):
            raise ValueError("token ids must be integers")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return self.encode(self.embed[ids])


def vit(input_shape: Sequence[int], output_dim: int, patch_size: int = 4, dim: int = 32,
        depth: int = 2, heads: int = 2, mlp_ratio: int = 2, activation: str = "gelu",
        pool: str = "mean", bias: bool = True) -> VisionTransformer:
    """ViT-style classifier: patch embedding, ``depth`` pre-norm blocks, pooled head."""
    return VisionTransformer(input_shape, output_dim, patch_size, dim, depth, heads, mlp_ratio,
                             activation, pool, bias)


def sequence_transformer(input_shape: Sequence[int], output_dim: int,
                         vocab_size: int | None = None, dim: int = 32, depth: int = 2,
                         heads: int = 2, mlp_ratio: int = 2, activation: str = "gelu",
                         pool: str = "mean", bias: bool = True) -> SequenceTransformer:
    """Sequence classifier on tokens. ``input_shape`` is (T, V) for one-hot inputs (the
    vocabulary is read from it) or (T,) for ids (then ``vocab_size`` is required)."""
    if len(input_shape) == 2:
        if vocab_size is not None and vocab_size != input_shape[1]:
            raise ValueError(f"vocab_size={vocab_size} but one-hot inputs have "
                             f"{input_shape[1]} token types")
        vocab_size = int(input_shape[1])
    elif len(input_shape) != 1:
        raise ValueError(f"the sequence transformer needs token inputs of shape (T,) or (T, V), "
                         f"got {tuple(input_shape)}; use the 'tokens' data set")
    elif vocab_size is None:
        raise ValueError("token-id inputs of shape (T,) need the option vocab_size")
    return SequenceTransformer(int(input_shape[0]), int(vocab_size), output_dim, dim, depth,
                               heads, mlp_ratio, activation, pool, bias)
