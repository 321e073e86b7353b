"""T4 — the maximum-local-sensitivity (MLS) bound (Chen, Recanatesi, Shea-Brown, arXiv
2310.01770; **derived** here step by step, THEOREMS.md).

Statement. ``MLS(x) = σ_max(J_x(x))``. For f = g(W_1 x + b_1) (x enters only through the dense
first layer) and MSE with scale c (``ℓ = (c/2)‖z − y‖²``):

    (1/n) Σ_i MLS(x_i) ≤ ‖W_1‖_2 · √((1/n) Σ_i ‖x_i‖⁻²) · √(tr G / c).

Sharpness form: at a zero-loss MSE minimum R = 0 and tr G = tr H. boundcheck registers it as
``… · √(tr H / ((1 − τ) c))`` under the measured precondition ``|tr R| ≤ τ tr G``
(:data:`derivations.compression.AT_ZERO_LOSS_MINIMUM`), which makes it a theorem whenever the
precondition holds. Layer form, for every dense layer l (h_{l−1} entering f only through
layer l): ``(1/n) Σ_i MLS_l(x_i) ≤ ‖W_l‖_2 √((1/n) Σ_i ‖h_{l−1}(x_i)‖⁻²) √(tr G_l / c)``, with
``MLS_l = σ_max(J_{h,l})`` and ``tr G_l`` the part of tr G from W_l's entries.

Proof. (1) T3 at each sample: ``MLS(x_i) ≤ ‖W_1‖ g_i/ν_i`` with ``g_i = ‖∇_{W_1} f(x_i)‖_F``,
``ν_i = ‖x_i‖``. (2) Average. (3)–(4) Cauchy–Schwarz:
``(1/n) Σ a_i b_i ≤ √((1/n) Σ a_i²) √((1/n) Σ b_i²)`` with ``a_i = 1/ν_i``, ``b_i = g_i``
(Lagrange's identity at n = 3, every n on random instances). (5) W_1's entries are some of the
parameters, so ``g_i² ≤ ‖J_i‖_F²``. (6) For MSE, ``A_i = cI`` and ``tr G = (1/n) Σ_i
tr(J_iᵀ c J_i) = c (1/n) Σ_i ‖J_i‖_F²``; restricted to W_l's columns the same identity gives
``tr G_l = c (1/n) Σ_i ‖∇_{W_l} f(x_i)‖_F²`` (the layer form needs no step 5). (7) End to end
on random networks. (8) Under the guard, ``tr G ≤ tr H/(1 − τ)``. (9) Equality for a bias-free
linear model, K = 1, inputs of equal norm: the constant cannot be lowered.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import sympy
import torch

from boundcheck.core.formulas.layer_forms import (
    MLS_LAYER_BINDING,
    MLS_LAYER_RATIO,
)
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
    input_only_through_first_layer,
    mse_trace_step,
    random_two_layer_problem,
    sharpness_step,
    spectral,
    trace_g,
)
from .input_gradient import lemma_instance
from .proof import Derivation, Step

# --- the theorem -----------------------------------------------------------------------------
mls = sympy.Symbol(r"\overline{\mathrm{MLS}}", nonnegative=True)
w1_norm = sympy.Symbol(r"\|W_1\|_2", nonnegative=True)
inv_sq = sympy.Symbol(r"\overline{\|x\|^{-2}}", positive=True)
layers_ratio = sympy.Symbol(
    r"\max_l \frac{\overline{\mathrm{MLS}_l}}{\|W_l\|_2 \sqrt{\overline{\|h_{l-1}\|^{-2}}"
    r"\operatorname{tr} G_l / c}}", nonnegative=True)

MLS_RHS = w1_norm * sympy.sqrt(inv_sq) * sympy.sqrt(GGN_OVER_C)
MLS_SHARPNESS_RHS = w1_norm * sympy.sqrt(inv_sq) * sympy.sqrt(SHARPNESS_OVER_C)

_SYMBOLS = {mls: "jacobian.mls", w1_norm: "layer.1.weight_norm", inv_sq: "data.inv_sq_norm_mean"}

# per-layer term of the layer form: its maximum over the dense layers must be ≤ 1
LAYER_RATIO = MLS_LAYER_RATIO
LAYER_BINDING = MLS_LAYER_BINDING

MLS = Theorem(
    id="compression.mls",
    title="T4 MLS bound: (1/n)Σ MLS(x_i) ≤ ‖W_1‖_2 √((1/n)Σ‖x_i‖⁻²) √(tr G / c)",
    lhs=mls, rhs=MLS_RHS, symbols={c: "loss.mse_scale", **_SYMBOLS, trace_g: "ggn.trace"},
    source=SOURCE_CHEN, family="compression.mls",
    notes="MSE only (c from the loss). Derived: T3, Cauchy–Schwarz, ‖∇_{W_1} f‖_F ≤ ‖J_i‖_F.",
    assumptions=(G_OVER_ALL_PARAMETERS,), applies_to=input_only_through_first_layer)

MLS_SHARPNESS = Theorem(
    id="compression.mls_sharpness",
    title="T4 MLS bound, sharpness form: (1/n)Σ MLS(x_i) ≤ ‖W_1‖_2 √((1/n)Σ‖x_i‖⁻²) "
          "√(tr H / ((1−τ) c)) at a zero-loss MSE minimum",
    lhs=mls, rhs=MLS_SHARPNESS_RHS,
    symbols={**_SYMBOLS, **{k: v for k, v in SHARPNESS_SYMBOLS.items() if k != trace_g}},
    source=SOURCE_CHEN, assumptions=(AT_ZERO_LOSS_MINIMUM, G_OVER_ALL_PARAMETERS),
    family="compression.mls",
    notes="A theorem when |tr R| ≤ τ tr G (measured); NOT_APPLICABLE otherwise.",
    applies_to=input_only_through_first_layer)

MLS_LAYERS = Theorem(
    id="compression.mls_layers",
    title="T4 at every dense layer: (1/n)Σ MLS_l ≤ ‖W_l‖_2 √((1/n)Σ‖h_{l−1}‖⁻²) √(tr G_l / c)",
    lhs=layers_ratio, rhs=sympy.Integer(1),
    symbols={layers_ratio: "compression.mls_layers_ratio"},
    source=SOURCE_CHEN, family="compression.mls",
    notes="Worst ratio over the dense layers (MSE); weight-shared layers are left out.",
    applies_to=has_dense_layer)

THEOREMS = (MLS, MLS_SHARPNESS, MLS_LAYERS)


# --- the derivation --------------------------------------------------------------------------
def cauchy_schwarz_instance(rng: random.Random) -> tuple[float, float]:
    """(1/n)Σ a_i b_i vs √((1/n)Σa²)√((1/n)Σb²) for random n ≤ 50 and signs."""
    gen = np.random.default_rng(rng.getrandbits(32))
    n = rng.randint(1, 50)
    a, b = gen.standard_normal(n) * 10 ** rng.uniform(-3, 3), gen.standard_normal(n)
    return float(np.mean(a * b)), math.sqrt(np.mean(a * a)) * math.sqrt(np.mean(b * b))


def _mls_end_to_end(rng: random.Random) -> tuple[float, float]:
    p = random_two_layer_problem(rng)
    mls_mean = float(torch.linalg.matrix_norm(p["J_h"][0], ord=2).mean())
    x_sq = p["h"][0].pow(2).sum(1)
    trace_over_c = float(p["J"].pow(2).sum((1, 2)).mean())  # tr G / c for MSE
    rhs = (float(torch.linalg.matrix_norm(p["W"][0], ord=2))
           * math.sqrt(float((1 / x_sq).mean())) * math.sqrt(trace_over_c))
    return mls_mean, rhs


def _layer_end_to_end(rng: random.Random) -> tuple[float, float]:
    """Layer 2 of the random network (input tanh(Wx + b), weight V)."""
    p = random_two_layer_problem(rng)
    mls_mean = float(torch.linalg.matrix_norm(p["J_h"][1], ord=2).mean())
    h_sq = p["h"][1].pow(2).sum(1)
    trace_l_over_c = float(p["grad_W"][1].pow(2).sum((1, 2, 3)).mean())
    rhs = (float(torch.linalg.matrix_norm(p["W"][1], ord=2))
           * math.sqrt(float((1 / h_sq).mean())) * math.sqrt(trace_l_over_c))
    return mls_mean, rhs


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    n = 3
    m = sympy.symbols("m_1:4", nonnegative=True)  # MLS(x_i)
    g = sympy.symbols("g_1:4", nonnegative=True)  # ‖∇_{W_1} f(x_i)‖_F
    nu = sympy.symbols(r"\nu_1:4", positive=True)  # ‖x_i‖
    e = sympy.symbols("e_1:4", nonnegative=True)  # slack of T3 at sample i
    a = sympy.symbols("a_1:4", real=True)
    b = sympy.symbols("b_1:4", real=True)
    s = sympy.Symbol(r"\|W_1\|_2", nonnegative=True)
    g2, o2, j2 = sympy.symbols(r"g_i^2 o_i^2 \|J_i\|_F^2", nonnegative=True)
    w_norm, rho = sympy.symbols(r"\|w\| \rho", positive=True)
    steps = (
        Step("T3 at each sample: MLS(x_i) ≤ ‖W_1‖_2 ‖∇_{W_1} f(x_i)‖_F / ‖x_i‖",
             sympy.Symbol(r"\mathrm{MLS}(x_i)"), s * sympy.Symbol("g_i") / sympy.Symbol(r"\nu_i"),
             relation="<=", check="numeric", evaluate=lemma_instance(spectral),
             because="derivations.input_gradient (T3), re-checked on random networks"),
        Step("average over the samples (n = 3)", sum(m) / n, s * sum(gi / ni for gi, ni in
                                                                      zip(g, nu, strict=True)) / n,
             relation="<=", substitutions={m[i]: s * g[i] / nu[i] - e[i] for i in range(n)},
             because="a sum of n inequalities m_i = ‖W_1‖ g_i/ν_i − e_i, e_i ≥ 0"),
        Step("Cauchy–Schwarz, squared (Lagrange identity, n = 3)",
             sum(ai * bi for ai, bi in zip(a, b, strict=True)) ** 2,
             sum(ai**2 for ai in a) * sum(bi**2 for bi in b), relation="<=",
             witness=sum((a[i] * b[j] - a[j] * b[i]) ** 2 for i in range(n)
                         for j in range(i + 1, n)),
             because="(Σa²)(Σb²) − (Σab)² = Σ_{i<j} (a_i b_j − a_j b_i)²"),
        Step("Cauchy–Schwarz with means, every n: (1/n)Σ a_i b_i ≤ √((1/n)Σa_i²) √((1/n)Σb_i²)",
             sympy.Symbol(r"\overline{ab}"),
             sympy.sqrt(sympy.Symbol(r"\overline{a^2}")) * sympy.sqrt(sympy.Symbol(
                 r"\overline{b^2}")), relation="<=", check="numeric",
             evaluate=cauchy_schwarz_instance,
             because="square root of the step above, divided by n; a_i = 1/‖x_i‖, b_i = g_i"),
        Step("W_1's entries are some of the parameters: ‖∇_{W_1} f(x_i)‖_F² ≤ ‖J_i‖_F²",
             g2, j2, relation="<=", substitutions={j2: g2 + o2},
             because="‖J_i‖_F² sums the squared gradients of all P parameters"),
        mse_trace_step(),
        Step("end to end on random networks: (1/n)Σ MLS ≤ ‖W_1‖ √((1/n)Σ‖x‖⁻²) √(tr G/c)",
             sympy.Symbol(r"\overline{\mathrm{MLS}}"), MLS_RHS, relation="<=", check="numeric",
             evaluate=_mls_end_to_end,
             because="steps 1–6; f = V tanh(Wx+b) + d, n ≤ 6, all Jacobians by autograd"),
        Step("layer form end to end (layer 2, tr G_2 from V's entries)",
             sympy.Symbol(r"\overline{\mathrm{MLS}_2}"),
             sympy.Symbol(r"\|W_2\|_2 \sqrt{\overline{\|h_1\|^{-2}} \operatorname{tr}G_2/c}"),
             relation="<=", check="numeric", evaluate=_layer_end_to_end,
             because="steps 1–4 and 6 with x → h_1, W_1 → W_2 = V"),
        sharpness_step(),
        Step("equality: K = 1, f = wᵀx (no bias), all ‖x_i‖ = ρ",
             w_norm, (w_norm * sympy.sqrt(inv_sq) * sympy.sqrt(trace_g / c)),
             substitutions={inv_sq: 1 / rho**2, trace_g: c * rho**2},
             because="MLS = ‖w‖ = ‖W_1‖_2; J_i = x_iᵀ so tr G = c (1/n) Σ ‖x_i‖² = c ρ²"),
    )
    return Derivation(
        title="T4 MLS bound: (1/n)Σ MLS(x_i) ≤ ‖W_1‖_2 √((1/n)Σ‖x_i‖⁻²) √(tr G/c)",
        source=SOURCE_CHEN, steps=steps,
        conclusion="(1/n)Σ_i MLS(x_i) ≤ ‖W_1‖_2 √((1/n)Σ_i ‖x_i‖⁻²) √(tr G/c) "
                   "≤ ‖W_1‖_2 √((1/n)Σ_i ‖x_i‖⁻²) √(tr H/((1−τ)c)) under the guard")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
