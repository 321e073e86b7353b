"""Shared by the benchmark scripts: rewrite one "## Section" of benchmarks/README.md."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).with_name("README.md")


def write_section(section: str, script: str, text: str) -> None:
    """Replace (or append) only ``section``; the other sections are left as they are."""
    current = README.read_text() if README.exists() else "# Benchmarks\n"
    body = f"{section}\n\nProduced by `python benchmarks/{script} --readme`.\n\n{text}\n"
    if section in current:
        start = current.index(section)
        nxt = current.find("\n## ", start + len(section))
        current = current[:start] + body + (current[nxt + 1:] if nxt >= 0 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + body
    README.write_text(current)
