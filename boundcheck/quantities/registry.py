"""The quantity registry and the measuring context (see the package docstring).

Each quantity has a stable dotted name (``hessian.trace``, ``hessian.lambda_max``...) and a
measuring function ``(Context) -> Estimate``. A :class:`Context` measures each quantity once
per subject, caches expensive intermediates (the dense Hessian, its spectrum) and carries the
options (confidence, seed, budgets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from boundcheck.core.estimate import Estimate


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
                        family.latex.replace(LAYER_INDEX, str(index)))


QUANTITIES: dict[str, Quantity] = _Registry()


def quantity(name: str, description: str, latex: str = ""):
    """Decorator registering a measuring function under ``name``.

    A name with a ``<l>`` part registers an indexed family whose function is ``fn(ctx, l)``.
    """

    def wrap(fn: Callable[[Context], Estimate]) -> Callable[[Context], Estimate]:
        if dict.__contains__(QUANTITIES, name):
            raise ValueError(f"quantity {name!r} registered twice")
        QUANTITIES[name] = Quantity(name, description, fn, latex)
        return fn

    return wrap


@dataclass
class Budget:
    """How much work measurement may do before it reports an interval instead."""

    max_dense_params: int = 6000
    jacobian_chunk_bytes: int = 2**28  # memory for one chunk of per-sample Jacobians
    conv_lanczos_steps: int = 200  # Lanczos steps for a convolution's operator norm
    max_dense_operator_entries: int = 2**22  # convolutions this small: dense SVD
    # Matrix-free curvature (boundcheck.engines.estimators); tighten these to refine an estimate.
    trace_rel_half_width: float = 0.01  # target half-width of trace intervals, relative
    max_probes: int = 2000  # Hutchinson probes (Hessian-vector products) per trace
    trace_method: str = "auto"  # "auto", "hutchinson", "hutchpp" or "control_variate"
    lanczos_rel_tol: float = 1e-6  # target half-width of λ_max / λ_min, relative to ‖H‖
    lanczos_max_iter: int = 300  # products per Lanczos run (two runs per eigenvalue)
    residual_rel_tol: float = 1e-3  # sharpness (tr H) forms need |tr R| ≤ this · tr G
    lvr_noise_scale: float = 1e-3  # ε of the finite-perturbation LVR (boundcheck.engines.lvr)
    max_closed_form_flops: float = 3e11  # T2's n² Gram work (boundcheck.engines.closed_form)
    lipsdp_max_dim: int = 300  # LipSDP LMI side (input dim + hidden units); 272: ~30 s (SCS)
    max_refinements: int = 2  # INCONCLUSIVE on estimated inputs: re-measure this often

    def tightened(self) -> Budget:
        """The budget of the next refinement round: 4× narrower traces, 10× tighter λ."""
        return dataclasses.replace(
            self, trace_rel_half_width=self.trace_rel_half_width / 4,
            max_probes=self.max_probes * 4, lanczos_rel_tol=self.lanczos_rel_tol / 10,
            lanczos_max_iter=self.lanczos_max_iter * 2)


@dataclass
class Context:
    subject: Any
    confidence: float = 0.99
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)
    _artifacts: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Estimate:
        if name in self.estimates:
            return self.estimates[name]
        if name in self.failures:
            raise self.failures[name]
        if name not in QUANTITIES:
            raise KeyError(f"unknown quantity {name!r}; known: {', '.join(sorted(QUANTITIES))}")
        try:
            est = QUANTITIES[name].measure(self)
        except (NotApplicableError, NotAffordableError) as err:
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
