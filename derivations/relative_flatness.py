"""T8 — reparametrization-invariant sharpness: relative flatness (Petzka, Kamp, Adilova,
Sminchisescu, Boley, NeurIPS 2021), with the Gauss–Newton matrix G in place of H
(**derived**, THEOREMS.md).

Definition. For layer l with rows ``w_s`` of W_l and ``G_{s,s'}`` the block of G for rows
s, s': ``κ^G_Tr(W_l) = Σ_{s,s'} ⟨w_s, w_{s'}⟩ tr(G_{s,s'})``.

Statement, for a dense layer l (h_{l−1} entering f only through ``z = W_l h_{l−1} + b_l``):

    κ^G_Tr(W_l) = (1/n) Σ_i ‖h_{l−1}(x_i)‖² · tr(J_{h,l}(x_i)ᵀ A_i J_{h,l}(x_i))   (any loss)
    κ^G_Tr(W_l) = (c/n) Σ_i ‖h_{l−1}(x_i)‖² · ‖J_{h,l}(x_i)‖_F²                    (MSE)
    (1/n) Σ_i ‖h_{l−1}(x_i)‖² · MLS_l(x_i)² ≤ κ^G_Tr(W_l) / c                        (MSE)

The bound is registered (``relative_flatness.mls``, checked at every dense layer as the worst
ratio); the identities are what the quantities ``layer.<l>.kappa_ggn`` (definition) and
``layer.<l>.kappa_ggn_identity`` compute two ways, and the tests compare them to 1e-10, for MSE
and cross-entropy, against G built densely from per-sample Jacobians.

Invariance (as THEOREMS.md states it, and no more). For a positively homogeneous network
(ReLU, leaky ReLU, identity) the layer-wise rescaling ``(W_{l−1}, b_{l−1}) → α(W_{l−1},
b_{l−1})``, ``W_l → W_l/α`` (α > 0) leaves f unchanged, multiplies h_{l−1} by α and J_{h,l}
by 1/α, so by the identity κ(W_l) is unchanged, while tr H changes. Neuron-wise rescaling by a
positive diagonal (rows of (W_{l−1}, b_{l−1}) by D, columns of W_l by D⁻¹) also leaves f
unchanged and leaves κ of every other layer unchanged, but changes κ(W_l) unless D ∝ I.

Proof. (1) By T3's factorisation, the per-sample Jacobian of f with respect to row s of W is
``D_{:,s} hᵀ`` (D = ∂f/∂z, K×m). (2) Hence the per-sample block is ``G_{ss'} = h D_{:,s}ᵀ A
D_{:,s'} hᵀ`` and ``tr G_{ss'} = ‖h‖² (DᵀAD)_{ss'}`` (checked for all blocks at m = K = d =
2 with a generic symmetric A). (3) Summing against ``⟨w_s, w_s'⟩ = (WWᵀ)_{ss'}`` gives
``tr(WWᵀ DᵀAD) ‖h‖² = ‖h‖² tr((DW)ᵀ A (DW))``, and (4) ``DW = J_{h,l}`` (T3's chain rule);
averaging over samples is linear. (5) MSE: A = cI. (6) ``MLS_l² = ‖J_h‖_2² ≤ ‖J_h‖_F²``.
(7) End to end: the definition, from dense G blocks of per-sample autograd Jacobians, equals
the identity on random networks. (8)–(9) Positive homogeneity and the rescaling invariance.
(10) Equality for K = 1 (then ‖J_h‖_2 = ‖J_h‖_F).
"""

from __future__ import annotations

import functools
import random

import sympy
import torch

from boundcheck.core.formulas.layer_forms import (
    FLATNESS_LAYER_BINDING,
    FLATNESS_LAYER_RATIO,
)
from boundcheck.core.theorem import Theorem

from .compression import (
    SOURCE_PETZKA,
    c,
    frobenius,
    has_dense_layer,
    random_matrix,
    random_two_layer_problem,
    spectral,
)
from .proof import Derivation, Step

# --- the theorem -----------------------------------------------------------------------------
worst_ratio = sympy.Symbol(
    r"\max_l \frac{c \cdot \overline{\|h_{l-1}\|^2 \mathrm{MLS}_l^2}}"
    r"{\kappa^G_{\mathrm{Tr}}(W_l)}", nonnegative=True)

# per-layer term: its maximum over the dense layers must be ≤ 1
LAYER_RATIO = FLATNESS_LAYER_RATIO
LAYER_BINDING = FLATNESS_LAYER_BINDING

RELATIVE_FLATNESS_MLS = Theorem(
    id="relative_flatness.mls",
    title="T8 relative flatness bounds MLS at every dense layer: (1/n)Σ ‖h_{l−1}‖² MLS_l² ≤ "
          "κ^G_Tr(W_l) / c",
    lhs=worst_ratio, rhs=sympy.Integer(1),
    symbols={worst_ratio: "relative_flatness.mls_ratio"},
    source=SOURCE_PETZKA, family="relative_flatness",
    notes="κ^G from its definition (per-sample weight Jacobians); MSE only; worst ratio over "
          "the dense layers (weight-shared layers left out).",
    applies_to=has_dense_layer)

THEOREMS = (RELATIVE_FLATNESS_MLS,)


# --- the derivation --------------------------------------------------------------------------
def kappa_from_definition(weight: torch.Tensor, weight_jacobians: torch.Tensor,
                          output_hessians: torch.Tensor) -> float:
    """``Σ_{s,s'} ⟨w_s, w_s'⟩ tr(G_{s,s'})`` with G built densely:
    ``G = (1/n) Σ_i J_iᵀ A_i J_i`` from per-sample Jacobians ``J_i`` (n, K, rows, cols)."""
    n, k, rows, cols = weight_jacobians.shape
    flat = weight_jacobians.reshape(n, k, rows * cols)
    g = torch.einsum("nkp,nkl,nlq->pq", flat, output_hessians, flat) / n
    blocks = g.reshape(rows, cols, rows, cols)
    block_traces = torch.einsum("sjtj->st", blocks)
    return float((weight @ weight.T * block_traces).sum())


def kappa_from_identity(h: torch.Tensor, j_h: torch.Tensor,
                        output_hessians: torch.Tensor) -> float:
    """``(1/n) Σ_i ‖h_i‖² tr(J_{h,i}ᵀ A_i J_{h,i})``."""
    traces = torch.einsum("nkd,nkl,nld->n", j_h, output_hessians, j_h)
    return float((h.pow(2).sum(1) * traces).mean())


def _random_psd(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    b = torch.randn(n, k, k, generator=gen, dtype=torch.float64)
    return b @ b.transpose(1, 2)


def _identity_instance(rng: random.Random) -> tuple[float, float]:
    p = random_two_layer_problem(rng)
    gen = torch.Generator().manual_seed(rng.getrandbits(32))
    a = _random_psd(p["n"], p["K"], gen)
    layer = rng.randint(0, 1)
    return (kappa_from_definition(p["W"][layer], p["grad_W"][layer], a),
            kappa_from_identity(p["h"][layer], p["J_h"][layer], a))


def _mls_bound_instance(rng: random.Random) -> tuple[float, float]:
    p = random_two_layer_problem(rng)
    layer = rng.randint(0, 1)
    h2 = p["h"][layer].pow(2).sum(1)
    lhs = float((h2 * torch.linalg.matrix_norm(p["J_h"][layer], ord=2) ** 2).mean())
    eye = torch.eye(p["K"], dtype=torch.float64).expand(p["n"], -1, -1) * p["c"]
    return lhs, kappa_from_definition(p["W"][layer], p["grad_W"][layer], eye) / p["c"]


def _spectral_squared(rng: random.Random) -> tuple[float, float]:
    m = random_matrix(rng, rng.randint(1, 6), rng.randint(1, 6))
    return spectral(m) ** 2, frobenius(m) ** 2


def _relu_homogeneous(rng: random.Random) -> dict:
    return {sympy.Symbol("t", real=True): rng.uniform(-10, 10),
            sympy.Symbol(r"\alpha", positive=True): 10 ** rng.uniform(-3, 3)}


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    m, k, d = 2, 2, 2
    dd = sympy.Matrix(k, m, lambda i, j: sympy.Symbol(f"D_{i + 1}{j + 1}", real=True))
    w = sympy.Matrix(m, d, lambda i, j: sympy.Symbol(f"w_{i + 1}{j + 1}", real=True))
    h = sympy.Matrix(sympy.symbols("h_1:3", real=True))
    a11, a12, a22 = sympy.symbols("A_11 A_12 A_22", real=True)
    a = sympy.Matrix([[a11, a12], [a12, a22]])
    # per-sample Jacobian w.r.t. the rows of W (T3): column (s, j) is D[:, s] h_j
    j_w = sympy.Matrix.hstack(*[dd[:, s] * h[j] for s in range(m) for j in range(d)])
    g = j_w.T * a * j_w
    traces = sympy.Matrix(m, m, lambda s, t: sum(g[s * d + j, t * d + j] for j in range(d)))
    h2 = (h.T * h)[0, 0]
    kappa_def = sum((w[s, :] * w[t, :].T)[0, 0] * traces[s, t]
                    for s in range(m) for t in range(m))
    j_h = dd * w
    block_traces, scaled = sympy.symbols(r"[\operatorname{tr}G_{ss'}]_{ss'} "
                                         r"\|h\|^2D^\top{}AD")
    kappa_sym, identity_sym, mse_sym = sympy.symbols(
        r"\kappa^G_i \|h\|^2\operatorname{tr}(J_h^\top{}AJ_h) c\|h\|^2\|J_h\|_F^2")
    alpha = sympy.Symbol(r"\alpha", positive=True)
    t = sympy.Symbol("t", real=True)
    hn2, tr_term = sympy.symbols(r"\|h\|^2 \operatorname{tr}(J_h^\top{}AJ_h)", nonnegative=True)
    steps = (
        Step("tr G_{ss'} = ‖h‖² (DᵀAD)_{ss'} for every block (one sample)", block_traces,
             scaled, substitutions={block_traces: traces, scaled: h2 * dd.T * a * dd},
             because="G = J_Wᵀ A J_W with J_W's column (s, j) = D_{:,s} h_j (T3's "
                     "factorisation); m = K = d = 2, generic symmetric A"),
        Step("κ = Σ_{s,s'} ⟨w_s, w_s'⟩ tr G_{ss'} = ‖h‖² tr((DW)ᵀ A (DW)), and DW = J_{h,l}",
             kappa_sym, identity_sym,
             substitutions={kappa_sym: kappa_def, identity_sym: h2 * (j_h.T * a * j_h).trace()},
             because="Σ_{ss'} (WWᵀ)_{ss'} (DᵀAD)_{ss'} = tr(WWᵀDᵀAD); J_{h,l} = DW is T3's "
                     "chain rule; averaging over samples is linear"),
        Step("MSE (A = cI): κ_i = c ‖h‖² ‖J_h‖_F²", identity_sym, mse_sym,
             substitutions={identity_sym: h2 * (j_h.T * (c * sympy.eye(k)) * j_h).trace(),
                            mse_sym: c * h2 * sum(v**2 for v in j_h)}),
        Step("MLS_l² = ‖J_h‖_2² ≤ ‖J_h‖_F²", sympy.Symbol(r"\|J_h\|_2^2"),
             sympy.Symbol(r"\|J_h\|_F^2"), relation="<=", check="numeric",
             evaluate=_spectral_squared,
             because="so (1/n)Σ ‖h‖² MLS_l² ≤ (1/n)Σ ‖h‖² ‖J_h‖_F² = κ^G / c"),
        Step("end to end: the definition (dense G blocks) equals the identity, any A_i ⪰ 0",
             sympy.Symbol(r"\kappa^G_{\mathrm{def}}"), sympy.Symbol(r"\kappa^G_{\mathrm{id}}"),
             check="numeric", evaluate=_identity_instance,
             because="random two-layer tanh networks, either layer, random PSD A_i; "
                     "per-sample Jacobians by autograd"),
        Step("end to end: (1/n)Σ ‖h‖² MLS_l² ≤ κ^G(W_l) / c (MSE)",
             sympy.Symbol(r"\overline{\|h\|^2\mathrm{MLS}_l^2}"),
             sympy.Symbol(r"\kappa^G_{\mathrm{Tr}}(W_l)") / c, relation="<=",
             check="numeric", evaluate=_mls_bound_instance),
        Step("ReLU is positively homogeneous: relu(α t) = α relu(t), α > 0",
             sympy.Max(0, alpha * t), alpha * sympy.Max(0, t), check="numeric",
             sampler=_relu_homogeneous,
             because="so (W_{l−1}, b_{l−1}) → α(W_{l−1}, b_{l−1}) maps h_{l−1} → α h_{l−1}"),
        Step("layer-wise rescaling leaves κ(W_l) unchanged: h → αh, J_h → J_h/α",
             sympy.Symbol(r"\|\alpha h\|^2 \operatorname{tr}((J_h/\alpha)^\top A (J_h/\alpha))"),
             hn2 * tr_term,
             substitutions={sympy.Symbol(
                 r"\|\alpha h\|^2 \operatorname{tr}((J_h/\alpha)^\top A (J_h/\alpha))"):
                 sympy.Mul(alpha**2 * hn2, tr_term / alpha**2, evaluate=False)},
             because="W_l → W_l/α keeps z_l, hence D, and J_h = D W_l scales by 1/α"),
        Step("equality at K = 1: ‖J_h‖_2 = ‖J_h‖_F for a 1×d row j",
             sympy.Symbol(r"\sqrt{\lambda(j j^\top)}"), sympy.Symbol(r"\|j\|_F"),
             substitutions={sympy.Symbol(r"\sqrt{\lambda(j j^\top)}"):
                            sympy.sqrt((j_h[0, :] * j_h[0, :].T)[0, 0]),
                            sympy.Symbol(r"\|j\|_F"): sympy.sqrt(sum(v**2 for v in j_h[0, :]))},
             because="j jᵀ is 1×1: its one eigenvalue is ‖j‖², so the bound is an equality"),
    )
    return Derivation(
        title="T8 relative flatness: κ^G_Tr(W_l) = (1/n)Σ ‖h_{l−1}‖² tr(J_{h,l}ᵀ A_i J_{h,l})",
        source=SOURCE_PETZKA, steps=steps,
        conclusion="κ^G_Tr(W_l) = (1/n)Σ_i ‖h_{l−1}(x_i)‖² tr(J_{h,l}ᵀ A_i J_{h,l}) for any "
                   "loss; = (c/n)Σ ‖h‖²‖J_h‖_F² for MSE; (1/n)Σ ‖h‖² MLS_l² ≤ κ^G/c")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

