"""T10 — Linear stability of gradient descent: a GD limit has λ_max(H) ≤ 2/η.

Sources: L. Wu, C. Ma and W. E, "How SGD selects the global minima in over-parameterized
learning: a dynamical stability perspective", NeurIPS 2018; J. Cohen, S. Kaur, Y. Li,
J. Z. Kolter and A. Talwalkar, "Gradient descent on neural networks typically occurs at the
edge of stability", ICLR 2021; the measure-zero step: J. D. Lee, I. Panageas, G. Piliouras,
M. Simchowitz, M. I. Jordan and B. Recht, "First-order methods almost always avoid strict
saddle points", Math. Program. 176 (2019), Thm 2 (centre–stable manifold theorem).

Statement. Let θ* be a critical point of L with L twice continuously differentiable near θ*,
and GD ``θ_{t+1} = θ_t − η∇L(θ_t)``. If ``λ_max(H(θ*)) > 2/η`` (or ``λ_min < 0``), the
starts from which GD converges to θ* form a null set. So for almost every start: if GD
converges to θ*, then ``λ_max(H(θ*)) ≤ 2/η``. boundcheck verifies
``λ_max ≤ (2/η)(1 + 10⁻³)`` at the end of a run (the 10⁻³ absorbs that θ_T is near, not at,
θ*: converged runs end at ηλ_max/2 = 0.9998–0.99999, THEOREMS.md).

Preconditions (each failing one gives NOT_APPLICABLE with its reason):

* plain full-batch GD (``gd.step_size`` exists: no SGD, Adam or momentum);
* CONVERGED: ``‖∇L(θ_t)‖ ≤ tol`` on every one of the last K ≥ 1000 steps (as recorded by
  training) and at θ_T in float64. A flat loss is not convergence: a period-2 oscillation
  across the sharp valley keeps ‖∇L‖ ≈ λ·amplitude while the loss barely moves;
* a finite minimiser: not cross-entropy on training classes that the last layer's inputs
  separate (then no critical point lies near θ_T and ‖θ‖ → ∞;
  :mod:`boundcheck.engines.separation` proves separation by an LP witness);
* L is C² at the end: no training pre-activation of a piecewise-linear σ within
  ``1e-6·max|z|`` of a kink (:mod:`boundcheck.engines.kinks`).

Verdict. HOLDS when ``upper(λ_max) ≤ lower((2/η)(1 + 10⁻³))``. A run above the bound does not
refute the theorem (it holds for almost every start, and CONVERGED is a finite-time test of
a limit), so it is INCONCLUSIVE ("not yet a GD limit"), never VIOLATED
(``Theorem.exceeded_reason``). A planted ``λ_max ≤ 1/η`` carries no such clause and is
VIOLATED on converged runs that ended near the edge (tests/test_linear_stability.py).

Proof (each step below is checked by :meth:`Derivation.verify`): near θ*,
``∇L(θ) = H(θ − θ*) + o(‖θ − θ*‖)``, so the GD map is ``θ − θ* ↦ (I − ηH)(θ − θ*)`` to first
order. With ``H = QΛQᵀ``, ``I − ηH = Q(I − ηΛ)Qᵀ`` has eigenvalues ``1 − ηλ_i`` and spectral
radius ``max_i |1 − ηλ_i|``. ``|1 − ηλ| ≤ 1 ⇔ ηλ(2 − ηλ) ≥ 0 ⇔ 0 ≤ λ ≤ 2/η`` (η > 0). If some
``|1 − ηλ_i| > 1``, the map's Jacobian has an expanding direction and, being a local
diffeomorphism (invertible ``I − ηH`` wherever ``ηλ_i ≠ 1``), its set of starts converging to
θ* lies in a centre–stable manifold of dimension < P: a null set (Lee et al. 2019).
"""

from __future__ import annotations

import random

import numpy as np
import sympy

from boundcheck.core.estimate import Estimate
from boundcheck.core.theorem import Assumption, Theorem

from .proof import Derivation, Step

SOURCE = ("Wu, Ma, E, NeurIPS 2018 (linear stability); Cohen et al., ICLR 2021 (edge of "
          "stability); Lee et al., Math. Program. 2019, Thm 2 (null set of unstable limits)")

EDGE_ALLOWANCE = sympy.Rational(1, 1000)  # the (1 + 10⁻³) of THEOREMS.md
KINK_REL_TOL = 1e-6  # a pre-activation within 1e-6·max|z| of a kink: "on a kink"

lam_max = sympy.Symbol(r"\lambda_{\max}", real=True)
eta = sympy.Symbol(r"\eta", positive=True)

SYMBOLS = {lam_max: "hessian.lambda_max", eta: "gd.step_size"}


# --- preconditions ---------------------------------------------------------------------------
def _converged(values: dict[str, Estimate], subject: object) -> str | None:
    window = values["gd.gradient_norm_window_max"]
    tol = values["gd.convergence_tolerance"].value
    final = values["loss.gradient_norm"]
    k = int(window.details.get("window", 0))
    recorded = int(window.details.get("points_recorded", 0))
    if recorded < k:
        return (f"only {recorded} points of the trajectory are recorded; CONVERGED needs "
                f"‖∇L(θ_t)‖ ≤ tol on each of the last K = {k} steps")
    if window.upper > tol:
        change = window.details.get("loss_relative_change")
        flat = (f"; the loss changed by only {100 * change:.3g}% over them (a flat loss is "
                "not convergence)" if change is not None and change < 0.01 else "")
        return (f"not converged: ‖∇L(θ_t)‖ reached {window.value:.3g} within the last "
                f"{k} steps, above tol = {tol:g}{flat}")
    if final.upper > tol:
        return (f"not converged: ‖∇L(θ_T)‖ = {final.value:.3g} in float64, above tol = "
                f"{tol:g} (training recorded {window.details.get('final', float('nan')):.3g})")
    return None


CONVERGED = Assumption(
    "CONVERGED",
    "‖∇L(θ_t)‖ ≤ tol for every one of the last K ≥ 1000 GD steps (Budget.converged_grad_tol, "
    "Budget.converged_window) and at θ_T in float64; a flat loss is not convergence",
    _converged,
    ("gd.gradient_norm_window_max", "gd.convergence_tolerance", "loss.gradient_norm"))


def _finite_minimiser(values: dict[str, Estimate], subject: object) -> str | None:
    margin = values["cross_entropy.separation_margin"]
    if margin.lower > 0:
        return ("cross-entropy on a separated training set: an affine map of the last "
                f"layer's inputs separates the classes with certified margin "
                f"{margin.lower:.3g} (LP witness), so no critical point lies near θ_T (the "
                "loss only tends to 0 as ‖θ‖ → ∞, and λ_max → 0): there is no finite GD limit")
    return None


FINITE_MINIMISER = Assumption(
    "finite minimiser",
    "not cross-entropy on a training set the last layer's inputs separate (an LP witness "
    "proves separation; then no critical point lies near θ_T)",
    _finite_minimiser, ("cross_entropy.separation_margin",))


def _twice_differentiable(values: dict[str, Estimate], subject: object) -> str | None:
    d = values["activation.kink_distance"]
    if d.lower <= KINK_REL_TOL:
        where = d.details.get("closest")
        return (f"a training pre-activation of a piecewise-linear σ"
                f"{f' ({where})' if where else ''} lies within {d.value:.3g}·max|z| of a "
                f"kink (≤ {KINK_REL_TOL:g}): L is not C² at θ_T, so its Hessian there is "
                "one-sided and linear stability does not apply")
    return None


TWICE_DIFFERENTIABLE = Assumption(
    "C² at the end",
    f"no training pre-activation of a piecewise-linear σ within {KINK_REL_TOL:g}·max|z| of a "
    "kink (max pooling: not measured, so not applicable)",
    _twice_differentiable, ("activation.kink_distance",))

NOT_A_LIMIT = ("not yet a GD limit — the theorem holds for almost every start of a run that "
               "converges, so one run above 2/η shows the run has not converged to a "
               "minimum (CONVERGED is a finite-time test), not that the theorem fails")

GD_LAMBDA_MAX = Theorem(
    id="stability.gd_lambda_max",
    title="Linear stability of GD: λ_max ≤ (2/η)(1 + 10⁻³) at a GD limit",
    lhs=lam_max, rhs=2 / eta * (1 + EDGE_ALLOWANCE), symbols=SYMBOLS, source=SOURCE,
    assumptions=(FINITE_MINIMISER, TWICE_DIFFERENTIABLE, CONVERGED), slack="ratio",
    family="stability",
    notes="λ_max of the loss Hessian at the end of full-batch GD with step η; ηλ_max/2 = "
          "1.001/slack. Measured in float64 on the trained parameters.",
    applies_to="gd.step_size", exceeded_reason=NOT_A_LIMIT)

THEOREMS = (GD_LAMBDA_MAX,)


# --- the derivation -------------------------------------------------------------------------
t1, t2, s1, s2 = sympy.symbols("theta_1 theta_2 theta*_1 theta*_2", real=True)
h11, h12, h22 = sympy.symbols("h_11 h_12 h_22", real=True)
lam, x, delta = sympy.symbols(r"\lambda x \delta", real=True)
phi = sympy.Symbol(r"\phi", real=True)
allowance = sympy.Symbol(r"\delta_{\mathrm{edge}}", nonnegative=True)
l1, l2 = sympy.symbols(r"\lambda_1 \lambda_2", real=True)
_H = sympy.Matrix([[h11, h12], [h12, h22]])
_d = sympy.Matrix([t1 - s1, t2 - s2])
_quadratic = (_d.T * _H * _d)[0] / 2  # L to second order around θ* (∇L(θ*) = 0)
_grad = sympy.Matrix([sympy.diff(_quadratic, t1), sympy.diff(_quadratic, t2)])
_Q = sympy.Matrix([[sympy.cos(phi), -sympy.sin(phi)], [sympy.sin(phi), sympy.cos(phi)]])
_Lam = sympy.diag(l1, l2)


def _spectral_radius_instance(rng: random.Random) -> tuple[float, float]:
    """ρ(I − ηH) against max_i |1 − ηλ_i| for a random symmetric H and η > 0."""
    n = rng.randint(2, 7)
    gen = np.random.default_rng(rng.getrandbits(32))
    a = gen.standard_normal((n, n))
    h = (a + a.T) / 2
    step = 10 ** rng.uniform(-2, 1)
    rho = float(np.abs(np.linalg.eigvals(np.eye(n) - step * h)).max())
    return rho, float(np.abs(1 - step * np.linalg.eigvalsh(h)).max())


def _unstable_mode_instance(rng: random.Random) -> tuple[float, float]:
    """On a quadratic with ηλ_max > 2, GD's distance to θ* grows like |1 − ηλ_max|^t along
    the top eigenvector: returns (|1 − ηλ_max|^t·|c_0|, ‖θ_t − θ*‖) (lhs ≤ rhs)."""
    n = rng.randint(2, 6)
    gen = np.random.default_rng(rng.getrandbits(32))
    q, _ = np.linalg.qr(gen.standard_normal((n, n)))
    eig = np.sort(gen.uniform(0.1, 1.0, n))
    step = rng.uniform(2.05, 3.0) / eig[-1]  # ηλ_max ∈ (2.05, 3)
    h = (q * eig) @ q.T
    start = gen.standard_normal(n)
    c0 = abs(q[:, -1] @ start)
    theta = start.copy()
    steps = 30
    for _ in range(steps):
        theta = theta - step * (h @ theta)
    return abs(1 - step * eig[-1]) ** steps * c0 * (1 - 1e-9), float(np.linalg.norm(theta))


DERIVATION = Derivation(
    title="T10 linear stability: a GD limit θ* has λ_max(H(θ*)) ≤ 2/η",
    source=SOURCE,
    steps=(
        Step("linearised GD map (L quadratic around θ*, checked in 2-D)",
             _d - eta * _grad, (sympy.eye(2) - eta * _H) * _d,
             because="∇L(θ) = H(θ − θ*) + o(‖θ − θ*‖), so θ_{t+1} − θ* = (I − ηH)(θ_t − θ*) "
                     "to first order"),
        Step("I − ηH = Q(I − ηΛ)Qᵀ for H = QΛQᵀ (2-D rotation Q)",
             sympy.eye(2) - eta * _Q * _Lam * _Q.T, _Q * (sympy.eye(2) - eta * _Lam) * _Q.T,
             because="QQᵀ = I: the eigenvalues of the GD map's Jacobian are 1 − ηλ_i"),
        Step("spectral radius of I − ηH is max_i |1 − ηλ_i|", sympy.Symbol(r"\rho(I-\eta H)"),
             sympy.Symbol(r"\max_i|1-\eta\lambda_i|"), check="numeric",
             evaluate=_spectral_radius_instance,
             because="I − ηH is symmetric, so ρ is its largest |eigenvalue|"),
        Step("1 − (1 − ηλ)² = ηλ(2 − ηλ)", 1 - (1 - x) ** 2, x * (2 - x),
             substitutions={x: eta * lam},
             because="so |1 − ηλ| ≤ 1 ⇔ ηλ(2 − ηλ) ≥ 0 ⇔ 0 ≤ ηλ ≤ 2"),
        Step("2/η − λ = (2 − ηλ)/η", 2 / eta - lam, (2 - eta * lam) / eta,
             because="η > 0: ηλ ≤ 2 ⇔ λ ≤ 2/η"),
        Step("an eigenvalue with ηλ > 2 is an expanding direction: |1 − ηλ| − 1 = ηλ − 2",
             sympy.Abs(1 - x) - 1, x - 2,
             substitutions={x: 2 + delta**2 + sympy.Rational(1, 10**6)},
             because="ηλ = 2 + δ² + 10⁻⁶ > 2; then a centre–stable manifold of dimension < P "
                     "holds every start converging to θ* (Lee et al. 2019): a null set"),
        Step("GD moves away from θ* along that direction (quadratic L, ηλ_max ∈ (2.05, 3))",
             sympy.Symbol(r"|1-\eta\lambda_{\max}|^t|c_0|"),
             sympy.Symbol(r"\|\theta_t-\theta^*\|"), relation="<=", check="numeric",
             evaluate=_unstable_mode_instance,
             because="the top-eigenvector component is multiplied by 1 − ηλ_max each step"),
        Step("the verified bound is weaker than 2/η by the edge allowance",
             2 / eta, 2 / eta * (1 + allowance), relation="<=",
             because="(2/η)(1 + δ) for any δ ≥ 0; boundcheck uses δ = 10⁻³"),
    ),
    conclusion="for almost every start, a GD limit θ* has λ_max(H(θ*)) ≤ 2/η ≤ "
               "(2/η)(1 + 10⁻³); CONVERGED, a finite minimiser and C² at θ_T are checked",
)
