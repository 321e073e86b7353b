"""Every registered theorem's LaTeX typesets to what its statement says, and the terminal
shows readable Unicode math (boundcheck.core.typeset)."""

import shutil
import subprocess

import pytest
import sympy

import boundcheck as bc
from boundcheck.core import typeset

pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex")


def compile_latex(body: str, tmp_path, preamble: str = r"\usepackage{amsmath,amssymb}",
                  documentclass: str = "article") -> str:
    """Compile a document; return the log (raises with the log's errors on failure)."""
    src = tmp_path / "doc.tex"
    src.write_text(f"\\documentclass{{{documentclass}}}\n{preamble}\n\\begin{{document}}\n"
                   f"{body}\n\\end{{document}}\n", encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           src.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "doc.log").read_text(encoding="utf-8", errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert proc.returncode == 0 and not errors, "\n".join(errors) or proc.stdout[-2000:]
    return log


@pdflatex
def test_every_registered_theorem_typesets(tmp_path):
    body = "\n".join(f"% {t.id}\n\\[ {t.latex()} \\]" for t in bc.theorems())
    compile_latex(body, tmp_path)


@pytest.mark.parametrize("theorem", bc.theorems(), ids=lambda t: t.id)
def test_latex_symbol_names_appear_as_written(theorem):
    """A symbol named by its LaTeX appears verbatim, never re-read by sympy (which turned
    ``\\|W_1\\|_2`` into ``\\|W_{1\\| 2}``)."""
    text = theorem.latex()
    for sym in theorem.symbols:
        if typeset.is_latex_name(sym.name):
            assert sym.name in text, (sym.name, text)
    assert r"\| 2}" not in text and "_{l r l}" not in text


@pytest.mark.parametrize("theorem_id, latex, uni", [
    ("compression.input_gradient", r"\le \|W_1\|_2", "≤ ‖W_1‖_2"),
    ("compression.nvr_sharpness", r"\sum_l r_l \log", "(Σ_l r_l)·log((tr H)/(c·(1 − τ)))/2"),
    ("hessian.moment_lambda_max_k3", r"\lambda_{\max} \le B_3(N,\mu_1,\mu_2,\mu_3)",
     "λ_max ≤ B_3(N,μ_1,μ_2,μ_3)"),
    ("hessian.ws_lambda_max", r"\lambda_{\max} \le m + s \sqrt{N - 1}",
     "λ_max ≤ m + s·√(N − 1)"),
    # a compound name raised to a power is parenthesised: (tr H)², never tr H² = tr(H²)
    ("hessian.closed_form_ws_lambda_max", r"\left(\operatorname{tr}H_{\mathrm{cf}}\right)^{2}",
     "(tr H_cf)^2/P^2"),
])
def test_expected_strings(theorem_id, latex, uni):
    t = bc.get(theorem_id)
    assert latex in t.latex()
    assert uni in t.unicode()


def test_plain_names_are_typeset_by_sympy():
    lam, x = sympy.symbols("lambda_max x")
    assert typeset.latex(lam + x) == sympy.latex(lam + x)
    assert typeset.unicode(sympy.sqrt(x) * lam) in ("lambda_max·√(x)", "√(x)·lambda_max")


def test_latex_to_unicode():
    assert typeset.latex_to_unicode(r"\overline{\|x\|^{-2}}") == "mean[‖x‖^{-2}]"
    assert typeset.latex_to_unicode(r"\frac{r_l}{2}") == "r_l/2"
    assert typeset.latex_to_unicode(r"\operatorname{tr}H_{\mathrm{cf}}") == "tr H_cf"
    with pytest.raises(ValueError):
        typeset.latex_to_unicode(r"\frac{a")


def test_theorems_command_prints_unicode(capsys):
    from boundcheck.cli import main

    assert main(["theorems"]) == 0
    out = capsys.readouterr().out
    assert "λ_max ≤ m + s·√(N − 1)" in out and "\\" not in out.replace("\\\\", "")
