"""docs/theorems.md is generated from the registry and derivations/ and must be up to date
(regenerate: ``python -m boundcheck.outputs.theorem_docs``)."""

import re
from pathlib import Path

import pytest

from boundcheck.outputs import theorem_docs

DOC = Path(__file__).resolve().parents[1] / "docs" / "theorems.md"
STALE = "docs/theorems.md is stale: run `python -m boundcheck.outputs.theorem_docs`"


def without_derivations(text: str) -> str:
    """The text minus each ``#### Derivation`` section (up to the next ``##`` heading)."""
    text = re.sub(r"^#### Derivation.*?(?=^##? |\Z)", "", text, flags=re.S | re.M)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip()


def test_theorem_sections_are_up_to_date():
    """Statements, symbols, preconditions and sources (fast: no proofs are built)."""
    assert without_derivations(DOC.read_text(encoding="utf-8")) == without_derivations(
        theorem_docs.render(derivations=False)), STALE


@pytest.mark.slow
def test_whole_file_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == theorem_docs.render(), STALE


def test_every_registered_theorem_and_source_is_documented():
    import boundcheck as bc

    text = DOC.read_text(encoding="utf-8")
    assert "## Conventions" in text and "H = G + R" in text
    for t in bc.theorems():
        assert f"### `{t.id}`" in text and t.source in text
