"""Sweeps: a config's grid / list expanded into jobs, run on an executor, recorded in a store.

Executors follow ``concurrent.futures`` (``submit`` → ``Future``, ``shutdown``), so any of its
executors works, and :func:`open_executor` builds the usual ones:

* in-process (``workers=1``): no worker processes, the jobs run one after another in a
  background thread; for debugging and small tests;
* a local process pool (the default, one worker per core): ``spawn``ed workers, one torch
  thread each;
* Dask distributed: a running scheduler (``scheduler="tcp://host:8786"``; workers started
  with ``dask worker tcp://host:8786 --nthreads 1`` on each machine, boundcheck installed
  there) or a ``LocalCluster`` of worker *processes* started for you (``local_cluster=N``).
  Workers must be processes, not threads: torch's global RNG seeds model initialisation,
  so two jobs in threads of one process would interfere.

Dask gives its workers ``MALLOC_TRIM_THRESHOLD_=65536``, which slowed these torch jobs 2.5×
here (glibc then maps and unmaps every large tensor: sys time 3 s → 16 s for two jobs). The
LocalCluster is started without it; for remote workers unset it in a Dask config file on
each worker machine (e.g. ``~/.config/dask/boundcheck.yaml``)::

    distributed:
      nanny:
        pre-spawn-environ:
          MALLOC_TRIM_THRESHOLD_: null

Worker processes are ``spawn``ed, so a script that starts a sweep needs the usual
``if __name__ == "__main__":`` guard.

Each job trains and verifies one configuration in a fresh state with one torch thread, so on
CPU every executor gives the same records (timings aside). The driver appends each finished
job's records to ``records.jsonl`` (see :mod:`boundcheck.harness.store`); ``resume=True`` skips the
jobs already there.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import ctypes
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boundcheck.harness.config import RunConfig, SweepSpec, set_path
from boundcheck.harness.pipeline import check_device
from boundcheck.harness.store import ResultStore, error_records, job_records
from boundcheck.verification.results import check_writable_folder, write_json_atomic

STORE_NAME = "records.jsonl"


@dataclass(frozen=True)
class Job:
    id: str  # digest of the job's config: the same configuration gives the same id
    label: str  # the swept values, e.g. "lr=0.1,batch_size=32"
    params: dict[str, Any]
    config: dict[str, Any]  # RunConfig.to_dict() of this job (no sweep)
    sweep: str


@dataclass
class SweepSummary:
    store: Path
    jobs: list[Job]
    ran: list[str] = field(default_factory=list)  # job ids computed now
    skipped: list[str] = field(default_factory=list)  # job ids already in the store
    errors: dict[str, str] = field(default_factory=dict)  # job id -> "Type: message"
    seconds: float = 0.0


def expand(cfg: RunConfig) -> list[Job]:
    """Every combination of the grid, crossed with each entry of the list (one job when the
    config has no sweep); each job's config is validated here, before anything runs."""
    from boundcheck.harness import data, zoo

    spec = cfg.sweep or SweepSpec()
    base = cfg.to_dict()
    base["sweep"] = None
    shared = sorted(set(spec.grid) & {k for case in spec.cases for k in case})
    if shared:
        raise ValueError(f"sweep.grid and sweep.list both set {shared}")
    keys = list(spec.grid)
    for key in {*keys, *(k for case in spec.cases for k in case)}:
        if key.split(".")[0] == "sweep":
            raise ValueError(f"a sweep cannot set {key!r}")
    labels = _short_labels(list(dict.fromkeys([*keys, *(k for c in spec.cases for k in c)])))
    jobs: list[Job] = []
    for combo in itertools.product(*spec.grid.values()):
        for case in spec.cases or [{}]:
            params = {**dict(zip(keys, combo, strict=True)), **case}
            d = copy.deepcopy(base)
            for path, value in params.items():
                set_path(d, path, value)
            job_cfg = RunConfig.from_dict(d)
            s = job_cfg.subject
            zoo.check_options(s.model, {k: v for k, v in s.model_config().items()
                                        if k not in ("model", "seed")})
            if s.dataset not in data.DATASETS:
                raise ValueError(f"unknown data set {s.dataset!r}; choose from "
                                 f"{', '.join(data.DATASETS)}")
            label = ",".join(f"{labels[k]}={_fmt(v)}" for k, v in params.items()) or cfg.name
            jobs.append(Job(job_cfg.digest(), label, params, job_cfg.to_dict(), cfg.name))
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("the sweep has duplicate jobs (the same configuration twice)")
    return jobs


def run_job(job: Job) -> list[dict[str, Any]]:
    """Train and verify one job (in a worker) and return its store records. A failure of the
    job itself (e.g. training diverges) becomes an ERROR record."""
    import torch

    from boundcheck.harness.pipeline import train_and_verify

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    info = {"sweep": job.sweep, "job": job.label, "job_id": job.id, "params": job.params,
            "config": job.config}
    try:
        cfg = RunConfig.from_dict(job.config)
        runs = train_and_verify(cfg, progress=False, log=lambda _: None)
    except Exception as err:  # a failed job is a result too; the driver reports it
        return error_records(**info, error=err, timing=_timing(start))
    finally:
        torch.set_num_threads(threads)
    timing = _timing(start, train_s=runs[-1].provenance.get("train_s"),
                     verify_s=sum(r.provenance.get("verify_s", 0.0) for r in runs))
    return job_records(**info, runs=runs, timing=timing)


def run_sweep(cfg: RunConfig, out_dir: str | Path | None = None, *, resume: bool = False,
              executor: cf.Executor | None = None, workers: int | None = None,
              scheduler: str | None = None, local_cluster: int | None = None,
              log: Callable[[str], None] = print) -> SweepSummary:
    """Run every job of the sweep not yet in ``out_dir/records.jsonl`` and append its records.

    out_dir: default ``runs/<name>``. An existing store needs ``resume=True`` (then finished
    jobs are skipped and a torn tail is repaired first). executor: any
    ``concurrent.futures.Executor`` (left open); otherwise one is opened with
    :func:`open_executor` from workers / scheduler / local_cluster.
    """
    started = time.perf_counter()
    jobs = expand(cfg)
    if scheduler is None and executor is None:  # remote workers may have GPUs this one lacks
        check_device(cfg.device)
    out = check_writable_folder(Path(out_dir) if out_dir else Path("runs") / _slug(cfg.name))
    store = ResultStore(out / STORE_NAME)
    summary = SweepSummary(store.path, jobs)
    with store.lock():
        if store.path.exists() and store.path.stat().st_size and not resume:
            raise ValueError(f"{store.path} already holds records: pass --resume to continue "
                             "that sweep, or choose another output folder")
        dropped = store.repair()
        if dropped:
            log(f"dropped {dropped} record(s) of unfinished jobs from {store.path}")
        done = store.finished_jobs()
        foreign = done - {j.id for j in jobs}
        if foreign:
            log(f"note: {len(foreign)} finished job(s) in the store are not in this config")
        todo = [j for j in jobs if j.id not in done]
        summary.skipped = [j.id for j in jobs if j.id in done]
        write_json_atomic(out / "sweep.json", {"config": cfg.to_dict(),
                                               "jobs": [dataclasses.asdict(j) for j in jobs]})
        log(f"sweep {cfg.name}: {len(jobs)} jobs, {len(summary.skipped)} already done, "
            f"{len(todo)} to run -> {store.path}")
        opened = contextlib.nullcontext(executor) if executor is not None else open_executor(
            workers=workers, scheduler=scheduler, local_cluster=local_cluster)
        with opened as ex:
            futures = {ex.submit(run_job, job): job for job in todo}
            try:
                for k, future in enumerate(cf.as_completed(futures), 1):
                    job = futures[future]
                    records = future.result()
                    store.append(records)
                    summary.ran.append(job.id)
                    if records[0]["verdict"] == "ERROR":
                        summary.errors[job.id] = records[0]["reason"]
                    log(f"[{k}/{len(todo)}] {job.label}: {_verdict_counts(records)} "
                        f"({records[0]['timing']['total_s']:.1f} s)")
            finally:
                for future in futures:
                    future.cancel()
    summary.seconds = time.perf_counter() - started
    return summary


@contextlib.contextmanager
def open_executor(workers: int | None = None, scheduler: str | None = None,
                  local_cluster: int | None = None) -> Iterator[cf.Executor]:
    """A ``concurrent.futures`` executor: Dask when ``scheduler`` or ``local_cluster`` is
    given, in-process when ``workers == 1``, else a process pool of ``workers`` (default: the
    number of cores)."""
    if scheduler and local_cluster:
        raise ValueError("give either a scheduler address or a local cluster size, not both")
    if scheduler or local_cluster:
        with _dask_executor(scheduler, local_cluster) as ex:
            yield ex
        return
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if workers == 1:
        ex: cf.Executor = InProcessExecutor()
    else:
        ex = cf.ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                    initargs=(os.getpid(),),
                                    mp_context=multiprocessing.get_context("spawn"))
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class InProcessExecutor(cf.ThreadPoolExecutor):
    """Runs the jobs one at a time in one background thread of this process, so the driver
    records each job as soon as it finishes. (One thread only: jobs seed torch's global RNG.)"""

    def __init__(self):
        super().__init__(max_workers=1, thread_name_prefix="boundcheck-job")


@contextlib.contextmanager
def _dask_executor(scheduler: str | None, local_cluster: int | None) -> Iterator[cf.Executor]:
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - a dependency
        raise ImportError("Dask sweeps need dask[distributed] (pip install "
                          "'dask[distributed]')") from err
    with contextlib.ExitStack() as stack:
        # None unsets the variable for the workers (see the module docstring)
        stack.enter_context(dask.config.set(
            {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}))
        if scheduler:
            client = stack.enter_context(Client(scheduler, timeout="30s"))
        else:
            if local_cluster < 1:
                raise ValueError(f"the local cluster needs ≥ 1 worker, got {local_cluster}")
            cluster = stack.enter_context(LocalCluster(
                n_workers=local_cluster, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        yield client.get_executor(pure=False)


def _init_worker(parent: int) -> None:
    """A pool worker: one torch thread, and it dies with the driver ``parent``."""
    import torch

    die_with_parent(parent)
    torch.set_num_threads(1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_PERIOD_S = 0.5


def die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` does, even when the parent is SIGKILLed (then it
    cannot shut its pool down, and the workers would compute on, reparented to pid 1).

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``,
    prctl(2)); everywhere, a daemon thread polls ``os.getppid()`` and exits the process once
    it is no longer ``parent`` (the fallback, and the guard for a parent that died before the
    ``prctl`` call)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the watchdog alone
            pass
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="boundcheck-parent-watchdog",
                     daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)


def _timing(start: float, **extra: Any) -> dict[str, Any]:
    return {"total_s": time.perf_counter() - start, **extra,
            "finished_at": time.time(), "host": socket.gethostname(), "pid": os.getpid()}


def _verdict_counts(records: list[dict[str, Any]]) -> str:
    if records[0]["verdict"] == "ERROR":
        return records[0]["reason"]
    counts: dict[str, int] = {}
    for r in records:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    loss = records[-1]["training"]["loss"]
    return f"loss {loss:.3g}, " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


def _short_labels(keys: list[str]) -> dict[str, str]:
    """The last component of each dotted key, or the whole key where that is ambiguous."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: short if last.count(short) == 1 else k
            for k, short in zip(keys, last, strict=True)}


def _fmt(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) \
        else str(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "sweep"
