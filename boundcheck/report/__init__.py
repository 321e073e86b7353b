"""Reports from results: LaTeX (standalone and an ``\\input``-able fragment), Markdown,
figures (PDF and PNG), and a PDF when a TeX toolchain is present."""

from .build import Report, write_report
from .latex import render_latex
from .markdown import render_markdown
from .model import load_runs
from .pdf import build_pdf, latexmk_available

__all__ = ["Report", "build_pdf", "latexmk_available", "load_runs", "render_latex",
           "render_markdown", "write_report"]
