"""T3 — the input-gradient lemma (Ma & Ying, NeurIPS 2021, arXiv 2105.13462).

Statement. For ``f(x) = g(W x + b)`` — x reaches the output only through the dense first
layer, W used nowhere else — and any x ≠ 0:

    ‖J_x(x)‖_2 ≤ ‖W‖_2 · ‖∇_W f(x)‖_F / ‖x‖,     and the same with ‖J_x(x)‖_F on the left.

The same holds at every dense layer l, with x → h_{l−1}(x), W → W_l and J_x → J_{h,l}, when
h_{l−1} enters f only through ``W_l h_{l−1} + b_l`` (then f = g_l(W_l h + b_l) as a function of
h, and the proof below applies verbatim).

Proof (each step checked by :meth:`Derivation.verify`). Write ``z = Wx + b`` and ``D = ∂f/∂z``
(K×h). (1) Chain rule in W: ``∇_W f_k = D_kᵀ xᵀ`` (row k of D times xᵀ), checked symbolically
for a generic g (undefined sympy functions) at K = h = 2, D = 3. (2) Hence
``‖∇_W f‖_F² = Σ_k ‖D_k‖²‖x‖² = ‖D‖_F²‖x‖²``. (3) Chain rule in x: ``J_x = D W``.
(4) ``‖DW‖_2 ≤ ‖D‖_2‖W‖_2`` and (5) ``‖D‖_2 ≤ ‖D‖_F``; (6) ``‖DW‖_F ≤ ‖D‖_F‖W‖_2``
(row by row, ``‖d_kᵀW‖ ≤ ‖W‖_2‖d_k‖``); (4)–(6) are checked numerically on random matrices.
(7) By (2), ``‖D‖_F = ‖∇_W f‖_F/‖x‖``. The chain (3)–(7) is the statement; (8)–(9) re-check
it end to end on random tanh networks with gradients from autograd. (10) Equality: for a
bias-free linear model with K = 1, ``f = wᵀx``, both sides equal ‖w‖.

Verification. A per-sample statement is verified as its worst case over the data:
``max_i ‖J_x(x_i)‖ ‖x_i‖ / ‖∇_{W_1} f(x_i)‖_F ≤ ‖W_1‖_2`` (a sample with ∇_W f = 0 has
J_x = 0 and is trivially fine: counted as 0), and the layer form as
``max_{dense l} [max_i ‖J_{h,l}‖ ‖h_{l−1}‖ / ‖∇_{W_l} f‖_F] / ‖W_l‖_2 ≤ 1``. An input skip
connection ``f = g(Wx+b) + Ux`` breaks (3): such subjects are NOT_APPLICABLE.
"""

from __future__ import annotations

import functools
import random

import sympy

from boundcheck.core.formulas.layer_forms import (
    INPUT_GRADIENT_BINDING_2,
    INPUT_GRADIENT_BINDING_F,
    INPUT_GRADIENT_LAYER_RATIO,
)
from boundcheck.core.theorem import Theorem

from .compression import (
    SOURCE_MA_YING,
    frobenius,
    has_dense_layer,
    input_only_through_first_layer,
    random_matrix,
    random_network,
    spectral,
)
from .proof import Derivation, Step

# --- the theorem -----------------------------------------------------------------------------
w1_norm = sympy.Symbol(r"\|W_1\|_2", nonnegative=True)
ratio_2 = sympy.Symbol(r"\max_i \frac{\|J_x(x_i)\|_2 \|x_i\|}{\|\nabla_{W_1} f(x_i)\|_F}",
                       nonnegative=True)
ratio_f = sympy.Symbol(r"\max_i \frac{\|J_x(x_i)\|_F \|x_i\|}{\|\nabla_{W_1} f(x_i)\|_F}",
                       nonnegative=True)
layers_ratio_2 = sympy.Symbol(
    r"\max_{l,i} \frac{\|J_{h,l}(x_i)\|_2 \|h_{l-1}(x_i)\|}{\|W_l\|_2 \|\nabla_{W_l} f(x_i)\|_F}",
    nonnegative=True)
layers_ratio_f = sympy.Symbol(
    r"\max_{l,i} \frac{\|J_{h,l}(x_i)\|_F \|h_{l-1}(x_i)\|}{\|W_l\|_2 \|\nabla_{W_l} f(x_i)\|_F}",
    nonnegative=True)

# per-layer term of the layer form (l a dense layer): its maximum over l must be ≤ 1
LAYER_RATIO = INPUT_GRADIENT_LAYER_RATIO
LAYER_BINDING_2 = INPUT_GRADIENT_BINDING_2
LAYER_BINDING_F = INPUT_GRADIENT_BINDING_F

_NOTES = ("Per-sample statement verified at its worst sample; a sample with ∇_W f = 0 has "
          "J_x = 0 (counted as 0). Exact up to float64 rounding.")

INPUT_GRADIENT = Theorem(
    id="compression.input_gradient",
    title="T3 input-gradient lemma: ‖J_x(x)‖_2 ≤ ‖W_1‖_2 ‖∇_{W_1} f(x)‖_F / ‖x‖ at every sample",
    lhs=ratio_2, rhs=w1_norm,
    symbols={ratio_2: "jacobian.sensitivity_ratio_max", w1_norm: "layer.1.weight_norm"},
    source=SOURCE_MA_YING, family="compression.input_gradient", notes=_NOTES,
    applies_to=input_only_through_first_layer)

INPUT_GRADIENT_FRO = Theorem(
    id="compression.input_gradient_fro",
    title="T3 input-gradient lemma, Frobenius form: ‖J_x(x)‖_F ≤ ‖W_1‖_2 ‖∇_{W_1} f‖_F / ‖x‖",
    lhs=ratio_f, rhs=w1_norm,
    symbols={ratio_f: "jacobian.sensitivity_ratio_fro_max", w1_norm: "layer.1.weight_norm"},
    source=SOURCE_MA_YING, family="compression.input_gradient", notes=_NOTES,
    applies_to=input_only_through_first_layer)

INPUT_GRADIENT_LAYERS = Theorem(
    id="compression.input_gradient_layers",
    title="T3 at every dense layer: ‖J_{h,l}‖_2 ≤ ‖W_l‖_2 ‖∇_{W_l} f‖_F / ‖h_{l−1}‖",
    lhs=layers_ratio_2, rhs=sympy.Integer(1),
    symbols={layers_ratio_2: "compression.input_gradient_layers_ratio"},
    source=SOURCE_MA_YING, family="compression.input_gradient",
    notes="Worst ratio over samples and dense layers; weight-shared layers are left out "
          "(their gradient is a sum over positions, and the lemma does not follow).",
    applies_to=has_dense_layer)

INPUT_GRADIENT_LAYERS_FRO = Theorem(
    id="compression.input_gradient_layers_fro",
    title="T3 at every dense layer, Frobenius form: ‖J_{h,l}‖_F ≤ ‖W_l‖_2 ‖∇_{W_l} f‖_F / "
          "‖h_{l−1}‖",
    lhs=layers_ratio_f, rhs=sympy.Integer(1),
    symbols={layers_ratio_f: "compression.input_gradient_layers_ratio_fro"},
    source=SOURCE_MA_YING, family="compression.input_gradient",
    notes="Worst ratio over samples and dense layers; weight-shared layers are left out.",
    applies_to=has_dense_layer)

THEOREMS = (INPUT_GRADIENT, INPUT_GRADIENT_FRO, INPUT_GRADIENT_LAYERS,
            INPUT_GRADIENT_LAYERS_FRO)


# --- the derivation --------------------------------------------------------------------------
def _generic_network():
    """f = g(Wx + b) at K = h = 2, D = 3 with g_1, g_2 undefined; D = ∂g/∂z at z."""
    x = sympy.Matrix(sympy.symbols("x_1:4", real=True))
    b = sympy.Matrix(sympy.symbols("b_1:3", real=True))
    w = sympy.Matrix(2, 3, lambda i, j: sympy.Symbol(f"w_{i + 1}{j + 1}", real=True))
    z = w * x + b
    zs = sympy.symbols("z_1:3", real=True)
    g = [sympy.Function(f"g_{k + 1}") for k in range(2)]
    f = [gk(*z) for gk in g]
    at_z = dict(zip(zs, z, strict=True))
    d = sympy.Matrix(2, 2, lambda k, i: sympy.diff(g[k](*zs), zs[i]).subs(at_z))
    return x, w, f, d


def _submultiplicative(rng: random.Random) -> tuple[float, float]:
    k, h, d = (rng.randint(1, 7) for _ in range(3))
    a, w = random_matrix(rng, k, h), random_matrix(rng, h, d)
    return spectral(a @ w), spectral(a) * spectral(w)


def _spectral_below_frobenius(rng: random.Random) -> tuple[float, float]:
    a = random_matrix(rng, rng.randint(1, 7), rng.randint(1, 7))
    return spectral(a), frobenius(a)


def _frobenius_product(rng: random.Random) -> tuple[float, float]:
    k, h, d = (rng.randint(1, 7) for _ in range(3))
    a, w = random_matrix(rng, k, h), random_matrix(rng, h, d)
    return frobenius(a @ w), frobenius(a) * spectral(w)


def lemma_instance(norm):
    """Random instances of the lemma: (‖J_x‖, ‖W‖_2 ‖∇_W f‖_F / ‖x‖) with ‖·‖ = ``norm``."""
    def evaluate(rng: random.Random) -> tuple[float, float]:
        net = random_network(rng)
        return norm(net["J_x"]), spectral(net["W"]) * frobenius(net["grad_W"]) / frobenius(
            net["x"])
    return evaluate


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    x, w, f, d = _generic_network()
    grad_w = sympy.Matrix.vstack(*[sympy.Matrix(2, 3, lambda i, j, k=k: sympy.diff(f[k], w[i, j]))
                                   for k in range(2)])
    factorised = sympy.Matrix.vstack(*[d[k, :].T * x.T for k in range(2)])
    jac_x = sympy.Matrix(2, 3, lambda k, j: sympy.diff(f[k], x[j]))
    dk = sympy.Matrix(2, 2, lambda k, i: sympy.Symbol(f"d_{k + 1}{i + 1}", real=True))
    xs = sympy.symbols("x_1:4", real=True)
    wv = sympy.symbols("v_1:4", real=True)
    f_lin = sum(a * b for a, b in zip(wv, xs, strict=True))
    norm_w = sympy.sqrt(sum(v**2 for v in wv))
    jx_lin = sympy.sqrt(sum(sympy.diff(f_lin, xj) ** 2 for xj in xs))
    gw_lin = sympy.sqrt(sum(sympy.diff(f_lin, v) ** 2 for v in wv))
    n_dw2, n_d2, n_df, n_w2 = sympy.symbols(r"\|DW\|_2 \|D\|_2 \|D\|_F \|W\|_2",
                                            nonnegative=True)
    n_dwf = sympy.Symbol(r"\|DW\|_F", nonnegative=True)
    grad_sym, fact_sym = sympy.symbols(r"[\nabla_W\ f_k]_k [D_k^\top\ x^\top]_k")
    jx_sym, dw_sym = sympy.symbols("J_x D*W")
    g2 = sympy.Symbol(r"\|\nabla_W f\|_F^2", positive=True)
    d_fro = sympy.Symbol(r"\|D\|_F", positive=True)
    x_norm = sympy.Symbol(r"\|x\|", positive=True)
    w_norm, jx_norm, gw_norm = sympy.symbols(r"\|w\| \|J_x\| \|\nabla_w\ f\|", positive=True)
    steps = (
        Step("gradient factorisation ∇_W f_k = D_kᵀ xᵀ (chain rule in W)", grad_sym, fact_sym,
             substitutions={grad_sym: grad_w, fact_sym: factorised},
             because="∂f_k/∂W_ij = (∂g_k/∂z_i)(z) · x_j; generic g (undefined functions), "
                     "K = h = 2, D = 3, all entries compared"),
        Step("‖∇_W f‖_F² = ‖D‖_F² ‖x‖²",
             sum((dk[k, i] * xs[j]) ** 2 for k in range(2) for i in range(2) for j in range(3)),
             sum(e**2 for e in dk) * sum(v**2 for v in xs),
             because="Σ_k ‖D_kᵀ xᵀ‖_F² = Σ_k ‖D_k‖² ‖x‖²"),
        Step("chain rule in x: J_x = D W", jx_sym, dw_sym,
             substitutions={jx_sym: jac_x, dw_sym: d * w},
             because="∂f_k/∂x_j = Σ_i (∂g_k/∂z_i) W_ij: x enters only through z = Wx + b"),
        Step("submultiplicativity ‖DW‖_2 ≤ ‖D‖_2 ‖W‖_2", n_dw2, n_d2 * n_w2, relation="<=",
             check="numeric", evaluate=_submultiplicative,
             because="‖DWv‖ ≤ ‖D‖_2‖Wv‖ ≤ ‖D‖_2‖W‖_2‖v‖; random matrices, sizes 1–7"),
        Step("‖D‖_2 ≤ ‖D‖_F", n_d2, n_df, relation="<=", check="numeric",
             evaluate=_spectral_below_frobenius, because="σ_1² ≤ Σ_k σ_k² = ‖D‖_F²"),
        Step("‖DW‖_F ≤ ‖D‖_F ‖W‖_2", n_dwf, n_df * n_w2, relation="<=", check="numeric",
             evaluate=_frobenius_product,
             because="‖DW‖_F² = Σ_k ‖d_kᵀW‖² ≤ ‖W‖_2² Σ_k ‖d_k‖², d_k the rows of D"),
        Step("‖D‖_F = ‖∇_W f‖_F / ‖x‖ (x ≠ 0)", d_fro, sympy.sqrt(g2) / x_norm,
             substitutions={g2: d_fro**2 * x_norm**2},
             because="square root of step 2, divided by ‖x‖ > 0"),
        Step("end to end: ‖J_x‖_2 ≤ ‖W‖_2 ‖∇_W f‖_F / ‖x‖ on random tanh networks",
             sympy.Symbol(r"\|J_x\|_2"), sympy.Symbol(r"\|W\|_2\|\nabla_W f\|_F/\|x\|"),
             relation="<=", check="numeric", evaluate=lemma_instance(spectral),
             because="steps 3, 4, 5, 7; gradients by torch autograd, sizes 1–6"),
        Step("end to end, Frobenius: ‖J_x‖_F ≤ ‖W‖_2 ‖∇_W f‖_F / ‖x‖",
             sympy.Symbol(r"\|J_x\|_F"), sympy.Symbol(r"\|W\|_2\|\nabla_W f\|_F/\|x\|"),
             relation="<=", check="numeric", evaluate=lemma_instance(frobenius),
             because="steps 3, 6, 7"),
        Step("equality for K = 1, f = wᵀx (no bias): ‖J_x‖ = ‖w‖ · ‖∇_w f‖ / ‖x‖",
             jx_norm, w_norm * gw_norm / x_norm,
             substitutions={jx_norm: jx_lin, w_norm: norm_w, gw_norm: gw_lin,
                            x_norm: sympy.sqrt(sum(v**2 for v in xs))},
             because="J_x = wᵀ, ∇_w f = x, ‖W‖_2 = ‖w‖: the constant cannot be lowered"),
    )
    return Derivation(
        title="T3 input-gradient lemma: ‖J_x‖ ≤ ‖W‖_2 ‖∇_W f‖_F / ‖x‖",
        source=SOURCE_MA_YING, steps=steps,
        conclusion="‖J_x(x)‖_2 ≤ ‖J_x(x)‖_F ≤ ‖W‖_2 ‖∇_W f(x)‖_F / ‖x‖ for every x ≠ 0")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access (its symbolic steps take a moment)."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
