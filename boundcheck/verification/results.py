"""Results of verifying theorems on one subject: JSON in and out, provenance, a text table.

JSON layout (``schema`` 1)::

    {"schema": 1, "boundcheck_version": "...",
     "subject": {...describe()...}, "training": {...} | null,
     "provenance": {"seed", "confidence", "versions", "machine", "device", "created", ...},
     "theorems": {id: {statement, latex, symbols, source, ...}},
     "results": [{"theorem", "verdict", "reason", "lhs", "rhs", "slack", "quantities"}]}

Each estimate is ``{"value", "lower", "upper", "kind", "method"[, "confidence"]}``; infinities
are the strings "inf" / "-inf".
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boundcheck.core.verdict import TheoremResult, Verdict, group_reasons
from boundcheck.verification.schema import SCHEMA, ResultsSchemaError, validate_results

__all__ = ["SCHEMA", "Results", "ResultsSchemaError", "check_writable_folder", "fsync_dir",
           "provenance", "read_json", "write_json_atomic", "write_text_atomic"]


@dataclass
class Results:
    subject: dict[str, Any]
    results: list[TheoremResult]
    provenance: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # theorem descriptions stored with loaded results; they win over the current registry,
    # so re-saving keeps a user theorem's statement even where it is not registered
    theorem_info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, theorem_id: str) -> TheoremResult:
        for r in self.results:
            if r.theorem_id == theorem_id:
                return r
        raise KeyError(f"no result for theorem {theorem_id!r}")

    def __iter__(self):
        return iter(self.results)

    @property
    def verdicts(self) -> dict[str, Verdict]:
        return {r.theorem_id: r.verdict for r in self.results}

    def to_dict(self) -> dict[str, Any]:
        from boundcheck.verification.registry import get

        described = dict(self.theorem_info)
        for r in self.results:
            if r.theorem_id not in described:
                try:
                    described[r.theorem_id] = get(r.theorem_id).describe()
                except KeyError:
                    pass
        return {
            "schema": SCHEMA,
            "boundcheck_version": _version(),
            "subject": self.subject,
            "training": self.training,
            "provenance": self.provenance,
            "theorems": described,
            "results": [r.to_dict() for r in self.results],
            "extras": self.extras,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "results") -> Results:
        """Results from their JSON form, checked against the schema first (``source`` names
        the file in the error)."""
        validate_results(d, source)
        return cls(d["subject"], [TheoremResult.from_dict(r) for r in d["results"]],
                   d.get("provenance", {}), d.get("training"), d.get("extras", {}),
                   d.get("theorems", {}))

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Results:
        return cls.from_dict(read_json(path), str(path))

    def table(self) -> str:
        """A fixed-width summary for terminals and CI logs."""
        rows = [("theorem", "verdict", "lhs", "rhs", "slack")]
        for r in self.results:
            rows.append((
                r.theorem_id, r.verdict.value,
                _fmt(r.lhs.value) if r.lhs else "-",
                _fmt(r.rhs.value) if r.rhs else "-",
                _fmt_slack(r),
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        notes = reason_lines((r.theorem_id, r.verdict.value, r.reason) for r in self.results)
        return "\n".join(lines + ([""] + notes if notes else []))


def reason_lines(items) -> list[str]:
    """Reasons for terminals, each distinct one once: ``id: reason`` when one theorem gives it,
    else ``N theorems VERDICT (ids):`` and the reason indented below."""
    lines = []
    for verdict, reason, ids in group_reasons(items):
        if len(ids) == 1:
            lines.append(f"  {ids[0]}: {reason}")
        else:
            lines += [f"  {len(ids)} theorems {verdict} ({', '.join(ids)}):", f"      {reason}"]
    return lines


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _fmt_slack(r: TheoremResult) -> str:
    if r.slack is None:
        return "-"
    if r.slack.kind == "ratio":
        return f"×{r.slack.value:.4g}"
    return f"{r.slack.value:+.4g}"


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a file that is not JSON (e.g. truncated) gives a
    ``ResultsSchemaError`` naming the file and where parsing stopped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ResultsSchemaError(f"{path}: not a text (UTF-8) file: {err}") from err
    except json.JSONDecodeError as err:
        raise ResultsSchemaError(f"{path}: not valid JSON (truncated or hand-edited?): {err.msg} "
                                 f"at line {err.lineno} column {err.colno}") from err


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON so a reader never sees a half-written file (temp file + rename)."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_writable_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and make sure a file can be written in it; otherwise a
    ``ValueError`` naming it (a file in the way, a read-only folder). Call it before any work,
    so a bad output folder is refused at once rather than after training."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is" if parent == folder else f"lies under {parent}, which is"
                raise ValueError(f"output folder {folder} {where} a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".boundcheck-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"output folder {folder} is not writable: "
                         f"{err.strerror or err}") from err
    return folder


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("boundcheck")
    except Exception:  # not installed (running from a checkout)
        return "0+unknown"


def provenance(**extra: Any) -> dict[str, Any]:
    import numpy
    import scipy
    import sympy
    import torch

    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "boundcheck": _version(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "sympy": sympy.__version__,
        },
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        **extra,
    }
