"""Time limits: estimators stop when the clock says so and return the interval they reached,
which still covers the truth; a theorem on such an interval is INCONCLUSIVE with the reason;
progress lines reach the sink. The clock is replaced by a counter so the tests are exact."""

from __future__ import annotations

import math

import pytest
import sympy
import torch

import boundcheck as bc
from boundcheck.engines.curvature import SymmetricMatrixOperator
from boundcheck.engines.estimators import clock
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue
from boundcheck.engines.estimators.trace import MIN_SAMPLES, hutchinson_trace
from boundcheck.quantities import Budget


@pytest.fixture
def expire_after(monkeypatch):
    """``expire_after(k)``: the clock expires at its (k+1)-th look."""
    def set_limit(k: int) -> None:
        looks = {"n": 0}

        def expired() -> bool:
            looks["n"] += 1
            return looks["n"] > k

        monkeypatch.setattr(clock, "expired", expired)

    return set_limit


def _spectrum(seed: int, dim: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lam = torch.rand(dim, generator=g, dtype=torch.float64) * 2 - 1
    lam[0] = 1.05  # a small gap: the run needs many steps, the time limit cuts it
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return (q * lam) @ q.T


@pytest.mark.slow
@pytest.mark.parametrize("steps", [8, 25, 60])
def test_lanczos_stopped_by_the_clock_still_covers(expire_after, steps):
    misses = 0
    for seed in range(20):
        a = _spectrum(seed)
        truth = float(torch.linalg.eigvalsh(a)[-1])
        expire_after(steps)
        r = extreme_eigenvalue(SymmetricMatrixOperator(a), confidence=0.99, rel_tol=1e-10,
                               seed=seed)
        assert "time limit" in r.details["stopped"]
        assert r.matvecs <= steps + 2
        misses += not (r.lower <= truth <= r.upper)
    assert misses == 0


def test_lanczos_stopped_in_its_deflated_run_covers(expire_after):
    a = _spectrum(0)
    full = extreme_eigenvalue(SymmetricMatrixOperator(a), confidence=0.99, rel_tol=1e-6)
    first = full.matvecs - full.details["deflated_steps"]
    truth = float(torch.linalg.eigvalsh(a)[-1])
    expire_after(first + 3)
    r = extreme_eigenvalue(SymmetricMatrixOperator(a), confidence=0.99, rel_tol=1e-6)
    assert r.details.get("stopped") and r.details["deflated_steps"] <= 8
    assert r.lower <= truth <= r.upper


def test_hutchinson_cut_by_the_clock_keeps_its_coverage(expire_after):
    a = _spectrum(1, dim=200)
    truth = float(torch.trace(a))
    misses = 0
    for seed in range(60):
        expire_after(0)  # no exhaustive sum; the main stage stops at its minimum
        est = hutchinson_trace(SymmetricMatrixOperator(a), confidence=0.9,
                               rel_half_width=1e-4, max_probes=5000, seed=seed)
        assert est.details["samples"] == MIN_SAMPLES + (-MIN_SAMPLES) % 16  # whole blocks
        assert "time limit" in est.details["stopped"]
        misses += not (est.lower <= truth <= est.upper)
    assert misses <= 12  # 10% nominal: P(Bin(60, 0.1) > 12) < 0.01


def test_a_theorem_on_a_stopped_interval_is_inconclusive_with_the_reason(expire_after):
    a = _spectrum(2)
    truth = float(torch.linalg.eigvalsh(a)[-1])
    lam = sympy.Symbol("lambda_max")
    thm = bc.Theorem(id="test.time_limited", title="λ_max ≤ its own value", lhs=lam,
                     rhs=sympy.Float(truth * (1 + 1e-6)), symbols={lam: "hessian.lambda_max"},
                     source="test", slack="difference")
    expire_after(10)
    res = bc.verify(bc.MatrixSubject(a.numpy()), [thm],
                    budget=Budget(max_dense_params=10, max_refinements=0))
    r = res["test.time_limited"]
    assert r.verdict == bc.Verdict.INCONCLUSIVE
    assert "time limit reached" in r.reason


def test_time_limit_nests_and_validates():
    assert clock.remaining() == math.inf
    with clock.time_limit(100.0):
        outer = clock.remaining()
        with clock.time_limit(1000.0):
            assert clock.remaining() <= outer
        with clock.time_limit(1.0):
            assert clock.remaining() <= 1.0
    assert clock.remaining() == math.inf
    with pytest.raises(ValueError, match="positive"):
        with clock.time_limit(0.0):
            pass


def test_progress_lines_reach_the_sink():
    lines: list[str] = []
    a = _spectrum(3, dim=120)
    with clock.progress_to(lines.append, every_s=0.0):
        extreme_eigenvalue(SymmetricMatrixOperator(a), rel_tol=1e-8)
        hutchinson_trace(SymmetricMatrixOperator(a), rel_half_width=0.05, max_probes=200)
    assert any(line.strip().startswith("Lanczos:") for line in lines)
    assert any(line.strip().startswith("trace probes:") for line in lines)


def test_slow_measurements_get_a_line_when_they_end(monkeypatch):
    """Quantities with no progress reports of their own (Jacobians, dense blocks) still say
    where the time went: one line per measurement of ≥ clock.SLOW_S seconds."""
    from boundcheck.quantities import Context

    lines: list[str] = []
    ctx = Context(bc.MatrixSubject(_spectrum(3, dim=40).numpy()))
    monkeypatch.setattr(clock, "SLOW_S", 0.0)
    with clock.progress_to(lines.append, every_s=60.0):
        ctx.get("hessian.trace")
    assert any(line.strip().startswith("hessian.trace: ") and line.endswith(" s")
               for line in lines), lines
    monkeypatch.setattr(clock, "SLOW_S", math.inf)
    lines.clear()
    with clock.progress_to(lines.append, every_s=0.0):
        Context(bc.MatrixSubject(_spectrum(3, dim=40).numpy())).get("hessian.trace")
    assert not any(line.strip().startswith("hessian.trace: ") for line in lines)


def test_the_command_line_takes_a_time_limit():
    from boundcheck.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--time-limit", "90"]).time_limit == 90.0
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--time-limit", "-1"])


def test_the_command_line_sets_torch_threads(monkeypatch):
    """`boundcheck run --threads N` runs the measurement on N torch threads (default one)."""
    from boundcheck import cli
    from boundcheck.outputs import run as run_module

    seen = []

    def fake_run(cfg, out, **kw):
        seen.append(torch.get_num_threads())
        raise KeyError("stop here")

    monkeypatch.setattr(run_module, "run", fake_run)
    before = torch.get_num_threads()
    try:
        assert cli.main(["run", "--threads", "2", "--no-pdf"]) == 2
        assert cli.main(["run", "--no-pdf"]) == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 1]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--threads", "0"])
