"""The results store: whole jobs appended atomically, torn writes repaired, no record lost or
duplicated, a lock against two writers, and the pandas export."""

import json
import math

import pytest

from boundcheck.harness.config import RunConfig
from boundcheck.harness.pipeline import train_and_verify
from boundcheck.harness.store import (
    ResultStore,
    canonical,
    error_records,
    job_records,
    load_dataframe,
    to_dataframe,
)


def _job(job_id, n, **extra):
    return [{"job_id": job_id, "record_index": i, "job_records": n, "theorem": f"t{i}",
             "verdict": "HOLDS", "params": {"recipe.lr": 0.1}, "timing": {"total_s": 1.0},
             **extra} for i in range(n)]


def test_append_and_read_back(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    assert store.records() == [] and store.finished_jobs() == set()
    store.append(_job("a", 3))
    store.append(_job("b", 1))
    assert [(r["job_id"], r["record_index"]) for r in store.records()] == [
        ("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert store.finished_jobs() == {"a", "b"}
    assert store.repair() == 0


def test_append_takes_one_whole_job(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="at least one record"):
        store.append([])
    with pytest.raises(ValueError, match="complete, ordered records of one job"):
        store.append(_job("a", 3)[:2])
    with pytest.raises(ValueError, match="complete, ordered records of one job"):
        store.append(_job("a", 1) + _job("b", 1))
    assert not store.path.exists()


def test_torn_tail_and_unfinished_jobs_are_dropped_then_appending_is_safe(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(_job("a", 2))
    store.append(_job("b", 2))
    lines = store.path.read_text().splitlines(keepends=True)
    # a crash in the middle of job c's write: one whole line, then half of the next
    torn = "".join(lines) + json.dumps(_job("c", 2)[0]) + "\n" + json.dumps(_job("c", 2)[1])[:9]
    store.path.write_text(torn)
    assert store.finished_jobs() == {"a", "b"}
    assert store.repair() == 2
    assert store.path.read_text() == "".join(lines)
    store.append(_job("c", 2))
    assert [(r["job_id"], r["record_index"]) for r in store.records()] == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]


def test_duplicate_records_are_read_once(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(_job("a", 2))
    store.append(_job("a", 2))
    assert len(store.records()) == 2
    assert store.repair() == 2 and len(store.path.read_text().splitlines()) == 2


def test_a_second_writer_is_refused(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    with store.lock():
        with pytest.raises(ValueError, match="another sweep is writing"):
            with ResultStore(tmp_path / "r.jsonl").lock():
                pass
    with store.lock():  # released
        pass


def test_records_from_a_real_run_and_the_dataframe(tmp_path):
    cfg = RunConfig.from_dict({
        "theorems": ["hessian.ws_lambda_max", "hessian.ws_lambda_min"],
        "subject": {"dataset": "iris", "hidden": [2]},
        "recipe": {"steps": 10, "checkpoints": [0]}})
    runs = train_and_verify(cfg, progress=False, log=lambda _: None)
    records = job_records(sweep="s", job="lr=0.5", job_id=cfg.digest(),
                          params={"recipe.lr": 0.5, "subject.hidden": [2]},
                          config=cfg.to_dict(), runs=runs, timing={"total_s": 1.0})
    assert [(r["step"], r["theorem"]) for r in records] == [
        (0, "hessian.ws_lambda_max"), (0, "hessian.ws_lambda_min"),
        (10, "hessian.ws_lambda_max"), (10, "hessian.ws_lambda_min")]
    assert [r["final"] for r in records] == [False, False, True, True]
    failed = error_records(sweep="s", job="lr=9", job_id="bad", params={"recipe.lr": 9},
                           config=cfg.to_dict(), error=FloatingPointError("diverged"),
                           timing={"total_s": 0.5})
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(records)
    store.append(failed)
    assert store.finished_jobs() == {cfg.digest(), "bad"}
    back = store.records()
    assert [canonical(r) for r in back[:4]] == [
        json.loads(json.dumps(canonical(r))) for r in records]
    assert back[4]["verdict"] == "ERROR" and back[4]["error"]["type"] == "FloatingPointError"

    df = load_dataframe(store.path)
    assert len(df) == 5 and set(df["verdict"]) == {"HOLDS", "ERROR"}
    row = df[(df.step == 10) & (df.theorem == "hessian.ws_lambda_max")].iloc[0]
    lam = runs[-1]["hessian.ws_lambda_max"].quantities["hessian.lambda_max"]
    assert row["hessian.lambda_max"] == lam.value
    assert row["hessian.lambda_max.lower"] == lam.lower
    assert row["recipe.lr"] == 0.5 and row["subject.hidden"] == (2,)
    assert row["num_params"] == runs[-1].subject["num_params"]
    assert row["timing.total_s"] == 1.0
    assert math.isnan(df[df.verdict == "ERROR"].iloc[0]["lhs"])
    assert df.groupby("subject.hidden").size().tolist() == [4]  # tuples are hashable


def test_infinities_round_trip(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    est = {"value": 1.0, "lower": float("-inf"), "upper": float("inf"), "kind": "statistical"}
    store.append(_job("a", 1, lhs=est, quantities={"q": est}))
    assert '"-inf"' in store.path.read_text()
    df = to_dataframe(store.records())
    assert df.loc[0, "lhs_lower"] == -math.inf and df.loc[0, "q.upper"] == math.inf


def test_canonical_leaves_out_timings_inside_estimates():
    """Two reruns of one job differ only in how long things took (issue 16)."""

    def record(seconds, value=1.0):
        est = {"value": value, "lower": value, "upper": value, "kind": "exact", "method": "m",
               "details": {"seconds": seconds, "route": "h"}}
        return _job("a", 1, lhs=dict(est), quantities={"closed_form.trace": dict(est)},
                    timing={"total_s": seconds})[0]

    assert canonical(record(0.1)) == canonical(record(0.7))
    assert canonical(record(0.1)) != canonical(record(0.1, value=2.0))
    assert canonical(record(0.1))["quantities"]["closed_form.trace"]["details"] == {"route": "h"}
    assert record(0.1)["quantities"]["closed_form.trace"]["details"]["seconds"] == 0.1  # copy
