"""Which parameter tensors the loss Hessian's residual part R misses, read from the autograd graph.

With ``H = G + R``, ``R = (1/n) Σ_i Σ_k (∂ℓ_i/∂z_ik) ∇²_θ z_ik`` (THEOREMS.md conventions), the
diagonal block of R for one parameter tensor p is ``R_pp = (1/n) Σ_i Σ_k (∂ℓ_i/∂z_ik)
∇²_p z_ik``. If the network output z is *piecewise linear in p* (every other parameter held
fixed), autograd's second derivative ``∇²_p z`` is zero (it differentiates each linear piece;
ReLU's, max pooling's and |·|'s derivatives are masks it treats as constants), so ``R_pp = 0``
and ``H_pp = G_pp``. When that holds for every measured tensor, ``tr R = 0`` and
``tr H = tr G`` exactly (THEOREMS.md T4: "for piecewise-linear networks tr R = 0 at every θ
for any loss"): ReLU MLPs, CNNs and ResNets with batch norm in eval mode.

The proof is structural, by induction over the autograd graph of the forward pass from the
parameters to z. A node's output is piecewise linear in p when its inputs are and the node is

* linear in its inputs jointly (views, indexing, sums, means, average pooling, padding, …);
* piecewise linear in them (ReLU, leaky ReLU, hardtanh, clamp, |·|, max, max pooling);
* a product (``Mul``, matrix products, convolution, eval-mode batch norm, PReLU, …) in which at
  most one factor depends on p (a product of a piecewise-linear function of p and a constant
  is piecewise linear), or a division whose denominator does not depend on p.

Every other operation (tanh, softmax, layer norm, GELU, batch norm on batch statistics, custom
autograd functions, any node not listed here) *spoils* the tensors it depends on: their
blocks keep their residual part and are estimated. The list is a whitelist, so an unknown
operation can only make boundcheck measure more, never claim ``R_pp = 0`` wrongly.

The graph is read on forward passes over every batch (in chunks of :data:`CHUNK` samples), so a
network whose operations depend on its input is checked on the data it is measured on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

CHUNK = 16  # samples per forward pass whose graph is read (bounds the memory it holds)

LINEAR = frozenset({
    "Add", "Sub", "Rsub", "Neg", "View", "UnsafeView", "Reshape", "ReshapeAlias", "Expand",
    "Permute", "T", "Transpose", "Squeeze", "Unsqueeze", "Clone", "Contiguous", "Cat", "Stack",
    "Split", "SplitWithSizes", "Unbind", "Select", "Slice", "Narrow", "Index", "IndexSelect",
    "Gather", "Diagonal", "Mean", "Sum", "AvgPool1D", "AvgPool2D", "AvgPool3D",
    "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "AdaptiveAvgPool3D", "ToCopy", "Alias",
    "AsStrided", "ConstantPadNd", "Repeat", "Roll", "Flip", "Im2Col", "Col2Im",
    "UpsampleNearest1D", "UpsampleNearest2D", "UpsampleNearest3D", "UpsampleLinear1D",
    "UpsampleBilinear2D", "UpsampleTrilinear3D", "Embedding", "Where", "MaskedFill",
})
PIECEWISE_LINEAR = frozenset({
    "Relu", "LeakyRelu", "Hardtanh", "Threshold", "Clamp", "ClampMin", "ClampMax", "Abs",
    "Max", "Min", "Amax", "Amin", "Maximum", "Minimum", "MaxPool1D", "MaxPool2DWithIndices",
    "MaxPool3DWithIndices", "AdaptiveMaxPool1D", "AdaptiveMaxPool2D", "AdaptiveMaxPool3D",
})
# products: the input slots that are factors (the others enter additively)
FACTORS = {
    "Mul": (0, 1), "Mm": (0, 1), "Bmm": (0, 1), "Mv": (0, 1), "Dot": (0, 1),
    "Addmm": (1, 2), "Addmv": (1, 2), "Baddbmm": (1, 2), "Addbmm": (1, 2), "Addcmul": (1, 2),
    "Convolution": (0, 1), "Linear": (0, 1), "PreluKernel": (0, 1),
    "NativeBatchNorm": (0, 1), "CudnnBatchNorm": (0, 1), "MiopenBatchNorm": (0, 1),
    "NativeBatchNormLegitNoTraining": (0, 1),  # running statistics by construction
}
BATCH_NORMS = frozenset({"NativeBatchNorm", "CudnnBatchNorm", "MiopenBatchNorm"})


def _op(node) -> str:
    return re.sub(r"Backward\d*$", "", type(node).__name__)


@dataclass(frozen=True)
class ResidualFree:
    """The measured tensors whose Hessian block has no residual part (``free``) and, for the
    others, why (``spoiled``: name -> the operation that spoils it), in ``subject.params``
    order."""

    free: tuple[str, ...]
    spoiled: dict[str, str] = field(default_factory=dict)

    @property
    def all_free(self) -> bool:
        return not self.spoiled

    def reason(self) -> str:
        """One line: why ``tr R = 0``, or the first tensors it fails for."""
        if self.all_free:
            return (f"the output is piecewise linear in each of the {len(self.free)} parameter "
                    "tensors (autograd graph), so every diagonal block of R is 0: tr R = 0")
        shown = "; ".join(f"{k}: {v}" for k, v in list(self.spoiled.items())[:3])
        more = len(self.spoiled) - 3
        return (f"{len(self.spoiled)} parameter tensor(s) keep a residual block ({shown}"
                f"{f'; and {more} more' if more > 0 else ''})")


def residual_free(net: torch.nn.Module, params: list[torch.Tensor], names: list[str],
                  inputs: list[torch.Tensor]) -> ResidualFree:
    """Classify ``params`` (named ``names``) by the graphs of ``net`` on each of ``inputs``
    (module docstring)."""
    index = {id(p): k for k, p in enumerate(params)}
    spoiled: dict[int, str] = {}
    for chunk in (x[i:i + CHUNK] for x in inputs for i in range(0, x.shape[0], CHUNK)):
        if len(spoiled) == len(params):  # nothing left to prove free
            break
        with torch.enable_grad():
            z = net(chunk)
        if z.grad_fn is not None:
            _visit(z.grad_fn, index, spoiled)
        del z
    return ResidualFree(tuple(n for k, n in enumerate(names) if k not in spoiled),
                        {names[k]: spoiled[k] for k in sorted(spoiled)})


def _visit(root, index: dict[int, int], spoiled: dict[int, str]) -> None:
    """Post-order walk from ``root``: each node's set of measured tensors it depends on, and
    the tensors its operation spoils (recorded once, with the first reason)."""
    deps: dict = {}
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in deps:
            continue
        if not expanded:
            stack.append((node, True))
            stack.extend((child, False) for child, _ in node.next_functions
                         if child is not None and child not in deps)
            continue
        edges = [deps.get(child, frozenset()) if child is not None else frozenset()
                 for child, _ in node.next_functions]
        var = getattr(node, "variable", None)
        own = frozenset({index[id(var)]}) if var is not None and id(var) in index else frozenset()
        deps[node] = own.union(*edges)
        for k, why in _spoils(node, edges).items():
            spoiled.setdefault(k, why)


def _spoils(node, edges: list[frozenset]) -> dict[int, str]:
    """The tensors (indices) this node spoils, with why."""
    op, name = _op(node), type(node).__name__
    if op == "AccumulateGrad" or op in LINEAR or op in PIECEWISE_LINEAR:
        return {}
    if op in BATCH_NORMS and getattr(node, "_saved_training", True):
        return dict.fromkeys(frozenset().union(*edges),
                             f"{name} on batch statistics (training mode)")
    if op in FACTORS:
        counts: dict[int, int] = {}
        for slot in FACTORS[op]:
            for k in edges[slot] if slot < len(edges) else ():
                counts[k] = counts.get(k, 0) + 1
        return {k: f"{name} multiplies two factors that depend on it"
                for k, c in counts.items() if c > 1}
    if op == "Div":  # linear in the numerator only
        return dict.fromkeys(edges[1] if len(edges) > 1 else (),
                             f"{name} divides by a function of it")
    return dict.fromkeys(frozenset().union(*edges),
                         f"{name} is neither linear nor piecewise linear")
