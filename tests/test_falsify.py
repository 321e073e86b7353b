"""``boundcheck falsify``: it finds certified counterexamples to planted variants, none to the
true theorems, and writes subject files that re-verify to the same verdict."""

from __future__ import annotations

import json

import pytest

import boundcheck as bc
from boundcheck.cli import main
from boundcheck.harness.planted import planted_variants
from boundcheck.outputs.falsify import falsify, replay
from boundcheck.verification.registry import get

# planted variants across the families: matrices (T1, T12), MSE nets (T3–T8), CE nets (T2)
PLANTED = [
    ("hessian.ws_lambda_max", "constant:rhs.term1×1/2"),
    ("hessian.ws_lambda_min", "drop:lhs.drop:-s*sqrt(N - 1)"),
    ("compression.input_gradient", "constant:rhs×1/2"),
    ("compression.lvr", "constant:rhs−log2"),
    ("relative_flatness.mls", "constant:rhs×1/2"),
    ("hessian.closed_form_ws_lambda_max", "drop:rhs.drop:\\operatorname{tr}H_{\\mathrm{cf}}/P"),
]
TRUE = ["hessian.ws_lambda_max", "compression.mls", "hessian.closed_form_ws_lambda_max"]


@pytest.mark.parametrize(("theorem", "plant"), PLANTED)
def test_finds_a_certified_counterexample_to_a_planted_variant(theorem, plant, tmp_path):
    report = falsify(theorem, plant=plant, budget=6, seed=0, out=tmp_path)
    assert report.counterexample is not None, report.summary()
    assert report.counterexample.verdict == bc.Verdict.VIOLATED
    assert report.counterexample.lhs.lower > report.counterexample.rhs.upper
    # the subject file is reproducible: reloaded and re-verified, still certified VIOLATED
    path = tmp_path / f"{report.theorem.id}.counterexample.pt"
    assert path.exists() and path.with_suffix(".json").exists()
    again = replay(theorem, path, plant=plant)
    assert again.verdict == bc.Verdict.VIOLATED
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["result"]["verdict"] == "VIOLATED" and "--replay" in record["replay"]


@pytest.mark.slow
@pytest.mark.parametrize("theorem", TRUE)
def test_finds_no_counterexample_to_a_true_theorem(theorem, tmp_path):
    report = falsify(theorem, budget=1.0, seed=1, out=tmp_path)
    assert report.counterexample is None, report.summary()
    assert report.best is not None and report.best.result.verdict != bc.Verdict.VIOLATED
    assert report.applicable > 0
    # the tightest instance is saved and replays to the same verdict
    path = tmp_path / f"{theorem}.tightest.pt"
    assert replay(theorem, path).verdict == report.best.result.verdict


@pytest.mark.slow
def test_t1_tightest_instance_is_tight():
    # T1 is attained (N = 2, or rank one): the search gets within rounding of equality
    report = falsify("hessian.ws_lambda_max", budget=1.5, seed=0)
    assert report.counterexample is None
    assert -1e-6 < report.best.score < 1e-9


def test_cli_falsify_planted_and_replay(tmp_path, capsys):
    rc = main(["falsify", "compression.input_gradient", "--plant", "constant:rhs×1/2",
               "--budget", "4", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1 and "COUNTEREXAMPLE: certified VIOLATED" in out
    files = list(tmp_path.glob("*.counterexample.pt"))
    assert len(files) == 1
    rc = main(["falsify", "compression.input_gradient", "--plant", "constant:rhs×1/2",
               "--replay", str(files[0])])
    assert rc == 1 and "VIOLATED" in capsys.readouterr().out
    assert main(["falsify", "hessian.ws_lambda_max", "--list-plants"]) == 0
    assert "drop:rhs.drop:m" in capsys.readouterr().out


def test_cli_bad_input(capsys):
    assert main(["falsify", "no.such_theorem", "--budget", "1"]) == 2
    assert "unknown theorem id" in capsys.readouterr().err
    assert main(["falsify", "hessian.ws_lambda_max", "--plant", "nonsense"]) == 2
    assert "no planted variant" in capsys.readouterr().err
    assert main(["falsify", "hessian.ws_lambda_max", "--budget", "0"]) == 2
    assert "budget must be positive" in capsys.readouterr().err


# The search's subject families cannot reach these: T9's sampled identities are statistical
# (a search over many subjects meets the 1 − confidence misses, so a counterexample would need
# confirmation on fresh samples), T10 needs a GD trajectory and KR held-out data. Their own
# test files plant false variants.
SEARCHABLE = [t.id for t in bc.theorems() if t.family not in ("projection", "stability")
              and t.id != "lipschitz.kr_cross_entropy"]


@pytest.mark.slow
@pytest.mark.parametrize("theorem", SEARCHABLE)
def test_every_theorem_true_and_planted(theorem, tmp_path):
    """Every searchable theorem: no counterexample to it; its first ``constant`` variant
    falsified where a tight subject exists (T2 Tier B has none: its slack is 20–2,400×).
    T12 evaluations take ~2 s each (an SDP bisection), so its budget is overrun."""
    report = falsify(theorem, budget=4, seed=2)
    assert report.counterexample is None, report.summary()
    plant = next(v.name for v in planted_variants(get(theorem)) if v.kind == "constant")
    report = falsify(theorem, plant=plant, budget=8, seed=2, out=tmp_path)
    print(f"\n{theorem} [{plant}]: counterexample={report.counterexample is not None} "
          f"best score {report.best.score if report.best else None}")
    if not theorem.startswith("hessian.tier_b"):
        assert report.counterexample is not None, report.summary()


@pytest.mark.slow
@pytest.mark.parametrize("theorem", ["compression.mls_sharpness", "compression.lvr_sharpness"])
def test_finds_the_sharpness_forms_false_off_a_minimum(theorem):
    """Ignoring the zero-loss-minimum precondition of the tr H forms: the search finds a net
    off a minimum where the bound is certified VIOLATED (tr R < 0 there); with the
    precondition the theorem is never falsified (NOT_APPLICABLE off a minimum)."""
    report = falsify(theorem, plant="precondition:ignored", budget=15, seed=0)
    assert report.counterexample is not None, report.summary()
    assert bc.verify(report.best.subject, [theorem])[theorem].verdict == \
        bc.Verdict.NOT_APPLICABLE
