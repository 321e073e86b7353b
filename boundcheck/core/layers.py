"""The affine layers of any ``nn.Module``, found with hooks, and which of them are *dense*.

THEOREMS.md (conventions, T3): a **dense** layer is an affine map ``z = W h + b`` applied once
per sample, with ``h = h_{l−1}(x)`` entering f only through it and W used nowhere else. T3–T8
rest on ``∇_W f_k = (∂f_k/∂z) hᵀ``, which only dense layers satisfy.

Discovery runs the model once on a probe batch (two samples, inputs requiring grad) with
forward hooks on every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` and numbers the layers l = 1, 2, …
in the order of their first call. Only affine maps executed as calls of those modules are
seen (``nn.MultiheadAttention`` applies its projection weights functionally: not listed).
A layer is **weight-shared** (not dense) when any of these hold:

* it is a convolution (one kernel at every position; patch embeddings included);
* it is a Linear whose input is not ``(batch, in_features)``: applied to every token;
* it is called more than once per forward pass;
* its weight reaches the output other than through this call (tied or reused weights).

A layer that is not weight-shared is dense unless its input reaches the output other than
through it (a skip connection around it): ``input_elsewhere``. Both graph conditions are read
off the autograd graph of the probe pass: a depth-first walk from the output's ``grad_fn``
that does not enter the layer's output node(s) must not reach the layer's input node, nor any
node the input is a view or copy of (``view``, ``reshape``, ``flatten``, ``permute``, ``clone``…),
nor the weight's ``AccumulateGrad`` node. The rule is conservative: a node with several
outputs (``chunk``, ``split``) counts as reused when any of its outputs is.

The network-level condition of T3 (``f(x) = g(W_1 x + b)``) is
:attr:`Structure.input_only_through_first_layer`: the first layer's input is the raw input x up
to views, x reaches the output only through it, and the first layer is dense.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

AFFINE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Autograd nodes of ops that only re-index or copy their single input (same values).
_VIEW_NODES = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "TBackward0",
    "PermuteBackward0", "TransposeBackward0", "SqueezeBackward0", "SqueezeBackward1",
    "SqueezeBackward2", "SqueezeBackward3", "UnsqueezeBackward0", "CloneBackward0",
    "ToCopyBackward0", "AliasBackward0", "ContiguousBackward0",
})


@dataclass(frozen=True)
class AffineLayer:
    """One affine layer ``z = W h + b`` of the network, as the probe pass saw it."""

    index: int  # l, 1-based, in order of first call
    name: str  # qualified module name in the model
    kind: str  # "linear" or "conv"
    module: nn.Module  # the module in the measured (float64) copy
    weight_name: str  # name of W_l among the subject's parameters
    input_shape: tuple[int, ...] | None  # per-sample shape of h_{l−1}; None if not batch-major
    calls: int  # calls per forward pass
    shared: bool  # weight-shared (see module docstring)
    input_elsewhere: bool  # h_{l−1} reaches f other than through this layer
    reason: str  # why the layer is not dense ("" when it is)

    @property
    def dense(self) -> bool:
        """True when THEOREMS.md's dense-layer condition holds (T3–T8 apply)."""
        return not self.reason

    @property
    def input_dim(self) -> int | None:
        """``dim h_{l−1}`` per sample."""
        if self.input_shape is None:
            return None
        return int(torch.Size(self.input_shape).numel())


@dataclass(frozen=True)
class Structure:
    """All affine layers of a network and the input condition of T3."""

    layers: tuple[AffineLayer, ...]
    input_only_through_first_layer: bool
    input_reason: str  # why not ("" when it does)

    @property
    def dense_layers(self) -> tuple[AffineLayer, ...]:
        return tuple(layer for layer in self.layers if layer.dense)


def discover(model: nn.Module, x: torch.Tensor) -> Structure:
    """Find the affine layers of ``model`` by running it on the probe batch ``x``."""
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    x = x[:2].detach().clone().requires_grad_(True)
    batch = x.shape[0]
    names = {m: n for n, m in model.named_modules()}
    params = {id(p): n for n, p in model.named_parameters()}
    records: dict[nn.Module, dict] = {}
    order: list[nn.Module] = []

    def pre_hook(module, args):
        rec = records.setdefault(module, {"inputs": [], "outputs": []})
        if not rec["inputs"]:
            order.append(module)
        rec["inputs"].append(args[0] if args else None)

    def post_hook(module, args, output):
        records[module]["outputs"].append(output)

    handles = []
    for m in model.modules():
        if isinstance(m, AFFINE_TYPES):
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(post_hook))
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        raise ValueError("the model output does not depend on its input or parameters "
                         "through autograd; cannot analyse its layers")
    leaves = _accumulate_nodes(out.grad_fn)
    layers = tuple(_classify(index, module, names.get(module, "?"), records[module], batch,
                             params, leaves, out.grad_fn)
                   for index, module in enumerate(order, start=1))
    first_chain = _source_chain(records[order[0]]["inputs"][0], leaves) if order else []
    return _structure(layers, leaves.get(id(x)), first_chain)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def structure(subject) -> Structure:
    """:func:`discover` on a subject's measured network and data, cached per network."""
    net = subject.net
    if net not in _CACHE:
        _CACHE[net] = discover(net, subject.batches[0].x[:2])
    return _CACHE[net]


# -- internals ----------------------------------------------------------------------------
def _classify(index: int, module: nn.Module, name: str, rec: dict, batch: int,
              params: dict[int, str], leaves: dict[int, object], root) -> AffineLayer:
    kind = "linear" if isinstance(module, nn.Linear) else "conv"
    calls = len(rec["inputs"])
    h = rec["inputs"][0]
    batch_major = isinstance(h, torch.Tensor) and h.dim() >= 2 and h.shape[0] == batch
    input_shape = tuple(h.shape[1:]) if batch_major else None
    weight_name = params.get(id(module.weight), "")
    out_nodes = {o.grad_fn for o in rec["outputs"] if isinstance(o, torch.Tensor)}
    reached = _reachable(root, blocked=out_nodes)

    shared_reasons = []
    if kind == "conv":
        shared_reasons.append("a convolution (one kernel applied at every position)")
    elif not (batch_major and h.dim() == 2):
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else None
        shared_reasons.append(f"a linear map applied to every token/position (input shape "
                              f"{shape}, not (batch, {module.in_features}))")
    if calls > 1:
        shared_reasons.append(f"called {calls} times per forward pass")
    weight_node = leaves.get(id(module.weight))
    if not weight_name:
        shared_reasons.append("its weight is not a parameter of the model (parametrized?)")
    elif weight_node is not None and weight_node in reached:
        shared_reasons.append("its weight is also used outside this layer (tied weights)")

    chain = _source_chain(h, leaves)
    input_elsewhere = bool(chain) and any(node in reached for node in chain)
    if not chain:
        reason_in = "its input does not depend on the sample or the parameters"
    elif input_elsewhere:
        reason_in = ("its input h_{l-1} also reaches the output other than through this layer "
                     "(skip connection)")
    else:
        reason_in = ""
    reasons = ([f"weight-shared: {'; '.join(shared_reasons)}"] if shared_reasons else [])
    reasons += [reason_in] if reason_in else []
    return AffineLayer(index, name, kind, module, weight_name, input_shape, calls,
                       bool(shared_reasons), input_elsewhere, "; ".join(reasons))


def _structure(layers: tuple[AffineLayer, ...], x_node, first_chain: list) -> Structure:
    if not layers:
        return Structure(layers, False, "the network has no nn.Linear/nn.Conv layer")
    first = layers[0]
    if x_node is None:
        return Structure(layers, False, "the output does not depend on the input")
    if x_node not in first_chain:
        return Structure(layers, False, "the first layer's input is not the raw input x (the "
                                        "model transforms x before its first affine layer)")
    if first.input_elsewhere:
        return Structure(layers, False, "the input x reaches the output other than through the "
                                        "first layer (input skip connection)")
    if not first.dense:
        return Structure(layers, False, f"the first layer is not dense: {first.reason}")
    return Structure(layers, True, "")


def _accumulate_nodes(root) -> dict[int, object]:
    """``id(leaf tensor) -> its AccumulateGrad node`` for every leaf in the graph."""
    out = {}
    for node in _reachable(root, blocked=set()):
        variable = getattr(node, "variable", None)
        if variable is not None:
            out[id(variable)] = node
    return out


def _reachable(root, blocked: set) -> set:
    seen: set = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in blocked:
            continue
        seen.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return seen


def _source_chain(h, leaves: dict[int, object]) -> list:
    """The node producing ``h`` and every node ``h`` is a view or copy of."""
    if not isinstance(h, torch.Tensor) or not h.requires_grad:
        return []
    node = h.grad_fn if h.grad_fn is not None else leaves.get(id(h))
    chain = []
    while node is not None:
        chain.append(node)
        if type(node).__name__ not in _VIEW_NODES:
            break
        parents = [n for n, _ in node.next_functions if n is not None]
        node = parents[0] if len(parents) == 1 else None
    return chain
