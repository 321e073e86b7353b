"""The report as data: its runs, theorem entries, figures and correlations, assembled from
results (the LaTeX and Markdown views render a :class:`Report`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from boundcheck.outputs.report.figures import (
    Correlation,
    Figure,
    correlation,
    default_pairs,
    make_figures,
    series_correlations,
)
from boundcheck.outputs.report.model import (
    Run,
    TheoremEntry,
    make_runs,
    theorem_entries,
    verdict_totals,
)
from boundcheck.verification.results import Results

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
            figures = make_figures(runs, entries, out, pairs=pairs)
            base = Path(relative_to) if relative_to is not None else out.parent
            figure_dir = Path(_relative(out, base)).as_posix() + "/"
        chosen = list(pairs) if pairs is not None else default_pairs(runs)
        correlations = []
        for x, y in chosen:  # pooled over all runs, then within each trajectory (T11a)
            pooled = correlation(runs, x, y)
            if pooled is not None:
                correlations += [pooled, *series_correlations(runs, x, y)]
        return cls(runs, entries, figures, correlations, figure_dir)


def _relative(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), base.resolve())

