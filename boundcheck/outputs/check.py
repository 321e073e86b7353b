"""Checking that bounds hold: in CI against a baseline (``boundcheck check``, the rules in
:mod:`boundcheck.outputs.regression`), and in a user's tests (:func:`assert_bound_holds`,
also a pytest fixture)."""

from __future__ import annotations

from pathlib import Path

from boundcheck.core.verdict import TheoremResult, Verdict
from boundcheck.outputs.junit import write_junit
from boundcheck.outputs.regression import (  # noqa: F401  (re-exported)
    DEFAULT_TOLERANCE,
    FAIL,
    NOTE,
    PASS,
    CheckReport,
    TheoremCheck,
    compare,
    compare_one,
    format_number,
    format_slack,
    slack_movement,
)
from boundcheck.verification.results import Results


def import_user_modules(specs: list[str]) -> None:
    """Import modules (dotted names, found from the current folder too) or ``.py`` files
    that register a user's theorems with ``bc.register``, before a check runs."""
    import importlib
    import importlib.util
    import sys

    for spec in specs:
        path = Path(spec)
        if path.suffix == ".py":
            if not path.is_file():
                raise FileNotFoundError(f"module file not found: {path}")
            name = f"boundcheck_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            importlib.import_module(spec)


def run_check(baseline: str | Path, *, config: str | Path | None = None,
              results: str | Path | None = None, tolerance: float = DEFAULT_TOLERANCE,
              update_baseline: bool = False, junit: str | Path | None = None,
              markdown: str | Path | None = None, output: str | Path | None = None,
              progress: bool = True, log=print) -> int:
    """``boundcheck check``: get new results (``results`` as given, or a re-run of
    ``config``, or of the config recorded in the baseline; with checkpoints, the end of
    training is compared), compare them with the baseline, print the diff and write the
    requested files (``output``: a folder for the re-run's ``results.json``). Returns the exit
    status: 0 pass (or baseline updated), 1 regression."""

    from boundcheck.verification.results import (
        check_writable_folder,
        read_json,
        write_json_atomic,
    )

    baseline = Path(baseline)
    if output is not None:
        check_writable_folder(output)
    if results is not None:
        new_data = read_json(results)  # kept verbatim for --update-baseline
        new = Results.from_dict(new_data, str(results))
    else:
        from boundcheck.harness.config import RunConfig
        from boundcheck.harness.pipeline import train_and_verify

        if config is not None:
            cfg = RunConfig.from_toml(config)
        elif baseline.is_file() and (recorded := Results.load(baseline).provenance.get("config")):
            cfg = RunConfig.from_dict(recorded)
            log(f"re-running the config recorded in {baseline} ({cfg.name})")
        else:
            raise ValueError("give a CONFIG to re-run, or --results NEW.json (the baseline "
                             "records no config)")
        new = train_and_verify(cfg, progress=progress,
                               log=log if progress else (lambda _msg: None))[-1]
        new_data = new.to_dict()
        if output is not None:
            log(f"wrote {write_json_atomic(Path(output) / 'results.json', new_data)}")
    if not baseline.is_file():
        if not update_baseline:
            raise FileNotFoundError(f"baseline not found: {baseline} (create it with "
                                    "--update-baseline)")
        write_json_atomic(baseline, new_data)
        log(f"boundcheck check: no baseline yet; wrote {baseline} "
            f"({len(new.results)} theorems)")
        return 0
    report = compare(Results.load(baseline), new, tolerance, baseline)
    log(report.text())
    if junit is not None:
        write_junit(report, junit)
        log(f"wrote {junit}")
    if markdown is not None:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(report.markdown(), encoding="utf-8")
        log(f"wrote {markdown}")
    if update_baseline:
        write_json_atomic(baseline, new_data)
        log(f"baseline updated: {baseline}")
        return 0
    return 0 if report.passed else 1


def describe_failure(result: TheoremResult, subject_name: str = "") -> str:
    """A multi-line account of a verdict: statement, both sides with intervals, slack,
    reason and the measured quantities (for assertion messages)."""
    from boundcheck.outputs.report.numbers import enclosure
    from boundcheck.verification.registry import UnknownTheoremError, get

    where = f" on {subject_name}" if subject_name else ""
    lines = [f"{result.theorem_id} does not hold{where}: {result.verdict}"]
    try:
        thm = get(result.theorem_id)
        lines.append(f"  {thm.title}: {thm.unicode()}")
    except UnknownTheoremError:
        pass
    for label, est in (("lhs", result.lhs), ("rhs", result.rhs)):
        if est is not None:
            lines.append(f"  {label}   {est}")
    if result.slack is not None:
        lines.append(f"  slack {format_slack(result.slack)} in "
                     f"[{format_number(result.slack.lower)}, "
                     f"{format_number(result.slack.upper)}]")
    if result.reason:
        lines.append(f"  reason: {result.reason}")
    for name, est in result.quantities.items():
        lines.append(f"  {name} = {enclosure(est.to_dict(), 'text')} ({est.kind}, {est.method})")
    return "\n".join(lines)


def assert_bound_holds(subject, theorem, **verify_kwargs) -> TheoremResult:
    """Verify one theorem (an id or a :class:`boundcheck.Theorem`, registered or not) on a
    subject; raise ``AssertionError`` with the verdict, intervals and reason unless it HOLDS.

    ``verify_kwargs`` go to :func:`boundcheck.verify` (``confidence``, ``seed``, ``budget``).
    Returns the :class:`TheoremResult` when it holds.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    from boundcheck.verification.api import verify
    from boundcheck.verification.registry import get

    thm = get(theorem)
    result = verify(subject, [thm], **verify_kwargs)[thm.id]
    if result.verdict != Verdict.HOLDS:
        raise AssertionError(describe_failure(result, getattr(subject, "name", "") or ""))
    return result


def assert_bounds_hold(subject, theorems=None, *, allow_not_applicable: bool = True,
                       **verify_kwargs) -> Results:
    """Verify several theorems (ids, a family prefix, or all); raise ``AssertionError``
    listing every one that is VIOLATED or INCONCLUSIVE (and NOT_APPLICABLE unless allowed)."""
    __tracebackhide__ = True
    from boundcheck.verification.api import verify

    results = verify(subject, theorems, **verify_kwargs)
    allowed = {Verdict.HOLDS} | ({Verdict.NOT_APPLICABLE} if allow_not_applicable else set())
    bad = [r for r in results if r.verdict not in allowed]
    if bad:
        name = getattr(subject, "name", "") or ""
        raise AssertionError(f"{len(bad)} of {len(results.results)} theorem(s) do not hold:\n"
                             + "\n".join(describe_failure(r, name) for r in bad))
    return results
