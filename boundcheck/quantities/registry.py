"""The quantity registry and the measuring context (see the package docstring).

Each quantity has a stable dotted name (``hessian.trace``, ``hessian.lambda_max``...) and a
measuring function ``(Context) -> Estimate``. A :class:`Context` measures each quantity once
per subject, caches expensive intermediates (the dense Hessian, its spectrum) and carries the
options (confidence, seed, budgets).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from boundcheck.core import checks
from boundcheck.core.estimate import Estimate
from boundcheck.core.subject import MatrixSubject
from boundcheck.engines.estimators import clock
from boundcheck.engines.estimators.clock import time_limit
from boundcheck.engines.memory import MemoryBudgetError


class NotApplicableError(Exception):
    """The quantity is undefined for this subject (reason in the message)."""


class NotAffordableError(Exception):
    """The quantity cannot be measured within the budget (reason in the message)."""


@dataclass(frozen=True)
class Quantity:
    name: str
    description: str
    measure: Callable[[Context], Estimate]
    latex: str = ""
    data_parallel: bool = False  # every route all-reduces over a distributed subject's ranks


LAYER_INDEX = "<l>"


class _Registry(dict):
    """``name -> Quantity``. A name with a ``<l>`` part (``layer.<l>.mls``) is an indexed
    family: it stands for ``layer.1.mls``, ``layer.2.mls``, ...; its measuring function takes
    the index as a second argument, and looking up a concrete name binds it."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name) is not None

    def __missing__(self, name: str) -> Quantity:
        found = self._resolve(name)
        if found is None:
            raise KeyError(name)
        return found

    def _resolve(self, name: str) -> Quantity | None:
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        parts = name.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit() and int(p) >= 1]
        if len(digits) != 1:
            return None
        index = int(parts[digits[0]])
        parts[digits[0]] = LAYER_INDEX
        family = dict.get(self, ".".join(parts))
        if family is None:
            return None
        return Quantity(name, family.description.replace(LAYER_INDEX, str(index)),
                        lambda ctx: family.measure(ctx, index),
                        family.latex.replace(LAYER_INDEX, str(index)), family.data_parallel)


QUANTITIES: dict[str, Quantity] = _Registry()


def quantity(name: str, description: str, latex: str = "", data_parallel: bool = False):
    """Decorator registering a measuring function under ``name``.

    A name with a ``<l>`` part registers an indexed family whose function is ``fn(ctx, l)``.
    ``data_parallel``: every route of the function is correct on a distributed subject (its
    products and sums are all-reduced over the ranks, :mod:`boundcheck.engines.data_parallel`);
    any other quantity is refused there (:meth:`Context.get`).
    """

    def wrap(fn: Callable[[Context], Estimate]) -> Callable[[Context], Estimate]:
        if dict.__contains__(QUANTITIES, name):
            raise ValueError(f"quantity {name!r} registered twice")
        QUANTITIES[name] = Quantity(name, description, fn, latex, data_parallel)
        return fn

    return wrap


def distributed(subject: Any) -> bool:
    """Whether ``subject`` is a :class:`boundcheck.core.subject.Subject` over a process group
    (``distributed=...``): its data are sharded across ranks."""
    return getattr(subject, "distributed", False) is not False


def data_parallel_quantities() -> list[str]:
    return sorted(name for name, q in dict.items(QUANTITIES) if q.data_parallel)


TRACE_METHODS = ("auto", "hutchinson", "hutchpp", "control_variate", "block",
                 "finite_difference")
PAPER_SUBSETS = ("first", "random")
ROUTES = ("auto", "exact", "interval")  # boundcheck.quantities.routes
CHOICES = {"trace_method": TRACE_METHODS, "paper_subset": PAPER_SUBSETS, "route": ROUTES}
# 0: never dense / never refine / no ε in the papers' harmonic factor
CAN_BE_ZERO = ("max_dense_params", "max_dense_operator_entries", "max_refinements",
               "paper_epsilon")


@dataclass
class Budget:
    """How much work measurement may do before it reports an interval instead."""

    max_dense_params: int = 6000
    # dense spectrum or matrix-free interval (boundcheck.quantities.routes): "auto" the cheaper
    # by a cost model (refinement rounds: "exact"), "exact" dense whenever P ≤
    # max_dense_params, "interval" never the dense Hessian
    route: str = "auto"
    jacobian_chunk_bytes: int = 2**28  # memory for one chunk of per-sample Jacobians
    conv_lanczos_steps: int = 200  # Lanczos steps for a convolution's operator norm
    max_dense_operator_entries: int = 2**22  # convolutions this small: dense SVD
    # Matrix-free curvature (boundcheck.engines.estimators); tighten these to refine an estimate.
    trace_rel_half_width: float = 0.01  # target half-width of trace intervals, relative
    max_probes: int = 2000  # Hutchinson probes (Hessian-vector products) per trace
    trace_method: str = "auto"  # "auto", "hutchinson", "hutchpp", "control_variate", "block"
    # (one probe per module + the exact last-layer block, engines.estimators.block_trace) or
    # "finite_difference" (loss values only, boundcheck.engines.finite_difference_trace)
    fd_trace_directions: int = 200  # directions of the finite-difference trace (≥ 10)
    projection_planes: int = 500  # Gaussian planes (δ, η) of the projection.* quantities
    saddle_draws: int = 20000  # planes simulated from the spectrum for the saddle probability
    lanczos_rel_tol: float = 1e-6  # target half-width of λ_max / λ_min, relative to ‖H‖
    lanczos_max_iter: int = 300  # products per Lanczos run (two runs per eigenvalue)
    residual_rel_tol: float = 1e-3  # sharpness (tr H) forms need |tr R| ≤ this · tr G
    lvr_noise_scale: float = 1e-3  # ε of the finite-perturbation LVR (boundcheck.engines.lvr)
    max_closed_form_flops: float = 3e11  # T2's n² Gram work (boundcheck.engines.closed_form)
    lipsdp_max_dim: int = 300  # LipSDP LMI side (input dim + hidden units); 272: ~30 s (SCS)
    max_refinements: int = 2  # INCONCLUSIVE on estimated inputs: re-measure this often
    time_limit_s: float | None = None  # per quantity measured (None: no limit); see
    # boundcheck.engines.estimators.clock: estimators stop and return the interval reached
    # Bytes curvature products and per-sample Jacobian chunks may hold beyond the model and
    # the data (boundcheck.engines.memory); None: no limit (every batch's gradient graph is
    # kept). A budget too small for one sample is MemoryBudgetError (NotAffordable).
    memory_bytes: int | None = None
    # The papers' dialect (boundcheck.quantities.paper_dialect): the authors' sample subset,
    # top-k log-volume and ε-regularised harmonic factor.
    paper_samples: int = 20  # |S|: the authors average 20 training samples per checkpoint
    paper_subset: str = "first"  # "first" n samples, or "random" (seeded by the context)
    paper_top_k: int = 3  # singular values in the log-volume (3 in the authors' code)
    paper_epsilon: float = 1e-4  # ε added to ‖h‖² in the harmonic factor
    # T10's CONVERGED precondition: ‖∇L(θ_t)‖ ≤ tol on each of the last K ≥ 1000 GD steps
    converged_grad_tol: float = 1e-4
    converged_window: int = 1000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            name, value = f"Budget.{f.name}", getattr(self, f.name)
            if f.type == "str":
                choices = CHOICES[f.name]
                if value not in choices:
                    raise ValueError(f"{name} must be one of {', '.join(choices)}, got "
                                     f"{value!r}")
            elif f.type == "int":
                checks.integer(value, name, least=0 if f.name in CAN_BE_ZERO else 1)
            elif value is None and "None" in f.type:
                continue
            elif f.name in CAN_BE_ZERO:
                checks.real(value, name, at_least=0.0)
            else:
                checks.real(value, name, above=0.0)
        if self.memory_bytes is not None:
            checks.integer(self.memory_bytes, "Budget.memory_bytes", least=1)
        if self.converged_window < 1000:
            raise ValueError(f"Budget.converged_window must be ≥ 1000 steps (T10's CONVERGED), "
                             f"got {self.converged_window}")

    def tightened(self) -> Budget:
        """The budget of the next refinement round: 4× narrower traces (4× the probes and
        finite-difference directions), 10× tighter λ. The projection planes stay as they are
        (their equality theorems are INCONCLUSIVE by nature; more planes would only cost).
        Route "auto" becomes "exact": the dense spectrum runs where the interval left a
        theorem undecided and P ≤ max_dense_params (boundcheck.quantities.routes)."""
        return dataclasses.replace(
            self, route="exact" if self.route == "auto" else self.route,
            trace_rel_half_width=self.trace_rel_half_width / 4,
            max_probes=self.max_probes * 4, fd_trace_directions=self.fd_trace_directions * 4,
            lanczos_rel_tol=self.lanczos_rel_tol / 10,
            lanczos_max_iter=self.lanczos_max_iter * 2)


@dataclass
class Context:
    subject: Any
    confidence: float = 0.99
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)
    # quantities this context is expected to measure (verify fills it from the theorems'
    # needs): lets one dense spectrum be weighed against all the routes it would serve
    planned: set[str] = field(default_factory=set)
    _artifacts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.confidence(self.confidence)
        checks.integer(self.seed, "seed")
        if not isinstance(self.budget, Budget):
            raise ValueError(f"budget must be a Budget, got {type(self.budget).__name__}")
        if distributed(self.subject) and self.budget.time_limit_s is not None:
            raise ValueError("Budget.time_limit_s cannot be used with a distributed subject: "
                             "the ranks' clocks would stop their estimators at different "
                             "products, and every product is a collective all-reduce")

    def get(self, name: str) -> Estimate:
        if name in self.estimates:
            return self.estimates[name]
        if name in self.failures:
            raise self.failures[name]
        if name not in QUANTITIES:
            raise KeyError(f"unknown quantity {name!r}; known: {', '.join(sorted(QUANTITIES))}")
        if distributed(self.subject) and not QUANTITIES[name].data_parallel:
            failure = NotApplicableError(
                f"{name} is not data-parallel: over {self.subject.world_size} ranks it would see "
                f"only this rank's shard ({self.subject.n} of {self.subject.total_samples} "
                f"samples); data-parallel quantities: {', '.join(data_parallel_quantities())}")
            self.failures[name] = failure
            raise failure
        try:
            start = time.monotonic()
            with time_limit(self.budget.time_limit_s):
                est = QUANTITIES[name].measure(self)
            clock.finished(name, time.monotonic() - start)
        except AttributeError as err:
            if not isinstance(self.subject, MatrixSubject):
                raise
            failure = NotApplicableError(f"{name} needs a network subject (model, data and "
                                         "loss); a MatrixSubject holds only its matrix")
            self.failures[name] = failure
            raise failure from err
        except (NotApplicableError, NotAffordableError, MemoryBudgetError) as err:
            self.failures[name] = err
            raise
        self.estimates[name] = est
        return est

    def cached(self, key: str) -> Any | None:
        """An intermediate already built by some measurement (e.g. the dense spectrum)."""
        return self._artifacts.get(key)

    def artifact(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._artifacts:
            self._artifacts[key] = build()
        return self._artifacts[key]
