"""Assembling a report from results and writing its files: ``NAME.tex`` (standalone),
``NAME-fragment.tex`` (for ``\\input``), ``NAME.md`` (Markdown summary), ``NAME-figures/``
(PDF and PNG) and, when latexmk is installed, ``NAME.pdf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..results import Results
from .figures import Correlation, Figure, correlation, default_pairs, make_figures
from .model import Run, TheoremEntry, make_runs, theorem_entries, verdict_totals

FIGURE_PREFIXES = ("spectrum-", "slack-sweep-", "slack-steps-", "scatter-")


@dataclass
class Report:
    """Runs, theorems and figures of one report; the LaTeX and Markdown views render it."""

    runs: list[Run]
    entries: list[TheoremEntry]
    figures: list[Figure] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    figure_dir: str = ""  # the figures' folder relative to the report file, ending in "/"

    @property
    def totals(self) -> dict[str, int]:
        return verdict_totals(self.runs)

    @property
    def title(self) -> str:
        names = list(dict.fromkeys(run.name for run in self.runs))
        if len(self.runs) == 1:
            return f"Slack report: {self.runs[0].label}"
        if len(names) == 1:
            return f"Slack report: {names[0]}, {len(self.runs)} runs"
        return f"Slack report: {len(self.runs)} runs"

    @classmethod
    def from_results(cls, results: Sequence[Results], *, figures_out: str | Path | None = None,
                     relative_to: str | Path | None = None,
                     pairs: Sequence[tuple[str, str]] | None = None) -> Report:
        """Group results into a report; draw figures into ``figures_out`` when given."""
        if not results:
            raise ValueError("a report needs at least one results file")
        runs = make_runs(results)
        entries = theorem_entries(runs)
        figures: list[Figure] = []
        figure_dir = ""
        if figures_out is not None:
            out = Path(figures_out)
            _remove_old_figures(out)
            figures = make_figures(runs, entries, out, pairs=pairs)
            base = Path(relative_to) if relative_to is not None else out.parent
            figure_dir = Path(_relative(out, base)).as_posix() + "/"
        chosen = list(pairs) if pairs is not None else default_pairs(runs)
        correlations = [c for x, y in chosen if (c := correlation(runs, x, y)) is not None]
        return cls(runs, entries, figures, correlations, figure_dir)


def _relative(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), base.resolve())


def _remove_old_figures(folder: Path) -> None:
    """Remove figures an earlier report wrote here, so none is left stale."""
    if not folder.is_dir():
        return
    for f in folder.iterdir():
        if f.is_file() and f.name.startswith(FIGURE_PREFIXES) and f.suffix in (".pdf", ".png"):
            f.unlink()


def write_report(runs: Sequence[Results], path: str | Path, *, pdf: bool = True,
                 markdown: bool = True, figures: bool = True,
                 pairs: Sequence[tuple[str, str]] | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Write the report files next to ``path`` (a ``.tex``); build the PDF if possible."""
    from .latex import render_latex
    from .markdown import render_markdown
    from .pdf import PdfBuildError, build_pdf, latexmk_available

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
