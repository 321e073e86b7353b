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
    "measure": "api", "verify": "api", "verify_one": "api",
    "check_architecture": "architecture_check",
    "assert_bound_holds": "check", "assert_bounds_hold": "check",
    "Estimate": "estimate",
    "QUANTITIES": "quantities", "Budget": "quantities", "Context": "quantities",
    "Results": "results",
    "InvalidSubjectError": "subject", "MatrixSubject": "subject", "ModelModeError": "subject",
    "Subject": "subject",
    "Assumption": "theorem", "Theorem": "theorem", "UnknownTheoremError": "theorem",
    "get": "theorem", "register": "theorem", "theorems": "theorem", "unregister": "theorem",
    "Slack": "verdict", "TheoremResult": "verdict", "Verdict": "verdict",
}

__all__ = [
    "QUANTITIES", "Assumption", "Budget", "Context", "Estimate", "InvalidSubjectError",
    "MatrixSubject", "ModelModeError", "Results", "Slack", "Subject", "Theorem",
    "TheoremResult", "UnknownTheoremError", "Verdict", "assert_bound_holds",
    "assert_bounds_hold", "check_architecture", "get", "measure", "register", "theorems",
    "unregister", "verify", "verify_one",
]


def __getattr__(name: str) -> Any:
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
    from .api import measure, verify, verify_one
    from .architecture_check import check_architecture
    from .check import assert_bound_holds, assert_bounds_hold
    from .estimate import Estimate
    from .quantities import QUANTITIES, Budget, Context
    from .results import Results
    from .subject import InvalidSubjectError, MatrixSubject, ModelModeError, Subject
    from .theorem import (
        Assumption,
        Theorem,
        UnknownTheoremError,
        get,
        register,
        theorems,
        unregister,
    )
    from .verdict import Slack, TheoremResult, Verdict
