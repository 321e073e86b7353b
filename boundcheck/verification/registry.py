"""The theorem registry: the built-in theorems (each family module in ``derivations/``
exports ``THEOREMS``) and any the user registers; lookup by id, family or id prefix."""

from __future__ import annotations

import difflib
import importlib

from boundcheck.core.theorem import Theorem, UnknownTheoremError

__all__ = ["Theorem", "UnknownTheoremError", "get", "register", "select", "theorems",
           "unregister"]

_REGISTRY: dict[str, Theorem] = {}
_LOADED = False


def _load_builtins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from derivations import FAMILIES

    for module in FAMILIES:
        mod = importlib.import_module(module)
        for thm in mod.THEOREMS:
            _REGISTRY.setdefault(thm.id, thm)


def register(theorem: Theorem, *, replace: bool = False) -> Theorem:
    """Add a theorem to the registry (a user's own, or a planted variant in a test)."""
    if not isinstance(theorem, Theorem):
        raise TypeError(f"register() takes a boundcheck.Theorem, got {type(theorem).__name__}")
    _load_builtins()
    if theorem.id in _REGISTRY and not replace and _REGISTRY[theorem.id] != theorem:
        raise ValueError(f"a theorem with id {theorem.id!r} is already registered; "
                         "pass replace=True to overwrite it")
    _REGISTRY[theorem.id] = theorem
    return theorem


def unregister(theorem_id: str) -> None:
    _load_builtins()
    _REGISTRY.pop(theorem_id, None)


def theorems() -> list[Theorem]:
    """Every registered theorem, built-in and user-registered, sorted by id."""
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get(theorem_id: str | Theorem) -> Theorem:
    if isinstance(theorem_id, Theorem):
        return theorem_id
    _load_builtins()
    try:
        return _REGISTRY[theorem_id]
    except KeyError:
        close = difflib.get_close_matches(str(theorem_id), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownTheoremError(
            f"unknown theorem id {theorem_id!r}{hint} (`boundcheck theorems` lists them)"
        ) from None


def select(spec: str | list | None) -> list[Theorem]:
    """Theorems by id list, by family/id prefix (``"hessian.ws"``), or all when None."""
    if spec is None:
        return theorems()
    items = [spec] if isinstance(spec, (str, Theorem)) else list(spec)
    out: list[Theorem] = []
    for item in items:
        if isinstance(item, Theorem):
            out.append(item)
            continue
        _load_builtins()
        if item in _REGISTRY:
            out.append(_REGISTRY[item])
            continue
        matches = [t for k, t in sorted(_REGISTRY.items())
                   if k.startswith(item + ".") or k.startswith(item + "_")
                   or t.family == item]
        if not matches:
            get(item)  # raises with suggestions
        out.extend(m for m in matches if m not in out)
    return out
