"""Reports: number formatting, prose-with-math titles, LaTeX (without TeX), Markdown, figures,
correlations, loading results/sweep stores, and the PDF when latexmk is installed."""

import math
import re
import shutil
import subprocess
from decimal import Decimal

import jinja2
import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import boundcheck as bc
from boundcheck.cli import main
from boundcheck.harness.store import job_records
from boundcheck.outputs.report import (
    Report,
    latexmk_available,
    load_runs,
    numbers,
    render_latex,
    write_report,
)
from boundcheck.outputs.report.figures import correlation
from boundcheck.outputs.report.latex import _environment, identifier
from boundcheck.outputs.report.markdown import render_markdown
from boundcheck.outputs.report.model import make_runs
from boundcheck.outputs.report.text import heading, latex_escape, latex_text, mathtext
from derivations import wolkowicz_styan as ws

needs_tex = pytest.mark.skipif(not latexmk_available(), reason="latexmk/pdflatex not installed")


def matrix_results(seed=0, n=12, name="matrix", step=None, sweep=None, spectrum=False,
                   measurements=None, theorems="hessian.ws"):
    """T1 verified on a random symmetric matrix: real results in milliseconds."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    a = a + a.T + (seed % 5) * np.eye(n)
    res = bc.verify(bc.MatrixSubject(a, name=name), theorems)
    if step is not None:
        res.training = {"step": step, "steps": step, "final_loss": 1.0 / step,
                        "recipe": {"optimizer": "gd"}}
    res.extras = {}
    if sweep:
        res.extras["sweep"] = sweep
    if spectrum:
        res.extras["hessian_spectrum"] = np.linalg.eigvalsh(a).tolist()
    if measurements:
        res.extras["measurements"] = measurements
    return res


# -- numbers ----------------------------------------------------------------------------------
def _parse_latex_number(text: str) -> Decimal:
    text = text.strip()
    if text in (r"\infty", r"-\infty"):
        return Decimal("Infinity") if text[0] != "-" else Decimal("-Infinity")
    m = re.fullmatch(r"(-?[0-9.]+)(?:\\times10\^\{(-?\d+)\})?", text)
    assert m, text
    return Decimal(m.group(1)).scaleb(int(m.group(2) or 0))


def _parse_enclosure(text: str) -> tuple[Decimal, Decimal]:
    m = re.fullmatch(r"\[(.+?),\\,(.+?)\](?:\\times10\^\{(-?\d+)\})?", text)
    if not m:
        v = _parse_latex_number(text)
        return v, v
    exp = int(m.group(3) or 0)
    return (_parse_latex_number(m.group(1)).scaleb(exp),
            _parse_latex_number(m.group(2)).scaleb(exp))


finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=300)
@given(a=finite, b=finite, rel=st.floats(0, 1e-2))
def test_printed_interval_contains_the_enclosure(a, b, rel):
    lo, hi = min(a, b), max(a, b)
    if rel:  # also narrow intervals, the common case
        hi = lo + abs(lo) * rel
    est = {"value": lo, "lower": lo, "upper": hi}
    shown_lo, shown_hi = _parse_enclosure(numbers.enclosure(est))
    if numbers.is_point(est):
        # one number: within half a unit of its last digit of both ends
        assert abs(shown_lo - Decimal(lo)) <= abs(Decimal(hi) - Decimal(lo)) + \
            Decimal(abs(lo)) * Decimal("1e-4")
    else:
        assert shown_lo <= Decimal(lo) and Decimal(hi) <= shown_hi


def test_enclosure_examples():
    assert numbers.enclosure({"value": 0.0137471300991, "lower": 0.01374713009902585,
                              "upper": 0.013747130099254986}) == "0.013747"
    assert numbers.enclosure({"value": 1.95e-4, "lower": 1.9491e-4, "upper": 1.9512e-4}) == \
        r"[1.949,\,1.952]\times10^{-4}"
    assert numbers.enclosure({"value": 2410.0, "lower": 2410.0, "upper": 2410.0}) == "2410"
    assert numbers.enclosure({"value": -1.0, "lower": "-inf", "upper": 2.0}) == \
        r"[-\infty,\,2.000]"
    assert numbers.enclosure(None) == r"\text{--}"
    assert numbers.enclosure({"value": -2.82e-4, "lower": -2.8295e-4, "upper": -2.8105e-4},
                             "text") == "[−2.830, −2.810]×10⁻⁴"


def test_slack_and_number_styles():
    assert numbers.slack({"kind": "ratio", "value": 2.5345}) == r"\times2.53"
    assert numbers.slack({"kind": "difference", "value": 0.02098}) == "+0.0210"
    assert numbers.slack({"kind": "difference", "value": -3e-7}, "text") == "−3.00×10⁻⁷"
    assert numbers.slack({"kind": "difference", "value": math.inf}) == r"+\infty"
    assert numbers.number(123456.0) == r"1.2346\times10^{5}"
    assert numbers.number(float("nan")) == r"\text{--}"


# -- prose with math --------------------------------------------------------------------------
def test_titles_render_math_not_escaped_underscores():
    assert latex_text("Wolkowicz–Styan upper bound on λ_max") == \
        r"Wolkowicz--Styan upper bound on $\lambda_{\max}$"
    assert latex_text("‖J_x‖_F ≤ κ·s²") == r"$\|J_{x}\|_{F} \le \kappa \cdot s^{2}$"
    assert latex_text("N >= 2") == r"$N \ge 2$"
    assert latex_text("MLS_l of layer l") == r"$\mathrm{MLS}_{l}$ of layer l"
    assert latex_text("see `hessian.ws_lambda_max`") == r"see \texttt{hessian.ws\_lambda\_max}"
    assert latex_text("50% & $5 #1 a_b_c") == r"50\% \& \$5 \#1 a\_b\_c"
    assert mathtext("bound on λ_min") == r"bound on $\lambda_{\min}$"
    assert heading("on λ_max").startswith(r"\texorpdfstring{on $\lambda_{\max}$}{on λ max}")


@settings(max_examples=300)
@given(st.text())
def test_any_text_becomes_typesettable_latex(text):
    out = latex_text(text)
    # only characters pdfLaTeX's T1 fonts have (everything else is mapped or replaced)
    assert all(ord(c) <= 0x17F for c in out)
    # math shifts balance (a literal $ is escaped)
    assert len(re.findall(r"(?<!\\)\$", out)) % 2 == 0
    assert all(ord(c) <= 0x17F for c in latex_escape(text))


# -- LaTeX without TeX -------------------------------------------------------------------------
def test_standalone_latex_for_one_run():
    tex = render_latex([matrix_results()])
    assert tex.startswith(r"\documentclass")
    assert r"\end{document}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert r"Wolkowicz--Styan upper bound on $\lambda_{\max}$" in tex  # math, no \_max
    assert r"\lambda\_max" not in tex
    assert identifier("hessian.ws_lambda_max") in tex
    assert identifier("a.b_c") == r"\texttt{a.\allowbreak{}b\_\allowbreak{}c}"
    assert ws.LAMBDA_MAX_UPPER.latex() in tex  # the sympy-rendered statement
    assert r"\textsc{holds}" in tex
    assert "Wolkowicz and G. P. H. Styan" in tex  # source
    assert r"$N \ge 2$" in tex  # precondition
    assert r"\section{Provenance}" in tex and "sympy" in tex
    for leftover in ("(((", ")))", "((*"):
        assert leftover not in tex
    assert not re.search(r"\b(None|nan|inf)\b", tex)


def test_templates_fail_loudly_on_missing_fields():
    with pytest.raises(jinja2.UndefinedError):
        _environment().from_string("((( run.missing_field )))").render(run={})


@pytest.mark.slow
def test_fragment_is_tables_and_figures_only(sweep_report):
    frag = render_latex(sweep_report, standalone=False)
    assert r"\documentclass" not in frag and r"\section" not in frag
    assert r"\providecommand{\boundcheckfigdir}{f/}" in frag
    assert r"\begin{table}" in frag and r"\label{tab:boundcheck-summary}" in frag
    assert r"\includegraphics" in frag


def test_long_tables_break_across_pages():
    runs = [matrix_results(s, name=f"subject-{s}") for s in range(30)]
    tex = render_latex(runs)
    assert r"\begin{longtable}" in tex and r"\endhead" in tex


# -- runs, figures, Markdown ------------------------------------------------------------------
def sweep_runs():
    """Two series (lr) at three checkpoints, with spectra and a compression measurement."""
    out = []
    for i, lr in enumerate((0.1, 0.5)):
        for j, step in enumerate((100, 200, 400)):
            res = matrix_results(10 * i + j, name=f"net @ step {step}", step=step,
                                 sweep={"lr": lr}, spectrum=True)
            lam = res.results[0].quantities["hessian.lambda_max"].value
            res.extras["measurements"] = {"compression.mls": 0.5 * lam + j}
            out.append(res)
    return out


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    """The sweep's report with its figures, drawn once for the tests that read them."""
    folder = tmp_path_factory.mktemp("sweep")
    return Report.from_results(sweep_runs(), figures_out=folder / "f", relative_to=folder)


def test_runs_form_series_by_sweep_point_and_step():
    runs = make_runs(sweep_runs())
    assert {r.series for r in runs} == {"lr=0.1", "lr=0.5"}
    assert runs[0].label == "lr=0.1 @ step 100"
    assert len({r.label for r in runs}) == len(runs)


def test_sweep_axes_and_labels_for_a_grid_of_models():
    from boundcheck.outputs.report.figures import _sweep_axes

    grid = []
    for model in ("mlp", "cnn"):
        for lr in (0.01, 0.1, 0.3):
            for bs in (8, 64):
                sweep = {"recipe.lr": lr, "recipe.batch_size": bs, "subject.model": model}
                if model == "cnn":
                    sweep["subject.channels"] = 4  # set only where it applies
                grid.append(matrix_results(len(grid), name=f"lr={lr},bs={bs},model={model}",
                                           sweep=sweep))
    runs = make_runs(grid)
    assert _sweep_axes(runs) == ("recipe.lr", "subject.model")
    assert runs[0].series == "batch_size=8, lr=0.01, model=mlp"  # varying values, short keys
    assert runs[-1].series == "batch_size=64, lr=0.3, channels=4, model=cnn"
    tex = render_latex(grid)
    assert r"batch\_\allowbreak{}size=8,\allowbreak{} lr=0.01" in tex  # labels can break


def test_figures_for_sweeps_steps_spectra_and_scatter(sweep_report):
    report = sweep_report
    names = {f.name for f in report.figures}
    assert "slack-sweep-hessian-ws" in names
    assert "slack-steps-hessian-ws" in names
    assert "scatter-sharpness-compression" in names
    assert any(n.startswith("spectrum-") for n in names)
    for fig in report.figures:
        for fmt in ("pdf", "png"):
            assert fig.files[fmt].stat().st_size > 1000
    assert report.figures[0].files["pdf"].read_bytes().startswith(b"%PDF")


def test_single_run_has_only_the_eigenvalue_figure(tmp_path):
    report = Report.from_results([matrix_results()], figures_out=tmp_path)
    assert [f.name for f in report.figures] == ["spectrum-matrix"]
    assert report.correlations == []


def test_correlations_match_scipy():
    results = sweep_runs()
    runs = make_runs(results)
    c = correlation(runs, "hessian.lambda_max", "compression.mls")
    x = [r.results[0].quantities["hessian.lambda_max"].value for r in results]
    y = [r.extras["measurements"]["compression.mls"] for r in results]
    assert c.n == 6
    assert c.pearson == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert c.spearman == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    report = Report.from_results(results)
    pooled, *per_series = report.correlations  # then within each trajectory (T11a)
    assert (pooled.x, pooled.y) == ("hessian.lambda_max", "compression.mls")
    series = sorted({r.series for r in runs})
    assert [k.y for k in per_series] == [f"compression.mls [{s}]" for s in series]
    for k, s in zip(per_series, series, strict=True):
        mine = [r for r in runs if r.series == s]
        assert k.n == len(mine)
        assert k.spearman == pytest.approx(correlation(mine, "hessian.lambda_max",
                                                       "compression.mls").spearman)
    assert report.figures == []  # no figures folder given: no figures


def test_markdown_summary(sweep_report):
    one = render_markdown(Report.from_results([matrix_results()]))
    assert one.startswith("# Slack report: matrix")
    assert "| `hessian.ws_lambda_max` | Wolkowicz–Styan upper bound on λ_max | ✅ HOLDS |" in one
    many = render_markdown(sweep_report)
    assert "| theorem | title | holds | violated | inconclusive | n/a |" in many
    assert "![slack-sweep-hessian-ws](f/slack-sweep-hessian-ws.png)" in many
    assert "## Correlations" in many and "Spearman ρ" in many


def test_planted_violation_is_listed_with_its_reason():
    planted = bc.Theorem(
        id="planted.report_tight", title="too tight", lhs=ws.lam_max,
        rhs=ws.m + ws.s / sympy.sqrt(ws.N - 1), source="planted",
        symbols={k: v for k, v in ws.SYMBOLS.items() if k in (ws.lam_max, ws.m, ws.s, ws.N)},
        slack="difference")
    res = matrix_results(theorems=[planted])
    md = render_markdown(Report.from_results([res]))
    assert "## Violated or inconclusive" in md and "❌ VIOLATED — lhs exceeds rhs" in md
    tex = render_latex([res])
    assert r"\textbf{\textsc{violated}}" in tex


# -- loading ----------------------------------------------------------------------------------
def test_load_runs_from_files_folders_checkpoints_and_stores(tmp_path):
    a, b = matrix_results(1, step=10), matrix_results(2, step=20)
    a.save(tmp_path / "run" / "checkpoints" / "step-10.json")
    b.save(tmp_path / "run" / "checkpoints" / "step-20.json")
    b.save(tmp_path / "run" / "results.json")  # repeats the last checkpoint
    assert [r.training["step"] for r in load_runs([tmp_path / "run"])] == [10, 20]
    assert len(load_runs([tmp_path / "run" / "results.json"])) == 1
    store = tmp_path / "sweep" / "records.jsonl"
    store.parent.mkdir()
    import json

    records = job_records(sweep="s", job="j0", job_id="abc", params={"recipe.lr": 0.1},
                          config={}, runs=[a, b], timing={})
    store.write_text("".join(json.dumps(r) + "\n" for r in records))
    from_store = load_runs([tmp_path / "sweep"])
    assert [r.training["step"] for r in from_store] == [10, 20]
    assert from_store[0].extras["sweep"] == {"recipe.lr": 0.1}
    assert from_store[0].verdicts == a.verdicts
    with pytest.raises(FileNotFoundError):
        load_runs([tmp_path / "nothing-here.json"])


def test_report_command_writes_tex_fragment_markdown(tmp_path):
    matrix_results().save(tmp_path / "results.json")
    out = tmp_path / "reports" / "demo.tex"
    assert main(["report", str(tmp_path / "results.json"), "-o", str(out), "--no-figures"]) == 0
    assert out.exists() and (tmp_path / "reports" / "demo-fragment.tex").exists()
    assert (tmp_path / "reports" / "demo.md").read_text().startswith("# Slack report")
    assert not (tmp_path / "reports" / "demo-figures").exists()
    assert main(["report", str(tmp_path / "results.json"), "-o", str(tmp_path / "x.pdf")]) == 2


def test_report_command_correlates_chosen_quantities(tmp_path):
    for i, res in enumerate(sweep_runs()):
        res.save(tmp_path / "sweep" / f"run{i}" / "results.json")
    out = tmp_path / "r" / "sweep.tex"
    assert main(["report", str(tmp_path / "sweep"), "-o", str(out), "--no-figures",
                 "--correlate", "hessian.eigenvalue_mean:compression.mls"]) == 0
    md = out.with_suffix(".md").read_text()
    assert "| `hessian.eigenvalue_mean` | `compression.mls` | 6 |" in md
    assert "hessian.lambda_max" not in md.split("## Correlations")[1].split("<details>")[0]
    assert main(["report", str(tmp_path / "sweep"), "-o", str(out), "--correlate", "x"]) == 2


# -- PDF (when TeX is installed) ---------------------------------------------------------------
def _overfull_boxes(tex_path) -> list[str]:
    """Compile with pdflatex in place and return the overfull-box warnings of the log."""
    for _ in range(2):
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               tex_path.name], cwd=tex_path.parent, capture_output=True,
                              text=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:]
    log = tex_path.with_suffix(".log").read_text(errors="replace")
    return re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)


@pytest.mark.slow
@needs_tex
def test_pdf_builds_and_tables_fit_the_page(tmp_path):
    weird = bc.Theorem(
        id="user.odd_title", title="A bound with 50% & #odd_chars, ‖x‖_2 ≤ √N and a ★",
        lhs=ws.lam_max, rhs=ws.m + ws.s * sympy.sqrt(ws.N - 1), source="me & co_author",
        symbols={k: v for k, v in ws.SYMBOLS.items() if k in (ws.lam_max, ws.m, ws.s, ws.N)},
        slack="difference")
    single = matrix_results(theorems=["hessian.ws", weird])
    path = write_report([single], tmp_path / "one" / "report.tex", log=lambda _m: None)
    assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert _overfull_boxes(path) == []
    many = write_report(sweep_runs() + [matrix_results(s, name=f"a-rather-long-subject-name-{s}")
                                        for s in range(25)],
                        tmp_path / "many" / "report.tex", pdf=False, log=lambda _m: None)
    assert _overfull_boxes(many) == []


@needs_tex
def test_every_registered_title_typesets(tmp_path):
    titles = [t.title for t in bc.theorems()] + [
        "‖∇_{W_l} f‖_F / ‖h_{l−1}‖ ≤ κ^G_Tr(W_l)", "a: x_a_b ≤ y at 50% & $1", "ε = max_i(1 − p)"]
    body = "\n".join(rf"\section{{{heading(t)}}}{latex_text(t)}\par" for t in titles)
    doc = tmp_path / "titles.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{lmodern,"
                   "amsmath,amssymb}\n\\usepackage{hyperref}\n\\begin{document}\n" + body
                   + "\n\\end{document}\n")
    _overfull_boxes(doc)  # compiles without error (long formulas may run into the margin)
    from matplotlib.mathtext import MathTextParser

    from boundcheck.outputs.report.figures import mpl_label

    for t in titles:
        MathTextParser("path").parse(mpl_label(t))


@pytest.mark.slow
@needs_tex
def test_fragment_compiles_inside_a_paper(tmp_path):
    write_report(sweep_runs(), tmp_path / "bc" / "sweep.tex", pdf=False, log=lambda _m: None)
    paper = tmp_path / "paper.tex"
    paper.write_text("\\documentclass{article}\n\\usepackage{amsmath,array,booktabs,graphicx,"
                     "longtable}\n\\newcommand{\\boundcheckfigdir}{bc/sweep-figures/}\n"
                     "\\begin{document}\n\\input{bc/sweep-fragment.tex}\n\\end{document}\n")
    assert _overfull_boxes(paper) == []
    assert shutil.which("pdfinfo") is None or "Pages:" in subprocess.run(
        ["pdfinfo", str(paper.with_suffix(".pdf"))], capture_output=True, text=True).stdout
