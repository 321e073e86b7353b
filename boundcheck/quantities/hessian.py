"""Loss-Hessian quantities measured exactly from the dense Hessian (small P).

Rounding model for "exact": the dense Hessian H̃ from autograd differs from H by a symmetric
perturbation E. We bound ``‖E‖_F ≤ 2‖H̃ − H̃ᵀ‖_F + 8·u·P·‖H̃‖_F`` (the measured asymmetry is
the rounding noise autograd actually made; the second term is a floor from standard
summation bounds). Eigenvalues move by at most ``‖E‖_2 ≤ ‖E‖_F`` (Weyl), plus LAPACK's
backward error; traces by ``√P‖E‖_F``. The spectral variance s² is computed as
``‖H − mI‖_F²/P``, never as ``tr(H²)/P − m²`` (which cancels catastrophically).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..curvature import dense_hessian
from ..estimate import UNIT_ROUNDOFF, Estimate
from . import Context, NotAffordableError, quantity

U = UNIT_ROUNDOFF["float64"]


@dataclass(frozen=True)
class DenseSpectrum:
    matrix: torch.Tensor  # symmetrised H
    eigenvalues: torch.Tensor  # ascending
    perturbation: float  # bound on ‖E‖_F
    frobenius: float

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    @property
    def eig_error(self) -> float:
        return self.perturbation + 4 * self.dim * U * self.frobenius


def dense_spectrum(ctx: Context) -> DenseSpectrum:
    def build() -> DenseSpectrum:
        p = ctx.subject.num_params
        if p > ctx.budget.max_dense_params:
            raise NotAffordableError(
                f"dense Hessian of {p} parameters exceeds max_dense_params="
                f"{ctx.budget.max_dense_params}")
        h = dense_hessian(ctx.subject).to(torch.float64)
        if not torch.isfinite(h).all():
            raise FloatingPointError("the Hessian has NaN/inf entries (overflow in the model?)")
        asym = float(torch.linalg.matrix_norm(h - h.T))
        sym = 0.5 * (h + h.T)
        fro = float(torch.linalg.matrix_norm(sym))
        pert = 2.0 * asym + 8.0 * U * p * fro
        evals = torch.linalg.eigvalsh(sym)
        return DenseSpectrum(sym, evals, pert, fro)

    return ctx.artifact("hessian.dense_spectrum", build)


@quantity("hessian.dim", "number of parameters P (the Hessian's size N)", "P")
def _dim(ctx: Context) -> Estimate:
    return Estimate.integer(ctx.subject.num_params, "count")


@quantity("hessian.trace", "tr H", r"\operatorname{tr} H")
def _trace(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    diag = torch.diagonal(d.matrix)
    value = float(diag.sum())
    err = math.sqrt(d.dim) * d.perturbation + d.dim * U * float(diag.abs().sum())
    return Estimate.exact(value, err, "dense Hessian diagonal")


@quantity("hessian.fro2", "tr H² = ‖H‖_F²", r"\operatorname{tr} H^2")
def _fro2(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    value = d.frobenius**2
    e = d.perturbation
    err = 2 * d.frobenius * e + e * e + d.dim**2 * U * value
    return Estimate.exact(value, err, "dense Hessian Frobenius norm")


@quantity("hessian.eigenvalue_mean", "m = tr H / P", "m")
def _mean(ctx: Context) -> Estimate:
    t = ctx.get("hessian.trace")
    p = ctx.subject.num_params
    return Estimate(t.value / p, t.lower / p, t.upper / p, t.kind, t.method + " / P",
                    t.confidence)


@quantity("hessian.eigenvalue_variance", "s² = ‖H − mI‖_F² / P", "s^2")
def _variance(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    p = d.dim
    m = float(torch.diagonal(d.matrix).sum()) / p
    centred = d.matrix - m * torch.eye(p, dtype=d.matrix.dtype, device=d.matrix.device)
    c2 = float(torch.linalg.matrix_norm(centred)) ** 2
    e = d.perturbation
    err = (2 * math.sqrt(c2) * e + e * e + p * p * U * c2) / p
    return Estimate.exact(c2 / p, err, "‖H − mI‖_F² / P from the dense Hessian").clamp_below(0.0)


@quantity("hessian.lambda_max", "largest eigenvalue of H", r"\lambda_{\max}")
def _lambda_max(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    return Estimate.exact(float(d.eigenvalues[-1]), d.eig_error, "eigvalsh of the dense Hessian")


@quantity("hessian.lambda_min", "smallest eigenvalue of H", r"\lambda_{\min}")
def _lambda_min(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    return Estimate.exact(float(d.eigenvalues[0]), d.eig_error, "eigvalsh of the dense Hessian")
