"""Building a PDF from a LaTeX report with latexmk, when a TeX toolchain is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class PdfBuildError(RuntimeError):
    pass


def latexmk_available() -> bool:
    return shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None


def build_pdf(tex_path: str | Path, timeout: float = 180.0) -> Path:
    """Compile ``tex_path`` with latexmk -pdf in its own folder; returns the PDF's path."""
    tex_path = Path(tex_path).resolve()
    if not latexmk_available():
        raise PdfBuildError("latexmk/pdflatex not found: install a TeX toolchain (Debian: "
                            "texlive-latex-base texlive-latex-recommended texlive-pictures "
                            "lmodern latexmk)")
    cmd = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-quiet",
           tex_path.name]
    proc = subprocess.run(cmd, cwd=tex_path.parent, capture_output=True, text=True,
                          timeout=timeout, check=False)
    pdf = tex_path.with_suffix(".pdf")
    if proc.returncode != 0 or not pdf.exists():
        log = tex_path.with_suffix(".log")
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else proc.stdout[-3000:]
        raise PdfBuildError(f"latexmk failed on {tex_path.name}:\n{tail}")
    subprocess.run(["latexmk", "-c", tex_path.name], cwd=tex_path.parent,
                   capture_output=True, check=False, timeout=60)
    return pdf
