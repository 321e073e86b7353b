"""The results store of a sweep: JSON lines, one record per (job, checkpoint, theorem).

All the records of one job are appended together by a single ``write`` on a file opened with
``O_APPEND``, then ``fsync``ed; each record carries ``record_index`` and ``job_records``, so a
job counts as finished only when all its records are there. A torn write (power loss) leaves at
most an incomplete last job, which :meth:`ResultStore.repair` drops (rewriting the file by
temp file + rename) before a resumed sweep appends again. Only the process driving the sweep
writes (workers return records); an advisory lock keeps two drivers off one store.

Record layout (``schema`` 1)::

    {"schema": 1, "sweep", "job", "job_id" (the job config's digest),
     "params": {dotted path: value},
     "record_index", "job_records", "step", "final", "theorem", "verdict", "reason",
     "lhs", "rhs", "slack", "quantities",          # as in results.json, per theorem
     "training": {"loss", "steps", "final_loss", "reached_target"},
     "subject": {...}, "device", "config", "error": null | {"type", "message"},
     "timing": {...}}                              # volatile: differs between reruns

A job that fails (e.g. training diverges) gets one record with verdict "ERROR" and
``error`` set; it counts as finished. :func:`to_dataframe` flattens records for pandas.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from boundcheck.verification.results import Results, fsync_dir

SCHEMA = 1
VOLATILE = ("timing",)  # fields that legitimately differ between two runs of the same job
VOLATILE_DETAILS = ("seconds",)  # timings inside an estimate's details


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _scan(self) -> tuple[list[dict[str, Any]], int]:
        """(records of finished jobs in file order, number of lines dropped)."""
        if not self.path.exists():
            return [], 0
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        tail = lines.pop()  # "" when the file ends with a newline, else a torn line
        parsed, dropped = [], int(bool(tail))
        for line in lines:
            try:
                record = json.loads(line)
                record["job_id"], record["record_index"], record["job_records"]
            except (json.JSONDecodeError, TypeError, KeyError):
                dropped += 1
                continue
            parsed.append(record)
        indices: dict[str, set[int]] = defaultdict(set)
        expected: dict[str, int] = {}
        for r in parsed:
            indices[r["job_id"]].add(r["record_index"])
            expected.setdefault(r["job_id"], r["job_records"])
        complete = {job for job, idx in indices.items() if idx == set(range(expected[job]))}
        kept, written = [], set()
        for r in parsed:
            key = (r["job_id"], r["record_index"])
            if r["job_id"] in complete and key not in written:
                written.add(key)
                kept.append(r)
        return kept, dropped + len(parsed) - len(kept)

    def records(self) -> list[dict[str, Any]]:
        """The records of every finished job, in the order they were written."""
        return self._scan()[0]

    def finished_jobs(self) -> set[str]:
        return {r["job_id"] for r in self.records()}

    def repair(self) -> int:
        """Drop torn lines and records of unfinished jobs (atomically); returns how many."""
        kept, dropped = self._scan()
        if dropped:
            tmp = self.path.with_name(f".{self.path.name}.repair")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("".join(_line(r) for r in kept))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        return dropped

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append all the records of one job with one write, then fsync."""
        if not records:
            raise ValueError("a job must leave at least one record")
        ids = {r["job_id"] for r in records}
        if len(ids) != 1 or [r["record_index"] for r in records] != list(range(len(records))) \
                or any(r["job_records"] != len(records) for r in records):
            raise ValueError("append takes the complete, ordered records of one job")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        blob = "".join(_line(r) for r in records).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive advisory lock on the store for the duration of a sweep."""
        with exclusive_lock(self.path.with_name(self.path.name + ".lock"),
                            f"another sweep is writing to {self.path}"):
            yield

    def to_dataframe(self):
        return to_dataframe(self.records())


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: str) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path``, which records the holder's
    pid; when another process holds it, a ``ValueError``: ``busy`` and that pid. The kernel
    releases the lock when its holder dies, even by SIGKILL, so no stale lock is left."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no lock
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise ValueError(f"{busy} (pid {holder or '?'}, lock {path})") from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def job_records(*, sweep: str, job: str, job_id: str, params: dict[str, Any],
                config: dict[str, Any], runs: list[Results],
                timing: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of one finished job: one per (checkpoint, theorem)."""
    base = _base(sweep, job, job_id, params, config, timing)
    rows = []
    for results in runs:
        t = results.training or {}
        for r in results.results:
            rows.append({**base, "step": t.get("step"), "final": bool(t.get("final", True)),
                         "theorem": r.theorem_id, "verdict": r.verdict.value,
                         "reason": r.reason, "error": None,
                         **{k: v for k, v in r.to_dict().items()
                            if k in ("lhs", "rhs", "slack", "quantities")},
                         "training": {"loss": t.get("loss"), "steps": t.get("steps"),
                                      "final_loss": t.get("final_loss"),
                                      "reached_target": t.get("reached_target")},
                         "subject": {k: results.subject.get(k) for k in
                                     ("name", "architecture", "num_params", "num_samples",
                                      "output_dim", "loss")},
                         "device": results.subject.get("device"),
                         **({"measurements": results.extras["measurements"]}
                            if results.extras.get("measurements") else {})})
    if not rows:
        raise ValueError(f"job {job!r} verified no theorem: select at least one")
    return _numbered(rows)


def error_records(*, sweep: str, job: str, job_id: str, params: dict[str, Any],
                  config: dict[str, Any], error: BaseException,
                  timing: dict[str, Any]) -> list[dict[str, Any]]:
    """The single record of a job that failed (it counts as finished)."""
    message = f"{type(error).__name__}: {error}"
    return _numbered([{**_base(sweep, job, job_id, params, config, timing), "step": None,
                       "final": True, "theorem": None, "verdict": "ERROR", "reason": message,
                       "error": {"type": type(error).__name__, "message": str(error)},
                       "lhs": None, "rhs": None, "slack": None, "quantities": {},
                       "training": None, "subject": None,
                       "device": config.get("device")}])


def canonical(record: dict[str, Any]) -> dict[str, Any]:
    """The record without what legitimately differs between two runs of the same job: its
    ``timing`` and the timings inside estimates (``details.seconds`` of the quantities, the
    sides and the slack). Equal for two runs of the same job."""
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    for side in ("lhs", "rhs", "slack"):
        if isinstance(out.get(side), dict):
            out[side] = _without_timings(out[side])
    if isinstance(out.get("quantities"), dict):
        out["quantities"] = {name: _without_timings(est) if isinstance(est, dict) else est
                             for name, est in out["quantities"].items()}
    return out


def _without_timings(estimate: dict[str, Any]) -> dict[str, Any]:
    details = estimate.get("details")
    if not isinstance(details, dict):
        return estimate
    return {**estimate, "details": {k: v for k, v in details.items()
                                    if k not in VOLATILE_DETAILS}}


def to_dataframe(records: Iterable[dict[str, Any]]):
    """One row per record: the swept values (columns named by their dotted paths), step,
    theorem, verdict, both sides and the slack with their intervals, the training loss, and
    each quantity (``name``, ``name.lower``, ``name.upper``)."""
    import pandas as pd

    rows = []
    for r in records:
        row: dict[str, Any] = {k: r.get(k) for k in ("sweep", "job", "job_id", "step", "final",
                                                     "theorem", "verdict", "reason")}
        row.update({k: tuple(v) if isinstance(v, list) else v
                    for k, v in r.get("params", {}).items()})
        for side in ("lhs", "rhs", "slack"):
            est = r.get(side) or {}
            row[side] = _float(est.get("value"))
            row[f"{side}_lower"] = _float(est.get("lower"))
            row[f"{side}_upper"] = _float(est.get("upper"))
        training = r.get("training") or {}
        row["train_loss"] = training.get("loss")
        row["num_params"] = (r.get("subject") or {}).get("num_params")
        for name, est in (r.get("quantities") or {}).items():
            row[name] = _float(est.get("value"))
            row[f"{name}.lower"] = _float(est.get("lower"))
            row[f"{name}.upper"] = _float(est.get("upper"))
        row.update({f"timing.{k}": v for k, v in (r.get("timing") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def load_dataframe(path: str | Path):
    """The records of a store file as a pandas DataFrame (see :func:`to_dataframe`)."""
    return ResultStore(path).to_dataframe()


def _base(sweep, job, job_id, params, config, timing) -> dict[str, Any]:
    return {"schema": SCHEMA, "sweep": sweep, "job": job, "job_id": job_id,
            "params": params, "config": config, "timing": timing}


def _numbered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "record_index": i, "job_records": len(rows)} for i, row in enumerate(rows)]


def _line(record: dict[str, Any]) -> str:
    return json.dumps(_json_safe(record), sort_keys=True, allow_nan=False) + "\n"


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _float(x: Any) -> float:
    if x is None:
        return math.nan
    return float(x)  # float("inf") / float("-inf") read the strings back

