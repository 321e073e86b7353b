"""boundcheck: verify theorems about neural-network loss landscapes on real networks.

    import boundcheck as bc
    subject = bc.Subject(model, (X, Y), "cross_entropy")
    res = bc.verify(subject, theorems=["hessian.ws_lambda_max"], confidence=0.99, seed=0)
    est = bc.measure(subject, ["hessian.trace", "hessian.lambda_max"])
"""

from .api import measure, verify, verify_one
from .estimate import Estimate
from .quantities import QUANTITIES, Budget, Context
from .results import Results
from .subject import InvalidSubjectError, MatrixSubject, ModelModeError, Subject
from .theorem import Assumption, Theorem, UnknownTheoremError, get, register, theorems, unregister
from .verdict import Slack, TheoremResult, Verdict

__all__ = [
    "Assumption", "Budget", "Context", "Estimate", "InvalidSubjectError", "MatrixSubject",
    "ModelModeError", "QUANTITIES", "Results", "Slack", "Subject", "Theorem", "TheoremResult",
    "UnknownTheoremError", "Verdict", "get", "measure", "register", "theorems", "unregister",
    "verify", "verify_one",
]
