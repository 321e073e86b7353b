"""Shared pieces of the compression theorems T3–T8 (THEOREMS.md): "flat minima compress
representations".

Sources: C. Ma and L. Ying, "On linear stability of SGD and input-smoothness of neural
networks", NeurIPS 2021 (arXiv 2105.13462) for the input-gradient lemma (T3); S. Chen,
S. Recanatesi, E. Shea-Brown, "A simple connection from loss flatness to compressed
representations in neural networks", arXiv 2310.01770 (v4 2025) for MLS and LVR (T4–T7);
H. Petzka, M. Kamp, L. Adilova, C. Sminchisescu, M. Boley, "Relative flatness and
generalization", NeurIPS 2021 (T8).

The theorem modules are :mod:`derivations.input_gradient` (T3),
:mod:`derivations.local_sensitivity` (T4), :mod:`derivations.network_sensitivity` (T5),
:mod:`derivations.volume` (T6), :mod:`derivations.network_volume` (T7),
:mod:`derivations.relative_flatness` (T8) and :mod:`derivations.centered_sensitivity`
(cross-entropy forms of T4, T5). This module holds what they share:

* the loss-scale and sharpness symbols (``c``, ``tr G``, ``tr H``, the tolerance ``τ``);
* the precondition of every *sharpness* (``tr H``) form, :data:`AT_ZERO_LOSS_MINIMUM`:
  the loss is MSE and the measured ``|tr R| ≤ τ·tr G`` (``τ`` = ``Budget.residual_rel_tol``,
  default 1e-3). Then ``tr H = tr G + tr R ≥ (1 − τ) tr G``, so every ``tr G`` bound stays a
  theorem with ``tr G`` replaced by ``tr H/(1 − τ)``: that is the registered sharpness form
  (at an exact zero-loss minimum τ → 0 and it is the paper's form). Off a minimum ``tr H``
  can be far below ``tr G``, even negative: NOT_APPLICABLE, with the measured ratio;
* which subjects the theorems apply to: T3, T4 and T6 need x to enter f only through the
  first layer, and that layer dense (:func:`input_only_through_first_layer`); every layer-l
  form needs dense layers (:func:`has_dense_layer`, :mod:`boundcheck.core.layers`). Weight-shared
  layers (convolutions, token-wise linear maps) break the factorisation ``∇_W f_k =
  (∂f_k/∂z) hᵀ`` and are left out of every per-layer maximum and network-wide sum, with the
  reason recorded;
* random instances for the numeric steps (small tanh networks in numpy).

Cross-entropy: T3 involves no loss and applies to any subject. The ``tr G`` forms of T4–T7
divide by c, which exists only for MSE (``A_i = c·I``); for cross-entropy ``A_i =
diag(p) − ppᵀ`` is singular (``A_i 1 = 0``), so ``tr G`` bounds no ``‖J_i‖_F²`` from above and
the chain breaks: NOT_APPLICABLE, with that reason (from ``loss.mse_scale``). What tr G does
bound for cross-entropy is the *centred* sensitivity ``σ_max(P J_x)``, P = I − 11ᵀ/K:
:mod:`derivations.centered_sensitivity` proves those forms of T4 and T5. T8's identity holds
for any loss (tests check it for cross-entropy); its MLS bound needs c as well.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np
import sympy

from boundcheck.core.estimate import Estimate
from boundcheck.core.formulas.layer_forms import c
from boundcheck.core.theorem import Assumption

from .proof import Step

SOURCE_MA_YING = ("C. Ma and L. Ying, On linear stability of SGD and input-smoothness of "
                  "neural networks, NeurIPS 2021 (arXiv 2105.13462)")
SOURCE_CHEN = ("S. Chen, S. Recanatesi, E. Shea-Brown, A simple connection from loss flatness "
               "to compressed representations in neural networks, arXiv 2310.01770 (v4 2025)")
SOURCE_PETZKA = ("H. Petzka, M. Kamp, L. Adilova, C. Sminchisescu, M. Boley, Relative "
                 "flatness and generalization, NeurIPS 2021")

# --- symbols shared by the theorem statements ------------------------------------------------
trace_g = sympy.Symbol(r"\operatorname{tr}G", nonnegative=True)
trace_h = sympy.Symbol(r"\operatorname{tr}H", real=True)
tau = sympy.Symbol(r"\tau", nonnegative=True)

SHARPNESS_SYMBOLS = {c: "loss.mse_scale", trace_g: "ggn.trace", trace_h: "hessian.trace",
                     tau: "sharpness.residual_tolerance"}

# tr G / c, and its sharpness replacement tr H / ((1 − τ) c), valid under the guard below
GGN_OVER_C = trace_g / c
SHARPNESS_OVER_C = trace_h / ((1 - tau) * c)


def _zero_loss_minimum(values: Mapping[str, Estimate], subject: object) -> str | None:
    loss = getattr(subject, "loss_fn", None)
    if loss is None or loss.kind != "mse":
        kind = getattr(loss, "kind", "none")
        return (f"the loss is {kind}, not MSE: tr H = tr G needs a zero-loss MSE minimum "
                "(R = 0 there)")
    g, r, t = (values[q] for q in ("ggn.trace", "residual.trace",
                                   "sharpness.residual_tolerance"))
    residual = max(abs(r.lower), abs(r.upper))  # the largest |tr R| the interval allows
    if residual <= t.value * g.lower:
        return None
    ratio = f"{residual / g.lower:.3g}" if g.lower > 0 else "∞ (tr G = 0)"
    return (f"not at a zero-loss minimum: |tr R|/tr G is up to {ratio} (measured tr R = "
            f"{r.value:.4g} ∈ [{r.lower:.4g}, {r.upper:.4g}], tr G = {g.value:.4g}), above "
            f"the tolerance τ = {t.value:g}: tr H is not tr G here, so the sharpness form is "
            "not a theorem (the tr G form is)")


AT_ZERO_LOSS_MINIMUM = Assumption(
    "zero-loss MSE minimum",
    "the loss is MSE and |tr R| ≤ τ·tr G (measured; τ = Budget.residual_rel_tol), so "
    "tr H ≥ (1 − τ) tr G",
    _zero_loss_minimum, ("ggn.trace", "residual.trace", "sharpness.residual_tolerance"))


def _g_over_all_parameters(values: Mapping[str, Estimate], subject: object) -> str | None:
    frozen = getattr(subject, "frozen", [])
    if getattr(subject, "trainable_only", False) and frozen:
        return (f"G (and H) are over the trainable parameters only (trainable_only=True), but "
                f"the bound needs ∂f/∂W_l of every dense layer in G; frozen: "
                f"{', '.join(frozen)} (measure with trainable_only=False, the default)")
    return None


G_OVER_ALL_PARAMETERS = Assumption(
    "G over every parameter",
    "tr G (tr H) is over all parameters θ (THEOREMS.md), frozen ones included: the bound "
    "compares with ∂f/∂W_l, which must be inside G",
    _g_over_all_parameters)


def sharpness_step() -> Step:
    """tr G ≤ tr H/(1 − τ) whenever tr R ≥ −τ tr G (implied by the guard)."""
    q, omega = sympy.symbols(r"q \omega", positive=True)
    return Step("sharpness form: tr G ≤ tr H / (1 − τ) when tr R ≥ −τ tr G",
                trace_g, trace_h / (1 - tau), relation="<=",
                substitutions={trace_h: trace_g + (-tau * trace_g + q), tau: 1 - omega},
                because="tr H = tr G + tr R with tr R = −τ tr G + q, q ≥ 0, and 1 − τ = ω > 0; "
                        "the guard measures |tr R| ≤ τ tr G")


def mse_trace_step() -> Step:
    """tr(Jᵀ (cI) J) = c‖J‖_F², the MSE form of tr G (and of tr G_l on W_l's columns)."""
    jm = sympy.Matrix(2, 3, lambda k, q: sympy.Symbol(f"J_{k + 1}{q + 1}", real=True))
    tr_j, sum_j = sympy.symbols(r"\operatorname{tr}(J^\top{}cIJ) c\|J\|_F^2")
    return Step("MSE (A_i = cI): tr(J_iᵀ A_i J_i) = c‖J_i‖_F², so tr G = c (1/n) Σ_i ‖J_i‖_F²",
                tr_j, sum_j, substitutions={tr_j: (jm.T * (c * sympy.eye(2)) * jm).trace(),
                                            sum_j: c * sum(v**2 for v in jm)},
                because="checked for a 2×3 J_i; on W_l's columns it gives tr G_l = "
                        "c (1/n) Σ_i ‖∇_{W_l} f(x_i)‖_F²")


# --- applicability ---------------------------------------------------------------------------
def _structure(subject: object):
    from boundcheck.core.layers import structure
    from boundcheck.core.subject import Subject

    if not isinstance(subject, Subject):
        return None
    return structure(subject)


def input_only_through_first_layer(subject: object) -> str | None:
    """None when f(x) = g(W_1 x + b_1) with layer 1 dense (T3, T4, T6); else the reason."""
    st = _structure(subject)
    if st is None:
        return "needs a network with data (a Subject)"
    if not st.input_only_through_first_layer:
        return f"x must enter f only through a dense first layer: {st.input_reason}"
    return None


def has_dense_layer(subject: object) -> str | None:
    """None when the network has at least one dense layer (the layer-l forms, T5, T7, T8)."""
    st = _structure(subject)
    if st is None:
        return "needs a network with data (a Subject)"
    if not st.dense_layers:
        why = "; ".join(f"layer {la.index} ({la.name}): {la.reason}" for la in st.layers)
        return f"the network has no dense layer ({why or 'no affine layers'})"
    return None


# --- random instances for numeric steps ------------------------------------------------------
def random_matrix(rng: random.Random, rows: int, cols: int) -> np.ndarray:
    gen = np.random.default_rng(rng.getrandbits(32))
    scale = 10.0 ** rng.uniform(-2, 2)
    return scale * gen.standard_normal((rows, cols))


def spectral(a: np.ndarray) -> float:
    return float(np.linalg.norm(a, 2))


def frobenius(a: np.ndarray) -> float:
    return float(np.linalg.norm(a))


def random_network(rng: random.Random) -> dict[str, np.ndarray]:
    """A random ``f(x) = V tanh(W x + b) + d`` (sizes 1–6, scales 10^±1) at a random x ≠ 0,
    with its input Jacobian ``J_x`` (K×D) and weight gradient ``∇_W f`` (K×h×D) from torch
    autograd (float64), independently of the factorisation the derivations prove."""
    import torch

    dim, hidden, out = (rng.randint(1, 6) for _ in range(3))
    gen = torch.Generator().manual_seed(rng.getrandbits(32))

    def draw(*shape: int) -> torch.Tensor:
        return 10.0 ** rng.uniform(-1, 1) * torch.randn(*shape, generator=gen,
                                                        dtype=torch.float64)

    w, b, v, d, x = draw(hidden, dim), draw(hidden), draw(out, hidden), draw(out), draw(dim)

    def f(w_, x_):
        return v @ torch.tanh(w_ @ x_ + b) + d

    j_w, j_x = torch.autograd.functional.jacobian(f, (w, x))
    return {"W": w.numpy(), "x": x.numpy(), "J_x": j_x.numpy(), "grad_W": j_w.numpy()}


def random_two_layer_problem(rng: random.Random) -> dict:
    """A random ``f(x) = V tanh(W x + b) + d`` (sizes 1–5, scales 10^±0.7) on n = 1–6 random
    samples, an MSE scale c, and, from torch autograd (float64), per sample: the input
    Jacobian, both layers' inputs h_0 = x, h_1 = tanh(Wx + b), their Jacobians J_{h,l}, the
    weight gradients ∇_{W_l} f (K × rows × cols) and the full parameter Jacobian J_i (K × P).
    Used by the numeric end-to-end steps of T4–T8; independent of the proofs' factorisations.
    """
    import torch
    from torch.func import jacrev, vmap

    dim, hidden, out, n = (*(rng.randint(1, 5) for _ in range(3)), rng.randint(1, 6))
    gen = torch.Generator().manual_seed(rng.getrandbits(32))

    def draw(*shape: int) -> torch.Tensor:
        return 10.0 ** rng.uniform(-0.7, 0.7) * torch.randn(*shape, generator=gen,
                                                            dtype=torch.float64)

    params = {"W": draw(hidden, dim), "b": draw(hidden), "V": draw(out, hidden), "d": draw(out)}
    x = draw(n, dim)

    def head(p, a):
        return p["V"] @ a + p["d"]

    def f(p, xi):
        return head(p, torch.tanh(p["W"] @ xi + p["b"]))

    a = torch.tanh(x @ params["W"].T + params["b"])
    j_x = vmap(jacrev(f, argnums=1), in_dims=(None, 0))(params, x)
    j_a = vmap(jacrev(head, argnums=1), in_dims=(None, 0))(params, a)
    j_p = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    full = torch.cat([j_p[k].reshape(n, out, -1) for k in params], dim=2)
    return {"n": n, "K": out, "c": 10.0 ** rng.uniform(-1, 1), "W": [params["W"], params["V"]],
            "h": [x, a], "J_h": [j_x, j_a], "grad_W": [j_p["W"], j_p["V"]], "J": full}
