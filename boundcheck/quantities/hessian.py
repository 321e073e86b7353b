"""Loss-Hessian quantities measured exactly from the dense Hessian (small P).

Rounding model for "exact": the dense Hessian H̃ from autograd differs from H by a symmetric
perturbation E. We bound ``‖E‖_F ≤ 2‖H̃ − H̃ᵀ‖_F + 8·u·P·‖H̃‖_F`` (the measured asymmetry is
the rounding noise autograd actually made; the second term is a floor from standard
summation bounds). Eigenvalues move by at most ``‖E‖_2 ≤ ‖E‖_F`` (Weyl), plus LAPACK's
backward error; traces by ``√P‖E‖_F``. The spectral variance s² is computed as
``‖H − mI‖_F²/P``, never as ``tr(H²)/P − m²`` (which cancels catastrophically).
All of this is done on ``H / 2^e`` (an exact power-of-two rescaling to max |entry| ≈ 1), so
squares neither underflow nor overflow; results are scaled back at the end, and the spread s
is computed directly (never as the square root of an underflowed s²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..curvature import dense_hessian
from ..estimate import UNIT_ROUNDOFF, Estimate
from . import Context, NotAffordableError, quantity

U = UNIT_ROUNDOFF["float64"]


ETA = 2.0**-1074  # smallest subnormal: absolute rounding floor of every operation


@dataclass(frozen=True)
class DenseSpectrum:
    """The symmetrised Hessian divided by ``scale`` (a power of two), and its spectrum."""

    matrix: torch.Tensor  # symmetrised H / scale
    eigenvalues: torch.Tensor  # ascending, of matrix
    perturbation: float  # bound on ‖E‖_F, in scaled units
    frobenius: float  # of matrix
    scale: float = 1.0

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
        biggest = float(h.abs().max())
        scale = 2.0 ** math.frexp(biggest)[1] if biggest > 0 else 1.0
        h = h / scale
        asym = float(torch.linalg.matrix_norm(h - h.T))
        sym = 0.5 * (h + h.T)
        fro = float(torch.linalg.matrix_norm(sym))
        # the rescaled entries may carry underflow error from the unscaled computation
        pert = 2.0 * asym + 8.0 * U * p * fro + p * ETA / scale
        evals = torch.linalg.eigvalsh(sym)
        return DenseSpectrum(sym, evals, pert, fro, scale)

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
    return _scaled(value, err, d.scale, "dense Hessian diagonal")


@quantity("hessian.fro2", "tr H² = ‖H‖_F²", r"\operatorname{tr} H^2")
def _fro2(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    value = d.frobenius**2
    e = d.perturbation
    err = 2 * d.frobenius * e + e * e + d.dim**2 * U * value
    return _scaled(value, err, d.scale**2, "dense Hessian Frobenius norm")


@quantity("hessian.eigenvalue_mean", "m = tr H / P", "m")
def _mean(ctx: Context) -> Estimate:
    t = ctx.get("hessian.trace")
    p = ctx.subject.num_params
    return Estimate(t.value / p, t.lower / p, t.upper / p, t.kind, t.method + " / P",
                    t.confidence)


def _centred_norm(d: DenseSpectrum) -> tuple[float, float]:
    """‖H − mI‖_F / √P and a bound on its error, in scaled units."""
    p = d.dim
    m = float(torch.diagonal(d.matrix).sum()) / p
    centred = d.matrix - m * torch.eye(p, dtype=d.matrix.dtype, device=d.matrix.device)
    c = float(torch.linalg.matrix_norm(centred))
    # ‖E − (tr E/P) I‖_F ≤ ‖E‖_F; an error δ in m adds P·δ² to ‖·‖² (tr of centred H is 0)
    err = d.perturbation + p * U * c + math.sqrt(p) * p * U * abs(m) + ETA
    return c / math.sqrt(p), err / math.sqrt(p)


@quantity("hessian.eigenvalue_variance", "s² = ‖H − mI‖_F² / P", "s^2")
def _variance(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    s, err = _centred_norm(d)
    lo, hi = max(s - err, 0.0), s + err
    value = s * s * d.scale**2
    est = Estimate(value, min(lo * lo * d.scale**2, value), max(hi * hi * d.scale**2, value),
                   "exact", "‖H − mI‖_F² / P from the dense Hessian")
    return est


@quantity("hessian.eigenvalue_std", "s = √(‖H − mI‖_F² / P), the eigenvalues' spread", "s")
def _std(ctx: Context) -> Estimate:
    if ctx.subject.num_params > ctx.budget.max_dense_params:
        return std_from_variance(ctx.get("hessian.eigenvalue_variance"))
    d = dense_spectrum(ctx)
    s, err = _centred_norm(d)
    return _scaled(s, err, d.scale, "‖H − mI‖_F / √P from the dense Hessian").clamp_below(0.0)


def std_from_variance(v: Estimate) -> Estimate:
    """s from an interval for s² (e.g. from trace estimates), rounding outward."""
    v = v.clamp_below(0.0)
    lo = math.nextafter(math.sqrt(v.lower), 0.0) if v.lower > 0 else 0.0
    hi = math.nextafter(math.sqrt(v.upper), math.inf)
    value = min(max(math.sqrt(v.value), lo), hi)
    return Estimate(value, lo, hi, v.kind, "√ of " + v.method, v.confidence)


def _scaled(value: float, err: float, scale: float, method: str) -> Estimate:
    """An exact estimate computed in scaled units, mapped back (outward for underflow)."""
    v = value * scale
    e = err * scale + ETA
    return Estimate.exact(v, e, method)


@quantity("hessian.lambda_max", "largest eigenvalue of H", r"\lambda_{\max}")
def _lambda_max(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    return _scaled(float(d.eigenvalues[-1]), d.eig_error, d.scale, "eigvalsh of the dense Hessian")


@quantity("hessian.lambda_min", "smallest eigenvalue of H", r"\lambda_{\min}")
def _lambda_min(ctx: Context) -> Estimate:
    d = dense_spectrum(ctx)
    return _scaled(float(d.eigenvalues[0]), d.eig_error, d.scale, "eigvalsh of the dense Hessian")
