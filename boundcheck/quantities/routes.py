"""The cheapest route that decides: dense spectrum or matrix-free estimator, per quantity.

Quantities with several routes (``hessian.lambda_max`` / ``lambda_min``, the spectral
variance and spread, the trace moments μ_j and T12's bounds from them) ask :func:`choose`.
``Budget.route`` says how:

* ``"exact"``: the dense spectrum whenever ``P ≤ Budget.max_dense_params`` (the behaviour
  before routes existed).
* ``"interval"``: never the dense Hessian (:func:`dense_allowed` is False, so the dense
  spectrum is refused and every quantity takes its matrix-free or exact-structured route).
* ``"auto"`` (default): the cheaper of the two by the cost model below, where the dense
  spectrum, built once, serves every spectral quantity of the context: it is free when
  already cached, and certain when some quantity the context will measure (``Context.planned``,
  which :func:`boundcheck.verification.api.verify` fills from the theorems' needs) builds it
  anyway (:data:`DENSE_USERS`); otherwise its cost is weighed against the matrix-free cost of
  all the planned quantities it would serve. :meth:`Budget.tightened` turns "auto" into
  "exact", so when ``verify`` refines a theorem the interval left INCONCLUSIVE, the exact
  route runs if affordable, and only then.

The cost model, in seconds on one CPU thread (the choice uses only their ratios, reported in
Hessian-vector products' time). Constants measured in one run of
``benchmarks/calibrate_routes.py`` (torch 2.13 CPU, float64, 1 thread, best of 2–3 repeats;
load average 6 on 2 shared cores, so every time is ~2× a quiet machine's, alike), by
non-negative least squares relative to each case's time over the cases it prints. Checked
against the routes' measured crossover (``benchmarks/bench_routes.py``, n = 512): at P = 154
dense was 1.3× faster (predicted 1.3×), at P = 330 they tied (predicted: Lanczos by 1.07×),
at P = 538 and 778 Lanczos was 1.7× and 3× faster (predicted 1.8× and 3.0×).

* a product ``H v``: ``PRODUCT_FIXED + PRODUCT_PER_NP · n·P`` (R-operator products of MLPs
  20→h→h→10 tanh, cross-entropy, n = 128–2048, P = 778–6154); products of networks that are
  not sequential MLPs (autograd through the gradient graph) cost :data:`AUTOGRAD_FACTOR`
  times that, and n·P undercounts the work of convolutions (so their dense route looks
  dearer than it is: the choice errs towards the interval, which ``verify`` refines).
  A :class:`MatrixSubject`'s product is a GEMV, ``MATRIX_PRODUCT_PER_P2 · P²``.
* the dense Hessian: by layer blocks ``LAYER_DENSE_FIXED + (LAYER_DENSE_PER_P2 +
  LAYER_DENSE_PER_NP2 · n)·P²`` for sequential MLPs
  (:mod:`boundcheck.engines.sequential_hessian`, the same MLPs, P = 154–6154), else P
  autograd products (one a column); then ``eigvalsh`` ``EIGVALSH_PER_P2 · P² +
  EIGVALSH_PER_P3 · P³`` (LAPACK, values only, random SPD matrices P = 200–3000); each λ
  bracket adds a Cholesky check ``CHOLESKY_PER_P3 · P³``.
* Lanczos (:func:`boundcheck.engines.estimators.lanczos.extreme_eigenvalue`, two runs): each
  step a product plus ``LANCZOS_STEP_FIXED + LANCZOS_PER_JP · j·P`` of its own work (step j
  re-orthogonalises twice against j vectors; measured on a diagonal operator, P = 2000 and
  10⁵). The steps are predicted before any product from the target ``Budget.lanczos_rel_tol``
  and a prior spectrum (:data:`PRIOR_GAP`): the first run by the Chebyshev rate of the top
  Ritz vector (Saad, "Numerical Methods for Large Eigenvalue Problems", 2nd ed. 2011, §6.6),
  the deflated run by the same KW plan :func:`~.lanczos.planned_steps` the estimator makes.
* Hutchinson-type traces (``vᵀH^j v``, ``‖(H − cI)v‖²``): the probes their
  ``trace_rel_half_width`` target needs on a prior spread (:data:`PRIOR_CV2`), P when probing
  the whole basis is cheaper (the estimators then go exhaustive), and no route at all (∞)
  when the target lies beyond ``Budget.max_probes``: at the default ±1% that is every P above
  the cap, so these take the dense spectrum wherever it is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

from boundcheck.core.estimate import Estimate
from boundcheck.core.subject import MatrixSubject, Subject
from boundcheck.engines.estimators.lanczos import planned_steps
from boundcheck.engines.residual_free import ResidualFree, residual_free
from boundcheck.engines.sequential import subject_structure
from boundcheck.quantities.frobenius import pair_form_plan
from boundcheck.quantities.registry import Context

# seconds, 1 thread; see the module docstring for how each was measured
PRODUCT_FIXED = 4.5e-4
PRODUCT_PER_NP = 8.1e-10
AUTOGRAD_FACTOR = 1.25  # sequential R-operator products measured 0.76–0.86× autograd's
MATRIX_PRODUCT_PER_P2 = 1.7e-10
LAYER_DENSE_FIXED = 3.1e-2  # its rounding bound's activation grid and block bounds
LAYER_DENSE_PER_P2 = 9.3e-9
LAYER_DENSE_PER_NP2 = 1.9e-10
EIGVALSH_PER_P2 = 1.2e-7
EIGVALSH_PER_P3 = 7.8e-11
CHOLESKY_PER_P3 = 1.9e-11
LANCZOS_STEP_FIXED = 4.9e-4
LANCZOS_PER_JP = 1.6e-8
# The prior spectrum before any product: λ_1 = 1, λ_min = PRIOR_BOTTOM and a relative gap
# (λ_1 − λ_2)/(λ_2 − λ_min) = PRIOR_GAP, which predicts 40–60 products at rel_tol 1e-6 for
# P = 10³–10⁵, the counts measured on the benchmark MLPs (benchmarks/README.md, issue 18).
PRIOR_GAP = 0.1
PRIOR_BOTTOM = -0.1
# Squared coefficient of variation of a Hutchinson sample vᵀAv (A = H^j, (H − cI)²): for
# Rademacher v it is 2(‖A‖_F² − Σ a_ii²)/tr(A)² ≤ 2/r with r = tr(A)²/‖A‖_F² the effective
# rank; 0.2 is r = 10, so ±1% at 99% needs ~13,000 probes: beyond the 2,000-probe cap, as the
# trace estimators were on the benchmark nets at initialisation (issue 18).
PRIOR_CV2 = 0.2

LAMBDAS = ("hessian.lambda_max", "hessian.lambda_min")
SPECTRAL = LAMBDAS + ("hessian.eigenvalue_variance", "hessian.eigenvalue_std",
                      "hessian.moment_1", "hessian.moment_2", "hessian.moment_3",
                      "hessian.moment_4", "moment_bound.lambda_max_k2",
                      "moment_bound.lambda_max_k3", "moment_bound.lambda_max_k4")


@dataclass(frozen=True)
class Choice:
    """A route and why, as recorded in an estimate's details."""

    route: str  # "dense" or "matrix-free"
    reason: str

    @property
    def dense(self) -> bool:
        return self.route == "dense"

    def stamp(self, est: Estimate, matrix_free: str = "matrix-free") -> Estimate:
        """``est`` with ``details["route"]`` (``matrix_free`` names the estimator) and
        ``details["route_reason"]``."""
        est.details["route"] = "dense" if self.dense else matrix_free
        est.details["route_reason"] = self.reason
        return est


def dense_allowed(ctx: Context) -> bool:
    """The dense Hessian may be built: ``P ≤ max_dense_params`` and the route is not
    "interval"."""
    return (ctx.budget.route != "interval"
            and ctx.subject.num_params <= ctx.budget.max_dense_params)


def refusal(ctx: Context) -> str:
    """Why :func:`dense_allowed` is False."""
    if ctx.budget.route == "interval":
        return "Budget.route = 'interval' never builds the dense Hessian"
    return (f"dense Hessian of {ctx.subject.num_params} parameters exceeds max_dense_params="
            f"{ctx.budget.max_dense_params}")


# --- unit costs (seconds) -------------------------------------------------------------------
def _sequential(ctx: Context) -> bool:
    structure = ctx.artifact("sequential_structure", lambda: subject_structure(ctx.subject))
    return not isinstance(structure, str)


def product_seconds(ctx: Context) -> float:
    """One Hessian-vector product on this subject."""
    p = ctx.subject.num_params
    if isinstance(ctx.subject, MatrixSubject):
        return PRODUCT_FIXED / 10 + MATRIX_PRODUCT_PER_P2 * p * p
    t = PRODUCT_FIXED + PRODUCT_PER_NP * ctx.subject.n * p
    return t if _sequential(ctx) else AUTOGRAD_FACTOR * t


def dense_seconds(ctx: Context) -> tuple[float, str]:
    """Building the dense Hessian and its eigenvalues (0 when cached), and how."""
    if ctx.cached("hessian.dense_spectrum") is not None:
        return 0.0, "the dense spectrum is already built"
    p = ctx.subject.num_params
    eig = EIGVALSH_PER_P2 * p**2 + EIGVALSH_PER_P3 * p**3
    if isinstance(ctx.subject, MatrixSubject):
        return eig, "eigvalsh"
    if _sequential(ctx):
        per_entry = LAYER_DENSE_PER_P2 + LAYER_DENSE_PER_NP2 * ctx.subject.n
        build = LAYER_DENSE_FIXED + per_entry * p * p
        return build + eig, "layer blocks + eigvalsh"
    return p * product_seconds(ctx) + eig, f"{p:,} products + eigvalsh"


def lanczos_steps(dim: int, rel_tol: float, confidence: float, max_steps: int) -> int:
    """Products :func:`~.lanczos.extreme_eigenvalue` is expected to take (both runs) on the
    prior spectrum (module docstring)."""
    if dim <= 1:
        return 1
    gamma = PRIOR_GAP
    rate = math.log(1 + 2 * gamma + 2 * math.sqrt(gamma * gamma + gamma))
    first = math.ceil((math.log(2 * math.sqrt(dim)) + math.log(1 / rel_tol)) / rate)
    if first >= min(max_steps, dim):
        return min(max_steps, dim)  # a run spanning the space needs no second one
    second_top = (1 + gamma * PRIOR_BOTTOM) / (1 + gamma)
    needed_gap = (1 - second_top) / 4  # the first run's block-residual rule (lanczos.py)
    second = planned_steps(dim - 1, (1 - confidence) / 4, 1 - needed_gap, second_top,
                           PRIOR_BOTTOM, max_steps) or max_steps
    return first + min(second, dim - 1)


def lanczos_seconds(ctx: Context) -> tuple[float, int]:
    b = ctx.budget
    p = ctx.subject.num_params
    k = lanczos_steps(p, b.lanczos_rel_tol, ctx.confidence, b.lanczos_max_iter)
    own = k * LANCZOS_STEP_FIXED + LANCZOS_PER_JP * p * k * k / 4  # two runs of ~k/2
    return k * product_seconds(ctx) + own, k


def probes_needed(ctx: Context) -> float:
    """Probes a Hutchinson-type estimate needs for its ±``trace_rel_half_width`` target on the
    prior (``(z/rel)² · PRIOR_CV2``), P when probing the whole basis is cheaper (the
    estimators then go exhaustive, and exact), ∞ when the cap would stop it short."""
    b = ctx.budget
    p = ctx.subject.num_params
    z = NormalDist().inv_cdf(1 - (1 - ctx.confidence) / 2)
    needed = math.ceil((z / b.trace_rel_half_width) ** 2 * PRIOR_CV2)
    if p <= min(needed, b.max_probes):
        return p
    return needed if needed <= b.max_probes else math.inf


def matrix_free_seconds(ctx: Context, name: str) -> tuple[float, str]:
    """The matrix-free route of one spectral quantity (:data:`SPECTRAL`), and what it is."""
    if name in LAMBDAS:
        t, k = lanczos_seconds(ctx)
        return t, f"Lanczos ({k} products)"
    per_probe = (10 if name.startswith("moment_bound.")  # μ_1..μ_4: 1 + 2 + 3 + 4
                 else int(name[-1]) if name.startswith("hessian.moment_") else 1)
    probes = probes_needed(ctx)
    if math.isinf(probes):
        return math.inf, (f"Hutchinson (±{ctx.budget.trace_rel_half_width:g} needs more than "
                          f"max_probes = {ctx.budget.max_probes:,} probes)")
    products = per_probe * probes
    return products * product_seconds(ctx), f"Hutchinson ({products:,} products)"


# --- tr H = tr G where R has no diagonal block -----------------------------------------------
# the exact tr G costs about K reverse passes over the data (per-sample Jacobians,
# quantities/ggn.py), a matrix-free trace interval at least MIN_TRACE_PRODUCTS products (each
# at least one reverse pass): with K at most this many outputs the exact route is the cheaper
GGN_TRACE_MAX_OUTPUTS = 80


def residual_free_of(ctx: Context) -> ResidualFree | None:
    """Which measured tensors' Hessian blocks have no residual part
    (:mod:`boundcheck.engines.residual_free`), read once per context; None for a bare
    matrix."""
    if not isinstance(ctx.subject, Subject):
        return None
    s = ctx.subject
    return ctx.artifact("residual_free", lambda: residual_free(
        s.net, s.params, s.param_names, [b.x for b in s.batches]))


def trace_is_ggn(ctx: Context) -> str | None:
    """Why ``tr H`` is taken as the exact ``tr G`` here (``tr R = 0`` structurally and the
    exact ``tr G`` is the cheaper route), or None."""
    free = residual_free_of(ctx)
    if free is None or not free.all_free:
        return None
    k = ctx.subject.output_dim
    if (k > GGN_TRACE_MAX_OUTPUTS and ctx.budget.route != "exact"
            and "ggn.trace" not in ctx.estimates and "ggn.trace" not in ctx.planned):
        return None
    return (f"{free.reason()}; tr G exact from per-sample Jacobians (K = {k} reverse passes "
            f"per sample)")


def fro2_exact_route(ctx: Context) -> bool:
    """Whether ``hessian.fro2`` is already measured or takes an exact route here (a cached
    dense spectrum, the dense Hessian, or the pair form), decided without measuring anything
    (quantities/hessian.py ``_fro2``). s² asks first: an estimated ‖H‖_F² would be thrown
    away for its centred estimate (on ResNet-18 that was 702 of the 990 s of s)."""
    return ("hessian.fro2" in ctx.estimates or ctx.cached("hessian.dense_spectrum") is not None
            or dense_allowed(ctx) or not isinstance(pair_form_plan(ctx), str))


# --- quantities that take the dense spectrum whenever it is allowed -------------------------
def _trace_uses_dense(ctx: Context) -> bool:
    """``hessian.trace`` (and what is computed from it) reads the dense diagonal unless the
    layer recursion, tr G (:func:`trace_is_ggn`) or finite differences give it
    (quantities/hessian.py ``_trace``)."""
    method = ctx.budget.trace_method
    return method != "finite_difference" and not (
        method == "auto" and (_sequential(ctx) or trace_is_ggn(ctx) is not None))


DENSE_USERS: dict[str, Callable[[Context], bool]] = {
    # name or prefix (ending in ".") -> True when its measurement builds the dense spectrum
    # whenever dense_allowed: mirrors the code of those quantities; update with it
    "hessian.fro2": lambda ctx: isinstance(pair_form_plan(ctx), str),  # else its pair form
    "hessian.trace": _trace_uses_dense,
    "hessian.eigenvalue_mean": _trace_uses_dense,
    "residual.trace": _trace_uses_dense,
    "projection.": lambda ctx: True,
}


def _builds_dense(ctx: Context, name: str) -> bool:
    for key, uses in DENSE_USERS.items():
        if (name == key or (key.endswith(".") and name.startswith(key))) and uses(ctx):
            return True
    return False


# --- the choice -----------------------------------------------------------------------------
def choose(ctx: Context, name: str) -> Choice:
    """The route of the spectral quantity ``name`` in this context (module docstring)."""
    route = ctx.budget.route
    if not dense_allowed(ctx):
        return Choice("matrix-free", refusal(ctx))
    if route == "exact":
        return Choice("dense", "Budget.route = 'exact' and P ≤ max_dense_params")
    if ctx.cached("hessian.dense_spectrum") is not None:
        return Choice("dense", "the dense spectrum is already built (free)")
    planned = set(ctx.planned)
    builder = next((q for q in sorted(planned) if _builds_dense(ctx, q)), None)
    if builder is not None:
        return Choice("dense", f"{builder} builds the dense spectrum anyway")
    return _weigh(ctx, name, sorted({name} | (planned & set(SPECTRAL))))


def _weigh(ctx: Context, name: str, served: list[str]) -> Choice:
    """Dense (built once, serving all of ``served``) against the sum of their matrix-free
    routes; costs are stated in products' time (seconds / one product's seconds)."""
    unit = product_seconds(ctx)
    build, how = dense_seconds(ctx)
    p = ctx.subject.num_params
    dense = build + CHOLESKY_PER_P3 * p**3 * sum(q in LAMBDAS for q in served)
    parts = dict(zip(served, (matrix_free_seconds(ctx, q) for q in served), strict=True))
    free = sum(t for t, _ in parts.values())
    own_t, own = parts[name]
    free_text = f"{own} ≈ {own_t / unit:,.0f}"
    if len(served) > 1:
        others = len(served) - 1
        free_text += (f", with the other {others} quantit{'y' if others == 1 else 'ies'} it "
                      f"serves ≈ {free / unit:,.0f}")
    dense_text = f"dense ({how}) ≈ {dense / unit:,.0f}"
    if math.isinf(free):
        q, (_, what) = next((q, v) for q, v in parts.items() if math.isinf(v[0]))
        return Choice("dense", f"est. {dense_text} products' time; {q}: {what}")
    if dense <= free:
        return Choice("dense", f"est. {dense_text} vs {free_text} products' time "
                               f"(≈ {free / max(dense, 1e-300):.3g}× cheaper)")
    return Choice("matrix-free", f"est. {free_text} vs {dense_text} products' time "
                                 f"(≈ {dense / max(free, 1e-300):.3g}× cheaper)")
