"""The command line end to end: run (default and from a config), theorems, report."""

import json
import subprocess
import sys

import pytest

from boundcheck.cli import main
from boundcheck.outputs.report import latexmk_available
from boundcheck.verification.results import Results

SMALL = """
name = "tiny"
theorems = ["hessian.ws"]
[subject]
dataset = "digits"
n_samples = 200
hidden = [6]
[recipe]
steps = 150
lr = 0.5
momentum = 0.9
"""


def test_theorems_lists_t1(capsys):
    assert main(["theorems"]) == 0
    out = capsys.readouterr().out
    assert "hessian.ws_lambda_max" in out and "Wolkowicz" in out
    assert main(["theorems", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert any(t["id"] == "hessian.ws_lambda_min" for t in listed)


@pytest.mark.slow
def test_run_from_config_and_report(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "-o", str(out), "--no-pdf", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "hessian.ws_lambda_max" in printed and "HOLDS" in printed
    res = Results.load(out / "results.json")
    assert res["hessian.ws_lambda_max"].verdict.value == "HOLDS"
    assert res.provenance["config_hash"] and res.provenance["versions"]["torch"]
    assert res.subject["num_samples"] == 200
    tex = (out / "report.tex").read_text()
    assert r"\begin{document}" in tex and r"\lambda_{\max} \le m + s \sqrt{N - 1}" in tex
    assert main(["report", str(out / "results.json"), "-o", str(tmp_path / "r.tex")]) == 0
    assert (tmp_path / "r.tex").exists()


def test_unknown_theorem_exits_with_message(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(SMALL)
    code = main(["run", str(cfg), "-o", str(tmp_path / "o"), "--no-pdf", "-q",
                 "--theorems", "hessian.nope"])
    assert code == 2
    assert "unknown theorem id 'hessian.nope'" in capsys.readouterr().err


def test_bad_config_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[subject]\nwidth = 3\n")
    assert main(["run", str(cfg), "--no-pdf", "-q"]) == 2
    assert "unknown [subject] keys ['width']" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not latexmk_available(), reason="latexmk not installed")
def test_default_run_builds_pdf(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "boundcheck.cli", "run", "-o",
                           str(tmp_path), "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.pdf").stat().st_size > 1000
    res = Results.load(tmp_path / "results.json")
    assert res.training["final_loss"] < 1e-2
    assert res["hessian.ws_lambda_max"].verdict.value == "HOLDS"


def test_experiment_config_dispatches_to_the_experiment(tmp_path, monkeypatch, capsys):
    from boundcheck.harness.experiments import compression

    calls = []
    monkeypatch.setattr(compression, "run_experiment",
                        lambda cfg, out, **kw: calls.append((cfg.experiment, out, kw)) or tmp_path)
    cfg = tmp_path / "exp.toml"
    cfg.write_text('experiment = "compression"\n' + SMALL.replace('name = "tiny"', ""))
    assert main(["run", str(cfg), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert calls and calls[0][0] == "compression" and calls[0][1] == tmp_path / "o"
    assert "experiment output" in capsys.readouterr().out
    cfg.write_text('experiment = "nope"\n')
    assert main(["run", str(cfg), "-q"]) == 2
