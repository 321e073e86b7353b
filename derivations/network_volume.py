"""T7 — the network-wide volume ratio (NVR) bound (**derived**; Chen, Recanatesi, Shea-Brown,
arXiv 2310.01770, THEOREMS.md).

Statement. Over the dense layers l, with ``LVR_l`` from ``J_{h,l}``, ``r_l = min(K, dim
h_{l−1})``, ``tr G_l`` the part of tr G from W_l's entries and MSE with scale c:

    NVR = (1/n) Σ_i Σ_l log LVR_l(x_i)
        ≤ Σ_l (r_l/2) · log( ‖W_l‖_2² · (tr G_l / c) / (r_l · GM_i ‖h_{l−1}(x_i)‖²) ).

Requires ``h_{l−1}(x_i) ≠ 0``; −∞ on the left holds trivially, as in T6. The right side is
evaluated by the quantity ``compression.nvr_bound`` from the per-layer sympy term
:data:`derivations.volume.LAYER_BOUND` (so this module's expression is what is computed).
Sharpness form: since ``tr G_l ≤ tr G ≤ tr H/(1 − τ)`` under the guard,

    NVR ≤ Σ_l (r_l/2) log(‖W_l‖_2² / (r_l GM_i ‖h_{l−1}‖²)) + (R/2) log(tr H / ((1 − τ) c)),

``R = Σ_l r_l`` (quantities ``compression.nvr_constant`` and ``compression.nvr_rank_sum``).

Proof. (1) T6's chain at each dense layer, with x → h_{l−1} and ``g_il = ‖∇_{W_l} f(x_i)‖_F``,
gives ``(1/n) Σ_i log LVR_l(x_i) ≤ (r_l/2) log(‖W_l‖² ḡ_l / (r_l GM‖h_{l−1}‖²))`` with
``ḡ_l = (1/n) Σ_i g_il²``. (2) For MSE ``tr G_l = c ḡ_l`` (an identity: no parameters are
dropped). (3) Sum over the dense layers. (4) End to end on random networks. (5) ``tr G_l ≤
tr G``: every diagonal entry of G is ``(1/n) Σ_i J_i[:,p]ᵀ A_i J_i[:,p] ≥ 0``. (6) Expanding
the logarithms separates the constant and R. (7) The sharpness form. (8) With one dense layer
this is T6, tight for K = 1, a bias-free linear model and inputs of equal norm.
"""

from __future__ import annotations

import functools
import math
import random

import sympy
import torch

from boundcheck.core.formulas.layer_forms import (
    NVR_CONSTANT_BINDING,
    NVR_LAYER_CONSTANT,
    volume_bound,
)
from boundcheck.core.theorem import Theorem

from .compression import (
    AT_ZERO_LOSS_MINIMUM,
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
from .proof import Derivation, Step

# --- the theorem -----------------------------------------------------------------------------
nvr = sympy.Symbol(r"\mathrm{NVR}", real=True)
nvr_bound = sympy.Symbol(
    r"\sum_l \frac{r_l}{2} \log \frac{\|W_l\|_2^2 \operatorname{tr} G_l / c}"
    r"{r_l \mathrm{GM}_i \|h_{l-1}(x_i)\|^2}", real=True)
constant = sympy.Symbol(r"\sum_l \frac{r_l}{2} \log \frac{\|W_l\|_2^2}"
                        r"{r_l \mathrm{GM}_i \|h_{l-1}(x_i)\|^2}", real=True)
rank_sum = sympy.Symbol(r"\sum_l r_l", positive=True, integer=True)

# per-layer piece of the sharpness form: Σ_l of this is compression.nvr_constant
LAYER_CONSTANT = NVR_LAYER_CONSTANT
CONSTANT_BINDING = NVR_CONSTANT_BINDING

NVR_SHARPNESS_RHS = constant + rank_sum / 2 * sympy.log(SHARPNESS_OVER_C)

NVR = Theorem(
    id="compression.nvr",
    title="T7 NVR bound: NVR ≤ Σ_l (r_l/2) log(‖W_l‖_2² (tr G_l/c) / (r_l GM‖h_{l−1}‖²))",
    lhs=nvr, rhs=nvr_bound,
    symbols={nvr: "network.nvr", nvr_bound: "compression.nvr_bound"},
    source=SOURCE_CHEN, slack="difference", family="compression.nvr",
    notes="Sums over the dense layers (weight-shared layers left out); MSE only; −∞ on the "
          "left holds trivially.",
    applies_to=has_dense_layer)

NVR_SHARPNESS = Theorem(
    id="compression.nvr_sharpness",
    title="T7 NVR bound, sharpness form: NVR ≤ Σ_l (r_l/2) log(‖W_l‖²/(r_l GM‖h_{l−1}‖²)) "
          "+ (Σ_l r_l/2) log(tr H/((1−τ) c)) at a zero-loss MSE minimum",
    lhs=nvr, rhs=NVR_SHARPNESS_RHS,
    symbols={nvr: "network.nvr", constant: "compression.nvr_constant",
             rank_sum: "compression.nvr_rank_sum",
             **{k: v for k, v in SHARPNESS_SYMBOLS.items() if k != trace_g}},
    source=SOURCE_CHEN, assumptions=(AT_ZERO_LOSS_MINIMUM,), slack="difference",
    family="compression.nvr",
    notes="Uses tr G_l ≤ tr G ≤ tr H/(1−τ); a theorem when |tr R| ≤ τ tr G (measured).",
    applies_to=has_dense_layer)

THEOREMS = (NVR, NVR_SHARPNESS)


# --- the derivation --------------------------------------------------------------------------
def _log_lvr(j_h: torch.Tensor) -> float:
    rank = min(j_h.shape[1], j_h.shape[2])
    return float(torch.log(torch.linalg.svdvals(j_h)[:, :rank]).sum(1).mean())


def _layer_terms(p: dict) -> list[tuple[float, float, int, float]]:
    """Per layer: (‖W_l‖², ḡ_l, r_l, GM‖h_{l−1}‖²) of a random problem."""
    out = []
    for w, g, h in zip(p["W"], p["grad_W"], p["h"], strict=True):
        rank = min(p["K"], h.shape[1])
        out.append((float(torch.linalg.matrix_norm(w, ord=2)) ** 2,
                    float(g.pow(2).sum((1, 2, 3)).mean()), rank,
                    math.exp(float(torch.log(h.pow(2).sum(1)).mean()))))
    return out


def _bound(terms) -> float:
    """Σ_l (r_l/2) log(‖W_l‖² ḡ_l/(r_l GM_l)); −∞ when some ḡ_l = 0 (a saturated layer, whose
    J_{h,l} is then 0 too: both sides −∞)."""
    return sum(rank / 2 * (math.log(w2 * g / (rank * gm)) if w2 * g > 0 else -math.inf)
               for w2, g, rank, gm in terms)


def _layer_lemma(rng: random.Random) -> tuple[float, float]:
    p = random_two_layer_problem(rng)
    return _log_lvr(p["J_h"][1]), _bound(_layer_terms(p)[1:])


def _nvr_end_to_end(rng: random.Random) -> tuple[float, float]:
    p = random_two_layer_problem(rng)
    return sum(_log_lvr(j) for j in p["J_h"]), _bound(_layer_terms(p))


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    lv = sympy.symbols(r"\overline{\log\mathrm{LVR}_1} \overline{\log\mathrm{LVR}_2}", real=True)
    ee = sympy.symbols("e_1 e_2", nonnegative=True)
    rr = sympy.symbols("r_1 r_2", positive=True, integer=True)
    ww = sympy.symbols(r"\|W_1\|_2 \|W_2\|_2", positive=True)
    tg = sympy.symbols(r"\operatorname{tr}G_1 \operatorname{tr}G_2", positive=True)
    gm = sympy.symbols(r"\mathrm{GM}_1 \mathrm{GM}_2", positive=True)
    rest = sympy.Symbol(r"\operatorname{tr}G_{\mathrm{rest}}", nonnegative=True)
    terms = [volume_bound(rr[k], ww[k], tg[k] / c, gm[k]) for k in range(2)]
    with_total = sum(volume_bound(rr[k], ww[k], trace_g / c, gm[k]) for k in range(2))
    separated = (sum(rr[k] / 2 * sympy.log(ww[k] ** 2 / (rr[k] * gm[k])) for k in range(2))
                 + (rr[0] + rr[1]) / 2 * sympy.log(trace_g / c))
    steps = (
        Step("T6 at a dense layer l: (1/n)Σ log LVR_l ≤ (r_l/2) log(‖W_l‖² ḡ_l/(r_l GM‖h‖²))",
             sympy.Symbol(r"\overline{\log \mathrm{LVR}_2}"),
             sympy.Symbol(r"\frac{r_2}{2}\log\frac{\|W_2\|^2 \bar g_2}{r_2 \mathrm{GM}\|h_1\|^2}"),
             relation="<=", check="numeric", evaluate=_layer_lemma,
             because="derivations.volume steps 1–9 with x → h_{l−1}; layer 2 of random "
                     "networks, ḡ_2 = (1/n) Σ_i ‖∇_V f(x_i)‖_F²"),
        mse_trace_step(),
        Step("sum over the dense layers (L = 2)", lv[0] + lv[1], terms[0] + terms[1],
             relation="<=", substitutions={lv[k]: terms[k] - ee[k] for k in range(2)},
             because="each layer's mean log LVR_l = its bound − e_l, e_l ≥ 0"),
        Step("end to end on random two-layer networks: NVR ≤ Σ_l (r_l/2) log(...)",
             nvr, nvr_bound, relation="<=", check="numeric", evaluate=_nvr_end_to_end,
             because="steps 1–3, both layers of f = V tanh(Wx+b) + d"),
        Step("tr G_1 + tr G_2 ≤ tr G: diagonal entries of G are ≥ 0", tg[0] + tg[1], trace_g,
             relation="<=", substitutions={trace_g: tg[0] + tg[1] + rest},
             because="G_pp = (1/n) Σ_i J_i[:,p]ᵀ A_i J_i[:,p] ≥ 0 (A_i ⪰ 0), so each tr G_l "
                     "≤ tr G and log is increasing"),
        Step("separate the constant: Σ_l (r_l/2) log(‖W_l‖² (tr G/c)/(r_l GM_l))",
             with_total, separated,
             because="log of a product; R = Σ_l r_l multiplies log(tr G / c)"),
        sharpness_step(),
    )
    return Derivation(
        title="T7 NVR bound: NVR ≤ Σ_l (r_l/2) log(‖W_l‖²(tr G_l/c)/(r_l GM‖h_{l−1}‖²))",
        source=SOURCE_CHEN, steps=steps,
        conclusion="NVR ≤ Σ_l (r_l/2) log(‖W_l‖² (tr G_l/c)/(r_l GM_i‖h_{l−1}(x_i)‖²)) "
                   "≤ Σ_l (r_l/2) log(‖W_l‖²/(r_l GM_l)) + (R/2) log(tr H/((1−τ)c)) "
                   "under the guard")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
