"""Micro-batch streaming under a memory budget (boundcheck.engines.memory): streamed
Hessian-vector products equal the graph-reusing ones to rounding, a budget that holds every
graph keeps them (no recomputation), and a budget too small for one sample is a clear
MemoryBudgetError (INCONCLUSIVE in verify), never an out-of-memory crash."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import boundcheck as bc
from boundcheck.cli import build_parser
from boundcheck.engines.curvature import (
    GaussNewton,
    HessianOperator,
    dense_hessian_with_error,
    hessian_operator,
)
from boundcheck.engines.memory import (
    MemoryBudgetError,
    micro_batches,
    product_cost,
    saved_tensor_bytes,
)
from boundcheck.engines.sequential_products import SequentialHessianOperator
from boundcheck.harness.config import RunConfig
from boundcheck.harness.models import mlp

N = 27


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


def _subject(kind: str) -> bc.Subject:
    gen = torch.Generator().manual_seed(1)
    if kind == "cnn":
        x = torch.randn(N, 1, 6, 6, generator=gen, dtype=torch.float64)
        return bc.Subject(_cnn(), (x, torch.randint(0, 4, (N,), generator=gen)),
                          "cross_entropy")
    x = torch.randn(N, 5, generator=gen, dtype=torch.float64)
    return bc.Subject(mlp([5, 7, 3], "tanh", seed=2), (x, torch.randint(0, 3, (N,),
                                                                          generator=gen)),
                      "cross_entropy")


def _budget_for(op: HessianOperator, samples: int) -> int:
    """The smallest budget whose micro-batches hold ``samples`` samples."""
    c = op.sample_cost
    return math.ceil(c.fixed + samples * c.peak)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_streamed_products_equal_graph_reuse(kind):
    s = _subject(kind)
    keep = HessianOperator(s)
    measured = HessianOperator(s, memory_bytes=2**40)
    assert measured.micro_batch is None and measured.sample_cost.peak > 0
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(s.num_params, generator=gen, dtype=torch.float64)
    block = torch.randn(3, s.num_params, generator=gen, dtype=torch.float64)
    ref_v, ref_block = keep.matvec(v), keep.matmat(block)
    # the per-sample model from the one- and two-sample probes predicts the whole graph
    cost = measured.sample_cost
    counted = saved_tensor_bytes(lambda: measured._gradient(s.batches[0].x, s.batches[0].y),
                                 s.params)
    assert counted == pytest.approx(cost.fixed + N * cost.graph, rel=0.05)
    for samples, count in ((14, 2), (4, 7), (26, 2)):  # 14+13, 6×4+3, 26+1
        op = HessianOperator(s, memory_bytes=_budget_for(measured, samples))
        assert op.micro_batch == samples
        assert len(list(micro_batches(s.batches, op.micro_batch))) == count
        assert _rel(op.matvec(v), ref_v) <= 1e-12
        assert _rel(op.matmat(block), ref_block) <= 1e-12
    one = HessianOperator(s)
    one.micro_batch = N  # the whole data as one streamed micro-batch
    assert _rel(one.matvec(v), ref_v) <= 1e-12


def test_gauss_newton_products_in_chunks_equal_the_whole():
    s = _subject("cnn")
    v = torch.randn(5, s.num_params, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    want = GaussNewton(s).quadratic_form(v)
    probe = GaussNewton(s, memory_bytes=2**40)
    assert probe._product_chunks(5) == (5, probe._product_chunks(5)[1])
    per = 2 * probe._forward_bytes
    for budget, chunks in ((2 * per, (2, 1)), (5 * 3 * per, (5, 3)), (int(0.5 * per), None)):
        g = GaussNewton(s, memory_bytes=int(budget))
        if chunks is None:
            with pytest.raises(MemoryBudgetError, match="vᵀGv"):
                g.quadratic_form(v)
            continue
        assert g._product_chunks(5) == chunks
        assert _rel(g.quadratic_form(v), want) <= 1e-12


def test_gauss_newton_chunks_default_to_a_quarter_of_the_device(monkeypatch):
    """Without Budget.memory_bytes the vᵀGv tangents take at most a quarter of the device's
    memory (30 pilot tangents × 64 images of ResNet-18 at once: 20.9 GB of a 23 GB machine)."""
    from boundcheck.engines import curvature

    s = _subject("cnn")
    v = torch.randn(5, s.num_params, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    want = GaussNewton(s, memory_bytes=2**40).quadratic_form(v)
    per = 2 * GaussNewton(s)._activation_bytes()
    monkeypatch.setattr(curvature, "device_memory_bytes", lambda device: int(4 * 2 * 3 * per))
    g = GaussNewton(s)
    rows, samples = g._product_chunks(5)
    assert rows * samples * per <= 2 * 3 * per and samples < N
    assert _rel(g.quadratic_form(v), want) <= 1e-12


def _count_forwards(net: nn.Module) -> list[int]:
    calls = [0]
    net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_a_budget_that_fits_keeps_the_graphs():
    s = _subject("cnn")
    roomy = HessianOperator(s, memory_bytes=2**40)
    streamed = HessianOperator(s, memory_bytes=_budget_for(roomy, 4))
    calls = _count_forwards(s.net)
    v = torch.ones(s.num_params, dtype=torch.float64)
    for _ in range(3):
        roomy.matvec(v)
    assert calls[0] == 1  # graphs built once, every product one backward pass
    calls[0] = 0
    for _ in range(3):
        streamed.matvec(v)
    assert calls[0] == 3 * 7  # every product rebuilds each of the 7 micro-batches


def test_one_sample_over_the_budget_is_a_clear_error():
    s = _subject("cnn")
    cost = HessianOperator(s, memory_bytes=2**40).sample_cost
    tight = int(cost.fixed + 0.5 * cost.peak)
    with pytest.raises(MemoryBudgetError, match=r"bytes for one sample.*memory budget of"):
        HessianOperator(s, memory_bytes=tight)
    budget = bc.Budget(memory_bytes=tight, max_dense_params=0)
    with pytest.raises(MemoryBudgetError, match="Budget.memory_bytes"):
        bc.measure(s, ["hessian.lambda_max"], budget=budget)
    res = bc.verify(s, ["hessian.ws_lambda_max"], budget=budget)
    assert res["hessian.ws_lambda_max"].verdict == bc.Verdict.INCONCLUSIVE
    assert "memory budget" in res["hessian.ws_lambda_max"].reason
    k, p = s.output_dim, s.num_params
    per = 4 * k * p * 8 + (k + 1) * GaussNewton(s, memory_bytes=1)._activation_bytes()
    with pytest.raises(MemoryBudgetError, match="per-sample Jacobians"):
        GaussNewton(s, memory_bytes=int(per) - 1).trace_terms()
    exact = GaussNewton(s).trace_terms()
    assert GaussNewton(s, memory_bytes=int(3 * per)).trace_terms() == pytest.approx(
        exact, rel=1e-13)


def test_the_dense_route_streams_too():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Tanh(), nn.Flatten(), nn.Linear(16, 2))
    x = torch.randn(N, 1, 6, 6, dtype=torch.float64)
    s = bc.Subject(net, (x, torch.randint(0, 2, (N,))), "cross_entropy")  # 44 parameters
    budget = _budget_for(HessianOperator(s, memory_bytes=2**40), 14)
    streamed, _ = dense_hessian_with_error(s, budget)
    kept, _ = dense_hessian_with_error(s)
    assert _rel(streamed, kept) <= 1e-12


def test_a_probe_that_runs_out_of_memory_is_a_budget_error():
    def too_big(x, y):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 TB")

    def broken(x, y):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    x, y = torch.zeros(3, 2), torch.zeros(3)
    with pytest.raises(MemoryBudgetError, match="over 1 sample does not fit"):
        product_cost(too_big, [], x, y)
    with pytest.raises(RuntimeError, match="shapes"):  # anything else is not swallowed
        product_cost(broken, [], x, y)


def test_sequential_mlp_falls_back_to_streaming_when_its_values_do_not_fit():
    s = _subject("mlp")
    fast = hessian_operator(s)
    assert isinstance(fast, SequentialHessianOperator)
    assert isinstance(hessian_operator(s, 2**40), SequentialHessianOperator)
    small = 2 * N * fast.bytes_per_sample() - 1
    op = hessian_operator(s, small)
    assert isinstance(op, HessianOperator) and op.micro_batch is not None
    v = torch.linspace(-1, 1, s.num_params, dtype=torch.float64)
    assert _rel(op.matvec(v), fast.matvec(v)) <= 1e-12


def test_memory_budget_is_validated_and_reaches_the_cli(tmp_path):
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="memory_bytes"):
            bc.Budget(memory_bytes=bad)
    assert bc.Budget().memory_bytes is None
    args = build_parser().parse_args(["run", "--memory", "2GiB"])
    assert args.memory == 2 * 2**30
    assert build_parser().parse_args(["run", "--memory", "500MB"]).memory == 500 * 10**6
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--memory", "lots"])
    toml = tmp_path / "job.toml"
    toml.write_text("[budget]\nmemory_bytes = 3000000000\n")
    assert RunConfig.from_toml(toml).budget.memory_bytes == 3_000_000_000


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streaming_on_cuda_measures_the_allocator():
    s = _subject("cnn")
    gpu = bc.Subject(s.model, (s.x_all, s.y_all), "cross_entropy", device="cuda")
    roomy = HessianOperator(gpu, memory_bytes=2**40)
    assert "cuda" in roomy.sample_cost.method and roomy.sample_cost.peak > 0
    op = HessianOperator(gpu, memory_bytes=_budget_for(roomy, 4))
    v = torch.ones(gpu.num_params, dtype=torch.float64, device="cuda")
    assert _rel(op.matvec(v).cpu(), HessianOperator(s).matvec(v.cpu())) <= 1e-12


def test_lanczos_steps_are_capped_by_the_memory_budget():
    """Lanczos keeps 2 × steps × P float64 numbers: under Budget.memory_bytes it takes at most
    the steps that fit (a wider interval that still covers), and refuses below 4 steps."""
    from boundcheck.engines.memory import MemoryBudgetError
    from boundcheck.quantities import Budget

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    ev = torch.linspace(-1.0, 1.0, 400, dtype=torch.float64) ** 3
    a = (q * ev) @ q.T
    subject = bc.MatrixSubject(a.numpy())
    budget = Budget(memory_bytes=2 * 8 * 400 * 12, max_dense_params=0, lanczos_rel_tol=1e-10)
    est = bc.measure(subject, ["hessian.lambda_max"], budget=budget)["hessian.lambda_max"]
    assert est.lower <= float(ev.max()) <= est.upper
    assert est.details["steps"] <= 12 and est.details["max_steps"].startswith("12 per run")
    free = bc.measure(subject, ["hessian.lambda_max"], budget=Budget(
        max_dense_params=0, lanczos_rel_tol=1e-10))["hessian.lambda_max"]
    assert "max_steps" not in free.details and free.details["steps"] > 12
    with pytest.raises(MemoryBudgetError, match="at least 4 steps"):
        bc.measure(subject, ["hessian.lambda_max"],
                   budget=Budget(memory_bytes=2 * 8 * 400 * 3, max_dense_params=0))


def test_lanczos_steps_default_to_half_the_device_memory(monkeypatch):
    """Without Budget.memory_bytes the Krylov rows may take half the device's memory
    (ResNet-18: 179 MB a step, so the default 300 steps would need 54 GB)."""
    from boundcheck.quantities import Budget, hessian

    assert hessian.device_memory_bytes(torch.device("cpu")) > 2**20
    monkeypatch.setattr(hessian, "device_memory_bytes", lambda device: 2 * (2 * 8 * 400 * 10))
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    ev = torch.linspace(-1.0, 1.0, 400, dtype=torch.float64) ** 3
    est = bc.measure(bc.MatrixSubject(((q * ev) @ q.T).numpy()), ["hessian.lambda_max"],
                     budget=Budget(max_dense_params=0, lanczos_rel_tol=1e-10)
                     )["hessian.lambda_max"]
    assert est.lower <= float(ev.max()) <= est.upper
    assert est.details["steps"] <= 10 and est.details["max_steps"].startswith("10 per run")
