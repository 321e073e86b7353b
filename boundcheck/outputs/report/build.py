"""Writing a report's files: ``NAME.tex`` (standalone), ``NAME-fragment.tex`` (for
``\\input``), ``NAME.md`` (Markdown summary), ``NAME-figures/`` (PDF and PNG) and, when latexmk
is installed, ``NAME.pdf``.

A report is replaced as a whole: every file is built in a temporary folder beside the target
(``.NAME.report-PID-XXXX/``), then moved into place by renames, each atomic. The order keeps
what a reader sees whole at every instant, so a kill (SIGKILL included) leaves the old report
or the new one, never a half-written file or a ``.tex`` pointing at a missing figure:

1. the new figures are renamed into ``NAME-figures/`` (created whole by one rename when it
   does not exist); figures are only added or replaced by complete files, so the old ``.tex``
   and ``.pdf`` still find theirs;
2. ``NAME.md``, ``NAME-fragment.tex``, ``NAME.pdf`` and last ``NAME.tex`` are renamed over
   the old ones;
3. only then are figures the new report does not use removed, and the temporary folder.

A temporary folder left by a killed writer (its process gone) is removed by the next one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from boundcheck.outputs.report.document import FIGURE_PREFIXES, Report
from boundcheck.outputs.report.latex import render_latex
from boundcheck.outputs.report.markdown import render_markdown
from boundcheck.outputs.report.pdf import PdfBuildError, build_pdf, latexmk_available
from boundcheck.verification.results import Results, check_writable_folder, fsync_dir

__all__ = ["Report", "write_report"]


def write_report(runs: Sequence[Results], path: str | Path, *, pdf: bool = True,
                 markdown: bool = True, figures: bool = True,
                 pairs: Sequence[tuple[str, str]] | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Write the report files next to ``path`` (a ``.tex``); build the PDF if possible. The
    old report there is replaced as a whole (see the module docstring)."""
    path = Path(path)
    if path.suffix != ".tex":
        raise ValueError(f"the report path must end in .tex, got {path}")
    check_writable_folder(path.parent)
    _remove_abandoned_builds(path)
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=_stage_prefix(path) + f"{os.getpid()}-"))
    try:
        built = _build(runs, stage / path.name, pdf=pdf, markdown=markdown, figures=figures,
                       pairs=pairs, log=log)
        _swap_in(stage, path, pdf_built=built[1])
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report, pdf_built = built
    names = [p.name for p in _companions(path, markdown, pdf_built)]
    log(f"wrote {path} (and {', '.join(names)}"
        + (f", {len(report.figures)} figure(s) in {report.figure_dir}" if report.figures else "")
        + ")")
    return path


def _build(runs: Sequence[Results], tex: Path, *, pdf: bool, markdown: bool, figures: bool,
           pairs: Sequence[tuple[str, str]] | None,
           log: Callable[[str], None]) -> tuple[Report, bool]:
    """Every file of the report, in the staging folder; returns the report and whether a PDF
    was built."""
    report = Report.from_results(
        runs, figures_out=_figure_dir(tex) if figures else None, relative_to=tex.parent,
        pairs=pairs)
    tex.write_text(render_latex(report, standalone=True), encoding="utf-8")
    _fragment(tex).write_text(render_latex(report, standalone=False), encoding="utf-8")
    if markdown:
        tex.with_suffix(".md").write_text(render_markdown(report), encoding="utf-8")
    pdf_built = False
    if pdf:
        if latexmk_available():
            try:
                build_pdf(tex)
                pdf_built = True
            except PdfBuildError as err:
                log(f"PDF build failed (the .tex is kept): {err}")
        else:
            log("latexmk not found: skipped the PDF (the .tex is complete)")
    for f in [tex, _fragment(tex), tex.with_suffix(".md"), tex.with_suffix(".pdf")]:
        if f.exists():
            _fsync(f)
    return report, pdf_built


def _swap_in(stage: Path, path: Path, *, pdf_built: bool) -> None:
    """Move the staged report over the one at ``path`` in the order of the module docstring."""
    staged_figures = _figure_dir(stage / path.name)
    target_figures = _figure_dir(path)
    new_figures = {f.name for f in staged_figures.iterdir()} if staged_figures.is_dir() else set()
    if staged_figures.is_dir():
        if target_figures.exists() and not target_figures.is_dir():
            raise ValueError(f"{target_figures} is a file: the report's figures go there")
        if not target_figures.exists():
            os.rename(staged_figures, target_figures)
        else:
            for name in sorted(new_figures):
                os.replace(staged_figures / name, target_figures / name)
        fsync_dir(target_figures)
    for final in [*_companions(path, True, pdf_built), path]:  # the .tex last
        staged = stage / final.name
        if staged.exists():
            os.replace(staged, final)
    fsync_dir(path.parent)
    if target_figures.is_dir():  # figures only the old report used
        for f in target_figures.iterdir():
            if f.name not in new_figures and f.is_file() and f.name.startswith(FIGURE_PREFIXES) \
                    and f.suffix in (".pdf", ".png"):
                f.unlink()


def _companions(path: Path, markdown: bool, pdf_built: bool) -> list[Path]:
    """The files written beside the ``.tex``, in the order they are moved into place."""
    out = [path.with_suffix(".md")] if markdown else []
    out.append(_fragment(path))
    if pdf_built:
        out.append(path.with_suffix(".pdf"))
    return out


def _fragment(tex: Path) -> Path:
    return tex.with_name(tex.stem + "-fragment.tex")


def _figure_dir(tex: Path) -> Path:
    return tex.with_name(tex.stem + "-figures")


def _stage_prefix(path: Path) -> str:
    return f".{path.stem}.report-"


def _remove_abandoned_builds(path: Path) -> None:
    """Staging folders of writers that died (their pid is no longer running)."""
    prefix = _stage_prefix(path)
    for d in path.parent.glob(prefix + "*"):
        pid = d.name[len(prefix):].split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())

