"""T5 — the network-wide MLS (NMLS) bound (**derived**; Chen, Recanatesi, Shea-Brown, arXiv
2310.01770, THEOREMS.md).

Statement. Over the dense layers l (all layers of an MLP; the dense head of a CNN or
transformer), with ``MLS_l(x) = σ_max(J_{h,l}(x))`` and MSE with scale c:

    NMLS = (1/n) Σ_i Σ_l MLS_l(x_i) ≤ √((1/n) Σ_i Σ_l ‖W_l‖_2² / ‖h_{l−1}(x_i)‖²) · √(tr G / c).

Requires ``h_{l−1}(x_i) ≠ 0`` (a dead ReLU layer makes the right side 0/0: NOT_APPLICABLE).
Sharpness form with ``tr H/((1 − τ) c)`` under the measured zero-loss-minimum guard.

Proof. (1) T3 at every dense layer and sample: ``MLS_l(x_i) ≤ ‖W_l‖ g_il / ν_il`` with
``g_il = ‖∇_{W_l} f(x_i)‖_F``, ``ν_il = ‖h_{l−1}(x_i)‖``. (2) Sum over the index set (i, l),
divide by n. (3)–(4) Cauchy–Schwarz over that index set: ``(1/n) Σ_{i,l} a_il b_il ≤
√((1/n) Σ a²) √((1/n) Σ b²)`` with ``a_il = ‖W_l‖/ν_il``, ``b_il = g_il`` (Lagrange's identity
for four terms; the normalisation 1/n is the same on both sides, so every size follows from
T4's mean form). (5) The dense layers' weights are disjoint sets of parameters:
``Σ_l g_il² ≤ ‖J_i‖_F²``. (6) MSE: ``tr G = c (1/n) Σ_i ‖J_i‖_F²``. (7) End to end on random
two-layer networks. (8) The sharpness form. (9) With one dense layer this is T4, tight for a
bias-free linear model with K = 1 and inputs of equal norm.
"""

from __future__ import annotations

import functools
import math
import random

import sympy
import torch

from boundcheck.core.theorem import Theorem

from .compression import (
    AT_ZERO_LOSS_MINIMUM,
    G_OVER_ALL_PARAMETERS,
    GGN_OVER_C,
    SHARPNESS_OVER_C,
    SHARPNESS_SYMBOLS,
    SOURCE_CHEN,
    c,
    has_dense_layer,
    mse_trace_step,
    random_two_layer_problem,
    sharpness_step,
    trace_g,
)
from .local_sensitivity import cauchy_schwarz_instance
from .proof import Derivation, Step

# --- the theorem -----------------------------------------------------------------------------
nmls = sympy.Symbol(r"\mathrm{NMLS}", nonnegative=True)
factor = sympy.Symbol(r"\overline{\sum_l \|W_l\|_2^2 / \|h_{l-1}\|^2}", nonnegative=True)
NMLS_RHS = sympy.sqrt(factor) * sympy.sqrt(GGN_OVER_C)
NMLS_SHARPNESS_RHS = sympy.sqrt(factor) * sympy.sqrt(SHARPNESS_OVER_C)
_SYMBOLS = {nmls: "network.nmls", factor: "network.nmls_factor"}

NMLS = Theorem(
    id="compression.nmls",
    title="T5 NMLS bound: (1/n)Σ_iΣ_l MLS_l(x_i) ≤ √((1/n)Σ_iΣ_l ‖W_l‖²/‖h_{l−1}(x_i)‖²) "
          "√(tr G / c)",
    lhs=nmls, rhs=NMLS_RHS, symbols={c: "loss.mse_scale", **_SYMBOLS, trace_g: "ggn.trace"},
    source=SOURCE_CHEN, family="compression.nmls",
    notes="Sums over the dense layers (weight-shared layers left out); MSE only.",
    assumptions=(G_OVER_ALL_PARAMETERS,), applies_to=has_dense_layer)

NMLS_SHARPNESS = Theorem(
    id="compression.nmls_sharpness",
    title="T5 NMLS bound, sharpness form: NMLS ≤ √((1/n)Σ_iΣ_l ‖W_l‖²/‖h_{l−1}‖²) "
          "√(tr H / ((1−τ) c)) at a zero-loss MSE minimum",
    lhs=nmls, rhs=NMLS_SHARPNESS_RHS,
    symbols={**_SYMBOLS, **{k: v for k, v in SHARPNESS_SYMBOLS.items() if k != trace_g}},
    source=SOURCE_CHEN, assumptions=(AT_ZERO_LOSS_MINIMUM, G_OVER_ALL_PARAMETERS),
    family="compression.nmls",
    notes="A theorem when |tr R| ≤ τ tr G (measured); NOT_APPLICABLE otherwise.",
    applies_to=has_dense_layer)

THEOREMS = (NMLS, NMLS_SHARPNESS)


# --- the derivation --------------------------------------------------------------------------
def _per_layer_lemma(rng: random.Random) -> tuple[float, float]:
    """max over samples and both layers of σ_1(J_{h,l}) ‖h‖ / (‖W_l‖ ‖∇_{W_l} f‖_F) vs 1."""
    p = random_two_layer_problem(rng)
    worst = 0.0
    for j_h, h, w, g in zip(p["J_h"], p["h"], p["W"], p["grad_W"], strict=True):
        num = torch.linalg.matrix_norm(j_h, ord=2) * h.norm(dim=1)
        den = float(torch.linalg.matrix_norm(w, ord=2)) * g.flatten(1).norm(dim=1)
        worst = max(worst, float((num / den).max()))
    return worst, 1.0


def _nmls_end_to_end(rng: random.Random) -> tuple[float, float]:
    p = random_two_layer_problem(rng)
    lhs = sum(float(torch.linalg.matrix_norm(j, ord=2).mean()) for j in p["J_h"])
    fac = sum(float(torch.linalg.matrix_norm(w, ord=2)) ** 2 * float((1 / h.pow(2).sum(1)).mean())
              for w, h in zip(p["W"], p["h"], strict=True))
    return lhs, math.sqrt(fac) * math.sqrt(float(p["J"].pow(2).sum((1, 2)).mean()))


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    n, layers = 2, 2
    pairs = [(i, ell) for i in range(n) for ell in range(layers)]
    sub = {(i, ell): f"_{{{i + 1}{ell + 1}}}" for i, ell in pairs}
    m = {k: sympy.Symbol(f"m{v}", nonnegative=True) for k, v in sub.items()}
    g = {k: sympy.Symbol(f"g{v}", nonnegative=True) for k, v in sub.items()}
    nu = {k: sympy.Symbol(rf"\nu{v}", positive=True) for k, v in sub.items()}
    e = {k: sympy.Symbol(f"e{v}", nonnegative=True) for k, v in sub.items()}
    s = sympy.symbols(r"\|W_1\|_2 \|W_2\|_2", nonnegative=True)
    a = [sympy.Symbol(f"a_{k}", real=True) for k in range(4)]
    b = [sympy.Symbol(f"b_{k}", real=True) for k in range(4)]
    gl2 = sympy.symbols("g_{i1}^2 g_{i2}^2", nonnegative=True)
    o2, j2 = sympy.symbols(r"o_i^2 \|J_i\|_F^2", nonnegative=True)
    w_norm, rho = sympy.symbols(r"\|w\| \rho", positive=True)
    nmls_bound = sympy.sqrt(factor) * sympy.sqrt(trace_g / c)
    steps = (
        Step("T3 at every dense layer l and sample i: MLS_l(x_i) ≤ ‖W_l‖ g_il / ν_il",
             sympy.Symbol(r"\max_{i,l} \mathrm{MLS}_l(x_i) \nu_{il} / (\|W_l\| g_{il})"),
             sympy.Integer(1), relation="<=", check="numeric", evaluate=_per_layer_lemma,
             because="derivations.input_gradient with x → h_{l−1}; random two-layer tanh "
                     "networks, both layers, autograd Jacobians"),
        Step("sum over the index set (i, l), divide by n (n = L = 2)",
             sum(m.values()) / n,
             sum(s[ell] * g[i, ell] / nu[i, ell] for i, ell in pairs) / n, relation="<=",
             substitutions={m[k]: s[k[1]] * g[k] / nu[k] - e[k] for k in pairs},
             because="MLS_l(x_i) = ‖W_l‖ g_il/ν_il − e_il with e_il ≥ 0"),
        Step("Cauchy–Schwarz over the index set, squared (Lagrange identity, 4 terms)",
             sum(ai * bi for ai, bi in zip(a, b, strict=True)) ** 2,
             sum(ai**2 for ai in a) * sum(bi**2 for bi in b), relation="<=",
             witness=sum((a[i] * b[j] - a[j] * b[i]) ** 2 for i in range(4)
                         for j in range(i + 1, 4)),
             because="a_il = ‖W_l‖/ν_il, b_il = g_il"),
        Step("Cauchy–Schwarz with the 1/n normalisation, every size",
             sympy.Symbol(r"\frac{1}{n}\sum_{i,l} a_{il} b_{il}"),
             sympy.sqrt(sympy.Symbol(r"\frac{1}{n}\sum_{i,l} a_{il}^2"))
             * sympy.sqrt(sympy.Symbol(r"\frac{1}{n}\sum_{i,l} b_{il}^2")),
             relation="<=", check="numeric", evaluate=cauchy_schwarz_instance,
             because="the mean form over N = nL terms times L on both sides"),
        Step("the dense layers' weights are disjoint parameter sets: Σ_l g_il² ≤ ‖J_i‖_F²",
             sum(gl2), j2, relation="<=", substitutions={j2: sum(gl2) + o2},
             because="‖J_i‖_F² sums the squared gradients of all parameters"),
        mse_trace_step(),
        Step("end to end on random two-layer networks: NMLS ≤ √(factor) √(tr G / c)",
             sympy.Symbol(r"\mathrm{NMLS}"), nmls_bound, relation="<=", check="numeric",
             evaluate=_nmls_end_to_end,
             because="steps 1–6; both layers of f = V tanh(Wx+b) + d are dense"),
        sharpness_step(),
        Step("one dense layer, K = 1, f = wᵀx, all ‖x_i‖ = ρ: equality (T4)",
             w_norm, nmls_bound, substitutions={factor: w_norm**2 / rho**2,
                                                trace_g: c * rho**2},
             because="NMLS = ‖w‖, factor = ‖w‖²/ρ², tr G = c ρ²"),
    )
    return Derivation(
        title="T5 NMLS bound: NMLS ≤ √((1/n)Σ_iΣ_l ‖W_l‖²/‖h_{l−1}(x_i)‖²) √(tr G/c)",
        source=SOURCE_CHEN, steps=steps,
        conclusion="(1/n)Σ_iΣ_l MLS_l(x_i) ≤ √((1/n)Σ_iΣ_l ‖W_l‖_2²/‖h_{l−1}(x_i)‖²) "
                   "√(tr G/c), and with tr H/((1−τ)c) under the guard")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
