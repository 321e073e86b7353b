"""boundcheck: verify theorems about neural-network loss landscapes on real networks.

    import boundcheck as bc
    subject = bc.Subject(model, (X, Y), "cross_entropy")
    res = bc.verify(subject, theorems=["hessian.ws_lambda_max"], confidence=0.99, seed=0)
    est = bc.measure(subject, ["hessian.trace", "hessian.lambda_max"])

Names are loaded on first use (PEP 562), so ``import boundcheck`` — which pytest does for
the plugin in every session of an environment where boundcheck is installed — stays cheap
and does not import torch until something needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "measure": "verification.api", "verify": "verification.api", "verify_one": "verification.api",
    "Results": "verification.results",
    "Assumption": "core.theorem", "Theorem": "core.theorem",
    "UnknownTheoremError": "core.theorem",
    "get": "verification.registry", "register": "verification.registry",
    "theorems": "verification.registry", "unregister": "verification.registry",
    "check_architecture": "outputs.architecture_check",
    "assert_bound_holds": "outputs.check", "assert_bounds_hold": "outputs.check",
    "Estimate": "core.estimate",
    "QUANTITIES": "quantities", "Budget": "quantities", "Context": "quantities",
    "MemoryBudgetError": "quantities",
    "InvalidSubjectError": "core.subject", "MatrixSubject": "core.subject",
    "ModelModeError": "core.subject", "Subject": "core.subject",
    "Slack": "core.verdict", "TheoremResult": "core.verdict", "Verdict": "core.verdict",
}

# Modules users reach as ``bc.<name>`` / ``from boundcheck import <name>``, by their layer.
_MODULES = {
    "data": "harness.data", "models": "harness.models", "training": "harness.training",
    "zoo": "harness.zoo", "config": "harness.config", "store": "harness.store",
    "sweep": "harness.sweep", "strategies": "outputs.strategies", "report": "outputs.report",
}

__all__ = [
    "QUANTITIES", "Assumption", "Budget", "Context", "Estimate", "InvalidSubjectError",
    "MatrixSubject", "MemoryBudgetError", "ModelModeError", "Results", "Slack", "Subject",
    "Theorem", "TheoremResult", "UnknownTheoremError", "Verdict", "assert_bound_holds",
    "assert_bounds_hold", "check_architecture", "get", "measure", "register", "theorems",
    "unregister", "verify", "verify_one",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f".{_MODULES[name]}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            return importlib.import_module(f".{name}", __name__)  # a submodule: bc.quantities
        raise AttributeError(f"module 'boundcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from .core.estimate import Estimate
    from .core.subject import InvalidSubjectError, MatrixSubject, ModelModeError, Subject
    from .core.theorem import Assumption, Theorem, UnknownTheoremError
    from .core.verdict import Slack, TheoremResult, Verdict
    from .outputs.architecture_check import check_architecture
    from .outputs.check import assert_bound_holds, assert_bounds_hold
    from .quantities import QUANTITIES, Budget, Context
    from .verification.api import measure, verify, verify_one
    from .verification.registry import get, register, theorems, unregister
    from .verification.results import Results
