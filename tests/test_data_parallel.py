"""Data-parallel Hessian products with torch.distributed (gloo, 2 CPU processes): the same
λ_max interval and trace interval as one process on all the data, to rounding, with unequal
shards (the sample weights are exact); and ``bc.measure`` / ``bc.verify`` on a
``Subject(..., distributed=True)``: the same estimates as one process, every quantity that is
not data-parallel refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import HessianOperator, dense_hessian, hessian_operator
from boundcheck.engines.data_parallel import DataParallelOperator, shard
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue
from boundcheck.engines.estimators.trace import hutchinson_trace
from boundcheck.harness.models import mlp
from boundcheck.quantities import NotApplicableError

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


# -- bc.measure / bc.verify over a process group -------------------------------------------
def _cnn_problem():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    x = torch.randn(N, 1, 5, 5, dtype=torch.float64)
    return net, x, torch.randint(0, 3, (N,))


# (problem, budget, quantities): Lanczos and forced Hutchinson; the dense route and the exact
# recursion (sequential MLP); the control variate and the "auto" pilot (CNN: autograd + tr G)
CASES = (("mlp", {"max_dense_params": 0, "trace_method": "hutchinson"},
          ["hessian.lambda_max", "hessian.lambda_min", "hessian.trace"]),
         ("mlp", {}, ["hessian.lambda_max", "hessian.trace", "ggn.trace", "hessian.fro2"]),
         ("cnn", {"max_dense_params": 0, "trace_method": "control_variate"},
          ["hessian.trace", "residual.trace"]),
         ("cnn", {"max_dense_params": 0}, ["hessian.trace", "hessian.eigenvalue_variance"]))


def _estimates(make_subject) -> list[dict[str, list[float]]]:
    out = []
    for problem, budget, names in CASES:
        subject = make_subject(_cnn_problem() if problem == "cnn" else _problem())
        est = bc.measure(subject, names, budget=bc.Budget(**budget), seed=7)
        out.append({k: [e.value, e.lower, e.upper] for k, e in est.items()})
    res = bc.verify(make_subject(_problem()), ["hessian.ws_lambda_max"], seed=7)
    r = res["hessian.ws_lambda_max"]
    out.append({"verdict": [r.verdict.value], "slack": [r.slack.value]})
    return out


def _measure_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        def sharded(problem):
            net, x, y = problem
            part = shard(N, rank, world)
            return bc.Subject(net, (x[part], y[part]), "cross_entropy", distributed=True)

        result = {"estimates": _estimates(sharded)}
        s = sharded(_problem())
        result["total"] = [s.n, s.total_samples, s.describe()["num_samples"]]
        refusals = {}
        for name, budget in (("jacobian.mls", {}), ("hessian.moment_3", {}),
                             ("hessian.trace", {"trace_method": "finite_difference"})):
            try:
                bc.measure(s, [name], budget=bc.Budget(**budget))
                refusals[name] = "measured"
            except NotApplicableError as err:
                refusals[name] = str(err)
        result["refusals"] = refusals
        verdict = bc.verify(s, ["compression.input_gradient"]).results[0]
        result["verify_refusal"] = [verdict.verdict.value, verdict.reason]
        net, x, y = _problem()
        if rank == 1:
            with torch.no_grad():
                next(net.parameters())[0, 0] += 1e-3
        try:
            bc.Subject(net, (x[shard(N, rank, world)], y[shard(N, rank, world)]),
                       "cross_entropy", distributed=True)
            result["different_models"] = "accepted"
        except bc.InvalidSubjectError as err:
            result["different_models"] = str(err)
        with open(f"{out}.{rank}", "w") as fh:
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_measure_over_two_gloo_processes_equals_one_process(tmp_path):
    out = tmp_path / "rank"
    mp.spawn(_measure_worker, args=(2, f"file://{tmp_path / 'init'}", str(out)), nprocs=2,
             join=True)
    ranks = [json.loads((tmp_path / f"rank.{r}").read_text()) for r in range(2)]
    assert ranks[0]["estimates"] == ranks[1]["estimates"]  # every rank: the same numbers
    two = ranks[0]
    # "auto" over ranks never picks the block estimator (its exact part and per-sample probes
    # read one rank's data); one process would, so its reference skips it the same way
    from boundcheck.quantities import hessian as hessian_quantities

    original = hessian_quantities._block_unavailable
    hessian_quantities._block_unavailable = lambda ctx, op: "as over ranks"
    try:
        one = _estimates(lambda problem: bc.Subject(problem[0], problem[1:], "cross_entropy"))
    finally:
        hessian_quantities._block_unavailable = original
    for case_two, case_one in zip(two["estimates"], one, strict=True):
        assert case_two.keys() == case_one.keys()
        for key, values in case_one.items():
            for a, b in zip(case_two[key], values, strict=True):
                if isinstance(b, str):
                    assert a == b, key
                else:
                    assert math.isclose(a, b, rel_tol=1e-10, abs_tol=1e-14), (key, a, b)
    assert two["total"] == [19, N, N]
    for name, reason in two["refusals"].items():
        assert "not data-parallel" in reason, (name, reason)
    assert "only this rank's shard (19 of 37 samples)" in two["refusals"]["jacobian.mls"]
    assert two["verify_refusal"][0] == "NOT_APPLICABLE"
    assert "not data-parallel" in two["verify_refusal"][1]
    assert "different models" in two["different_models"]
    assert "different models" in ranks[1]["different_models"]


def test_distributed_subject_needs_a_process_group():
    net, x, y = _problem()
    with pytest.raises(bc.InvalidSubjectError, match="init_process_group"):
        bc.Subject(net, (x, y), "cross_entropy", distributed=True)


def test_one_rank_group_measures_like_a_plain_subject(tmp_path):
    """A world of one rank, in this process: the data-parallel routes give the plain numbers,
    the rest is refused, and a time limit (ranks' clocks differ) is refused."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    try:
        net, x, y = _problem()
        s = bc.Subject(net, (x, y), "cross_entropy", distributed=True)
        plain = bc.Subject(net, (x, y), "cross_entropy")
        budget = bc.Budget(max_dense_params=0, trace_method="hutchinson", max_probes=200)
        names = ["hessian.lambda_max", "hessian.trace", "ggn.trace"]
        got = bc.measure(s, names, budget=budget, seed=1)
        want = bc.measure(plain, names, budget=budget, seed=1)
        for name in names:
            assert got[name].value == pytest.approx(want[name].value, rel=1e-12, abs=1e-15)
            assert got[name].upper == pytest.approx(want[name].upper, rel=1e-12, abs=1e-15)
        with pytest.raises(NotApplicableError, match="not data-parallel"):
            bc.measure(s, ["data.norm_max"])
        with pytest.raises(ValueError, match="time_limit_s"):
            bc.measure(s, names, budget=bc.Budget(time_limit_s=5.0))
        with pytest.raises(bc.InvalidSubjectError, match="ProcessGroup"):
            bc.Subject(net, (x, y), "cross_entropy", distributed="yes")
    finally:
        dist.destroy_process_group()
