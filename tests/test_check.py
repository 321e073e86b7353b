"""Bound regression in CI (``boundcheck check``), JUnit XML, and ``bc.check_architecture``."""

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import sympy
import torch

import boundcheck as bc
from boundcheck.cli import main
from boundcheck.core.estimate import Estimate
from boundcheck.core.verdict import Slack, TheoremResult, Verdict
from boundcheck.harness.models import mlp
from boundcheck.outputs.check import (
    DEFAULT_TOLERANCE,
    FAIL,
    NOTE,
    PASS,
    compare,
    compare_one,
    slack_movement,
)
from boundcheck.outputs.junit import junit_xml
from boundcheck.quantities import QUANTITIES, quantity
from derivations import wolkowicz_styan as ws

T1_SYMBOLS = {k: v for k, v in ws.SYMBOLS.items() if k in (ws.lam_max, ws.m, ws.s, ws.N)}


def user_theorem(constant) -> bc.Theorem:
    """A user's λ_max bound m + s·constant: T1 with √(N−1) (true) or 1/√(N−1) (planted)."""
    return bc.Theorem(id="user.lambda_max", title="my bound on λ_max", lhs=ws.lam_max,
                      rhs=ws.m + ws.s * constant, symbols=T1_SYMBOLS, source="a user",
                      assumptions=(ws.N_AT_LEAST_2,), slack="difference")


TRUE_BOUND = user_theorem(sympy.sqrt(ws.N - 1))
PLANTED = user_theorem(1 / sympy.sqrt(ws.N - 1))


@pytest.fixture
def matrix_subject():
    a = np.random.default_rng(0).standard_normal((15, 15))
    return bc.MatrixSubject(a + a.T, name="matrix")


def verified(subject, *theorems):
    """Results of T1 and the given (unregistered) theorems, with their descriptions."""
    res = bc.verify(subject, ["hessian.ws", *theorems])
    res.theorem_info = {t.id: t.describe() for t in theorems}
    return res


def est(v):
    return Estimate.exact(v, 0.0, "test")


def result(verdict, lhs=1.0, rhs=2.0, kind="ratio", slack=None):
    value = slack if slack is not None else (rhs / lhs if kind == "ratio" else rhs - lhs)
    return TheoremResult("t", Verdict(verdict), "", est(lhs), est(rhs),
                         Slack(kind, value, value, value))


# -- comparing ------------------------------------------------------------------------------
def test_identical_results_pass(matrix_subject):
    res = verified(matrix_subject, TRUE_BOUND)
    report = compare(res, res)
    assert report.passed and all(c.status == PASS for c in report.checks)
    assert "PASS" in report.text()


def test_planted_too_tight_constant_fails(matrix_subject):
    baseline = verified(matrix_subject, TRUE_BOUND)
    new = verified(matrix_subject, PLANTED)
    report = compare(baseline, new)
    assert not report.passed
    [failure] = report.failures
    assert failure.theorem_id == "user.lambda_max"
    assert failure.message == "HOLDS → VIOLATED"
    assert "lhs exceeds rhs" in failure.details
    text = report.text()
    assert "FAIL: 1 of 5 theorem(s) regressed" in text and "--update-baseline" in text


@pytest.mark.parametrize("old, new, status", [
    ("HOLDS", "VIOLATED", FAIL), ("HOLDS", "INCONCLUSIVE", FAIL),
    ("HOLDS", "NOT_APPLICABLE", FAIL), ("INCONCLUSIVE", "VIOLATED", FAIL),
    ("NOT_APPLICABLE", "VIOLATED", FAIL), ("INCONCLUSIVE", "HOLDS", NOTE),
    ("NOT_APPLICABLE", "INCONCLUSIVE", NOTE), ("VIOLATED", "VIOLATED", PASS),
    ("NOT_APPLICABLE", "NOT_APPLICABLE", PASS),
])
def test_verdict_transitions(old, new, status):
    assert compare_one("t", result(old), result(new), DEFAULT_TOLERANCE).status == status


def test_missing_and_new_theorems():
    assert compare_one("t", result("HOLDS"), None, 0.05).status == FAIL
    assert compare_one("t", None, result("HOLDS"), 0.05).status == NOTE


@pytest.mark.parametrize("old, new, moved", [
    (2.0, 2.09, False), (2.0, 2.11, True),  # ×1.045 within, ×1.055 beyond ±5%
    (2.0, 1.91, False), (2.0, 1.90, True),  # ÷1.047 within, ÷1.053 beyond (log-symmetric)
])
def test_ratio_slack_tolerance_is_symmetric_in_log(old, new, moved):
    c = compare_one("t", result("HOLDS", slack=old), result("HOLDS", slack=new), 0.05)
    assert c.failed == moved
    assert c.slack_change == pytest.approx(math.log(new / old))


@pytest.mark.parametrize("new_slack, moved", [(0.54, False), (0.6, True), (0.44, False),
                                              (0.42, True)])
def test_difference_slack_is_measured_against_the_sides(new_slack, moved):
    # sides 1 and 1.5: the tolerance allows 5% of 1.5 = 0.075 of movement
    old = result("HOLDS", 1.0, 1.5, "difference")
    new = result("HOLDS", 1.0, 1.0 + new_slack, "difference")
    assert compare_one("t", old, new, 0.05).failed == moved


def test_slack_kind_change_and_infinities():
    ratio, diff = result("HOLDS"), result("HOLDS", kind="difference")
    assert slack_movement(ratio, diff)[0] == math.inf
    inf = result("HOLDS", kind="difference", slack=math.inf)
    assert slack_movement(inf, inf)[0] == 0.0
    assert compare_one("t", inf, diff, 0.05).failed
    with pytest.raises(ValueError):
        compare(bc.Results({}, []), bc.Results({}, []), tolerance=-1)


def test_junit_xml_parses_with_one_testcase_per_theorem(matrix_subject):
    baseline = verified(matrix_subject, TRUE_BOUND)
    new = verified(matrix_subject, PLANTED)
    na = TheoremResult("never.applies", Verdict.NOT_APPLICABLE, "needs a CNN")
    baseline.results.append(na)
    new.results.append(na)
    root = ET.fromstring(junit_xml(compare(baseline, new)))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.theorem_id for r in baseline.results]
    assert suite.get("tests") == "6" and suite.get("failures") == "1"
    assert suite.get("skipped") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["user.lambda_max"]
    assert failed[0].find("failure").get("message") == "HOLDS → VIOLATED"
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert skipped[0].find("skipped").get("message") == "needs a CNN"


# -- the command ------------------------------------------------------------------------------
def test_check_command_with_results_files(tmp_path, matrix_subject, capsys):
    base, good, bad = (tmp_path / f"{n}.json" for n in ("base", "good", "bad"))
    verified(matrix_subject, TRUE_BOUND).save(base)
    verified(matrix_subject, TRUE_BOUND).save(good)
    verified(matrix_subject, PLANTED).save(bad)
    assert main(["check", "--baseline", str(base), "--results", str(good)]) == 0
    assert "PASS" in capsys.readouterr().out
    junit, md = tmp_path / "junit.xml", tmp_path / "diff.md"
    assert main(["check", "--baseline", str(base), "--results", str(bad), "--junit", str(junit),
                 "--markdown", str(md)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  user.lambda_max" in out and "HOLDS → VIOLATED" in out
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "1"
    assert "| ❌ | `user.lambda_max` | HOLDS → VIOLATED" in md.read_text()
    # accepting the change rewrites the baseline (atomically: no temp file left behind)
    assert main(["check", "--baseline", str(base), "--results", str(bad),
                 "--update-baseline"]) == 0
    assert json.loads(base.read_text()) == json.loads(bad.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "base.json", "diff.md",
                                                          "good.json", "junit.xml"]
    assert main(["check", "--baseline", str(base), "--results", str(bad)]) == 0


def test_missing_baseline(tmp_path, matrix_subject, capsys):
    new = tmp_path / "new.json"
    verified(matrix_subject).save(new)
    missing = tmp_path / "ci" / "baseline.json"
    assert main(["check", "--baseline", str(missing), "--results", str(new)]) == 2
    assert "baseline not found" in capsys.readouterr().err
    assert main(["check", "--baseline", str(missing), "--results", str(new),
                 "--update-baseline"]) == 0
    assert bc.Results.load(missing).verdicts == bc.Results.load(new).verdicts


USER_CONFIG = """
name = "user-mlp"
theorems = ["hessian.ws", "user"]
[subject]
dataset = "digits"
n_samples = 300
hidden = [8]
[recipe]
steps = 200
"""

USER_MODULE = """
import sympy
import boundcheck as bc
from derivations import wolkowicz_styan as ws

CONSTANT = {constant}
bc.register(bc.Theorem(
    id="user.lambda_max", title="my bound on λ_max", lhs=ws.lam_max,
    rhs=ws.m + ws.s * CONSTANT, source="me", slack="difference",
    symbols={{k: v for k, v in ws.SYMBOLS.items() if k in (ws.lam_max, ws.m, ws.s, ws.N)}}))
"""


@pytest.fixture
def scratch_repo(tmp_path, monkeypatch):
    """A user's repository: a config, a module with their theorem, a CI folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bounds.toml").write_text(USER_CONFIG)
    (tmp_path / "mytheorems.py").write_text(USER_MODULE.format(constant="sympy.sqrt(ws.N - 1)"))
    bc.unregister("user.lambda_max")
    yield tmp_path
    bc.unregister("user.lambda_max")


@pytest.mark.slow
def test_scratch_repository_end_to_end(scratch_repo, capsys):
    check = ["check", "bounds.toml", "--baseline", "ci/baseline.json", "--import",
             "mytheorems.py", "-q"]
    assert main([*check, "--update-baseline"]) == 0  # first run records the baseline
    baseline = bc.Results.load("ci/baseline.json")
    assert baseline.verdicts["user.lambda_max"] == Verdict.HOLDS
    assert set(baseline.verdicts) == {"user.lambda_max", *(t.id for t in ws.THEOREMS)}
    capsys.readouterr()

    bc.unregister("user.lambda_max")
    assert main([*check, "--junit", "ci/junit.xml"]) == 0  # unchanged code passes
    assert "PASS: 5 theorem(s) as in the baseline" in capsys.readouterr().out

    # a change that breaks a bound: the user's constant is made too tight
    (scratch_repo / "mytheorems.py").write_text(
        USER_MODULE.format(constant="1 / sympy.sqrt(ws.N - 1)"))
    bc.unregister("user.lambda_max")
    assert main([*check, "--junit", "ci/junit.xml"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: 1 of 5 theorem(s) regressed" in out
    assert "FAIL  user.lambda_max" in out and "HOLDS → VIOLATED" in out
    assert "lhs exceeds rhs by at least" in out
    failures = ET.parse("ci/junit.xml").getroot().iter("failure")
    assert [f.get("message") for f in failures] == ["HOLDS → VIOLATED"]


def test_check_reruns_the_config_recorded_in_the_baseline(scratch_repo, capsys):
    assert main(["check", "bounds.toml", "--baseline", "b.json", "--update-baseline", "-q",
                 "--import", "mytheorems.py"]) == 0
    bc.unregister("user.lambda_max")
    assert main(["check", "--baseline", "b.json", "-q", "--import", "mytheorems.py",
                 "--tolerance", "0", "-o", "rerun"]) == 0
    out = capsys.readouterr().out
    assert "re-running the config recorded in b.json (user-mlp)" in out
    assert bc.Results.load("rerun/results.json").verdicts == bc.Results.load("b.json").verdicts


# -- check_architecture ---------------------------------------------------------------------
@pytest.fixture
def broken_quantity():
    """A quantity whose measurement crashes the way an unsupported layer might."""
    @quantity("test.crashes", "raises TypeError")
    def _crashes(ctx):
        raise TypeError("unsupported layer: Bilinear")

    thm = bc.Theorem(id="test.needs_crash", title="needs a crashing quantity",
                     lhs=sympy.Symbol("q"), rhs=sympy.Integer(1),
                     symbols={sympy.Symbol("q"): "test.crashes"}, source="test")
    picky = bc.Theorem(id="test.only_cnns", title="applies to CNNs only", lhs=ws.lam_max,
                       rhs=ws.lam_max, symbols={ws.lam_max: "hessian.lambda_max"},
                       source="test", applies_to=lambda s: "needs a convolution")
    bc.register(thm, replace=True)
    bc.register(picky, replace=True)
    yield
    bc.unregister(thm.id)
    bc.unregister(picky.id)
    QUANTITIES.pop("test.crashes")


@pytest.mark.slow
def test_check_architecture_never_crashes(broken_quantity):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
    report = bc.check_architecture(mlp([3, 4, 2], "tanh", seed=0), (x, y), "cross_entropy")
    verdicts = report.results.verdicts
    assert set(verdicts) == {t.id for t in bc.theorems()}
    assert verdicts["test.needs_crash"] == Verdict.INCONCLUSIVE
    assert "TypeError: unsupported layer: Bilinear" in report.results["test.needs_crash"].reason
    assert report.errors == {"test.needs_crash": "TypeError: unsupported layer: Bilinear"}
    assert report.not_applicable["test.only_cnns"] == "needs a convolution"
    assert all(verdicts[t.id] == Verdict.HOLDS for t in ws.THEOREMS)
    assert report.ok
    text = str(report)
    assert text.startswith("check_architecture: Sequential (26 parameters, 20 samples")
    assert "NOT_APPLICABLE  test.only_cnns" in text


def test_check_architecture_reports_violations(matrix_subject):
    bc.register(PLANTED, replace=True)
    try:
        report = bc.check_architecture(matrix_subject, theorems=["hessian.ws", PLANTED.id])
    finally:
        bc.unregister(PLANTED.id)
    assert [r.theorem_id for r in report.violated] == [PLANTED.id]
    assert not report.ok
    with pytest.raises(AssertionError, match="VIOLATED        user.lambda_max"):
        report.assert_ok()
    with pytest.raises(TypeError, match="needs data"):
        bc.check_architecture(mlp([3, 2]))


def test_check_output_leads_with_failures_and_gives_each_reason_once():
    reason = "loss.mse_scale: the loss is softmax cross-entropy, not MSE"
    old = [TheoremResult(f"t{i}", Verdict.NOT_APPLICABLE, reason) for i in range(5)]
    old += [result("HOLDS")]
    new = [TheoremResult(f"t{i}", Verdict.NOT_APPLICABLE,
                         reason.replace("loss.mse_scale", "q.other")) for i in range(5)]
    broken = result("VIOLATED", 3.0, 2.0)
    new += [TheoremResult("t", broken.verdict, "lhs exceeds rhs", broken.lhs, broken.rhs,
                          broken.slack)]
    report = compare(bc.Results({}, old), bc.Results({}, new))
    lines = report.text().splitlines()
    assert lines[0].startswith("boundcheck check: FAIL: 1 of 6")
    assert lines[2].startswith("  FAIL  t  HOLDS → VIOLATED")
    assert sum(line.startswith("  ok") for line in lines) == 1  # one line for the rest
    assert report.text().count("the loss is softmax cross-entropy") == 1
    assert "NOT_APPLICABLE (5): t0, t1, t2, t3, t4" in report.text()
    md = report.markdown()
    assert md.count("the loss is softmax cross-entropy") == 1 and md.index("❌") < md.index("✅")
