"""The error model of Hessian-vector products computed in a working precision (float32,
bfloat16) below the estimators' float64, and the allowances it adds to their intervals.

**Model** (calibrated, not proven). The products ``v ↦ H̃v`` an operator returns are treated
as exact products of a perturbed matrix, ``H̃v = (H + E)v`` with ``‖E‖₂ ≤ ε``, i.e.
``‖H̃v − Hv‖ ≤ ε‖v‖`` for every v. Rounding is not linear in v, so this is a model: ε is
calibrated by :class:`boundcheck.engines.working_precision.WorkingPrecisionOperator` on a few
vectors against float64 products of the same network (``ε = safety × the largest relative
error seen``), never derived from a-priori rounding bounds (which for a network's
double-backward pass would be many orders of magnitude too loose to be useful).

Allowances, each added to the estimator's own float64 rounding allowance:

* an extreme eigenvalue moves by at most ε (Weyl): Lanczos widens both ends by ε, and Ritz
  residual radii grow by ε;
* a quadratic-form probe ``vᵀH̃v`` is off by at most ``ε‖v‖²`` under the model, but a trace
  averages the probes, so only the mean error (the bias) matters: the random part of each
  probe's error is already in the sample spread. The bias is bounded by the calibrated
  per-probe error ``η‖v‖²`` (``η = safety × max_j |v_jᵀ(H̃ − H)v_j| / ‖v_j‖²`` over the
  calibration probes, drawn like the trace probes), which is ~√P times tighter than ``ε‖v‖²``
  for rounding that is not aligned with v; sums over basis vectors, which are not random
  probes, use ``ε`` per vector;
* ``‖H̃v‖²`` against ``‖Hv‖²``: ``|a² − b²| ≤ ε‖v‖ (2‖H̃v‖ + ε‖v‖)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ProductError:
    """Calibrated error of working-precision products (see the module docstring)."""

    dtype: str  # the working precision, e.g. "float32"
    norm: float  # ε: ‖H̃v − Hv‖ ≤ ε‖v‖ (absolute, in units of H)
    quadratic: float  # η: |vᵀ(H̃ − H)v| ≤ η‖v‖² for probes like the trace probes
    safety: float
    measured_norm: float  # max_j ‖H̃v_j − Hv_j‖/‖v_j‖ over the calibration vectors
    measured_quadratic: float  # max_j |v_jᵀ(H̃ − H)v_j|/‖v_j‖²
    vectors: int  # calibration vectors
    seconds: float  # calibration time (both precisions, the float64 operator's build included)

    @property
    def label(self) -> str:
        return f"{self.dtype} products"

    def probe_allowance(self, v: torch.Tensor) -> torch.Tensor:
        """Bias allowance ``η‖v‖²`` for each row of ``v`` (random probes)."""
        return self.quadratic * (v.double() * v.double()).sum(dim=-1)

    def basis_allowance(self, v: torch.Tensor) -> torch.Tensor:
        """``ε‖v‖²`` for each row of ``v`` (any vectors, e.g. basis vectors)."""
        return self.norm * (v.double() * v.double()).sum(dim=-1)

    def squared_norm_allowance(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Bound on ``|‖w̃‖² − ‖w‖²|`` for rows w̃ = computed ``(H − cI)v`` (module doc)."""
        nv = torch.linalg.vector_norm(v.double(), dim=-1)
        nw = torch.linalg.vector_norm(w.double(), dim=-1)
        return self.norm * nv * (2.0 * nw + self.norm * nv)

    def details(self) -> dict[str, Any]:
        return {"products": self.label,
                "product_error_model": (
                    "products are (H + E)v with ‖E‖₂ ≤ ε (calibrated against float64 "
                    "products, not proven); eigenvalues widened by ε (Weyl), probe "
                    "means by the calibrated bias η‖v‖²"),
                "product_error_norm": self.norm, "product_error_quadratic": self.quadratic,
                "product_error_safety": self.safety,
                "product_error_measured": self.measured_norm,
                "product_error_measured_quadratic": self.measured_quadratic,
                "calibration_vectors": self.vectors,
                "calibration_products": 2 * self.vectors,
                "calibration_seconds": self.seconds}


def product_error(op) -> ProductError | None:
    """The operator's product error model; None for products in float64 (the estimators'
    own rounding allowances cover those)."""
    return getattr(op, "product_error", None)
