"""Sweeps: grid / list expansion, identical records from the in-process executor, the local
process pool and a real Dask LocalCluster, and resuming a sweep killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import pytest

from boundcheck.harness.config import RunConfig
from boundcheck.harness.store import ResultStore, canonical
from boundcheck.harness.sweep import InProcessExecutor, expand, open_executor, run_sweep

TINY = {
    "name": "tiny",
    "theorems": ["hessian.ws_lambda_max"],
    "subject": {"dataset": "iris", "hidden": [2]},
    "recipe": {"optimizer": "sgd", "momentum": 0.0, "steps": 30, "checkpoints": [10],
               "target_loss": 0.0},
    "sweep": {"grid": {"recipe.lr": [0.05, 0.2], "recipe.batch_size": [8, 150]}},
}


def _quiet(_):
    pass


def _canonical(path):
    return sorted((canonical(r) for r in ResultStore(path).records()),
                  key=lambda r: (r["job_id"], r["record_index"]))


def test_grid_times_list():
    cfg = RunConfig.from_dict({**TINY, "sweep": {
        "grid": {"recipe.lr": [0.1, 0.2], "subject.seed": [0, 1, 2]},
        "list": [{"subject.model": "mlp"},
                 {"subject": {"model": "lenet", "dataset": "digits",
                              "model_options": {"channels": [2]}}}]}})
    jobs = expand(cfg)
    assert len(jobs) == 2 * 3 * 2 and len({j.id for j in jobs}) == 12
    assert jobs[0].label == "lr=0.1,seed=0,model=mlp"
    lenet = RunConfig.from_dict(jobs[1].config)
    assert lenet.subject.model == "lenet" and lenet.subject.model_options == {"channels": [2]}
    assert lenet.subject.hidden == [2] and lenet.sweep is None
    assert jobs[0].id == RunConfig.from_dict(jobs[0].config).digest()


def test_no_sweep_is_one_job():
    cfg = RunConfig.from_dict({k: v for k, v in TINY.items() if k != "sweep"})
    (job,) = expand(cfg)
    assert job.label == "tiny" and job.params == {} and job.id == cfg.digest()


@pytest.mark.parametrize("sweep, match", [
    ({"grid": {"recipe.lrr": [1]}}, r"unknown \[recipe\] keys \['lrr'\]"),
    ({"grid": {"subject.model_options.depth": [1]}}, "does not take option"),
    ({"grid": {"subject.dataset": ["cifar100"]}}, "unknown data set 'cifar100'"),
    ({"grid": {"subject.model": ["mlp", "transformer"]}}, "unknown model 'transformer'"),
    ({"grid": {"recipe.lr": [0.1]}, "list": [{"recipe.lr": 0.2}]}, "both set"),
    ({"grid": {"recipe.lr": [0.1, 0.1]}}, "duplicate jobs"),
    ({"list": [{"sweep.grid": 1}]}, "cannot set"),
])
def test_bad_sweeps_fail_before_anything_runs(sweep, match):
    with pytest.raises(ValueError, match=match):
        expand(RunConfig.from_dict({**TINY, "sweep": sweep}))


@pytest.mark.slow
def test_local_pool_and_dask_local_cluster_give_identical_records(tmp_path):
    """The same records (timings aside) in-process, on a 2-process pool and on a real
    dask.distributed.LocalCluster of 2 worker processes."""
    cfg = RunConfig.from_dict(TINY)
    inproc = run_sweep(cfg, tmp_path / "inproc", workers=1, log=_quiet)
    pool = run_sweep(cfg, tmp_path / "pool", workers=2, log=_quiet)
    with open_executor(local_cluster=2) as ex:
        dask = run_sweep(cfg, tmp_path / "dask", executor=ex, log=_quiet)
        # workers run without Dask's MALLOC_TRIM_THRESHOLD_ (2.5× slower torch jobs)
        assert ex.submit(os.environ.get, "MALLOC_TRIM_THRESHOLD_").result() is None
    assert len(inproc.ran) == len(pool.ran) == len(dask.ran) == 4
    reference = _canonical(inproc.store)
    assert len(reference) == 4 * 2  # 4 jobs × 2 checkpoints × 1 theorem
    assert _canonical(pool.store) == reference
    assert _canonical(dask.store) == reference
    pids = {r["timing"]["pid"] for r in ResultStore(dask.store).records()}
    assert os.getpid() not in pids  # really ran elsewhere


def test_existing_store_needs_resume_and_resume_skips_everything(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "sweep": {"grid": {"recipe.lr": [0.1, 0.3]}}})
    ex = InProcessExecutor()
    first = run_sweep(cfg, tmp_path, executor=ex, log=_quiet)
    before = first.store.read_text()
    with pytest.raises(ValueError, match="pass --resume"):
        run_sweep(cfg, tmp_path, executor=ex, log=_quiet)
    again = run_sweep(cfg, tmp_path, executor=ex, resume=True, log=_quiet)
    assert again.ran == [] and sorted(again.skipped) == sorted(first.ran)
    assert first.store.read_text() == before
    # a grown grid runs only the new job
    bigger = RunConfig.from_dict({**TINY, "sweep": {"grid": {"recipe.lr": [0.1, 0.3, 0.5]}}})
    grown = run_sweep(bigger, tmp_path, executor=ex, resume=True, log=_quiet)
    assert len(grown.ran) == 1 and len(grown.skipped) == 2


def test_a_failing_job_is_recorded_and_the_rest_run(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "sweep": {"grid": {"recipe.lr": [0.1, 1e6]}},
                               "subject": {"dataset": "iris", "hidden": [2], "loss": "mse"}})
    summary = run_sweep(cfg, tmp_path, workers=1, log=_quiet)
    assert len(summary.ran) == 2 and len(summary.errors) == 1
    (reason,) = summary.errors.values()
    assert reason.startswith("FloatingPointError: training diverged")
    verdicts = sorted(r["verdict"] for r in ResultStore(summary.store).records())
    assert verdicts == ["ERROR", "HOLDS", "HOLDS"]


def _sweep_toml(folder, name, steps, lrs):
    """A sweep over the SGD learning rate of a tiny iris MLP, as a TOML file."""
    config = folder / "sweep.toml"
    config.write_text(f"""
name = "{name}"
theorems = ["hessian.ws_lambda_max"]
[subject]
dataset = "iris"
hidden = [2]
[recipe]
optimizer = "sgd"
momentum = 0.0
steps = {steps}
target_loss = 0.0
[sweep.grid]
"recipe.lr" = {lrs}
""")
    return config


def _cli(*args):
    return [sys.executable, "-m", "boundcheck.cli", "run", *map(str, args)]


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    """Kill a running sweep with SIGKILL as soon as its first job is recorded, resume it, and
    check: every record exactly once, the jobs finished before the kill not recomputed
    (their records and timestamps unchanged), and the result equal to an uninterrupted run."""
    config = _sweep_toml(tmp_path, "killed", 3000, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    out = tmp_path / "out"
    store = ResultStore(out / "records.jsonl")
    proc = subprocess.Popen(_cli(config, "-o", out, "--workers", "1", "-q"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not store.finished_jobs():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no record within 3 minutes"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.time()
    before = store.records()
    done_before = {r["job_id"] for r in before}
    assert 1 <= len(done_before) < 6, "the kill must land mid-sweep"

    resumed = subprocess.run(_cli(config, "-o", out, "--workers", "1", "-q", "--resume"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{6 - len(done_before)} job(s) run, {len(done_before)} already done" in \
        resumed.stdout

    after = store.records()
    keys = [(r["job_id"], r["record_index"]) for r in after]
    assert len(keys) == len(set(keys)) == 6  # one theorem, one checkpoint (the end)
    assert len(store.path.read_text().splitlines()) == 6
    kept = [r for r in after if r["job_id"] in done_before]
    assert kept == before  # same records, same timestamps: not recomputed
    assert all(r["timing"]["finished_at"] < killed_at for r in kept)
    assert all(r["timing"]["finished_at"] > killed_at for r in after
               if r["job_id"] not in done_before)

    fresh = run_sweep(RunConfig.from_toml(config), tmp_path / "fresh", workers=1, log=_quiet)
    assert _canonical(fresh.store) == _canonical(store.path)


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_a_sigkilled_driver(tmp_path):
    """SIGKILL the driver of a process-pool sweep (not its process group) while its workers
    compute: they and the resource tracker must end within seconds, not compute on orphaned
    (issue 16). (A worker still starting up, importing torch, ends when its initializer runs.)"""
    config = _sweep_toml(tmp_path, "orphans", 200000, [0.01, 0.02, 0.03])
    proc = subprocess.Popen(_cli(config, "-o", tmp_path / "out", "--workers", "2", "-q"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        # started workers: past their initializer, which starts the parent watchdog thread
        while sum(len(os.listdir(f"/proc/{p}/task")) > 1 for p in _children(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no pool started"
            time.sleep(0.05)
        time.sleep(0.5)
        children = _children(proc.pid)  # the two workers and the resource tracker
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 3
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [p for p in children if _alive(p)]
        assert not survivors, f"{len(survivors)} of {len(children)} children outlived the driver"
    finally:
        for p in _children(proc.pid):
            os.kill(p, signal.SIGKILL)
