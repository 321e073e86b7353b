"""Loss-Hessian quantities: exact from the dense Hessian when ``P ≤ Budget.max_dense_params``,
otherwise matrix-free estimators with intervals (never NotAffordableError for size alone).
Within the dense budget, λ_max, λ_min and the spread s², s take the route
:func:`boundcheck.quantities.routes.choose` picks (``Budget.route``; the cheaper of the dense
spectrum and the matrix-free estimator by a cost model), recorded in the estimate's details.

Rounding model for "exact": the dense Hessian H̃ from autograd differs from H by a symmetric
perturbation E. We bound ``‖E‖_F ≤ 2‖H̃ − H̃ᵀ‖_F + 8·u·P·‖H̃‖_F`` (the measured asymmetry is
the rounding noise autograd actually made; the second term is a floor from standard
summation bounds), plus the a-priori bound of the layer-block route for sequential MLPs
(:mod:`boundcheck.engines.sequential_hessian`, whose H̃ is exactly symmetric). Eigenvalues move by
at most ``‖E‖_2 ≤ ‖E‖_F`` (Weyl), plus LAPACK's backward error; traces by ``√P‖E‖_F``.
The spectral variance s² is computed as ``‖H − mI‖_F²/P``, never as ``tr(H²)/P − m²``
(which cancels catastrophically).
All of this is done on ``H / 2^e`` (an exact power-of-two rescaling to max |entry| ≈ 1), so
squares neither underflow nor overflow; results are scaled back at the end, and the spread s
is computed directly (never as the square root of an underflowed s²).
The dense λ_max / λ_min brackets are Cholesky-checked: ``(λ̂_max + e) I − H̃`` must factor
(else e is doubled until it does), and the rigorous bound from that factorisation (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., Thm 10.3: ``RᵀR = A + ΔA``,
``|ΔA| ≤ γ_{P+1}|Rᵀ||R|``, so ``λ_min(A) ≥ −γ_{P+1}‖R‖_F²``) is recorded in the details.

Matrix-free (:mod:`boundcheck.engines.estimators`), all statistical at ``ctx.confidence``:

* ``hessian.trace``: for sequential MLPs under "auto", exact at any size by the
  pre-activation Hessian recursion (:func:`boundcheck.engines.sequential_hessian.exact_trace`, with
  its rounding bound; also within the dense budget, where it is cheaper and tighter than the
  dense diagonal); for networks piecewise linear in each parameter tensor (ReLU CNNs,
  ResNets with eval-mode batch norm; read from the autograd graph by
  :mod:`boundcheck.engines.residual_free`) every diagonal block of R vanishes, so
  ``tr H = tr G``, exact from per-sample Jacobians when K is small enough for that to be the
  cheaper route (:func:`boundcheck.quantities.routes.trace_is_ggn`); other networks above the
  dense budget: ``Budget.trace_method``
  "hutchinson", "hutchpp", "control_variate" (``tr G`` exact + Hutchinson on ``tr R``),
  "block" (:mod:`boundcheck.engines.estimators.block_trace`: the last linear layer's block
  trace exact, per-sample probes of every other Linear/Conv block, one probe per remaining
  module; no cross-layer or cross-sample terms in the spread), or "auto": 30 pilot samples
  of each measure the spread of ``vᵀHv``, ``vᵀRv`` and the block estimator's, per product;
  the smallest is chosen and its pilot sizes it. The details give ``products_for_target``:
  what the target width would cost at the spread found (the cap is ``Budget.max_probes``).
  ``trace_method="finite_difference"`` (any size, any network
  with a loss) uses no Hessian-vector products at all: ``hessian.trace_finite_difference``.
* ``hessian.trace_finite_difference``: central second differences of the loss along
  ``Budget.fd_trace_directions`` Gaussian directions with THEOREMS.md T9(b)'s step rule,
  rounding allowance β and rank-one-calibrated critical value
  (:mod:`boundcheck.engines.finite_difference_trace`); statistical.
* ``hessian.fro2``: exact at any size by the pair form for sequential smooth-σ cross-entropy
  nets within ``Budget.max_closed_form_flops`` (:mod:`boundcheck.quantities.frobenius`);
  else ``E‖Hv‖²``. The route and why are in the estimate's details.
* ``hessian.eigenvalue_variance``: ``s² = tr((H − cI)²)/P − (m − c)²`` with ``c`` the
  estimate of m, so no large terms cancel; ``(m − c)²`` is taken over the whole interval of
  m (interval arithmetic) and the result is clamped at 0. Its confidence is the union of
  the two (``combine_kind``).
* ``hessian.lambda_max`` / ``hessian.lambda_min``: Lanczos with a residual and
  Kuczyński–Woźniakowski interval (``engines.estimators.lanczos.extreme_eigenvalue``).

For figures (not quantities): :func:`top_eigenvalues` and :func:`spectral_density`
(stochastic Lanczos quadrature), cached with ``ctx.artifact``; exact when the dense
spectrum is affordable.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from boundcheck.core.estimate import UNIT_ROUNDOFF, Estimate, combine_kind
from boundcheck.core.subject import Subject
from boundcheck.engines.estimators import stream_seed
from boundcheck.engines.estimators.block_trace import block_hutchinson_trace, block_pilot
from boundcheck.engines.estimators.lanczos import (
    SpectralDensity,
    TopRitz,
    extreme_eigenvalue,
    stochastic_lanczos_quadrature,
    top_ritz_pairs,
)
from boundcheck.engines.estimators.trace import (
    PILOT,
    apply_rows,
    control_variate_trace,
    hutchinson_trace,
    hutchpp_trace,
    rademacher,
    squared_frobenius,
)
from boundcheck.engines.finite_difference_trace import (
    finite_difference_trace,
    has_kinks,
    subject_evaluator,
)
from boundcheck.engines.last_layer_trace import last_layer_trace, module_groups
from boundcheck.engines.layer_probes import LayerProbes, probed_modules, samples_independent
from boundcheck.engines.memory import MemoryBudgetError, device_memory_bytes
from boundcheck.engines.product_error import product_error
from boundcheck.engines.sequential import subject_structure
from boundcheck.engines.sequential_hessian import exact_trace
from boundcheck.quantities.frobenius import exact_variance, pair_form_fro2
from boundcheck.quantities.ggn import (
    dense_hessian_of,
    gauss_newton,
    hessian_operator_of,
    require_calibrated_confidence,
    shard_sum,
)
from boundcheck.quantities.registry import (
    TRACE_METHODS,
    Context,
    NotAffordableError,
    NotApplicableError,
    distributed,
    quantity,
)
from boundcheck.quantities.routes import (
    choose,
    dense_allowed,
    fro2_exact_route,
    refusal,
    trace_is_ggn,
)
from boundcheck.quantities.time_budget import MIN_TRACE_PRODUCTS, require_time_for

U = UNIT_ROUNDOFF["float64"]


ETA = 2.0**-1074  # smallest subnormal: absolute rounding floor of every operation


def dense_affordable(ctx: Context) -> bool:
    """P ≤ max_dense_params and Budget.route is not "interval" (:mod:`.routes`)."""
    return dense_allowed(ctx)


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
        if not dense_allowed(ctx):
            raise NotAffordableError(refusal(ctx))
        h, known_error = dense_hessian_of(ctx)
        h = h.to(torch.float64)
        if not torch.isfinite(h).all():
            raise FloatingPointError("the Hessian has NaN/inf entries (overflow in the model?)")
        biggest = float(h.abs().max())
        scale = 2.0 ** math.frexp(biggest)[1] if biggest > 0 else 1.0
        h = h / scale
        asym = float(torch.linalg.matrix_norm(h - h.T))
        sym = 0.5 * (h + h.T)
        fro = float(torch.linalg.matrix_norm(sym))
        # the rescaled entries may carry underflow error from the unscaled computation
        pert = 2.0 * asym + 8.0 * U * p * fro + p * ETA / scale + known_error / scale
        evals = torch.linalg.eigvalsh(sym)
        return DenseSpectrum(sym, evals, pert, fro, scale)

    return ctx.artifact("hessian.dense_spectrum", build)


@quantity("hessian.dim", "number of parameters P (the Hessian's size N)", "P", data_parallel=True)
def _dim(ctx: Context) -> Estimate:
    return Estimate.integer(ctx.subject.num_params, "count")


@quantity("hessian.trace", "tr H", r"\operatorname{tr} H", data_parallel=True)
def _trace(ctx: Context) -> Estimate:
    # sequential MLPs: exact at any size, cheaper than the dense diagonal and with a tighter
    # rounding bound (an explicit Budget.trace_method still runs that estimator)
    if ctx.budget.trace_method == "finite_difference":
        return finite_difference_trace_estimate(ctx)
    structure = ctx.artifact("sequential_structure", lambda: subject_structure(ctx.subject))
    if ctx.budget.trace_method == "auto" and not isinstance(structure, str):
        t = exact_trace(ctx.subject, structure)
        value, error = shard_sum(ctx, t.value, t.abs_error)
        return Estimate.exact(value, error + ETA, "exact trace by pre-activation "
                              "Hessian recursion (sequential MLP)")
    why = trace_is_ggn(ctx) if ctx.budget.trace_method == "auto" else None
    if why is not None:
        t = ctx.get("ggn.trace")
        return Estimate.exact(t.value, t.half_width + ETA, "exact tr G (tr R = 0: the network "
                              "is piecewise linear in each parameter tensor)",
                              route="exact-structured", route_reason=why)
    if not dense_affordable(ctx):
        return matrix_free_trace(ctx)
    d = dense_spectrum(ctx)
    diag = torch.diagonal(d.matrix)
    value = float(diag.sum())
    err = math.sqrt(d.dim) * d.perturbation + d.dim * U * float(diag.abs().sum())
    return _scaled(value, err, d.scale, "dense Hessian diagonal")


@quantity("hessian.fro2", "tr H² = ‖H‖_F²", r"\operatorname{tr} H^2", data_parallel=True)
def _fro2(ctx: Context) -> Estimate:
    # a cached dense spectrum is free; else the exact pair form where it applies and its flop
    # count is within budget (boundcheck.quantities.frobenius); else dense or the estimator
    reason = "the dense spectrum is already computed (free)"
    if ctx.cached("hessian.dense_spectrum") is None:
        exact = pair_form_fro2(ctx)
        if isinstance(exact, Estimate):
            return exact
        reason = exact
    if not dense_affordable(ctx):
        require_calibrated_confidence(ctx)
        require_time_for(ctx, MIN_TRACE_PRODUCTS, "tr H² (E‖Hv‖²)")
        b = ctx.budget
        est = squared_frobenius(hessian_operator_of(ctx), 0.0, confidence=ctx.confidence,
                                rel_half_width=b.trace_rel_half_width,
                                max_probes=b.max_probes,
                                seed=stream_seed(ctx.seed, "hessian.fro2"))
        est.details.update(route="estimator", reason=reason)
        return est
    d = dense_spectrum(ctx)
    value = d.frobenius**2
    e = d.perturbation
    err = 2 * d.frobenius * e + e * e + d.dim**2 * U * value
    est = _scaled(value, err, d.scale, "dense Hessian Frobenius norm", power=2)
    est.details.update(route="dense", reason=reason)
    return est


@quantity("hessian.eigenvalue_mean", "m = tr H / P", "m", data_parallel=True)
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


@quantity("hessian.eigenvalue_variance", "s² = ‖H − mI‖_F² / P", "s^2", data_parallel=True)
def _variance(ctx: Context) -> Estimate:
    route = choose(ctx, "hessian.eigenvalue_variance")
    if not route.dense:
        # from an exact ‖H‖_F² and tr H (frobenius.py), if ‖H‖_F² will be exact
        exact = exact_variance(ctx) if fro2_exact_route(ctx) else None
        return exact if exact is not None else route.stamp(matrix_free_variance(ctx),
                                                           "centred Hutchinson")
    d = dense_spectrum(ctx)
    s, err = _centred_norm(d)
    lo, hi = max(s - err, 0.0), s + err
    return route.stamp(scaled_estimate(s * s, max(hi * hi - s * s, s * s - lo * lo), d.scale, 2,
                                       "‖H − mI‖_F² / P from the dense Hessian"
                                       ).clamp_below(0.0))


@quantity("hessian.eigenvalue_std", "s = √(‖H − mI‖_F² / P), the eigenvalues' spread", "s",
          data_parallel=True)
def _std(ctx: Context) -> Estimate:
    route = choose(ctx, "hessian.eigenvalue_std")
    if not route.dense:
        return route.stamp(std_from_variance(ctx.get("hessian.eigenvalue_variance")),
                           "√ of the variance's route")
    d = dense_spectrum(ctx)
    s, err = _centred_norm(d)
    return route.stamp(_scaled(s, err, d.scale, "‖H − mI‖_F / √P from the dense Hessian"
                               ).clamp_below(0.0))


def std_from_variance(v: Estimate) -> Estimate:
    """s from an interval for s² (e.g. from trace estimates), rounding outward."""
    v = v.clamp_below(0.0)
    lo = math.nextafter(math.sqrt(v.lower), 0.0) if v.lower > 0 else 0.0
    hi = math.nextafter(math.sqrt(v.upper), math.inf)
    value = min(max(math.sqrt(v.value), lo), hi)
    return Estimate(value, lo, hi, v.kind, "√ of " + v.method, v.confidence)


def _scaled(value: float, err: float, scale: float, method: str, power: int = 1) -> Estimate:
    """An exact estimate ``value ± err`` computed in units of ``scale**power``, mapped back
    (outward for underflow). Beyond the float64 range (entries near 1e300 squared) the value
    is +∞ and the interval [a lower bound, ∞) (issue 12: it was an OverflowError)."""
    return scaled_estimate(value, err, scale, power, method, ETA)


def scaled_estimate(value: float, err: float, scale: float, power: int, method: str,
                    floor: float = 0.0) -> Estimate:
    """``(value ± err)·scale**power`` as an exact estimate, honest when it overflows."""
    try:
        factor = scale**power
    except OverflowError:
        factor = math.inf
    v, e = value * factor, err * factor + floor
    if math.isfinite(v) and math.isfinite(e):
        return Estimate.exact(v, e, method)
    low = value - err
    if not low > 0:
        return Estimate(math.inf if value > 0 else v, -math.inf, math.inf, "exact",
                        method + " (beyond the float64 range)")
    log_low = math.log(low) + power * math.log(scale)
    lower = math.exp(log_low) * (1 - 1e-12) if log_low < 709.0 else sys.float_info.max
    return Estimate(math.inf, lower, math.inf, "exact", method + " (beyond the float64 range)")


@quantity("hessian.lambda_max", "largest eigenvalue of H", r"\lambda_{\max}", data_parallel=True)
def _lambda_max(ctx: Context) -> Estimate:
    return _extreme(ctx, "largest", "hessian.lambda_max")


@quantity("hessian.lambda_min", "smallest eigenvalue of H", r"\lambda_{\min}", data_parallel=True)
def _lambda_min(ctx: Context) -> Estimate:
    return _extreme(ctx, "smallest", "hessian.lambda_min")


def _extreme(ctx: Context, which: str, name: str) -> Estimate:
    """The dense bracket or a Lanczos interval, whichever :func:`.routes.choose` picks."""
    route = choose(ctx, name)
    if route.dense:
        return route.stamp(_dense_extreme(dense_spectrum(ctx), largest=which == "largest"))
    return route.stamp(_lanczos_eigenvalue(ctx, which, name), "lanczos")


def _dense_extreme(d: DenseSpectrum, largest: bool) -> Estimate:
    """eigvalsh's λ with its error, the outer side Cholesky-checked (see module docstring)."""
    sign = 1.0 if largest else -1.0
    lam = sign * float(d.eigenvalues[-1] if largest else d.eigenvalues[0])  # λ_max of sign·H
    lapack = d.eig_error - d.perturbation
    shift = lapack
    eye = torch.eye(d.dim, dtype=d.matrix.dtype, device=d.matrix.device)
    for _ in range(200):
        t = lam + shift
        factor, info = torch.linalg.cholesky_ex(t * eye - sign * d.matrix)
        if int(info) == 0:
            break
        shift = 2.0 * shift + ETA
    else:
        raise FloatingPointError("Cholesky check of the dense λ bracket never succeeded")
    gamma = (d.dim + 1) * U / (1 - (d.dim + 1) * U)
    diag_round = U * (abs(t) + float(torch.diagonal(d.matrix).abs().max()))
    rigorous = t + gamma * float(torch.linalg.matrix_norm(factor)) ** 2 * (1 + 4 * U) + diag_round
    outer = t + d.perturbation
    inner = lam - d.eig_error
    details = {"cholesky_checked_at": sign * t * d.scale,
               "cholesky_rigorous_bound": sign * (rigorous + d.perturbation) * d.scale,
               "cholesky_widened": shift > lapack}
    value = lam * d.scale
    lo, hi = inner * d.scale - ETA, outer * d.scale + ETA
    method = "eigvalsh of the dense Hessian, Cholesky-checked"
    if largest:
        return Estimate(value, lo, hi, "exact", method, details=details)
    return Estimate(-value, -hi, -lo, "exact", method, details=details)


def lanczos_steps_in_memory(ctx: Context) -> int:
    """``Budget.lanczos_max_iter``, or fewer when the memory cannot hold that many Krylov rows:
    Lanczos keeps every basis vector and its image, 2 × steps × P float64 numbers (ResNet-18:
    179 MB a step, 300 steps would be 54 GB). The memory
    is ``Budget.memory_bytes``, or else half the device's. Fewer steps give a wider interval,
    never a wrong one."""
    b = ctx.budget
    memory = b.memory_bytes
    source = "Budget.memory_bytes"
    if memory is None:
        total = device_memory_bytes(getattr(ctx.subject, "device", torch.device("cpu")))
        if total is None:
            return b.lanczos_max_iter
        memory, source = total // 2, "half the device's memory"
    per_step = 2 * 8 * ctx.subject.num_params
    fit = memory // per_step
    if fit < 4:
        raise MemoryBudgetError(
            f"Lanczos needs at least 4 steps of 2 × {ctx.subject.num_params:,} float64 numbers "
            f"({4 * per_step / 2**30:.2f} GiB); {source} is {memory / 2**30:.2f} GiB")
    return min(b.lanczos_max_iter, int(fit))


def _lanczos_eigenvalue(ctx: Context, which: str, name: str) -> Estimate:
    b = ctx.budget
    steps = lanczos_steps_in_memory(ctx)
    r = extreme_eigenvalue(hessian_operator_of(ctx), which, confidence=ctx.confidence,
                           rel_tol=b.lanczos_rel_tol, max_steps=steps,
                           seed=stream_seed(ctx.seed, name))
    details = dict(r.details)
    if steps < b.lanczos_max_iter:
        details["max_steps"] = (f"{steps} per run: the Krylov rows the memory holds "
                                f"(Budget.memory_bytes, else half the device's; "
                                f"Budget.lanczos_max_iter {b.lanczos_max_iter})")
    method = details.pop("method")
    if "products" in details:
        method = f"{method}; {details['products']}"
    details["matvecs"] = r.matvecs
    return Estimate(r.value, r.lower, r.upper, r.kind, method, r.confidence, details)


# --- matrix-free traces ---------------------------------------------------------------------
def matrix_free_trace(ctx: Context) -> Estimate:
    """``tr H`` by the estimator ``Budget.trace_method`` names (see the module docstring)."""
    require_calibrated_confidence(ctx)
    require_time_for(ctx, MIN_TRACE_PRODUCTS, "tr H (Hutchinson-type)")
    b = ctx.budget
    method = b.trace_method
    if method not in TRACE_METHODS:
        raise ValueError(f"Budget.trace_method must be one of {TRACE_METHODS}, got {method!r}")
    op = hessian_operator_of(ctx)
    common = {"confidence": ctx.confidence, "rel_half_width": b.trace_rel_half_width,
              "max_probes": b.max_probes, "seed": stream_seed(ctx.seed, "hessian.trace")}
    if method == "hutchpp":
        return hutchpp_trace(op, **common)
    pilot = None
    selection: dict = {}
    if method == "auto":
        method, pilot, selection = _choose_trace_estimator(ctx, op)
    if method == "block":
        reason = _block_unavailable(ctx, op)
        if reason:
            raise NotApplicableError(f"trace_method='block': {reason}")
        groups, exact, err, extra, info = _block_parts(ctx)
        est = block_hutchinson_trace(op, groups, exact, err, pilot=pilot, extra=extra,
                                     extra_cost=len(info.get("per_sample_layers", ())),
                                     **common, **info)
    elif method == "hutchinson":
        est = hutchinson_trace(op, pilot=pilot, **common)
    else:
        g = gauss_newton(ctx)
        t = ctx.get("ggn.trace")
        est = control_variate_trace(op, t.value, t.half_width, g.quadratic_form, pilot=pilot,
                                    **common)
    est.details.update(selection)
    if est.kind == "statistical" and est.details.get("sample_sd", 0.0) > 0.0:
        # the cost of the target, shown: products a normal-theory interval of the target
        # width would need at this spread (the cap is Budget.max_probes)
        per = est.details.get("groups", 1)
        target = b.trace_rel_half_width * abs(est.value)
        if target > 0.0:
            z = est.details["critical_value"]
            est.details["products_for_target"] = per * math.ceil(
                (z * est.details["sample_sd"] / target) ** 2)
    return est


def _block_unavailable(ctx: Context, op) -> str | None:
    """Why the block estimator cannot run here (None: it can). Its exact part and per-sample
    probes read this process's data and float64 net, so it is neither data-parallel nor
    covered by the working-precision allowance (calibrated on full-space probes only)."""
    if distributed(ctx.subject):
        return "its exact last-layer part and per-sample probes are not data-parallel"
    if product_error(op) is not None:
        return ("its group probes have no working-precision allowance (the product error is "
                "calibrated on full-space probes)")
    return None


def _block_parts(ctx: Context):
    """The block-diagonal estimator's parts: the exact last-layer block trace
    (:mod:`boundcheck.engines.last_layer_trace`) where it applies, per-sample probes of the
    blocks of layers linear in their parameters (:mod:`boundcheck.engines.layer_probes`,
    when samples do not interact), and one parameter-space group per remaining module."""
    if not isinstance(ctx.subject, Subject):
        return [torch.arange(ctx.subject.num_params)], 0.0, 0.0, None, {
            "exact_block": "none (a bare matrix has no layers)"}
    s = ctx.subject
    last = ctx.artifact("last_layer_trace", lambda: last_layer_trace(s))
    info: dict = {"exact_block": f"none ({last})" if isinstance(last, str) else last.module}
    exact, err, skip = 0.0, 0.0, set()
    if not isinstance(last, str):
        exact, err, skip = last.value, last.abs_error, {last.module}
    layers = probed_modules(s, skip) if samples_independent(s) else []
    done = [p for _, m in layers for p in m.parameters(recurse=False)]
    done_idx = [torch.arange(a, b) for p, (a, b) in _offsets(s) if any(p is q for q in done)]
    if not isinstance(last, str):
        done_idx.append(last.indices)
    groups = module_groups(s, torch.cat(done_idx) if done_idx else None)
    extra = None
    if layers:
        probes = ctx.artifact("layer_probes", lambda: LayerProbes(s, layers))
        extra = probes.sample
        info["per_sample_layers"] = [name for name, _ in layers]
    return groups, exact, err, extra, info


def _offsets(s: Subject):
    o = 0
    for p in s.params:
        yield p, (o, o + p.numel())
        o += p.numel()


def _choose_trace_estimator(ctx: Context, op) -> tuple[str, torch.Tensor, dict]:
    """Pilot probes: Hutchinson's samples ``vᵀHv`` against the control variate's ``vᵀRv``
    and the block-diagonal estimator's samples, compared by variance per product."""
    gen = torch.Generator().manual_seed(stream_seed(ctx.seed, "hessian.trace.pilot"))
    start = time.perf_counter()
    v = rademacher(PILOT, op.dim, gen, op.dtype, op.device)
    x_h = (v * apply_rows(op, v)).sum(dim=1).double().cpu()
    if not isinstance(ctx.subject, Subject):
        return "hutchinson", x_h, {"selected": "hutchinson (no Gauss–Newton split)"}
    seconds = {"hutchinson": time.perf_counter() - start}
    x_r = x_h - gauss_newton(ctx).quadratic_form(v).double().cpu()
    seconds["control_variate"] = time.perf_counter() - start
    unavailable = _block_unavailable(ctx, op)
    if unavailable:
        costs = {"hutchinson": float(x_h.var()), "control_variate": 1.5 * float(x_r.var())}
        best = min(costs, key=costs.get)
        return best, {"hutchinson": x_h, "control_variate": x_r}[best], {
            "selected": best, "pilot_var_h": float(x_h.var()), "pilot_var_r": float(x_r.var()),
            "pilot_var_per_product": costs, "block_skipped": unavailable,
            "pilot_seconds": seconds}
    start = time.perf_counter()
    groups, _, _, extra, info = _block_parts(ctx)
    x_b = block_pilot(op, groups, PILOT, gen, extra)
    seconds["block"] = time.perf_counter() - start
    # per product: a control-variate probe costs about 1.5 Hessian-vector products, a block
    # sample one product per group and per probed layer
    per = len(groups) + len(info.get("per_sample_layers", ()))
    costs = {"hutchinson": float(x_h.var()), "control_variate": 1.5 * float(x_r.var()),
             "block": per * float(x_b.var())}
    pilots = {"hutchinson": x_h, "control_variate": x_r, "block": x_b}
    best = min(costs, key=costs.get)
    return best, pilots[best], {"selected": best, "pilot_var_h": float(x_h.var()),
                                "pilot_var_r": float(x_r.var()),
                                "pilot_var_per_product": costs,
                                # the cost model counts products; the wall time is shown
                                "pilot_seconds": seconds}


def matrix_free_variance(ctx: Context) -> Estimate:
    """``s²`` from a centred estimate ``tr((H − cI)²)`` and the interval of m (module doc)."""
    require_calibrated_confidence(ctx)
    b = ctx.budget
    mean = ctx.get("hessian.eigenvalue_mean")
    require_time_for(ctx, MIN_TRACE_PRODUCTS, "s² (E‖(H − cI)v‖²)")
    c = mean.value
    p = ctx.subject.num_params
    y = squared_frobenius(hessian_operator_of(ctx), c, confidence=ctx.confidence,
                          rel_half_width=b.trace_rel_half_width, max_probes=b.max_probes,
                          seed=stream_seed(ctx.seed, "hessian.eigenvalue_variance"))
    far = max((mean.lower - c) ** 2, (mean.upper - c) ** 2)
    value = y.value / p
    # + absolute floors: at tiny curvature the P squared entries of (H − cI)v underflow
    # (≤ one subnormal spacing each), so every sample, and the interval, may read 0 where the
    # truth is ~1e-380 (a VIOLATED λ_min bound at 1e-191 curvature, tests/test_tiny_scale.py)
    lower = max(0.0, (y.lower / p - far) * (1 - 4 * U) - 8 * ETA)
    upper = (y.upper + 2 * p * ETA) / p * (1 + 4 * U) + 8 * ETA
    kind, conf = combine_kind([mean, y])
    return Estimate(min(max(value, lower), upper), lower, upper, kind,
                    "tr((H − cI)²)/P − (m − c)², c = estimate of m; interval arithmetic", conf,
                    {"centre": c, "centred_fro2": y.to_dict(), "mean": mean.to_dict()})


# --- spectra for figures (artifacts, not quantities) ----------------------------------------
def top_eigenvalues(ctx: Context, k: int = 10, largest: bool = True) -> TopRitz:
    """The k largest (or smallest) eigenvalues: exact from the dense spectrum when affordable,
    else converged Ritz values, each with a residual radius holding an eigenvalue."""

    def build() -> TopRitz:
        if dense_affordable(ctx):
            d = dense_spectrum(ctx)
            ev = d.eigenvalues.cpu().numpy() * d.scale
            picked = ev[::-1][:k] if largest else ev[:k]
            return TopRitz(picked.copy(), np.full(len(picked), d.eig_error * d.scale), None, 0)
        return top_ritz_pairs(hessian_operator_of(ctx), k, largest=largest,
                              max_steps=lanczos_steps_in_memory(ctx),
                              seed=stream_seed(ctx.seed, "hessian.top_eigenvalues"))

    return ctx.artifact(f"hessian.top_eigenvalues:{k}:{largest}", build)


def spectral_density(ctx: Context, num_probes: int = 10, steps: int = 80) -> SpectralDensity:
    """The Hessian's eigenvalue density: every eigenvalue with weight 1/P when the dense
    spectrum is affordable, else stochastic Lanczos quadrature."""

    def build() -> SpectralDensity:
        if dense_affordable(ctx):
            d = dense_spectrum(ctx)
            ev = d.eigenvalues.cpu().numpy() * d.scale
            return SpectralDensity(ev[None, :], np.full((1, len(ev)), 1.0 / len(ev)))
        return stochastic_lanczos_quadrature(
            hessian_operator_of(ctx), num_probes, steps,
            seed=stream_seed(ctx.seed, "hessian.spectral_density"))

    return ctx.artifact(f"hessian.spectral_density:{num_probes}:{steps}", build)


# --- the trace from loss values (THEOREMS.md T9(b)) ------------------------------------------
@quantity("hessian.trace_finite_difference",
          "tr H from central second differences of the loss along Gaussian directions",
          r"\operatorname{tr} H")
def _trace_fd(ctx: Context) -> Estimate:
    return finite_difference_trace_estimate(ctx)


def finite_difference_trace_estimate(ctx: Context) -> Estimate:
    """``tr H`` by :func:`boundcheck.engines.finite_difference_trace.finite_difference_trace`
    in the subject's dtype."""
    if not isinstance(ctx.subject, Subject):
        raise NotApplicableError("the finite-difference trace needs a loss to evaluate "
                                 "(a bare matrix has none)")
    if distributed(ctx.subject):
        raise NotApplicableError("the finite-difference trace is not data-parallel (it would "
                                 "see only this rank's shard): use another trace_method")
    require_calibrated_confidence(ctx)
    evaluate, theta = subject_evaluator(ctx.subject)
    r = finite_difference_trace(evaluate, theta, num_directions=ctx.budget.fd_trace_directions,
                                confidence=ctx.confidence,
                                seed=stream_seed(ctx.seed, "hessian.trace_finite_difference"),
                                piecewise_linear=has_kinks(ctx.subject.net))
    method = (f"central second differences of L along {r.details['directions']} Gaussian "
              f"directions, ε = {r.details['epsilon']:.3g}; ± (c·s/√M + β)")
    if not math.isfinite(r.value):
        raise FloatingPointError("the loss was not finite along a finite-difference step")
    return Estimate(r.value, r.lower, r.upper, "statistical", method, ctx.confidence,
                    r.details)
