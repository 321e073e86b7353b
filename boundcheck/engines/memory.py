"""How much memory a curvature product costs per sample, and micro-batch sizes from a budget.

A Hessian-vector product by autograd (:class:`.curvature.HessianOperator`) holds, for the
samples it covers, the graph of a forward pass and of a gradient built with
``create_graph=True``; the product itself is one more backward pass through that graph. The
memory is a fixed part (parameter-sized tensors) plus a part proportional to the number of
samples. :func:`product_cost` measures both on probes of one and two samples (the difference
is the per-sample part, the rest the fixed part):

* on CPU, the bytes of the tensors autograd saves for backward (counted once per storage,
  through :func:`torch.autograd.graph.saved_tensors_hooks`) while the forward pass and the
  gradient are built (on a CNN this predicts the whole data's graph to 1e-4, see
  ``benchmarks/bench_streaming.py``); the product's own backward needs temporaries on top,
  taken as :data:`CPU_PEAK_FACTOR` ``× graph`` in all (the growth of the peak resident memory
  through two products measured 2.1–2.5× the graph on that CNN; 2.75 leaves a margin);
* on CUDA, ``torch.cuda.memory_allocated`` after the graph is built (the graph) and
  ``torch.cuda.max_memory_allocated`` through one product (the peak), around the same probe.

:func:`plan_products` then keeps the graphs of every batch (each product one backward pass)
when they fit ``memory_bytes`` with room for one product, and otherwise streams
micro-batches of ``m = ⌊(memory_bytes − fixed)/peak⌋`` samples, rebuilding each micro-batch's
graph in every product. When not even one sample fits it raises :class:`MemoryBudgetError`
before anything large is allocated, never an out-of-memory crash halfway.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

PROBE_SAMPLES = (1, 2)  # the per-sample cost is the difference between these two probes
CPU_PEAK_FACTOR = 2.75  # peak of a product / its saved graph, on CPU (module docstring)


class MemoryBudgetError(MemoryError):
    """Not even one sample fits the memory budget (``Budget.memory_bytes``); the message says
    how many bytes one sample needs and what the budget is."""


@dataclass(frozen=True)
class SampleCost:
    """Bytes of a product over m samples: graph ``fixed + m·graph``, peak ``fixed + m·peak``."""

    graph: float  # per sample, held while a gradient graph is kept
    peak: float  # per sample, at the peak of one product (graph + backward temporaries)
    fixed: float  # independent of the number of samples
    method: str  # how it was measured


def saved_tensor_bytes(run: Callable[[], object], exclude: list[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for backward while ``run()`` executes, each
    storage counted once, the storages of ``exclude`` (the parameters, which exist anyway)
    not at all."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        kept = run()
    del kept
    return sum(storages.values())


def product_cost(gradient: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
                 params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> SampleCost:
    """:class:`SampleCost` of ``gradient(x, y)`` (a gradient built with ``create_graph``)
    followed by one backward pass through it, measured on the first one and two samples."""
    sizes = [m for m in PROBE_SAMPLES if m <= x.shape[0]]
    cuda = x.device.type == "cuda"
    graphs, peaks = [], []
    for m in sizes:
        xm, ym = x[:m].clone(), y[:m].clone()  # a slice would count the whole batch's storage
        try:
            if cuda:
                g, p = _cuda_probe(gradient, params, xm, ym)
            else:
                g = saved_tensor_bytes(lambda xm=xm, ym=ym: gradient(xm, ym), params)
                p = CPU_PEAK_FACTOR * g
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError is one
            if not _out_of_memory(err):
                raise
            raise MemoryBudgetError(f"a Hessian-vector product over {m} sample"
                                    f"{'s' if m > 1 else ''} does not fit the "
                                    f"{x.device.type} memory: {err}") from err
        graphs.append(g)
        peaks.append(p)
    if len(sizes) == 1:
        per_graph, per_peak, fixed = graphs[0], peaks[0], 0.0
    else:
        per_graph = max(graphs[1] - graphs[0], 1)
        per_peak = max(peaks[1] - peaks[0], per_graph)
        fixed = max(0.0, peaks[0] - per_peak)
    method = ("torch.cuda.max_memory_allocated" if cuda
              else f"bytes saved by autograd (saved_tensors_hooks), peak = "
                   f"{CPU_PEAK_FACTOR} × graph")
    return SampleCost(float(per_graph), float(per_peak), float(fixed), method)


def _out_of_memory(err: RuntimeError) -> bool:
    text = str(err).lower()
    return (isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text
            or "can't allocate memory" in text or "not enough memory" in text)


def forward_cost(net: torch.nn.Module, params: list[torch.Tensor], x: torch.Tensor) -> float:
    """Bytes per sample of the activations a forward pass saves (probes of one and two
    samples, as :func:`product_cost`; on CUDA the allocator's peak through the pass)."""
    per = []
    for m in PROBE_SAMPLES[:min(len(PROBE_SAMPLES), x.shape[0])]:
        xm = x[:m].clone()
        with torch.enable_grad():
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
                before = torch.cuda.memory_allocated(x.device)
                torch.cuda.reset_peak_memory_stats(x.device)
                out = net(xm)
                torch.cuda.synchronize(x.device)
                per.append(torch.cuda.max_memory_allocated(x.device) - before)
                del out
            else:
                per.append(saved_tensor_bytes(lambda xm=xm: net(xm), params))
    return float(max(per[-1] - per[0], 1) if len(per) == 2 else max(per[0], 1))


def _cuda_probe(gradient, params, x, y) -> tuple[int, int]:
    device = x.device
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    g = gradient(x, y)
    torch.cuda.synchronize(device)
    graph = torch.cuda.memory_allocated(device) - before
    torch.autograd.grad(g, params, grad_outputs=[torch.ones_like(t) for t in g],
                        allow_unused=True)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del g
    return graph, peak


def plan_products(cost: SampleCost, batch_sizes: list[int], memory_bytes: int | None
                  ) -> int | None:
    """``None``: keep every batch's graph (they fit with one product's temporaries, or there
    is no budget); else the micro-batch size to stream. Raises :class:`MemoryBudgetError`
    when not even one sample fits."""
    if memory_bytes is None:
        return None
    n, largest = sum(batch_sizes), max(batch_sizes)
    if cost.fixed + n * cost.graph + largest * (cost.peak - cost.graph) <= memory_bytes:
        return None
    return samples_that_fit(cost.peak, memory_bytes - cost.fixed, memory_bytes,
                            "a Hessian-vector product")


def samples_that_fit(per_sample: float, room: float, memory_bytes: int, what: str) -> int:
    """``⌊room/per_sample⌋`` samples (≥ 1), or :class:`MemoryBudgetError` naming ``what``."""
    m = int(room // per_sample) if room > 0 else 0
    if m < 1:
        raise MemoryBudgetError(
            f"{what} needs about {per_sample:,.0f} bytes for one sample (plus "
            f"{max(0.0, memory_bytes - room):,.0f} fixed), more than the memory budget of "
            f"{memory_bytes:,} bytes (Budget.memory_bytes / --memory): raise the budget")
    return m


def micro_batches(batches, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` slices of at most ``size`` samples, batch by batch (the last slice of a
    batch may be shorter)."""
    for b in batches:
        for start in range(0, b.n, size):
            yield b.x[start:start + size], b.y[start:start + size]


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of the device the products run on (None where it cannot be read)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
