"""Cross-entropy forms of T4 and T5 (**derived** here; THEOREMS.md states T4–T7 for MSE only).

Why the MSE forms do not carry over. T4 needs ``‖J_i‖_F² ≤ tr(J_iᵀ A_i J_i)/c``: for MSE
``A_i = cI``. For cross-entropy ``A_i = diag(p_i) − p_i p_iᵀ`` annihilates ``1`` (softmax is
blind to adding a constant to every logit), so tr G bounds nothing along ``1``, and the MSE
forms are NOT_APPLICABLE. What tr G does control is the *centred* sensitivity: with
``P = I − 11ᵀ/K`` and ``a = min_i λ_min(A_i on 1^⊥)`` (``loss.output_curvature_floor``),

    (1/n) Σ_i σ_max(P J_x(x_i)) ≤ ‖W_1‖_2 · √((1/n) Σ_i ‖x_i‖⁻²) · √(tr G / a),
    (1/n) Σ_i Σ_l σ_max(P J_{h,l}(x_i)) ≤ √((1/n) Σ_i Σ_l ‖W_l‖_2²/‖h_{l−1}(x_i)‖²) · √(tr G / a).

Any loss with ``A_i ⪰ 0`` and ``A_i 1 = 0`` qualifies (checked when measuring a). By Cauchy
interlacing the eigenvalues of ``diag(p) − ppᵀ`` on 1^⊥ lie above ``min_k p_k``, so
``a ≥ min_{i,k} p_ik > 0``; a saturated softmax makes a tiny and the bound loose, honestly.

Proof. (1) ``A_i 1 = 0`` and (2) ``A_i = P A_i P`` (symbolic, K = 3). (3) For any J,
``tr(Jᵀ A_i J) = tr(A_i (PJ)(PJ)ᵀ) ≥ λ_min(A_i on 1^⊥) ‖PJ‖_F²`` since PJ's columns lie in
1^⊥ (random instances). (4) ``P f = P g(Wx + b)`` has T3's form, so T3 gives ``‖P J_x‖_2 ≤
‖W‖_2 ‖∇_W (P f)‖_F/‖x‖`` (random networks). (5) ``‖∇_{W_1}(Pf)(x_i)‖_F² ≤ ‖P J_i‖_F²``
(W_1's entries are some of the parameters). (6) Cauchy–Schwarz as in T4, or over (i, l) as in
T5 (and the dense layers' weights are disjoint). (7) ``(1/n) Σ ‖P J_i‖_F² ≤ (1/n) Σ
tr(J_iᵀ A_i J_i)/a = tr G / a``. (8)–(9) End to end on random networks with random
``p_i`` on the simplex. (10) The interlacing floor ``a ≥ min p``.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import sympy
import torch

from boundcheck.core.theorem import Theorem

from .compression import (
    G_OVER_ALL_PARAMETERS,
    SOURCE_CHEN,
    has_dense_layer,
    input_only_through_first_layer,
    random_network,
    random_two_layer_problem,
    spectral,
    trace_g,
)
from .local_sensitivity import cauchy_schwarz_instance
from .proof import Derivation, Step

# --- the theorems ----------------------------------------------------------------------------
floor = sympy.Symbol("a", positive=True)
mls_c = sympy.Symbol(r"\overline{\mathrm{MLS}^{\perp}}", nonnegative=True)
nmls_c = sympy.Symbol(r"\mathrm{NMLS}^{\perp}", nonnegative=True)
w1_norm = sympy.Symbol(r"\|W_1\|_2", nonnegative=True)
inv_sq = sympy.Symbol(r"\overline{\|x\|^{-2}}", positive=True)
factor = sympy.Symbol(r"\overline{\sum_l \|W_l\|_2^2 / \|h_{l-1}\|^2}", nonnegative=True)

MLS_CE_RHS = w1_norm * sympy.sqrt(inv_sq) * sympy.sqrt(trace_g / floor)
NMLS_CE_RHS = sympy.sqrt(factor) * sympy.sqrt(trace_g / floor)
_NOTE = ("P = I − 11ᵀ/K removes the output direction the loss cannot see; a = min_i "
         "λ_min(A_i on 1^⊥) ≥ min_{i,k} p_ik. For losses with A_i 1 = 0 (cross-entropy).")

MLS_CROSS_ENTROPY = Theorem(
    id="compression.mls_cross_entropy",
    title="T4, cross-entropy form: (1/n)Σ σ_max(P J_x(x_i)) ≤ ‖W_1‖_2 √((1/n)Σ‖x_i‖⁻²) "
          "√(tr G / a)",
    lhs=mls_c, rhs=MLS_CE_RHS,
    symbols={floor: "loss.output_curvature_floor", mls_c: "compression.mls_centered",
             w1_norm: "layer.1.weight_norm", inv_sq: "data.inv_sq_norm_mean",
             trace_g: "ggn.trace"},
    source=SOURCE_CHEN + "; cross-entropy form derived here", family="compression.mls",
    notes=_NOTE,
    assumptions=(G_OVER_ALL_PARAMETERS,), applies_to=input_only_through_first_layer)

NMLS_CROSS_ENTROPY = Theorem(
    id="compression.nmls_cross_entropy",
    title="T5, cross-entropy form: (1/n)Σ_iΣ_l σ_max(P J_{h,l}(x_i)) ≤ "
          "√((1/n)Σ_iΣ_l ‖W_l‖²/‖h_{l−1}‖²) √(tr G / a)",
    lhs=nmls_c, rhs=NMLS_CE_RHS,
    symbols={floor: "loss.output_curvature_floor", nmls_c: "compression.nmls_centered",
             factor: "network.nmls_factor", trace_g: "ggn.trace"},
    source=SOURCE_CHEN + "; cross-entropy form derived here", family="compression.nmls",
    notes=_NOTE + " Sums over the dense layers.",
    assumptions=(G_OVER_ALL_PARAMETERS,), applies_to=has_dense_layer)

THEOREMS = (MLS_CROSS_ENTROPY, NMLS_CROSS_ENTROPY)


# --- the derivation --------------------------------------------------------------------------
def _centring(k: int) -> np.ndarray:
    return np.eye(k) - np.ones((k, k)) / k


def _floor(p: np.ndarray) -> float:
    """λ_min of diag(p) − ppᵀ on 1^⊥."""
    k = len(p)
    q = np.linalg.qr(np.column_stack([np.ones(k), np.eye(k)[:, :-1]]))[0][:, 1:]
    a = np.diag(p) - np.outer(p, p)
    return float(np.linalg.eigvalsh(q.T @ a @ q)[0])


def _simplex(rng: random.Random, k: int) -> np.ndarray:
    gen = np.random.default_rng(rng.getrandbits(32))
    p = gen.dirichlet(np.full(k, 10.0 ** rng.uniform(-1, 1))) + 1e-9  # no exact zeros
    return p / p.sum()


def _trace_floor_instance(rng: random.Random) -> tuple[float, float]:
    k, cols = rng.randint(2, 6), rng.randint(1, 6)
    p = _simplex(rng, k)
    j = np.random.default_rng(rng.getrandbits(32)).standard_normal((k, cols))
    a = np.diag(p) - np.outer(p, p)
    return _floor(p) * float(np.sum((_centring(k) @ j) ** 2)), float(np.trace(j.T @ a @ j))


def _centred_lemma_instance(rng: random.Random) -> tuple[float, float]:
    net = random_network(rng)
    k = net["J_x"].shape[0]
    proj = _centring(k)
    grad = np.einsum("ij,jab->iab", proj, net["grad_W"])
    return spectral(proj @ net["J_x"]), spectral(net["W"]) * float(
        np.linalg.norm(grad)) / float(np.linalg.norm(net["x"]))


def _problem_with_probabilities(rng: random.Random):
    p = random_two_layer_problem(rng)
    while p["K"] < 2:
        p = random_two_layer_problem(rng)
    probs = [_simplex(rng, p["K"]) for _ in range(p["n"])]
    a = torch.tensor(np.stack([np.diag(q) - np.outer(q, q) for q in probs]))
    trace = float(torch.einsum("nkp,nkl,nlp->", p["J"], a, p["J"])) / p["n"]
    return p, trace, min(_floor(q) for q in probs)


def _centred(j: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_centring(j.shape[1])) @ j


def _mls_ce_end_to_end(rng: random.Random) -> tuple[float, float]:
    p, trace, a = _problem_with_probabilities(rng)
    lhs = float(torch.linalg.matrix_norm(_centred(p["J_h"][0]), ord=2).mean())
    inv = float((1 / p["h"][0].pow(2).sum(1)).mean())
    w = float(torch.linalg.matrix_norm(p["W"][0], ord=2))
    return lhs, w * math.sqrt(inv) * math.sqrt(trace / a)


def _nmls_ce_end_to_end(rng: random.Random) -> tuple[float, float]:
    p, trace, a = _problem_with_probabilities(rng)
    lhs = sum(float(torch.linalg.matrix_norm(_centred(j), ord=2).mean()) for j in p["J_h"])
    fac = sum(float(torch.linalg.matrix_norm(w, ord=2)) ** 2 * float((1 / h.pow(2).sum(1)).mean())
              for w, h in zip(p["W"], p["h"], strict=True))
    return lhs, math.sqrt(fac) * math.sqrt(trace / a)


def _interlacing_instance(rng: random.Random) -> tuple[float, float]:
    p = _simplex(rng, rng.randint(2, 8))
    return float(p.min()), _floor(p)


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    p1, p2 = sympy.symbols("p_1 p_2", positive=True)
    p = sympy.Matrix([p1, p2, 1 - p1 - p2])
    a = sympy.diag(*p) - p * p.T
    proj = sympy.eye(3) - sympy.ones(3, 3) / 3
    a_sym, pap_sym, a1_sym = sympy.symbols("A PAP A1")
    q = sympy.symbols("q_1 q_2", nonnegative=True)  # ‖P J_i‖_F²
    t = sympy.symbols("t_1 t_2", nonnegative=True)  # tr(J_iᵀ A_i J_i)
    e = sympy.symbols("e_1 e_2", nonnegative=True)
    g2, o2, j2 = sympy.symbols(r"\|\nabla_{W_1}(Pf)\|_F^2 o^2 \|PJ_i\|_F^2", nonnegative=True)
    steps = (
        Step("cross-entropy's output Hessian annihilates 1: A 1 = 0 (K = 3)", a1_sym,
             sympy.zeros(3, 1), substitutions={a1_sym: a * sympy.ones(3, 1)},
             because="A = diag(p) − ppᵀ with Σ_k p_k = 1"),
        Step("A = P A P, P = I − 11ᵀ/K", a_sym, pap_sym,
             substitutions={a_sym: a, pap_sym: proj * a * proj},
             because="A is symmetric and A1 = 0"),
        Step("tr(Jᵀ A J) ≥ λ_min(A on 1^⊥) ‖P J‖_F²",
             sympy.Symbol(r"\lambda^{\perp}_{\min}(A)\|PJ\|_F^2"),
             sympy.Symbol(r"\operatorname{tr}(J^\top A J)"), relation="<=", check="numeric",
             evaluate=_trace_floor_instance,
             because="tr(JᵀAJ) = tr(A (PJ)(PJ)ᵀ) and PJ's columns lie in 1^⊥; random p, J"),
        Step("T3 for the centred output Pf = P g(Wx + b)",
             sympy.Symbol(r"\|P J_x\|_2"), sympy.Symbol(r"\|W\|_2\|\nabla_W(Pf)\|_F/\|x\|"),
             relation="<=", check="numeric", evaluate=_centred_lemma_instance,
             because="derivations.input_gradient applies to any g: here g' = P∘g"),
        Step("W_1's entries are some of the parameters", g2, j2, relation="<=",
             substitutions={j2: g2 + o2}),
        Step("Cauchy–Schwarz with means (as in T4; over (i, l) as in T5)",
             sympy.Symbol(r"\overline{ab}"),
             sympy.sqrt(sympy.Symbol(r"\overline{a^2}")) * sympy.sqrt(
                 sympy.Symbol(r"\overline{b^2}")), relation="<=", check="numeric",
             evaluate=cauchy_schwarz_instance),
        Step("(1/n) Σ ‖P J_i‖_F² ≤ tr G / a (n = 2)", sum(q) / 2, trace_g / floor,
             relation="<=", substitutions={trace_g: sum(t) / 2,
                                           t[0]: floor * q[0] + e[0], t[1]: floor * q[1] + e[1]},
             because="t_i = tr(J_iᵀA_iJ_i) ≥ λ^⊥_min(A_i) q_i ≥ a q_i, a the minimum over i"),
        Step("end to end: (1/n)Σ σ_max(P J_x) ≤ ‖W_1‖ √((1/n)Σ‖x‖⁻²) √(tr G / a)",
             mls_c, MLS_CE_RHS, relation="<=", check="numeric", evaluate=_mls_ce_end_to_end,
             because="random f = V tanh(Wx+b) + d, random p_i on the simplex"),
        Step("end to end: NMLS^⊥ ≤ √(factor) √(tr G / a)", nmls_c, NMLS_CE_RHS,
             relation="<=", check="numeric", evaluate=_nmls_ce_end_to_end,
             because="both layers of the random network are dense"),
        Step("interlacing: a ≥ min_k p_k", sympy.Symbol(r"\min_k p_k"),
             sympy.Symbol(r"\lambda^{\perp}_{\min}(\mathrm{diag}(p) - pp^\top)"),
             relation="<=", check="numeric", evaluate=_interlacing_instance,
             because="eigenvalues of a rank-one downdate of diag(p) interlace the p_k"),
    )
    return Derivation(
        title="T4/T5, cross-entropy forms: the centred sensitivity is bounded by √(tr G / a)",
        source=SOURCE_CHEN + "; derived here", steps=steps,
        conclusion="(1/n)Σ σ_max(P J_x) ≤ ‖W_1‖√((1/n)Σ‖x‖⁻²)√(tr G/a) and "
                   "NMLS^⊥ ≤ √((1/n)Σ_iΣ_l ‖W_l‖²/‖h_{l−1}‖²)√(tr G/a)")


def __getattr__(name: str):
    """``DERIVATION`` is built on first access."""
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
