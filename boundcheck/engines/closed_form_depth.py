"""T2 at depth L: closed-form tr H and ‖H‖_F² (Tier A) and the norm-level λ_max bound (Tier B)
for softmax cross-entropy in ``f = W_{L+1} σ(W_L ⋯ σ(W_1 x + b_1) ⋯ + b_L) + b_{L+1}``, L ≥ 1
hidden layers of smooth σ (biases optional per layer). Derived in
:mod:`derivations.closed_form_ce_depth` (Tier A) and :mod:`derivations.closed_form_ce_depth_tier_b`.

Tier A. Per sample, with ``u_l = ã_{l−1}`` (the layer's input, 1 appended with a bias),
``J_l = ∂f/∂z_l``, ``δ_l = J_lᵀ g``, ``Q_l = Σ_k g_k ∂²f_k/∂z_l²``, ``D_{ml} = ∂z_m/∂z_l``,
``E_{ml} = diag(σ'_{m−1}) D_{m−1,l}`` and ``P_{lm} = J_lᵀ A J_m + D_{ml}ᵀ Q_m`` (l ≤ m), the
Hessian block of layers (l, m) is ``P_{lm} ⊗ u_l u_mᵀ + T_{lm}``,
``T_{(r,d),(s,e)} = u_{l,d} δ_{m,s} E_{ml,er}`` (l < m). Hence

    tr H_i      = Σ_l tr P_ll ‖u_l‖²
    ⟨H_i, H_j⟩ = Σ_l ⟨P_ll^i, P_ll^j⟩ (u_l^i·u_l^j)²
                 + 2 Σ_{l<m} (u_l^i·u_l^j) [⟨P_lm^i, P_lm^j⟩ (u_m^i·u_m^j) + X_ij + X_ji
                                              + (δ_m^i·δ_m^j) ⟨E_ml^i, E_ml^j⟩],
    X_ij = (E_ml^{jᵀ} a_{m−1}^i) · (P_lm^i δ_m^j).

Cost: per sample O(L² h² (h + K)) for J, Q, D, P; per pair O(Σ_{l≤m} h_l h_m + Σ_{l<m}
h_{m−1} h_l) = O(L² h²) — in all O(n L² h²(h + K) + n² L² h²) time and O(n L² h²) memory
(pair work in row blocks). Like the one-layer form it is quadratic in n: Lanczos/Hutchinson
estimates (O(n) per Hessian-vector product) overtake it for large n.

Rounding: the same scheme as :mod:`boundcheck.engines.closed_form` — every expression is a
polynomial with positive coefficients in the per-sample primitives (x, a_l, σ'_l, σ''_l, g, A,
W_l), so evaluating it on ``|x̂| + δ`` gives a majorant; δ comes from a forward error model
through the L layers (``δz_l = γ_{d_l+1}(|W_l||a_{l−1}| + |b_l|) + |W_l| δa_{l−1}``, σ's
Lipschitz constants for a, σ', σ''), then the softmax as in the one-layer engine.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from boundcheck.core.activations import Activation, activation_of
from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.subject import Subject
from boundcheck.engines.closed_form import (
    ArchitectureMismatch,
    ClosedFormTraces,
    _gamma,
    _max_cosine,
    _with_rel,
    check_subject,
    confidence_gap,
    softmax_errors,
    softmax_factors,
    subject_data,
)
from boundcheck.engines.sequential import sequential_structure

U = UNIT_ROUNDOFF["float64"]
PAIR_BLOCK_ELEMENTS = 4_000_000  # rows × n × width per intermediate of one row block


# --- the architecture -------------------------------------------------------------------------
@dataclass(frozen=True)
class DeepNet:
    """``f = W_{L+1} σ_L(… σ_1(W_1 x + b_1) …) + b_{L+1}`` (float64; a bias may be None)."""

    weights: tuple[torch.Tensor, ...]  # W_1 … W_{L+1}, W_l of shape (h_l, h_{l−1})
    biases: tuple[torch.Tensor | None, ...]
    activations: tuple[Activation, ...]  # σ_1 … σ_L

    @property
    def depth(self) -> int:
        """L, the number of hidden layers."""
        return len(self.activations)

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in (*self.weights, *self.biases) if t is not None)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        a = x
        for w, b, act in zip(self.weights, self.biases, (*self.activations, None), strict=True):
            z = a @ w.T + (b if b is not None else 0.0)
            a = act.derivatives(z)[0] if act is not None else z
        return a


def deep_net(subject: object) -> DeepNet:
    """Read the layers off the subject; raises :class:`ArchitectureMismatch`."""
    check_subject(subject)
    structure = sequential_structure(subject.net)
    if isinstance(structure, str):
        if "frozen" in structure:
            structure = ("some parameters are frozen (requires_grad=False): the closed form is "
                         "for the Hessian over all parameters")
        raise ArchitectureMismatch(structure)
    if any(not isinstance(m, nn.Flatten) for m in structure.prefix):
        raise ArchitectureMismatch("T2 needs Linear → σ → … → Linear with at most a leading "
                                   "nn.Flatten")
    if structure.depth < 2:
        raise ArchitectureMismatch("T2 needs at least one hidden layer (Linear → σ → Linear)")
    if structure.activations[-1]:
        raise ArchitectureMismatch("T2 needs raw logits: the last Linear must not be followed "
                                   "by an activation")
    acts = []
    for i, hidden in enumerate(structure.activations[:-1]):
        if len(hidden) > 1:
            raise ArchitectureMismatch(f"hidden layer {i + 1} has {len(hidden)} activations in "
                                       "a row; T2 needs one smooth σ per layer")
        act = activation_of(hidden[0] if hidden else nn.Identity())
        if isinstance(act, str):
            raise ArchitectureMismatch(act)
        acts.append(act)
    if len(subject.batches[0].x.shape) != 2 and not structure.prefix:
        raise ArchitectureMismatch(f"inputs of shape {tuple(subject.batches[0].x.shape[1:])} "
                                   "need a leading nn.Flatten")

    def detached(t):
        return None if t is None else t.detach().to(torch.float64)

    return DeepNet(tuple(detached(lin.weight) for lin in structure.linears),
                   tuple(detached(lin.bias) for lin in structure.linears), tuple(acts))


def depth_reason(subject: object) -> str | None:
    try:
        deep_net(subject)
    except ArchitectureMismatch as err:
        return str(err)
    return None


# --- per-sample primitives ----------------------------------------------------------------------
@dataclass(frozen=True)
class DeepPrimitives:
    """The per-sample primitives Tier A is a polynomial in (and the shared weights)."""

    x: torch.Tensor  # (n, D)
    a: tuple[torch.Tensor, ...]  # a_1 … a_L, (n, h_l)
    s1: tuple[torch.Tensor, ...]  # σ'(z_l)
    s2: tuple[torch.Tensor, ...]  # σ''(z_l)
    g: torch.Tensor  # (n, K)
    A: torch.Tensor  # (n, K, K)
    weights: tuple[torch.Tensor, ...]
    bias: tuple[bool, ...]

    def magnitude(self, errors: DeepPrimitives | None = None) -> DeepPrimitives:
        def mag(t, e):
            return t.abs() if e is None else t.abs() + e

        def each(ts, es):
            return tuple(mag(t, None if es is None else e)
                         for t, e in zip(ts, es if es is not None else ts, strict=True))

        e = errors
        return replace(
            self, x=mag(self.x, None if e is None else e.x),
            a=each(self.a, None if e is None else e.a),
            s1=each(self.s1, None if e is None else e.s1),
            s2=each(self.s2, None if e is None else e.s2),
            g=mag(self.g, None if e is None else e.g), A=mag(self.A, None if e is None else e.A),
            weights=tuple(w.abs() for w in self.weights))


def deep_primitives(net: DeepNet, x: torch.Tensor, y: torch.Tensor, with_errors: bool = True
                    ) -> tuple[DeepPrimitives, DeepPrimitives | None]:
    """The forward pass's per-sample factors and (optionally) bounds on their rounding errors."""
    a, s1s, s2s = x, [], []
    acts_out = []
    da = torch.zeros_like(x)
    errs_a, errs_s1, errs_s2 = [], [], []
    ev = 8 * U
    for w, b, act in zip(net.weights[:-1], net.biases[:-1], net.activations, strict=True):
        z = a @ w.T + (b if b is not None else 0.0)
        av, s1, s2, m1, m2 = act.derivatives(z)
        if with_errors:
            dz = (_gamma(w.shape[1] + 1) * (a.abs() @ w.T.abs()
                                            + (b.abs() if b is not None else 0.0))
                  + da @ w.T.abs())
            da = act.sup_d1 * dz + ev * av.abs()
            errs_a.append(da)
            errs_s1.append(act.sup_d2 * dz + ev * m1)
            errs_s2.append(act.sup_d3 * dz + ev * m2)
        a = av
        acts_out.append(av)
        s1s.append(s1)
        s2s.append(s2)
    w, b = net.weights[-1], net.biases[-1]
    logits = a @ w.T + (b if b is not None else 0.0)
    _, g, amat = softmax_factors(logits, y)
    bias = tuple(t is not None for t in net.biases)
    prim = DeepPrimitives(x, tuple(acts_out), tuple(s1s), tuple(s2s), g, amat, net.weights, bias)
    if not with_errors:
        return prim, None
    dlog = (_gamma(w.shape[1] + 1) * (a.abs() @ w.T.abs() + (b.abs() if b is not None else 0.0))
            + da @ w.T.abs())
    dg, da_mat = softmax_errors(dlog, g, amat)
    err = DeepPrimitives(torch.zeros_like(x), tuple(errs_a), tuple(errs_s1), tuple(errs_s2),
                         dg, da_mat, tuple(torch.zeros_like(w) for w in net.weights), bias)
    return prim, err


# --- the per-sample factors J, δ, Q, D, E, P ------------------------------------------------------
@dataclass(frozen=True)
class Factors:
    u: list[torch.Tensor]  # u_l = ã_{l−1}, l = 1 … L+1 (index l−1)
    delta: list[torch.Tensor]  # δ_l, (n, h_l)
    P: dict[tuple[int, int], torch.Tensor]  # (l, m) → (n, h_l, h_m), 1 ≤ l ≤ m ≤ L+1
    E: dict[tuple[int, int], torch.Tensor]  # (m, l) → (n, h_{m−1}, h_l), l < m
    a_in: list[torch.Tensor]  # a_{m−1} without the bias 1 (index m−1)


def factors(p: DeepPrimitives) -> Factors:
    """J_l, δ_l, Q_l by backpropagation; D_{ml}, E_{ml}, P_{lm} for every layer pair."""
    n = p.x.shape[0]
    depth = len(p.a)
    layers = depth + 1
    ins = [p.x, *p.a]  # a_0 … a_L
    ones = torch.ones(n, 1, dtype=p.x.dtype, device=p.x.device)
    u = [torch.cat([ins[i], ones], 1) if p.bias[i] else ins[i] for i in range(layers)]
    k = p.g.shape[1]
    eye_k = torch.eye(k, dtype=p.x.dtype, device=p.x.device).expand(n, k, k)
    jac: list[torch.Tensor] = [None] * layers  # J_l at index l−1
    delta: list[torch.Tensor] = [None] * layers
    qmat: list[torch.Tensor | None] = [None] * layers  # None = 0 (the output layer)
    jac[-1], delta[-1] = eye_k, p.g
    for i in range(depth - 1, -1, -1):  # layer l = i + 1, its outgoing weight W_{l+1}
        w = p.weights[i + 1]
        s1, s2 = p.s1[i], p.s2[i]
        back = delta[i + 1] @ w  # W_{l+1}ᵀ δ_{l+1}
        jac[i] = (jac[i + 1] @ w) * s1.unsqueeze(1)
        delta[i] = s1 * back
        diag = torch.diag_embed(s2 * back)
        if qmat[i + 1] is None:
            qmat[i] = diag
        else:
            inner = w.T @ qmat[i + 1] @ w
            qmat[i] = s1.unsqueeze(2) * inner * s1.unsqueeze(1) + diag
    # D_{m,l} = ∂z_m/∂z_l for l < m: D_{l+1,l} = W_{l+1} diag(σ'_l), D_{m,l} = D_{m,m−1} D_{m−1,l}
    dmat: dict[tuple[int, int], torch.Tensor] = {}
    emat: dict[tuple[int, int], torch.Tensor] = {}
    for lay in range(1, layers):
        for m in range(lay + 1, layers + 1):
            w = p.weights[m - 1]
            s1 = p.s1[m - 2]  # σ'_{m−1}
            if m == lay + 1:
                emat[m, lay] = torch.diag_embed(s1)
            else:
                emat[m, lay] = s1.unsqueeze(2) * dmat[m - 1, lay]
            dmat[m, lay] = w @ emat[m, lay]
    pmat: dict[tuple[int, int], torch.Tensor] = {}
    for lay in range(1, layers + 1):
        ja = jac[lay - 1].transpose(1, 2) @ p.A
        for m in range(lay, layers + 1):
            ggn = ja @ jac[m - 1]
            q = qmat[m - 1]
            if q is None:
                pmat[lay, m] = ggn
            elif m == lay:
                pmat[lay, m] = ggn + q
            else:
                pmat[lay, m] = ggn + dmat[m, lay].transpose(1, 2) @ q
    return Factors(u, delta, pmat, emat, ins)


@functools.lru_cache(maxsize=1)
def generated() -> tuple[Callable, Callable, Callable]:
    """(trace, diagonal-block pair, off-diagonal-block pair) torch functions code-generated
    from the expressions :mod:`derivations.closed_form_ce_depth` proves."""
    import sympy

    from boundcheck.core.formulas import closed_form_depth as fd

    def gen(syms, expr):
        return sympy.lambdify(syms, expr, modules="torch", cse=True)

    return (gen(fd.DEPTH_TRACE_SYMBOLS, fd.DEPTH_TRACE_EXPR),
            gen(fd.DEPTH_DIAG_SYMBOLS, fd.DEPTH_DIAG_EXPR),
            gen(fd.DEPTH_OFF_SYMBOLS, fd.DEPTH_OFF_EXPR))


def _sums(p: DeepPrimitives) -> tuple[float, float]:
    """(Σ_i tr H_i, Σ_{i,j} ⟨H_i, H_j⟩) — without the 1/n, 1/n² factors."""
    trace_fn, diag_fn, off_fn = generated()
    f = factors(p)
    n = p.x.shape[0]
    layers = len(f.u)
    trace_sum = 0.0
    for lay in range(1, layers + 1):
        tr = torch.diagonal(f.P[lay, lay], dim1=1, dim2=2).sum(1)
        trace_sum += float(trace_fn(tr, (f.u[lay - 1] ** 2).sum(1)).sum())
    widest = max(t.shape[1] for t in f.delta + f.a_in)
    block = max(1, min(n, PAIR_BLOCK_ELEMENTS // max(n * widest, 1)))
    flat = {key: v.reshape(n, -1) for key, v in f.P.items()}
    eflat = {key: v.reshape(n, -1) for key, v in f.E.items()}
    total = torch.zeros((), dtype=p.x.dtype, device=p.x.device)
    for start in range(0, n, block):
        r = slice(start, min(n, start + block))
        gu = [ul[r] @ ul.T for ul in f.u]
        phi = torch.zeros(r.stop - r.start, n, dtype=p.x.dtype, device=p.x.device)
        for lay in range(1, layers + 1):
            phi += diag_fn(flat[lay, lay][r] @ flat[lay, lay].T, gu[lay - 1])
            for m in range(lay + 1, layers + 1):
                pm, em, dm, am = f.P[lay, m], f.E[m, lay], f.delta[m - 1], f.a_in[m - 1]
                # X_ij = Σ_r (E_jᵀ a_i)_r (P_i δ_j)_r and X_ji over the row block
                x_ij = (torch.einsum("ie,jer->ijr", am[r], em)
                        * torch.einsum("irs,js->ijr", pm[r], dm)).sum(2)
                x_ji = (torch.einsum("je,ier->ijr", am, em[r])
                        * torch.einsum("jrs,is->ijr", pm, dm[r])).sum(2)
                phi += 2 * off_fn(flat[lay, m][r] @ flat[lay, m].T, gu[lay - 1], gu[m - 1],
                                  x_ij, x_ji, dm[r] @ dm.T, eflat[m, lay][r] @ eflat[m, lay].T)
        total = total + phi.sum(1).sum()
    return trace_sum, float(total)


def pair_flops(n: int, widths: list[int], k: int) -> float:
    """Rough multiply-adds of the n² pair work (widths = D, h_1 … h_L), for budgets."""
    hs = [*widths[1:], k]
    per_pair = sum(hs[i] * hs[j] + (hs[j - 1] * hs[i] * 4 if j > i else 0)
                   for i in range(len(hs)) for j in range(i, len(hs)))
    return float(n) * n * (per_pair + widths[0] + 1)


def deep_traces(net: DeepNet, x: torch.Tensor, y: torch.Tensor,
                with_errors: bool = True) -> ClosedFormTraces:
    """Exact tr H and ‖H‖_F² for the mean cross-entropy over (x, y), with rounding bounds."""
    start = time.perf_counter()
    x = x.to(torch.float64)
    n = x.shape[0]
    prim, err = deep_primitives(net, x, y, with_errors)
    trace_sum, pair_sum = _sums(prim)
    trace, fro2 = trace_sum / n, pair_sum / n**2
    trace_err = fro2_err = 0.0
    if with_errors:
        lo_t, lo_f = _sums(prim.magnitude())
        hi_t, hi_f = _sums(prim.magnitude(err))
        widths = [w.shape[1] for w in net.weights] + [net.weights[-1].shape[0]]
        depth_ops = (len(widths) ** 2) * (max(widths) + 4) + 4 * max(widths) ** 2
        g = _gamma(64 + 4 * depth_ops + 2 * n)
        trace_err = ((hi_t - lo_t) + 3 * g * hi_t) / n
        fro2_err = ((hi_f - lo_f) + 3 * g * hi_f) / n**2
    return ClosedFormTraces(trace, fro2, trace_err, fro2_err, net.num_params, n,
                      f"depth-{net.depth} Gram", time.perf_counter() - start)


def subject_deep_traces(subject: Subject, with_errors: bool = True) -> ClosedFormTraces:
    x, y = subject_data(subject)
    net = deep_net(subject)
    _check_forward(net, subject, x)
    return deep_traces(net, x, y, with_errors)


def _check_forward(net: DeepNet, subject: Subject, x: torch.Tensor) -> None:
    with torch.no_grad():
        direct = net.logits(x[:8])
        ref = subject.net(subject.x_all[:8])
    if not torch.allclose(direct, ref.reshape(direct.shape), rtol=1e-9, atol=1e-9):
        raise ArchitectureMismatch("the network's forward pass is not the Linear/σ stack read "
                                   "off its layers")


# --- Tier B at depth L --------------------------------------------------------------------------
@dataclass(frozen=True)
class DeepTierBIngredients:
    """Tier B's inputs as (value, lower, upper): scalars by name, per-layer lists by name."""

    scalars: dict[str, tuple[float, float, float]]
    layers: dict[str, list[tuple[float, float, float]]]  # W_spectral, W_frobenius, b_norm, h, bias
    bounded: bool

    @property
    def depth(self) -> int:
        return len(self.layers["W_spectral"]) - 1


def deep_tier_b_ingredients(subject: Subject, saturation: bool = False) -> DeepTierBIngredients:
    net = deep_net(subject)
    x, y = subject_data(subject)
    n, d = x.shape
    k = net.weights[-1].shape[0]
    g_d = _gamma(d + 4)
    rho = _max_cosine(x)
    const = 8 * U
    acts = net.activations
    sup = {
        "sup_d1": max(a.sup_d1 for a in acts), "sup_d2": max(a.sup_d2 for a in acts),
        "sigma_at_zero": max(a.at_zero for a in acts),
        "sup_sigma": max(a.sup_abs for a in acts),
    }
    bounded = math.isfinite(sup["sup_sigma"])
    scalars = {
        "n": (n, n, n), "K": (k, k, k), "P": (net.num_params,) * 3,
        "max_x_norm": _with_rel(float(x.norm(dim=1).max()), g_d),
        "rho": (rho, max(0.0, rho - 4 * g_d), min(1.0, rho + 4 * g_d)),
        "sup_d1": _with_rel(sup["sup_d1"], const), "sup_d2": _with_rel(sup["sup_d2"], const),
        "sigma_at_zero": _with_rel(sup["sigma_at_zero"], const),
        "sup_sigma": _with_rel(sup["sup_sigma"], const) if bounded else (0.0, 0.0, 0.0),
        "confidence_gap": (1.0, 1.0, 1.0),
    }
    layers: dict[str, list] = {"W_spectral": [], "W_frobenius": [], "b_norm": [], "h": [],
                               "bias": []}
    for w, b in zip(net.weights, net.biases, strict=True):
        ho, hi_ = w.shape
        w2 = float(torch.linalg.matrix_norm(w, 2))
        w2_err = 16 * (ho + hi_) * U * float(w.norm())
        layers["W_spectral"].append((w2, max(0.0, w2 - w2_err), w2 + w2_err))
        layers["W_frobenius"].append(_with_rel(float(w.norm()), _gamma(ho * hi_ + 2)))
        layers["b_norm"].append(_with_rel(float(b.norm()) if b is not None else 0.0,
                                          _gamma(ho + 2)))
        layers["h"].append((float(ho),) * 3)
        layers["bias"].append((float(b is not None),) * 3)
    if saturation:
        prim, err = deep_primitives(net, x, y, with_errors=True)
        scalars["confidence_gap"] = confidence_gap(prim.g, err.g, y)
    return DeepTierBIngredients(scalars, layers, bounded)


def _values(ing: DeepTierBIngredients, which: int) -> dict:
    """Ingredient values at one end (0 value, 1 lower, 2 upper), symbols of the formula."""
    from boundcheck.core.formulas import closed_form_depth as fd

    syms = fd.depth_symbols(ing.depth)
    out = {}
    for sym, name in fd.SCALARS.items():
        out[sym] = ing.scalars[name][which]
    for name, per_layer in ing.layers.items():
        for sym, val in zip(syms[name], per_layer, strict=True):
            out[sym] = val[which]
    return out


def deep_tier_b_bound(ing: DeepTierBIngredients) -> tuple[float, float, float]:
    """(value, lower, upper) of the depth-L Tier B bound: min(route 1, route 2). Route 1 by
    interval evaluation of its sympy expression; route 2 (the Perron root of the layer-block
    norm matrix N, monotone in every entry, which are monotone in every ingredient) at the
    ingredients' lower and upper ends, with a rounding allowance for the eigenvalue."""
    from boundcheck.core import intervals
    from boundcheck.core.formulas import closed_form_depth as fd

    expr, syms, fn = fd.route1_function(ing.depth, ing.bounded)
    vals = [_values(ing, i) for i in range(3)]
    lo1, hi1 = intervals.evaluate(expr, {s: (vals[1][s], vals[2][s]) for s in syms})
    v1 = float(fn(*[vals[0][s] for s in syms]))
    r2 = [perron_root(fd.route2_matrix(ing.depth, ing.bounded, vals[i])) for i in range(3)]
    lo, hi = min(lo1, r2[1][0]), min(hi1, r2[2][1])
    value = min(min(max(v1, lo1), hi1), sum(r2[0]) / 2)
    return min(max(value, lo), hi), lo, hi


def perron_root(mat: np.ndarray) -> tuple[float, float]:
    """λ_max of a symmetric matrix as (lower, upper): eigvalsh ± 64·size·u·‖N‖_F."""
    lam = float(np.linalg.eigvalsh(mat)[-1])
    slack = 64 * mat.shape[0] * U * float(np.linalg.norm(mat)) * 4
    return lam - slack, lam + slack


def deep_tier_b_point(subject: Subject, saturation: bool = False) -> float:
    return deep_tier_b_bound(deep_tier_b_ingredients(subject, saturation))[0]
