"""Data-parallel Hessian products with torch.distributed (gloo, 2 CPU processes): the same
λ_max interval and trace interval as one process on all the data, to rounding, with unequal
shards (the sample weights are exact)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import boundcheck as bc
from boundcheck.engines.curvature import HessianOperator, dense_hessian, hessian_operator
from boundcheck.engines.data_parallel import DataParallelOperator, shard
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue
from boundcheck.engines.estimators.trace import hutchinson_trace
from boundcheck.harness.models import mlp

N = 37  # odd: the two shards differ in size


def _problem():
    torch.manual_seed(0)
    x = torch.randn(N, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (N,))
    return mlp([5, 6, 3], "tanh", seed=1), x, y


def _measure(op) -> dict[str, float]:
    lam = extreme_eigenvalue(op, "largest", rel_tol=1e-8, seed=3)
    tr = hutchinson_trace(op, rel_half_width=0.05, max_probes=400, seed=4)
    return {"lam": lam.value, "lam_lo": lam.lower, "lam_hi": lam.upper, "lam_steps": lam.matvecs,
            "tr": tr.value, "tr_lo": tr.lower, "tr_hi": tr.upper}


def _worker(rank: int, world: int, init: str, out: str, generic: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        net, x, y = _problem()
        part = shard(N, rank, world)
        subject = bc.Subject(net, (x[part], y[part]), "cross_entropy")
        local = HessianOperator(subject) if generic else hessian_operator(subject)
        op = DataParallelOperator(local, subject.n)
        result = _measure(op)
        if rank == 0:
            with open(out, "w") as fh:
                json.dump(result, fh)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("generic", [False, True], ids=["r-operator", "autograd"])
def test_two_gloo_processes_give_the_numbers_of_one(tmp_path, generic):
    out = tmp_path / "rank0.json"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}", str(out), generic), nprocs=2,
             join=True)
    two = json.loads(out.read_text())
    net, x, y = _problem()
    subject = bc.Subject(net, (x, y), "cross_entropy")
    one = _measure(HessianOperator(subject) if generic else hessian_operator(subject))
    truth = float(torch.linalg.eigvalsh(dense_hessian(subject))[-1])
    assert two["lam_steps"] == one["lam_steps"]
    for key in ("lam", "lam_lo", "lam_hi", "tr", "tr_lo", "tr_hi"):
        assert math.isclose(two[key], one[key], rel_tol=1e-10, abs_tol=1e-14), key
    assert two["lam_lo"] <= truth <= two["lam_hi"]
    trace = float(torch.trace(dense_hessian(subject)))
    assert two["tr_lo"] <= trace <= two["tr_hi"]


def test_shards_cover_every_sample_once():
    for n in (2, 7, 10, 101):
        for world in range(1, min(n, 6) + 1):
            parts = [shard(n, r, world) for r in range(world)]
            covered = [i for p in parts for i in range(n)[p]]
            assert covered == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start
                                                               for p in parts) <= 1
    with pytest.raises(ValueError, match="cannot be sharded"):
        shard(2, 0, 3)


def test_refused_without_a_process_group():
    net, x, y = _problem()
    op = hessian_operator(bc.Subject(net, (x, y), "cross_entropy"))
    with pytest.raises(RuntimeError, match="not initialised"):
        DataParallelOperator(op, N)
