"""LaTeX slack reports from results: statements rendered by sympy, booktabs tables.

Templates use LaTeX-safe Jinja delimiters (``((* block *))``, ``((( variable )))``), an
escaping filter and StrictUndefined; numbers are formatted here, in Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import jinja2

from ..results import Results

_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "\\": r"\textbackslash{}"}
_UNICODE = {"λ": r"$\lambda$", "≤": r"$\le$", "≥": r"$\ge$", "−": "-", "→": r"$\to$",
            "√": r"$\surd$", "σ": r"$\sigma$", "ρ": r"$\rho$", "κ": r"$\kappa$",
            "∞": r"$\infty$", "×": r"$\times$", "–": "--", "—": "---", "’": "'", "²": r"$^2$",
            "‖": r"$\|$", "·": r"$\cdot$", "∈": r"$\in$", "≠": r"$\ne$", "Σ": r"$\Sigma$",
            "η": r"$\eta$", "θ": r"$\theta$", "ε": r"$\varepsilon$", "∇": r"$\nabla$"}


def latex_escape(text: object) -> str:
    out = []
    for ch in str(text):
        out.append(_SPECIAL.get(ch) or _UNICODE.get(ch) or ch)
    return "".join(out)


def fmt_num(x: float | None, digits: int = 4) -> str:
    """A number as LaTeX math content: 1.234, 1.23\\times10^{-5}, \\infty."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return r"\text{--}"
    x = float(x)
    if math.isinf(x):
        return r"\infty" if x > 0 else r"-\infty"
    if x == 0:
        return "0"
    exp = int(math.floor(math.log10(abs(x))))
    if -3 <= exp < 5:
        return f"{x:.{digits}g}"
    mant = x / 10**exp
    return rf"{mant:.{max(digits - 1, 1)}f}\times10^{{{exp}}}"


def fmt_interval(est: dict | None) -> str:
    if not est:
        return r"\text{--}"
    lo, hi = float(est["lower"]), float(est["upper"])
    if lo == hi:
        return fmt_num(lo)
    return rf"[{fmt_num(lo)},\,{fmt_num(hi)}]"


def fmt_slack(slack: dict | None) -> str:
    if not slack:
        return r"\text{--}"
    v = float(slack["value"])
    if slack["kind"] == "ratio":
        return rf"\times{fmt_num(v, 3)}"
    return ("+" if v >= 0 else "") + fmt_num(v, 3)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("boundcheck.report", "templates"),
        block_start_string="((*", block_end_string="*))",
        variable_start_string="(((", variable_end_string=")))",
        comment_start_string="((=", comment_end_string="=))",
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(e=latex_escape, num=fmt_num, interval=fmt_interval, slack=fmt_slack)
    return env


def report_context(runs: Sequence[Results]) -> dict:
    """Group results by theorem across runs, for the templates."""
    theorems: dict[str, dict] = {}
    for run in runs:
        info = getattr(run, "theorem_info", None) or run.to_dict()["theorems"]
        for r in run.results:
            entry = theorems.setdefault(r.theorem_id, {
                "id": r.theorem_id, "info": info.get(r.theorem_id, {}), "rows": []})
            entry["rows"].append({"subject": run.subject.get("name", "subject"),
                                  **r.to_dict()})
    return {"runs": [run.to_dict() for run in runs], "theorems": list(theorems.values())}


def render_latex(runs: Sequence[Results], standalone: bool = True) -> str:
    template = "report.tex.j2" if standalone else "fragment.tex.j2"
    return _environment().get_template(template).render(**report_context(runs))


def write_report(runs: Sequence[Results], path: str | Path, *, pdf: bool = True,
                 log: Callable[[str], None] = print) -> Path:
    """Write the standalone report (and ``<name>-fragment.tex``); build the PDF if possible."""
    from .pdf import PdfBuildError, build_pdf, latexmk_available

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_latex(runs, standalone=True), encoding="utf-8")
    path.with_name(path.stem + "-fragment.tex").write_text(
        render_latex(runs, standalone=False), encoding="utf-8")
    log(f"wrote {path}")
    if pdf:
        if latexmk_available():
            try:
                log(f"wrote {build_pdf(path)}")
            except PdfBuildError as err:
                log(f"PDF build failed (the .tex is kept): {err}")
        else:
            log("latexmk not found: skipped the PDF (the .tex is complete)")
    return path
