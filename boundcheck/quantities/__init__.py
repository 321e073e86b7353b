"""Layer 3, the measurable quantities: the names theorems are written in.

Each quantity has a stable dotted name (``hessian.trace``, ``hessian.lambda_max``...) and a
measuring function ``(Context) -> Estimate`` that calls the engines (layer 2). A
:class:`Context` measures each quantity once per subject, caches expensive intermediates (the
dense Hessian, its spectrum) and carries the options (confidence, seed, budgets). The registry
and the context live in ``registry``; each other module registers one family of quantities.
"""

from boundcheck.quantities import (  # noqa: F401  (importing registers each family)
    closed_form,
    compression,
    data_geometry,
    ggn,
    hessian,
    jacobian,
    lipschitz,
    moments,
    paper_dialect,
    projections,
    stability,
    weights,
)
from boundcheck.quantities.registry import (
    LAYER_INDEX,
    QUANTITIES,
    Budget,
    Context,
    MemoryBudgetError,
    NotAffordableError,
    NotApplicableError,
    Quantity,
    quantity,
)

__all__ = ["LAYER_INDEX", "QUANTITIES", "Budget", "Context", "MemoryBudgetError",
           "NotAffordableError",
           "NotApplicableError", "Quantity", "quantity"]
