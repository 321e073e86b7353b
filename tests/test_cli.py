"""The command line end to end: run (default and from a config), theorems, report."""

import errno
import json
import math
import os
import subprocess
import sys
import time

import pytest
import tomllib

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


# -- bad input is refused at once, before any training (issue 16) ------------------------------
NAN, INF = float("nan"), float("inf")
BAD_CONFIGS = [  # (dotted key, value set in SMALL, what the one-line error must name)
    ("confidence", 0, "confidence"), ("confidence", 1, "confidence"),
    ("confidence", 1.5, "confidence"), ("confidence", NAN, "confidence"),
    ("confidence", -0.5, "confidence"), ("confidence", "0.9", "confidence"),
    ("recipe.lr", "0.5", "recipe.lr"), ("recipe.steps", 20.5, "recipe.steps"),
    ("recipe.lr", INF, "recipe.lr"), ("recipe.lr", -0.1, "recipe.lr"),
    ("recipe.batch_size", 0, "recipe.batch_size"), ("recipe.momentum", -1, "recipe.momentum"),
    ("recipe.checkpoints", [1.5], "recipe.checkpoints"),
    ("recipe.target_loss", NAN, "recipe.target_loss"),
    ("recipe.optimizer", "lbfgs", "unknown optimizer"),
    ("subject.hidden", 8, "subject.hidden"), ("subject.hidden", [0], "subject.hidden"),
    ("subject.n_samples", 0, "subject.n_samples"), ("subject.bias", "yes", "subject.bias"),
    ("subject.seed", "1", "subject.seed"), ("subject.model_options", 3, "model_options"),
    ("budget.max_dense_params", -1, "max_dense_params"),
    ("budget.max_probes", 2.5, "max_probes"), ("budget.lanczos_rel_tol", INF, "lanczos_rel_tol"),
    ("budget.trace_method", "magic", "trace_method"),
    ("seed", "0", "seed"), ("theorems", 3, "theorems"), ("name", 1, "name"),
    ("recipe", 5, "[recipe]"), ("device", 0, "device"),
]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


def _config_with(key: str, value) -> str:
    """SMALL with ``key`` (dotted) set to ``value``, as TOML."""
    config = tomllib.loads(SMALL)
    *tables, last = key.split(".")
    node = config
    for t in tables:
        node = node.setdefault(t, {})
    node[last] = value
    top = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for name, table in config.items():
        if isinstance(table, dict):
            top += [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(top) + "\n"


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything starts to train."""
    from boundcheck.harness import pipeline

    def refuse(*_a, **_k):
        raise AssertionError("training started")

    monkeypatch.setattr(pipeline, "train", refuse)


@pytest.mark.parametrize("key, value, field", BAD_CONFIGS)
def test_bad_config_values_are_refused_before_training(tmp_path, capsys, no_training, key,
                                                      value, field):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_config_with(key, value))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "-o", str(out), "--no-pdf", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("boundcheck: error: ") and len(err.splitlines()) == 1, err
    assert field in err, err
    assert not (out / "results.json").exists()


def test_unwritable_output_folders_are_refused_before_training(tmp_path, capsys, monkeypatch,
                                                               no_training):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(SMALL)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for out, message in [(a_file, "is a file"), (a_file / "sub", "lies under")]:
        assert main(["run", str(cfg), "-o", str(out), "--no-pdf", "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and str(out) in err and len(err.splitlines()) == 1, err
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() != 0:  # root writes anyway; the mount-level refusal is simulated below
        assert main(["run", str(cfg), "-o", str(read_only), "--no-pdf", "-q"]) == 2
        assert "is not writable" in capsys.readouterr().err
    import tempfile

    def read_only_mount(*_a, **_k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only_mount)
    assert main(["run", str(cfg), "-o", str(read_only), "--no-pdf", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"output folder {read_only} is not writable: Read-only file system" in err, err


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused(tmp_path, capsys, no_training):
    cfg = tmp_path / "long.toml"
    cfg.write_text(SMALL.replace("steps = 150", "steps = 100000"))
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "boundcheck.cli", "run", str(cfg), "-o",
                              str(out), "--no-pdf", "-q"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = out / ".boundcheck-run.lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert main(["run", str(cfg), "-o", str(out), "--no-pdf", "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"boundcheck: error: another boundcheck run is writing to {out} "
                       f"(pid {first.pid}, lock {lock})")
    finally:
        first.kill()
        first.wait()
    from boundcheck.harness.store import exclusive_lock

    with exclusive_lock(lock, "busy"):  # the kernel released the killed run's lock
        pass


def _results_file(tmp_path):
    from test_report import matrix_results

    path = tmp_path / "good.json"
    matrix_results().save(path)
    return path


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


BAD_RESULTS = [  # (an edit of a valid results.json, what the one-line error must say)
    (lambda d: d.update(results=None), "results: expected a list of theorem results"),
    (lambda d: d["results"][0].update(lhs=5), "results[0].lhs: expected an object"),
    (lambda d: d.update(subject=[1, 2]), "subject: expected an object, got [1, 2]"),
    (lambda d: d["results"][0].update(quantities=[1]), "results[0].quantities: expected an"),
    (lambda d: d.pop("subject"), "the field 'subject' is missing"),
    (lambda d: d["results"][0].pop("verdict"), "results[0]: the field 'verdict' is missing"),
    (lambda d: d.update(results={}), "results: expected a list"),
    (lambda d: d.update(results=[]), "results is empty"),
    (lambda d: d["results"][1].update(verdict="MAYBE"), "results[1].verdict: expected one of"),
    (lambda d: d["results"][0]["lhs"].update(upper="big"), "results[0].lhs.upper: expected a "
                                                           "number"),
    (lambda d: d["results"][0]["slack"].update(kind="fudge"), "results[0].slack.kind"),
    (lambda d: d.update(schema=7), "unsupported results schema 7"),
    (lambda d: d.update(training=3), "training: expected an object or null"),
]


@pytest.mark.parametrize("edit, message", BAD_RESULTS)
def test_hand_edited_results_are_refused_by_report_and_check(tmp_path, capsys, edit, message):
    good = _results_file(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(good.read_text())
    _edit(bad, edit)
    for argv in (["report", str(bad), "-o", str(tmp_path / "r.tex")],
                 ["check", "--baseline", str(good), "--results", str(bad)],
                 ["check", "--baseline", str(bad), "--results", str(good)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"boundcheck: error: {bad}: ") and message in err, err
        assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "r.tex").exists()


def test_truncated_results_name_the_file(tmp_path, capsys):
    good = _results_file(tmp_path)
    bad = tmp_path / "cut.json"
    bad.write_text(good.read_text()[:len(good.read_text()) // 2])
    assert main(["report", str(bad), "-o", str(tmp_path / "r.tex")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"boundcheck: error: {bad}: not valid JSON (truncated"), err
    assert main(["check", "--baseline", str(good), "--results", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
