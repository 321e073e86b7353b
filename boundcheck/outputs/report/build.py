"""Writing a report's files: ``NAME.tex`` (standalone), ``NAME-fragment.tex`` (for
``\\input``), ``NAME.md`` (Markdown summary), ``NAME-figures/`` (PDF and PNG) and, when latexmk
is installed, ``NAME.pdf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from boundcheck.outputs.report.document import Report
from boundcheck.outputs.report.latex import render_latex
from boundcheck.outputs.report.markdown import render_markdown
from boundcheck.outputs.report.pdf import PdfBuildError, build_pdf, latexmk_available
from boundcheck.verification.results import Results

__all__ = ["Report", "write_report"]


def write_report(runs: Sequence[Results], path: str | Path, *, pdf: bool = True,
                 markdown: bool = True, figures: bool = True,
                 pairs: Sequence[tuple[str, str]] | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Write the report files next to ``path`` (a ``.tex``); build the PDF if possible."""
    path = Path(path)
    if path.suffix != ".tex":
        raise ValueError(f"the report path must end in .tex, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    report = Report.from_results(
        runs, figures_out=path.with_name(path.stem + "-figures") if figures else None,
        relative_to=path.parent, pairs=pairs)
    path.write_text(render_latex(report, standalone=True), encoding="utf-8")
    fragment = path.with_name(path.stem + "-fragment.tex")
    fragment.write_text(render_latex(report, standalone=False), encoding="utf-8")
    log(f"wrote {path} (and {fragment.name}"
        + (f", {len(report.figures)} figure(s) in {report.figure_dir}" if report.figures else "")
        + ")")
    if markdown:
        md = path.with_suffix(".md")
        md.write_text(render_markdown(report), encoding="utf-8")
        log(f"wrote {md}")
    if pdf:
        if latexmk_available():
            try:
                log(f"wrote {build_pdf(path)}")
            except PdfBuildError as err:
                log(f"PDF build failed (the .tex is kept): {err}")
        else:
            log("latexmk not found: skipped the PDF (the .tex is complete)")
    return path
