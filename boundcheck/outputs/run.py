"""One run written to a folder: ``results.json`` (end of training), one
``checkpoints/step-N.json`` per checkpoint, and the report (``report.tex``, + PDF)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path

from boundcheck.harness.config import RunConfig
from boundcheck.harness.pipeline import train_and_verify
from boundcheck.harness.store import exclusive_lock
from boundcheck.outputs.report import write_report
from boundcheck.verification.results import Results, check_writable_folder

LOCK_NAME = ".boundcheck-run.lock"


def run(cfg: RunConfig, out_dir: str | Path | None = None, *, progress: bool = True,
        pdf: bool = True, log: Callable[[str], None] = print) -> tuple[Results, Path]:
    """Train, verify and write ``results.json`` (the end of training), one
    ``checkpoints/step-N.json`` per checkpoint when there are several, and ``report.tex``
    (+ PDF) into ``out_dir``. Returns the end-of-training results and the folder.

    Before any work the config is validated (unknown theorem ids, models or options) and the
    folder is checked (writable, not a file) and locked: a second run into the same folder
    while this one runs is refused with a ``ValueError``."""
    cfg.validate()
    out = check_writable_folder(Path(out_dir) if out_dir else default_out_dir())
    with exclusive_lock(out / LOCK_NAME, f"another boundcheck run is writing to {out}"):
        runs = train_and_verify(cfg, progress=progress, log=log)
        runs[-1].save(out / "results.json")
        if len(runs) > 1:
            for results in runs:
                results.save(out / "checkpoints" / f"step-{results.training['step']:07d}.json")
        write_report(runs, out / "report.tex", pdf=pdf, log=log)
    return runs[-1], out


def default_out_dir() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / stamp
