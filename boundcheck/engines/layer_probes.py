"""Per-sample probes of a layer's Hessian block through its pre-activations.

For a module whose output is linear in its own parameters θ_l (``nn.Linear``, ``nn.Conv1d/2d/
3d``: ``s_i = layer(a_i; θ_l)``, applied once per forward pass), θ_l enters sample i's loss
only through ``s_i``, so

    H_ll = (1/n) Σ_i J_iᵀ M_i J_i,    J_i = ∂s_i/∂θ_l,  M_i = ∇²_{s_i} ℓ_i.

A Rademacher direction ``V_i`` of θ_l drawn *independently for every sample* gives
``J_i V_i = layer(a_i; V_i)`` (linearity) and the sample

    x_l = (1/n) Σ_i (J_i V_i)ᵀ M_i (J_i V_i),     E x_l = tr H_ll,

one quadratic form in the Rademacher vector ``(V_1, …, V_n)`` with the block-diagonal matrix
``blockdiag(J_iᵀ M_i J_i / n)``. Its variance ``2 Σ_i Σ_{p≠q} (J_iᵀ M_i J_i)_pq² / n²`` has no
cross-sample terms: a probe shared by all samples (plain Hutchinson on the block) also pays
``Σ_{i≠j} ‖J_iᵀ M_i J_i‖ ‖J_jᵀ M_j J_j‖``-sized terms, which dominate when the samples'
blocks are alike (n times more at most). ``M_i (J_i V_i)`` for all i at once is one
double-backward product with respect to a zero tensor added to the layer's output (the first
backward is built once and reused by every probe). Requires samples that do not interact in
the forward pass (checked on two samples: their outputs alone and in the batch agree).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.subject import Subject

LINEAR_IN_PARAMETERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def probed_modules(subject: Subject, skip: set[str] = frozenset()) -> list[tuple[str, nn.Module]]:
    """The modules whose blocks are probed per sample: linear in their parameters, every
    parameter measured, not shared, not in ``skip``."""
    measured = {id(p) for p in subject.params}
    owners: dict[int, int] = {}
    for _, m in subject.net.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    out = []
    for name, m in subject.net.named_modules():
        if name in skip or not isinstance(m, LINEAR_IN_PARAMETERS):
            continue
        params = list(m.parameters(recurse=False))
        if params and all(id(p) in measured and owners[id(p)] == 1 for p in params):
            out.append((name, m))
    return _called_once(subject, out)


def _called_once(subject: Subject, modules: list[tuple[str, nn.Module]]
                 ) -> list[tuple[str, nn.Module]]:
    """The modules whose forward runs exactly once per forward pass (checked on two samples):
    a layer whose weights another module reads directly (``nn.MultiheadAttention``'s
    ``out_proj``) or that runs twice cannot be probed through its output."""
    calls = {id(m): 0 for _, m in modules}

    def count(module, _args, _output):
        calls[id(module)] += 1

    handles = [m.register_forward_hook(count) for _, m in modules]
    try:
        with torch.no_grad():
            subject.net(subject.batches[0].x[:2])
    finally:
        for h in handles:
            h.remove()
    return [(name, m) for name, m in modules if calls[id(m)] == 1]


def samples_independent(subject: Subject) -> bool:
    """Two samples' outputs alone equal their outputs in the batch (to 1e-10 relative)."""
    x = subject.batches[0].x
    if x.shape[0] < 2:
        return True
    with torch.no_grad():
        together = subject.net(x[:2])
        alone = torch.cat([subject.net(x[:1]), subject.net(x[1:2])])
    scale = float(together.abs().max()) + 1e-300
    return float((together - alone).abs().max()) <= 1e-10 * scale


# SIGNS[b, j] = ±1 from bit j of byte b
SIGNS = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).to(torch.float64) * 2 - 1


def rademacher_bits(shape: tuple[int, ...], generator: torch.Generator,
                    dtype: torch.dtype) -> torch.Tensor:
    """Independent ±1 entries from the 8 bits of uniform random bytes (each bit of a uniform
    byte is a fair coin, independently), by table lookup: a third of the time of one
    ``randint`` per entry."""
    count = 1
    for d in shape:
        count *= d
    raw = torch.randint(0, 256, (-(-count // 8),), generator=generator, dtype=torch.uint8)
    return SIGNS.to(dtype)[raw.long()].reshape(-1)[:count].reshape(shape)


class LayerProbes:
    """Per-sample probes of the blocks of ``modules`` (module docstring)."""

    def __init__(self, subject: Subject, modules: list[tuple[str, nn.Module]]):
        self.subject = subject
        self.modules = modules
        self.dim = sum(p.numel() for _, m in modules for p in m.parameters(recurse=False))
        self._graphs = None

    def _build(self):
        s = self.subject
        graphs = []
        for b in s.batches:
            seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {
                id(m): [] for _, m in self.modules}

            def hook(module, args, output, seen=seen):
                z = torch.zeros_like(output, requires_grad=True)
                seen[id(module)].append((args[0].detach(), z))
                return output + z

            handles = [m.register_forward_hook(hook) for _, m in self.modules]
            try:
                loss = s.loss_fn.per_sample(s.net(b.x), b.y).sum() / s.n
            finally:
                for h in handles:
                    h.remove()
            if any(len(calls) != 1 for calls in seen.values()):
                raise ValueError("a probed module ran more or less than once per forward pass")
            # in self.modules' order, not the order the forward pass called them (a ViT
            # registers its patch embedding after the blocks it feeds)
            inputs = [seen[id(m)][0][0] for _, m in self.modules]
            zeros = [seen[id(m)][0][1] for _, m in self.modules]
            grads = torch.autograd.grad(loss, zeros, create_graph=True)
            graphs.append((inputs, zeros, grads))
        return graphs

    def sample(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """m samples of ``Σ_l x_l`` and their rounding allowances, (m,) each."""
        if self._graphs is None:
            self._graphs = self._build()
        u = UNIT_ROUNDOFF["float64"] if self.subject.dtype == torch.float64 else \
            UNIT_ROUNDOFF["float32"]
        xs = torch.zeros(m, dtype=torch.float64)
        scales = torch.zeros(m, dtype=torch.float64)
        for r in range(m):
            for inputs, zeros, grads in self._graphs:
                for (_, module), a, z, g in zip(self.modules, inputs, zeros, grads, strict=True):
                    ds = self._direction(module, a, generator)
                    hs = torch.autograd.grad(g, z, grad_outputs=ds, retain_graph=True)[0]
                    terms = ds * hs
                    xs[r] += float(terms.sum())
                    scales[r] += float(8.0 * u * self.dim * terms.abs().sum())
        return xs, scales

    @staticmethod
    def _direction(module: nn.Module, a: torch.Tensor, generator: torch.Generator):
        """``layer(a_i; V_i)`` for independent Rademacher ``V_i`` per sample."""
        n = a.shape[0]
        names = [k for k, _ in module.named_parameters(recurse=False)]
        probes = {}
        for k, p in module.named_parameters(recurse=False):
            probes[k] = rademacher_bits((n, *p.shape), generator, p.dtype).to(p.device)

        def one(params, x):
            return functional_call(module, params, (x.unsqueeze(0),)).squeeze(0)

        return vmap(one)({k: probes[k] for k in names}, a)
