"""The package's layers import one way only, and nothing imports in a cycle.

Every ``import`` in ``boundcheck/`` and ``derivations/`` is read with :mod:`ast` — at module
level, inside functions (lazy imports) and under ``TYPE_CHECKING`` alike — and resolved to the
module it names. Layers, lowest first:

1. ``boundcheck.core``          the vocabulary (imports nothing else of boundcheck)
2. ``boundcheck.engines``       numerical engines (core only)
3. ``boundcheck.quantities``    named quantities → engines
4. ``derivations``              statements and checked proofs (core only)
5. ``boundcheck.verification``  measure / verify, the theorem registry, results
6. ``boundcheck.harness``       configs, data, zoo, training, pipeline, sweeps, store
7. ``boundcheck.outputs``       reports, check, JUnit, pytest plugin, strategies
8. ``boundcheck.cli``           the command line
9. ``boundcheck`` (``__init__``)  the package face: re-exports only
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (("boundcheck.core", 1), ("boundcheck.engines", 2), ("boundcheck.quantities", 3),
          ("derivations", 4), ("boundcheck.verification", 5), ("boundcheck.harness", 6),
          ("boundcheck.outputs", 7), ("boundcheck.cli", 8), ("boundcheck", 9))
# Layers that may import only a named set of lower layers (besides their own).
ONLY = {2: {1}, 4: {1}}


def layer_of(module: str) -> int | None:
    for prefix, number in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return number
    return None


def modules() -> dict[str, Path]:
    found = {}
    for top in ("boundcheck", "derivations"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The boundcheck/derivations modules that ``name`` imports (resolved to known modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer(graph):
    assert not [m for m in graph if layer_of(m) is None]


def test_imports_run_downwards_only(graph):
    wrong = []
    for module, deps in sorted(graph.items()):
        own = layer_of(module)
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if theirs > own or (own in ONLY and theirs != own and theirs not in ONLY[own]):
                wrong.append(f"{module} (layer {own}) imports {dep} (layer {theirs})")
    assert not wrong, "\n".join(wrong)


def test_nothing_inside_imports_the_package_face(graph):
    assert not [m for m, deps in graph.items() if "boundcheck" in deps]


def test_no_import_cycle(graph):
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_planted_upward_import(tmp_path):
    """The walk finds lazy imports inside functions and relative ones."""
    planted = tmp_path / "engines_mod.py"
    planted.write_text("def f():\n    from ..verification import api\n    import derivations\n")
    found = imports_of("boundcheck.engines.planted", planted,
                       {"boundcheck.verification.api": planted, "derivations": planted,
                        "boundcheck.verification": planted})
    assert found == {"boundcheck.verification.api", "derivations"}
