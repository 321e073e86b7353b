"""A report is replaced as a whole: a kill at any point leaves the old report or the new one,
every file complete and every figure the ``.tex`` names present (issue 16)."""

import functools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_report import matrix_results, sweep_runs

from boundcheck.outputs.report import build as report_build
from boundcheck.outputs.report import latexmk_available, write_report

ROOT = Path(__file__).parents[1]


@functools.cache
def _new_runs():
    """A report unlike the old one: other runs, fewer figures (some old ones go stale)."""
    return [matrix_results(40 + i, name=f"other @ step {s}", step=s, sweep={"lr": 0.3},
                           spectrum=True) for i, s in enumerate((50, 150))]


def _report_files(folder: Path, stem: str) -> dict[str, str]:
    out = {}
    for suffix in (".tex", "-fragment.tex", ".md"):
        f = folder / f"{stem}{suffix}"
        out[suffix] = f.read_text() if f.exists() else None
    return out


def assert_whole(folder: Path, stem: str, versions: list[dict[str, str]]) -> str:
    """Every file of the report in ``folder`` is whole and one of ``versions`` (the companions
    are renamed into place, one by one, just before the ``.tex``); every figure the ``.tex``
    and fragment name exists and is readable. Returns the version of the ``.tex``."""
    from PIL import Image

    now = _report_files(folder, stem)
    tex = now[".tex"]
    assert tex, "the .tex is missing or empty"
    assert tex.rstrip().endswith(r"\end{document}"), "the .tex is truncated"
    which = [i for i, v in enumerate(versions) if v[".tex"] == tex]
    assert which, "the .tex is neither the old nor the new report"
    figures = folder / f"{stem}-figures"
    for suffix in (".tex", "-fragment.tex"):
        for name in re.findall(r"\\boundcheckfigdir ([^}]+)\}", now[suffix]):
            pdf = figures / name
            assert pdf.is_file(), f"{stem}{suffix} names the missing figure {pdf.name}"
            blob = pdf.read_bytes()
            assert blob.startswith(b"%PDF") and b"%%EOF" in blob[-64:], f"{pdf.name} is torn"
    for suffix in ("-fragment.tex", ".md"):  # each whole; renamed one by one before the .tex
        assert now[suffix] in (v[suffix] for v in versions), f"{stem}{suffix} is torn"
    for name in re.findall(r"\]\([^)]*?([^/)]+\.png)\)", now[".md"]):
        with Image.open(figures / name) as im:
            im.load()
    pdf = folder / f"{stem}.pdf"
    if pdf.exists():
        blob = pdf.read_bytes()
        assert blob.startswith(b"%PDF") and b"%%EOF" in blob[-64:], "the PDF is torn"
    return ["old", "new"][which[0]]


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory):
    """The old report (the sweep's) and the new one, each written whole once."""
    base = tmp_path_factory.mktemp("reports")
    write_report(sweep_runs(), base / "old" / "rep.tex", pdf=False, log=lambda _m: None)
    write_report(_new_runs(), base / "new" / "rep.tex", pdf=False, log=lambda _m: None)
    versions = [_report_files(base / d, "rep") for d in ("old", "new")]
    assert versions[0][".tex"] != versions[1][".tex"]
    return base, versions


@pytest.mark.slow
def test_a_crash_between_any_two_renames_leaves_a_whole_report(old_and_new, tmp_path,
                                                               monkeypatch):
    """Every state the swap passes through: a crash after the k-th rename, for every k."""
    base, versions = old_and_new
    built = tmp_path / "built"
    pdf_built = report_build._build(_new_runs(), built / "rep.tex", pdf=False, markdown=True,
                                    figures=True, pairs=None, log=lambda _m: None)[1]
    real_replace, real_rename = os.replace, os.rename
    seen = []
    for k in range(60):
        trial = tmp_path / f"t{k}"
        shutil.copytree(base / "old", trial)
        shutil.copytree(built, trial / ".stage")
        count = [0]

        def counting(op, count=count, k=k):
            def wrapped(src, dst, *a, **kw):
                if count[0] == k:
                    raise KeyboardInterrupt("simulated kill")
                count[0] += 1
                return op(src, dst, *a, **kw)
            return wrapped

        monkeypatch.setattr(report_build.os, "replace", counting(real_replace))
        monkeypatch.setattr(report_build.os, "rename", counting(real_rename))
        try:
            report_build._swap_in(trial / ".stage", trial / "rep.tex", pdf_built=pdf_built)
            finished = True
        except KeyboardInterrupt:
            finished = False
        finally:
            monkeypatch.setattr(report_build.os, "replace", real_replace)
            monkeypatch.setattr(report_build.os, "rename", real_rename)
        seen.append(assert_whole(trial, "rep", versions))
        if finished:
            break
    print(f"states after each rename: {seen}")
    assert finished and seen[0] == "old" and seen[-1] == "new" and len(seen) > 5
    assert "old" not in seen[seen.index("new"):]  # once the new .tex is in place it stays
    stale = set(os.listdir(trial / "rep-figures")) - set(os.listdir(base / "new" / "rep-figures"))
    assert not stale, f"figures of the old report left behind: {stale}"
    # and the whole path, staging included
    write_report(_new_runs(), tmp_path / "t0" / "rep.tex", pdf=False, log=lambda _m: None)
    assert assert_whole(tmp_path / "t0", "rep", versions) == "new"
    assert _report_files(tmp_path / "t0", "rep") == versions[1]
    assert not list((tmp_path / "t0").glob(".rep.report-*"))


def test_abandoned_staging_folders_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    leftover = tmp_path / f".rep.report-{dead.stdout.strip()}-abc"
    (leftover / "rep-figures").mkdir(parents=True)
    alive = tmp_path / f".rep.report-{os.getpid()}-xyz"
    alive.mkdir()
    write_report([matrix_results()], tmp_path / "rep.tex", pdf=False, log=lambda _m: None)
    assert not leftover.exists() and alive.exists()


def _kill_trials(base: Path, versions, tmp_path: Path, kills: int, pdf: bool, seed: int):
    """Run ``boundcheck report`` over the old report and SIGKILL it at random times."""
    sources = tmp_path / "new-results"
    for i, res in enumerate(_new_runs()):
        res.save(sources / f"run{i}" / "results.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def command(out: Path):
        return [sys.executable, "-m", "boundcheck.cli", "report", str(sources), "-o",
                str(out / "rep.tex"), *(["--pdf"] if pdf else [])]

    ref = tmp_path / "ref"
    shutil.copytree(base / "old", ref)
    start = time.perf_counter()
    subprocess.run(command(ref), env=env, check=True, capture_output=True, timeout=300)
    duration = time.perf_counter() - start
    assert assert_whole(ref, "rep", versions) == "new"
    rng = random.Random(seed)
    outcomes = []
    for k in range(kills):
        trial = tmp_path / f"kill{k}"
        shutil.copytree(base / "old", trial)
        proc = subprocess.Popen(command(trial), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcomes.append(assert_whole(trial, "rep", versions))
    # the next writer finishes the job and clears what the killed one left
    last = tmp_path / f"kill{kills - 1}"
    subprocess.run(command(last), env=env, check=True, capture_output=True, timeout=300)
    assert assert_whole(last, "rep", versions) == "new"
    assert not list(last.glob(".rep.report-*"))
    return outcomes


@pytest.mark.slow
def test_sigkilled_report_command_leaves_the_old_or_the_new_report(old_and_new, tmp_path):
    base, versions = old_and_new
    outcomes = _kill_trials(base, versions, tmp_path, kills=6, pdf=False, seed=0)
    print(f"outcomes of 6 kills: {outcomes}")
    assert len(outcomes) == 6


@pytest.mark.slow
@pytest.mark.skipif(not latexmk_available(), reason="latexmk/pdflatex not installed")
def test_sigkilled_report_with_pdf_many_times(old_and_new, tmp_path):
    base, versions = old_and_new
    with_pdf = tmp_path / "base"
    shutil.copytree(base / "old", with_pdf / "old")
    write_report(sweep_runs(), with_pdf / "old" / "rep.tex", pdf=True, log=lambda _m: None)
    assert (with_pdf / "old" / "rep.pdf").exists()
    versions = [_report_files(with_pdf / "old", "rep"), versions[1]]
    outcomes = _kill_trials(with_pdf, versions, tmp_path / "trials", kills=10, pdf=True, seed=1)
    print(f"outcomes of 10 kills: {outcomes}")
    assert len(outcomes) == 10
