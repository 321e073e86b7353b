"""The README's Python blocks run as written: extracted from README.md and executed in order
in one namespace (as a reader pasting them into one session would). A block preceded by
``<!-- readme-test: skip (why) -->`` is illustrative; other fences (bash, toml, text) are
not Python."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- readme-test: skip[^>]*-->\s*\n)?```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) for every ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    return [(text[:m.start(2)].count("\n") + 1, m.group(2), bool(m.group(1)))
            for m in BLOCK.finditer(text)]


def test_blocks_are_found():
    blocks = python_blocks()
    assert len(blocks) >= 4 and sum(not skip for _, _, skip in blocks) >= 3
    assert "```py\n" not in README.read_text(encoding="utf-8")  # no block the test misses


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    import boundcheck as bc

    monkeypatch.chdir(tmp_path)  # anything a block writes stays in the temporary folder
    namespace: dict = {"__name__": "readme"}
    try:
        for line, code, skip in python_blocks():
            if skip:
                continue
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
            except Exception as err:  # say which block failed
                pytest.fail(f"README.md block at line {line} failed: {err!r}")
        out = capsys.readouterr().out
        # what the blocks promise in their comments
        mine = bc.get("mine.lambda_max_le_trace")
        psd = bc.MatrixSubject(namespace["torch"].diag(namespace["torch"].tensor([3.0, 1.0])))
        assert bc.verify(psd, [mine])[mine.id].verdict == bc.Verdict.HOLDS
        on_net = bc.verify(namespace["subject"], [mine])[mine.id]
        assert on_net.verdict == bc.Verdict.NOT_APPLICABLE, on_net  # the net's λ_min < 0
        assert "NOT_APPLICABLE" in out and "×1.5" in out
    finally:
        if "mine.lambda_max_le_trace" in {t.id for t in bc.theorems()}:
            bc.unregister("mine.lambda_max_le_trace")
