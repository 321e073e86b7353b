"""How close a network's piecewise-linear activations sit to their kinks on the data.

A piecewise-linear σ (ReLU, LeakyReLU, PReLU, ReLU6, Hardtanh) is not differentiable at its
kinks, so the loss is not twice differentiable at parameters where a training pre-activation
lies on one: a Hessian measured there describes one side only, and theorems that need ``L``
to be C² near the point (T10) do not apply. :func:`kink_distances` runs the network on the data
with hooks on those modules and returns, per module, ``min |z − κ| / max |z|`` over its
pre-activations z and kinks κ (the relative distance THEOREMS.md's T10 rule uses).

Only activation *modules* are seen; a ``torch.relu`` call inside ``forward`` is not.
Max pooling is piecewise linear too (a kink where two entries of a window tie); it is
reported in ``unchecked`` rather than measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def kinks_of(module: nn.Module) -> tuple[float, ...] | None:
    """The kinks of a piecewise-linear activation module; None for any other module."""
    if isinstance(module, nn.ReLU6):
        return (0.0, 6.0)
    if isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.PReLU)):
        return (0.0,)
    if isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))
    return None


UNCHECKED = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
             nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


@dataclass(frozen=True)
class KinkDistances:
    """``per_module``: name -> (min |z − κ|, max |z|) over the data; ``unchecked``: names of
    piecewise-linear modules whose kinks are not measured (max pooling)."""

    per_module: dict[str, tuple[float, float]] = field(default_factory=dict)
    unchecked: tuple[str, ...] = ()

    @property
    def relative(self) -> float:
        """min over modules of min |z − κ| / max |z| (inf without piecewise-linear modules;
        0 when a module's pre-activations are all 0)."""
        ratios = [(d / m if m > 0 else 0.0) for d, m in self.per_module.values()]
        return min(ratios, default=float("inf"))

    @property
    def closest(self) -> str | None:
        if not self.per_module:
            return None
        return min(self.per_module, key=lambda k: (self.per_module[k][0] / self.per_module[k][1]
                                                   if self.per_module[k][1] > 0 else 0.0))


def kink_distances(net: nn.Module, xs: list[torch.Tensor]) -> KinkDistances:
    """Relative distances of the pre-activations on batches ``xs`` to the kinks."""
    names = {m: n for n, m in net.named_modules()}
    found: dict[str, list[float]] = {}

    def hook(module, args):
        z = args[0].detach()
        kinks = kinks_of(module)
        dist = min(float((z - k).abs().min()) for k in kinks)
        biggest = float(z.abs().max())
        rec = found.setdefault(names[module], [float("inf"), 0.0])
        rec[0], rec[1] = min(rec[0], dist), max(rec[1], biggest)

    handles = [m.register_forward_pre_hook(hook) for m in net.modules()
               if kinks_of(m) is not None]
    try:
        with torch.no_grad():
            for x in xs:
                net(x)
    finally:
        for h in handles:
            h.remove()
    unchecked = tuple(n for m, n in names.items() if isinstance(m, UNCHECKED))
    return KinkDistances({k: (v[0], v[1]) for k, v in found.items()}, unchecked)
