"""The report's LaTeX goes into a paper unedited: the fragment fits a one-column article's
\\textwidth and a two-column article's \\columnwidth (tables wrap, long ones continue in
further floats), and the standalone report compiles, all with no Overfull \\hbox over 1 pt."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from boundcheck.outputs.report import load_runs, write_report

needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex")
DEFAULT = Path(__file__).resolve().parents[1] / "reports" / "default-results.json"
PREAMBLE = "\\usepackage{amsmath,array,booktabs,graphicx}\n"


def overfull(tex: Path) -> list[float]:
    """Compile twice with pdflatex; the widths (pt) of every Overfull \\hbox in the log."""
    for _ in range(2):
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               tex.name], cwd=tex.parent, capture_output=True, text=True,
                              timeout=180, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:]
    log = tex.with_suffix(".log").read_text(errors="replace")
    return [float(w) for w in re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)]


def paper(folder: Path, name: str, options: str, fragment: str) -> Path:
    tex = folder / f"{name}.tex"
    tex.write_text(f"\\documentclass[{options}]{{article}}\n{PREAMBLE}"
                   "\\begin{document}\n\\section{Results}\nText before the tables.\n"
                   f"\\input{{{fragment}}}\n\\end{{document}}\n", encoding="utf-8")
    return tex


@pytest.fixture(scope="module")
def default_fragment(tmp_path_factory):
    """The default run's report (tables only: the figures are \\linewidth wide anyway)."""
    folder = tmp_path_factory.mktemp("fit")
    write_report(load_runs([DEFAULT]), folder / "bc" / "default.tex", pdf=False,
                 markdown=False, figures=False, log=lambda _m: None)
    return folder


@needs_tex
@pytest.mark.parametrize("options", ["10pt", "twocolumn,10pt", "twocolumn,11pt,a4paper"])
def test_default_fragment_fits_one_and_two_columns(default_fragment, options):
    tex = paper(default_fragment, re.sub(r"\W", "", options), options,
                "bc/default-fragment.tex")
    assert [w for w in overfull(tex) if w > 1.0] == []


@needs_tex
def test_standalone_default_report_has_no_overfull_box(default_fragment):
    assert [w for w in overfull(default_fragment / "bc" / "default.tex") if w > 1.0] == []


def test_fragment_needs_no_longtable(default_fragment):
    text = (default_fragment / "bc" / "default-fragment.tex").read_text(encoding="utf-8")
    assert r"\begin{longtable}" not in text and "(continued)" in text
    assert text.count(r"\label{tab:boundcheck-summary}") == 1
