"""T6 — the local-volumetric-ratio (LVR) bound (**derived**; Chen, Recanatesi, Shea-Brown, arXiv
2310.01770, THEOREMS.md).

Statement. ``log LVR(x) = Σ_{k≤r} log σ_k(J_x(x))``, r = min(K, D) (the log of the volume
ratio of the image of an infinitesimal input ball; ``½ log det(J_x J_xᵀ)`` when K ≤ D). For
f = g(W_1 x + b_1) and MSE with scale c:

    (1/n) Σ_i log LVR(x_i) ≤ (r/2) · log( ‖W_1‖_2² · (tr G / c) / (r · GM_i ‖x_i‖²) ),

GM the geometric mean over samples. A rank-deficient J_x gives −∞ on the left: the bound
holds trivially, and is reported so (never NaN). Sharpness form with ``tr H/((1 − τ) c)``
under the zero-loss-minimum guard. Layer form, for every dense layer l:
``(1/n) Σ_i log LVR_l(x_i) ≤ (r_l/2) log(‖W_l‖_2² (tr G_l/c) / (r_l GM_i ‖h_{l−1}(x_i)‖²))``
with ``LVR_l`` from ``J_{h,l}`` and ``r_l = min(K, dim h_{l−1})`` (a lemma of T7).

Proof. (1) ``log σ = ½ log σ²``. (2)–(4) AM–GM on the r squared singular values:
``Σ_k log σ_k² ≤ r log((1/r) Σ_k σ_k²)`` (sum-of-squares certificates at r = 2, 3; every r
on random instances). (5) ``Σ_k σ_k² = ‖J_x‖_F²``. (6) T3's Frobenius form,
``‖J_x(x_i)‖_F² ≤ ‖W_1‖² g_i² / ν_i²`` (``g_i = ‖∇_{W_1} f(x_i)‖_F``, ``ν_i = ‖x_i‖``), and
log is increasing: ``log LVR(x_i) ≤ (r/2) log(‖W_1‖² g_i² / (r ν_i²))``. (7) Average and
expand the logarithm. (8) Jensen (concavity of log, i.e. AM–GM over the samples):
``(1/n) Σ log g_i² ≤ log((1/n) Σ g_i²)``. (9) ``(1/n) Σ log ν_i² = log GM ν²``.
(10) ``(1/n) Σ g_i² ≤ tr G / c`` (T4, steps 5–6). (11) End to end on random networks.
(12) The sharpness form. (13) Equality for K = 1, a bias-free linear model and inputs of
equal norm.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import sympy
import torch

from boundcheck.core.formulas.layer_forms import (
    LVR_LAYER_BINDING,
    LVR_LAYER_BOUND,
    LVR_LAYER_GAP,
    volume_bound,
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
    frobenius,
    has_dense_layer,
    input_only_through_first_layer,
    random_matrix,
    random_two_layer_problem,
    sharpness_step,
    trace_g,
)
from .input_gradient import lemma_instance
from .proof import Derivation, Step

# --- the theorem -----------------------------------------------------------------------------
log_lvr = sympy.Symbol(r"\overline{\log \mathrm{LVR}}", real=True)
r = sympy.Symbol("r", positive=True, integer=True)
w1_norm = sympy.Symbol(r"\|W_1\|_2", nonnegative=True)
gm = sympy.Symbol(r"\mathrm{GM}_i \|x_i\|^2", positive=True)
layers_gap = sympy.Symbol(
    r"\max_l \left(\overline{\log \mathrm{LVR}_l} - \frac{r_l}{2} \log \frac{\|W_l\|_2^2"
    r"\operatorname{tr} G_l / c}{r_l \mathrm{GM}_i \|h_{l-1}\|^2}\right)", real=True)


LVR_RHS = volume_bound(r, w1_norm, GGN_OVER_C, gm)
LVR_SHARPNESS_RHS = volume_bound(r, w1_norm, SHARPNESS_OVER_C, gm)
_SYMBOLS = {log_lvr: "jacobian.log_lvr", r: "jacobian.r", w1_norm: "layer.1.weight_norm",
            gm: "data.sq_norm_gmean"}

# per-layer term of the layer form: its maximum over the dense layers must be ≤ 0
LAYER_BOUND = LVR_LAYER_BOUND
LAYER_GAP = LVR_LAYER_GAP
LAYER_BINDING = LVR_LAYER_BINDING

LVR = Theorem(
    id="compression.lvr",
    title="T6 LVR bound: (1/n)Σ log LVR(x_i) ≤ (r/2) log(‖W_1‖_2² (tr G/c) / (r GM‖x‖²))",
    lhs=log_lvr, rhs=LVR_RHS,
    symbols={c: "loss.mse_scale", **_SYMBOLS, trace_g: "ggn.trace"},
    source=SOURCE_CHEN, slack="difference", family="compression.lvr",
    notes="MSE only. −∞ on the left (rank-deficient J_x) holds trivially.",
    assumptions=(G_OVER_ALL_PARAMETERS,), applies_to=input_only_through_first_layer)

LVR_SHARPNESS = Theorem(
    id="compression.lvr_sharpness",
    title="T6 LVR bound, sharpness form: (1/n)Σ log LVR ≤ (r/2) log(‖W_1‖² tr H / "
          "((1−τ) c r GM‖x‖²)) at a zero-loss MSE minimum",
    lhs=log_lvr, rhs=LVR_SHARPNESS_RHS,
    symbols={**_SYMBOLS, **{k: v for k, v in SHARPNESS_SYMBOLS.items() if k != trace_g}},
    source=SOURCE_CHEN, assumptions=(AT_ZERO_LOSS_MINIMUM, G_OVER_ALL_PARAMETERS),
    slack="difference",
    family="compression.lvr",
    notes="A theorem when |tr R| ≤ τ tr G (measured); NOT_APPLICABLE otherwise.",
    applies_to=input_only_through_first_layer)

LVR_LAYERS = Theorem(
    id="compression.lvr_layers",
    title="T6 at every dense layer: (1/n)Σ log LVR_l ≤ (r_l/2) log(‖W_l‖² (tr G_l/c) / "
          "(r_l GM‖h_{l−1}‖²))",
    lhs=layers_gap, rhs=sympy.Integer(0),
    symbols={layers_gap: "compression.lvr_layers_gap"},
    source=SOURCE_CHEN, slack="difference", family="compression.lvr",
    notes="Worst gap over the dense layers (MSE); a layer whose left side is −∞ holds "
          "trivially; weight-shared layers are left out.",
    applies_to=has_dense_layer)

THEOREMS = (LVR, LVR_SHARPNESS, LVR_LAYERS)


# --- the derivation --------------------------------------------------------------------------
def am_gm_instance(rng: random.Random) -> tuple[float, float]:
    """Σ_k log a_k vs m log((1/m) Σ_k a_k) for m ≤ 20 random positive a_k (spread 10^±4)."""
    gen = np.random.default_rng(rng.getrandbits(32))
    a = 10.0 ** gen.uniform(-4, 4, rng.randint(1, 20))
    return float(np.log(a).sum()), len(a) * math.log(float(a.mean()))


def jensen_instance(rng: random.Random) -> tuple[float, float]:
    """(1/n) Σ_i log a_i vs log((1/n) Σ_i a_i) for n ≤ 50 random positive a_i."""
    gen = np.random.default_rng(rng.getrandbits(32))
    a = 10.0 ** gen.uniform(-4, 4, rng.randint(1, 50))
    return float(np.log(a).mean()), math.log(float(a.mean()))


def _squared_singular_values(rng: random.Random) -> tuple[float, float]:
    m = random_matrix(rng, rng.randint(1, 7), rng.randint(1, 7))
    return float((np.linalg.svd(m, compute_uv=False) ** 2).sum()), frobenius(m) ** 2


def _lvr_end_to_end(rng: random.Random) -> tuple[float, float]:
    p = random_two_layer_problem(rng)
    rank = min(p["K"], p["h"][0].shape[1])
    lhs = float(torch.log(torch.linalg.svdvals(p["J_h"][0])[:, :rank]).sum(1).mean())
    gmean = math.exp(float(torch.log(p["h"][0].pow(2).sum(1)).mean()))
    trace_over_c = float(p["J"].pow(2).sum((1, 2)).mean())
    w2 = float(torch.linalg.matrix_norm(p["W"][0], ord=2)) ** 2
    return lhs, rank / 2 * math.log(w2 * trace_over_c / (rank * gmean))


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    sigma = sympy.Symbol(r"\sigma", positive=True)
    s1, s2 = sympy.symbols(r"\sigma_1^2 \sigma_2^2", nonnegative=True)
    t = sympy.symbols("t_1:4", nonnegative=True)
    n = 3
    g2 = sympy.symbols("g_1^2 g_2^2 g_3^2", positive=True)
    nu2 = sympy.symbols(r"\nu_1^2 \nu_2^2 \nu_3^2", positive=True)
    s = sympy.Symbol(r"\|W_1\|_2", positive=True)
    gbar, obar = sympy.symbols(r"\overline{g^2} \overline{o^2}", nonnegative=True)
    w_norm, rho = sympy.symbols(r"\|w\| \rho", positive=True)
    per_sample = sum(r / 2 * sympy.log(s**2 * gi / (r * ni)) for gi, ni in
                     zip(g2, nu2, strict=True)) / n
    expanded = r / 2 * (sympy.log(s**2 / r) + sum(sympy.log(gi) for gi in g2) / n
                        - sum(sympy.log(ni) for ni in nu2) / n)
    mean_log = sum(sympy.log(ni) for ni in nu2) / n
    steps = (
        Step("log σ = ½ log σ²", sympy.log(sigma), sympy.log(sigma**2) / 2,
             because="so log LVR = ½ Σ_{k≤r} log σ_k²"),
        Step("AM–GM, r = 2: σ_1² σ_2² ≤ ((σ_1² + σ_2²)/2)²", s1 * s2, ((s1 + s2) / 2) ** 2,
             relation="<=", witness=((s1 - s2) / 2) ** 2),
        Step("AM–GM, r = 3 (in cube roots t_k = σ_k^{2/3}): t_1 t_2 t_3 ≤ (t_1³+t_2³+t_3³)/3",
             t[0] * t[1] * t[2], sum(v**3 for v in t) / 3, relation="<=",
             witness=sum(t) * ((t[0] - t[1]) ** 2 + (t[1] - t[2]) ** 2
                               + (t[2] - t[0]) ** 2) / 6,
             because="a³+b³+c³−3abc = (a+b+c)((a−b)²+(b−c)²+(c−a)²)/2"),
        Step("AM–GM, every r: Σ_k log σ_k² ≤ r log((1/r) Σ_k σ_k²)",
             sympy.Symbol(r"\sum_k \log \sigma_k^2"),
             sympy.Symbol(r"r \log(\frac{1}{r}\sum_k \sigma_k^2)"), relation="<=",
             check="numeric", evaluate=am_gm_instance,
             because="concavity of log; a zero σ_k makes the left side −∞ (holds trivially)"),
        Step("Σ_k σ_k² = ‖J_x‖_F²", sympy.Symbol(r"\sum_k \sigma_k^2"),
             sympy.Symbol(r"\|J_x\|_F^2"), check="numeric", evaluate=_squared_singular_values,
             because="tr(J Jᵀ) is the sum of the eigenvalues σ_k² of J Jᵀ"),
        Step("T3, Frobenius form: ‖J_x(x_i)‖_F ≤ ‖W_1‖ g_i / ν_i",
             sympy.Symbol(r"\|J_x(x_i)\|_F"), s * sympy.Symbol("g_i") / sympy.Symbol(r"\nu_i"),
             relation="<=", check="numeric", evaluate=lemma_instance(frobenius),
             because="derivations.input_gradient; with steps 1–5 and log increasing, "
                     "log LVR(x_i) ≤ (r/2) log(‖W_1‖² g_i² / (r ν_i²))"),
        Step("average over samples and expand the logarithm (n = 3)", per_sample, expanded,
             because="log of a product; all factors > 0"),
        Step("Jensen over the samples: (1/n) Σ log g_i² ≤ log((1/n) Σ g_i²)",
             sympy.Symbol(r"\frac{1}{n}\sum_i \log g_i^2"),
             sympy.Symbol(r"\log \frac{1}{n}\sum_i g_i^2"), relation="<=", check="numeric",
             evaluate=jensen_instance,
             because="the AM–GM of step 4 over the n samples, divided by n"),
        Step("(1/n) Σ log ν_i² = log GM_i ν_i²", mean_log, sympy.log(sympy.exp(mean_log)),
             because="GM_i ν_i² = exp((1/n) Σ log ν_i²) by definition"),
        Step("(1/n) Σ g_i² ≤ tr G / c", gbar, trace_g / c, relation="<=",
             substitutions={trace_g: c * (gbar + obar)},
             because="T4 steps 5–6: tr G / c = (1/n) Σ ‖J_i‖_F² and g_i² ≤ ‖J_i‖_F²"),
        Step("end to end on random networks: (1/n)Σ log LVR ≤ (r/2) log(‖W_1‖²(tr G/c)/(r GM))",
             sympy.Symbol(r"\overline{\log \mathrm{LVR}}"), LVR_RHS, relation="<=",
             check="numeric", evaluate=_lvr_end_to_end,
             because="steps 1–10; f = V tanh(Wx+b) + d, autograd Jacobians"),
        sharpness_step(),
        Step("equality: K = 1 (r = 1), f = wᵀx, all ‖x_i‖ = ρ", sympy.log(w_norm),
             volume_bound(sympy.Integer(1), w_norm, trace_g / c, rho**2),
             substitutions={trace_g: c * rho**2},
             because="log LVR = log ‖w‖; tr G = c ρ², GM ‖x‖² = ρ²"),
    )
    return Derivation(
        title="T6 LVR bound: (1/n)Σ log LVR(x_i) ≤ (r/2) log(‖W_1‖²(tr G/c)/(r GM_i‖x_i‖²))",
        source=SOURCE_CHEN, steps=steps,
        conclusion="(1/n)Σ_i log LVR(x_i) ≤ (r/2) log(‖W_1‖_2² (tr G/c) / (r GM_i ‖x_i‖²)); "
                   "−∞ on the left holds trivially; tr H/((1−τ)c) under the guard")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
