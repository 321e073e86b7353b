"""Reports from results: LaTeX (standalone and an ``\\input``-able fragment), Markdown,
figures (PDF and PNG), and a PDF when a TeX toolchain is present."""

from boundcheck.outputs.report.build import Report, write_report
from boundcheck.outputs.report.latex import render_latex
from boundcheck.outputs.report.markdown import render_markdown
from boundcheck.outputs.report.model import load_runs
from boundcheck.outputs.report.pdf import build_pdf, latexmk_available

__all__ = ["Report", "build_pdf", "latexmk_available", "load_runs", "render_latex",
           "render_markdown", "write_report"]
