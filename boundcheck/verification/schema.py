"""The schema of a results file (``results.json``, schema 1; see
:mod:`boundcheck.verification.results`), checked before anything reads it: a truncated or
hand-edited file gives one line naming the file, the field and what was expected."""

from __future__ import annotations

import math
from typing import Any

from boundcheck.core.checks import is_real
from boundcheck.core.verdict import Verdict

SCHEMA = 1
ESTIMATE_KINDS = ("exact", "certified", "statistical")
SLACK_KINDS = ("ratio", "difference")
VERDICTS = tuple(v.value for v in Verdict)
INFINITIES = ("inf", "-inf")


class ResultsSchemaError(ValueError):
    """A results file does not follow the schema; the message names the file and field."""


def validate_results(d: Any, source: str = "results") -> None:
    """Raise :class:`ResultsSchemaError` unless ``d`` is a schema-1 results document with at
    least one theorem result."""
    _expect(isinstance(d, dict), source, "", "a JSON object", d)
    if d.get("schema") != SCHEMA:
        raise ResultsSchemaError(f"{source}: unsupported results schema {d.get('schema')!r} "
                                 f"(expected {SCHEMA})")
    for key in ("subject", "results"):
        if key not in d:
            raise ResultsSchemaError(f"{source}: the field {key!r} is missing")
    _expect(isinstance(d["subject"], dict), source, "subject", "an object", d["subject"])
    for key in ("provenance", "theorems", "extras"):
        if key in d:
            _expect(isinstance(d[key], dict), source, key, "an object", d[key])
    if d.get("training") is not None:
        _expect(isinstance(d["training"], dict), source, "training", "an object or null",
                d["training"])
    results = d["results"]
    _expect(isinstance(results, list), source, "results", "a list of theorem results", results)
    if not results:
        raise ResultsSchemaError(f"{source}: results is empty: the file holds no theorem "
                                 "result")
    for i, r in enumerate(results):
        _result(r, source, f"results[{i}]")


def _result(r: Any, source: str, where: str) -> None:
    _expect(isinstance(r, dict), source, where, "an object", r)
    for key in ("theorem", "verdict"):
        if key not in r:
            raise ResultsSchemaError(f"{source}: {where}: the field {key!r} is missing")
    _expect(isinstance(r["theorem"], str), source, f"{where}.theorem", "a theorem id (string)",
            r["theorem"])
    _expect(r["verdict"] in VERDICTS, source, f"{where}.verdict", f"one of {', '.join(VERDICTS)}",
            r["verdict"])
    if "reason" in r:
        _expect(isinstance(r["reason"], str), source, f"{where}.reason", "a string",
                r["reason"])
    for side in ("lhs", "rhs"):
        if r.get(side) is not None:
            _estimate(r[side], source, f"{where}.{side}")
    if r.get("slack") is not None:
        _interval(r["slack"], source, f"{where}.slack", "kind", SLACK_KINDS)
    quantities = r.get("quantities", {})
    _expect(isinstance(quantities, dict), source, f"{where}.quantities",
            "an object {name: estimate}", quantities)
    for name, est in quantities.items():
        _estimate(est, source, f"{where}.quantities[{name!r}]")


def _estimate(e: Any, source: str, where: str) -> None:
    _interval(e, source, where, "kind", ESTIMATE_KINDS)
    _expect(isinstance(e.get("method"), str), source, f"{where}.method", "a string",
            e.get("method"))
    if e.get("confidence") is not None:
        c = e["confidence"]
        _expect(is_real(c) and 0 < c <= 1, source, f"{where}.confidence", "a number in (0, 1]",
                c)
    if "details" in e:
        _expect(isinstance(e["details"], dict), source, f"{where}.details", "an object",
                e["details"])


def _interval(e: Any, source: str, where: str, kind_key: str, kinds: tuple[str, ...]) -> None:
    _expect(isinstance(e, dict), source, where,
            "an object {value, lower, upper, kind, ...} or null", e)
    _expect(e.get(kind_key) in kinds, source, f"{where}.{kind_key}", f"one of {', '.join(kinds)}",
            e.get(kind_key))
    bounds = {}
    for key in ("value", "lower", "upper"):
        x = e.get(key)
        _expect((is_real(x) and not math.isnan(x)) or x in INFINITIES, source, f"{where}.{key}",
                'a number, "inf" or "-inf"', x)
        bounds[key] = float(x)
    if not bounds["lower"] <= bounds["upper"]:
        raise ResultsSchemaError(f"{source}: {where}: lower {bounds['lower']} exceeds upper "
                                 f"{bounds['upper']}")


def _expect(ok: bool, source: str, where: str, expected: str, got: Any) -> None:
    if not ok:
        shown = repr(got)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        field = f"{where}: " if where else ""
        missing = got is None and where
        raise ResultsSchemaError(f"{source}: {field}expected {expected}, got "
                                 f"{'nothing (missing or null)' if missing else shown}")
