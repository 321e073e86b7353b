"""Reports: LaTeX (standalone and an ``\\input``-able fragment), PDF when TeX is present."""

from .latex import render_latex, write_report
from .pdf import build_pdf, latexmk_available

__all__ = ["build_pdf", "latexmk_available", "render_latex", "write_report"]
