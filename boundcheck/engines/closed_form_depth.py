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
h_{m−1} h_l) = O(L² h²) — in all O(n L² h²(h + K) + n² L² h²) time and O(n L² h²) memory.
Only the pairs j ≥ i are evaluated (the pair term is symmetric), in row blocks; every pair
term is a Gram of per-sample rows (one GEMM), except X_ij for layers two or more apart (a
batched product E^jᵀ a^i, then a row-wise dot). ``E_{l+1,l} = diag(σ'_l)`` is kept as its
diagonal, which makes X_ij of adjacent layers a Gram of ``diag(a_l) P_lm`` against
``σ'_l δ_mᵀ``. Like the one-layer form it is quadratic in n: Lanczos/Hutchinson estimates
(O(n) per Hessian-vector product) overtake it for large n.

Rounding: every expression is a polynomial with nonnegative coefficients in the per-sample
primitives (x, a_l, σ'_l, σ''_l, g, A, W_l) evaluated on magnitudes; δ comes from a forward
error model through the L layers (``δz_l = γ_{d_l+1}(|W_l||a_{l−1}| + |b_l|) + |W_l|
δa_{l−1}``, σ's Lipschitz constants for a, σ', σ''), then the softmax as in the one-layer
engine. The input errors and the rounding are bounded by one pass on ``c = |x̂| + δ/ε``
(ε ≈ γ, :func:`_ray_bounds`): ``(ε + 3γ) F(c)``, with ‖H‖_F²'s pair sum F(c) bounded in O(n)
by the triangle inequality over samples; where that misses ``rel_target`` and δ/ε inflates
the magnitudes, the two-pass bound ``F(|x̂| + δ) − F(|x̂|) + 3γ F(|x̂| + δ)`` (first order in
δ, two n² passes) is used instead.
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
RAY_STEP = 2.0**-44  # least ε of the error bound's ray (deep_traces); else the power of 2 ≤ γ
REL_TARGET = 1e-10  # one-pass error bounds are kept when this tight, relative (else 2 passes)


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
    E: dict[tuple[int, int], torch.Tensor]  # (m, l) → (n, h_{m−1}, h_l), l < m − 1;
    # (l + 1, l) → its diagonal σ'_l, (n, h_l)
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
    # Q_l = full_l + diag(qd_l): the top hidden layer's is diagonal (full None), so products
    # with it are scalings, not per-sample matrix products
    qd: list[torch.Tensor | None] = [None] * layers  # None = 0 (the output layer)
    qfull: list[torch.Tensor | None] = [None] * layers
    jac[-1], delta[-1] = eye_k, p.g
    for i in range(depth - 1, -1, -1):  # layer l = i + 1, its outgoing weight W_{l+1}
        w = p.weights[i + 1]
        s1, s2 = p.s1[i], p.s2[i]
        back = delta[i + 1] @ w  # W_{l+1}ᵀ δ_{l+1}
        jac[i] = (jac[i + 1] @ w) * s1.unsqueeze(1)
        delta[i] = s1 * back
        qd[i] = s2 * back
        if qd[i + 1] is not None:
            if qfull[i + 1] is None:
                inner = (w.T * qd[i + 1].unsqueeze(1)) @ w
            else:
                inner = w.T @ (qfull[i + 1] + torch.diag_embed(qd[i + 1])) @ w
            qfull[i] = s1.unsqueeze(2) * inner * s1.unsqueeze(1)
    # D_{m,l} = ∂z_m/∂z_l for l < m: D_{l+1,l} = W_{l+1} diag(σ'_l), D_{m,l} = D_{m,m−1} D_{m−1,l}
    dmat: dict[tuple[int, int], torch.Tensor] = {}
    emat: dict[tuple[int, int], torch.Tensor] = {}
    for lay in range(1, layers):
        for m in range(lay + 1, layers + 1):
            w = p.weights[m - 1]
            s1 = p.s1[m - 2]  # σ'_{m−1}
            if m == lay + 1:
                emat[m, lay] = s1  # E_{l+1,l} = diag(σ'_l), kept as its diagonal
                dmat[m, lay] = w * s1.unsqueeze(1)
            else:
                emat[m, lay] = s1.unsqueeze(2) * dmat[m - 1, lay]
                dmat[m, lay] = w @ emat[m, lay]
    pmat: dict[tuple[int, int], torch.Tensor] = {}
    for lay in range(1, layers + 1):
        ja = jac[lay - 1].transpose(1, 2) @ p.A
        for m in range(lay, layers + 1):
            ggn = ja @ jac[m - 1]
            if qd[m - 1] is None:
                pmat[lay, m] = ggn
                continue
            full = qfull[m - 1]
            if m == lay:
                out = ggn if full is None else ggn + full
                torch.diagonal(out, dim1=1, dim2=2).add_(qd[m - 1])
                pmat[lay, m] = out
            else:
                dt = dmat[m, lay].transpose(1, 2)
                out = ggn + dt * qd[m - 1].unsqueeze(1)
                pmat[lay, m] = out if full is None else out + dt @ full
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
    f = factors(p)
    return _trace_sum(f), _pair_sum(f)


def _trace_sum(f: Factors) -> float:
    trace_fn = generated()[0]
    total = 0.0
    for lay in range(1, len(f.u) + 1):
        tr = torch.diagonal(f.P[lay, lay], dim1=1, dim2=2).sum(1)
        total += float(trace_fn(tr, (f.u[lay - 1] ** 2).sum(1)).sum())
    return total


def _pair_sum(f: Factors) -> float:
    """Σ_{i,j} ⟨H_i, H_j⟩ over the pairs j ≥ i only (the pair term is symmetric in i, j: pairs
    j > i count twice), in row blocks; each Gram is one GEMM (module docstring, "Cost")."""
    n = f.u[0].shape[0]
    widest = max(t.shape[1] for t in f.delta + f.a_in)
    block = max(1, min(n, PAIR_BLOCK_ELEMENTS // max(n * widest, 1)))
    feats = _pair_features(f)
    total = torch.zeros((), dtype=f.u[0].dtype, device=f.u[0].device)
    for start in range(0, n, block):
        stop = min(n, start + block)
        phi = _pair_block(f, feats, slice(start, stop), slice(start, n))
        total = total + phi[:, :stop - start].sum() + 2 * phi[:, stop - start:].sum()
    return float(total)


def _pair_features(f: Factors) -> dict[tuple[int, int], tuple[torch.Tensor, ...]]:
    """Per layer pair (l, m), l < m, the per-sample rows whose Grams give the pair terms.

    Adjacent layers (m = l + 1) have ``E_ml = diag(σ'_l)``: ``X_ij = ⟨diag(a_l^i) P_lm^i,
    σ'^j δ_m^jᵀ⟩`` (and ``X_ji`` the same Gram transposed), ``⟨E^i, E^j⟩ = σ'^i · σ'^j``.
    Other pairs keep ``E`` (h_{m−1}, n, h_l) and ``P`` (h_m, n, h_l) in GEMM-ready layouts."""
    layers = len(f.u)
    out = {}
    for lay in range(1, layers + 1):
        for m in range(lay + 1, layers + 1):
            pm, em, dm, am = f.P[lay, m], f.E[m, lay], f.delta[m - 1], f.a_in[m - 1]
            if m == lay + 1:
                left = (am.unsqueeze(2) * pm).flatten(1)
                right = (em.unsqueeze(2) * dm.unsqueeze(1)).flatten(1)
                out[lay, m] = (pm.flatten(1), left, right, em)
            else:
                out[lay, m] = (pm.flatten(1), em.flatten(1), em.transpose(0, 1).contiguous(),
                               pm.permute(2, 0, 1).contiguous())
    return out


def _pair_block(f: Factors, feats: dict, r: slice, c: slice) -> torch.Tensor:
    """⟨H_i, H_j⟩ for i in rows ``r``, j in columns ``c``, from the generated pair terms."""
    _, diag_fn, off_fn = generated()
    layers = len(f.u)
    cols = c.stop - c.start
    gu = [ul[r] @ ul[c].T for ul in f.u]
    phi = 0.0
    for lay in range(1, layers + 1):
        pll = f.P[lay, lay].flatten(1)
        phi = phi + diag_fn(pll[r] @ pll[c].T, gu[lay - 1])
        for m in range(lay + 1, layers + 1):
            dm, am = f.delta[m - 1], f.a_in[m - 1]
            if m == lay + 1:
                pflat, left, right, s1 = feats[lay, m]
                x_ij = left[r] @ right[c].T
                x_ji = right[r] @ left[c].T
                egram = s1[r] @ s1[c].T
            else:
                # X_ij = Σ (E^jᵀ a^i)(P^i δ^j), both in (i, j, ·) layout; X_ji likewise
                pflat, eflat, e_t, p_t = feats[lay, m]
                em, pm = f.E[m, lay], f.P[lay, m]
                h_l = em.shape[2]
                y = (am[r] @ e_t[:, c].reshape(e_t.shape[0], -1)).view(-1, cols, h_l)
                z = torch.matmul(dm[c], pm[r].transpose(1, 2))
                x_ij = (y * z).sum(2)
                y = torch.matmul(am[c], em[r])
                z = (dm[r] @ p_t[:, c].reshape(p_t.shape[0], -1)).view(-1, cols, h_l)
                x_ji = (y * z).sum(2)
                egram = eflat[r] @ eflat[c].T
            phi = phi + 2 * off_fn(pflat[r] @ pflat[c].T, gu[lay - 1], gu[m - 1], x_ij, x_ji,
                                   dm[r] @ dm[c].T, egram)
    return phi


def _self_pairs(f: Factors) -> torch.Tensor:
    """⟨H_i, H_i⟩ = ‖H_i‖_F² for every sample (the pair terms at j = i), O(n) work."""
    _, diag_fn, off_fn = generated()
    layers = len(f.u)
    feats = _pair_features(f)

    def sq(t: torch.Tensor) -> torch.Tensor:
        return (t * t).flatten(1).sum(1)

    gu = [sq(ul) for ul in f.u]
    phi = 0.0
    for lay in range(1, layers + 1):
        phi = phi + diag_fn(sq(f.P[lay, lay]), gu[lay - 1])
        for m in range(lay + 1, layers + 1):
            dm, am, em, pm = f.delta[m - 1], f.a_in[m - 1], f.E[m, lay], f.P[lay, m]
            if m == lay + 1:
                _, left, right, s1 = feats[lay, m]
                x_ii = (left * right).sum(1)
            else:
                y = (am.unsqueeze(1) @ em).squeeze(1)
                x_ii = (y * (pm @ dm.unsqueeze(2)).squeeze(2)).sum(1)
            phi = phi + 2 * off_fn(sq(pm), gu[lay - 1], gu[m - 1], x_ii, x_ii, sq(dm), sq(em))
    return phi


def pair_flops(n: int, widths: list[int], k: int) -> float:
    """Rough multiply-adds of the n² pair work (widths = D, h_1 … h_L), for budgets."""
    hs = [*widths[1:], k]
    per_pair = sum(hs[i] * hs[j] + (hs[j - 1] * hs[i] * 4 if j > i else 0)
                   for i in range(len(hs)) for j in range(i, len(hs)))
    return float(n) * n * (per_pair + widths[0] + 1)


def deep_traces(net: DeepNet, x: torch.Tensor, y: torch.Tensor, with_errors: bool = True,
                rel_target: float = REL_TARGET) -> ClosedFormTraces:
    """Exact tr H and ‖H‖_F² for the mean cross-entropy over (x, y), with rounding bounds: by
    one pass on magnitudes when that bounds them within ``rel_target`` (relative), else by
    the two-pass bound, first order in the inputs' errors."""
    start = time.perf_counter()
    x = x.to(torch.float64)
    n = x.shape[0]
    prim, err = deep_primitives(net, x, y, with_errors)
    trace_sum, pair_sum = _sums(prim)
    trace, fro2 = trace_sum / n, pair_sum / n**2
    trace_err = fro2_err = 0.0
    if with_errors:
        widths = [w.shape[1] for w in net.weights] + [net.weights[-1].shape[0]]
        depth_ops = (len(widths) ** 2) * (max(widths) + 4) + 4 * max(widths) ** 2
        g = _gamma(64 + 4 * depth_ops + 2 * n)
        trace_err, fro2_err = _ray_bounds(prim, err, g, trace, fro2, net.num_params,
                                          rel_target)
        if trace_err is None:  # the original two passes: first order in δ, tight near 0
            lo_t, lo_f = _sums(prim.magnitude())
            hi_t, hi_f = _sums(prim.magnitude(err))
            trace_err = ((hi_t - lo_t) + 3 * g * hi_t) / n
            fro2_err = ((hi_f - lo_f) + 3 * g * hi_f) / n**2
    return ClosedFormTraces(trace, fro2, trace_err, fro2_err, net.num_params, n,
                            f"depth-{net.depth} Gram", time.perf_counter() - start)


def _ray_bounds(prim: DeepPrimitives, err: DeepPrimitives, g: float, trace: float,
                fro2: float, num_params: int, rel_target: float
                ) -> tuple[float | None, float | None]:
    """Rounding bounds of (tr H, ‖H‖_F²) from one pass on magnitudes, or (None, None) when
    that is looser than ``rel_target`` relative.

    F (either sum) is a polynomial with nonnegative coefficients in the primitives; along the
    ray b + t·d (b = |x̂|, d = δ/ε ≥ 0) it is a polynomial in t with nonnegative coefficients
    φ_k, so F(b + εd) − F(b) = Σ_{k≥1} φ_k ε^k ≤ ε F(b + d) for ε ≤ 1, and F(|x̂| + δ) ≤
    F(b + d): the input errors and the rounding (3γ F, as in the two-pass bound) are both
    within (ε + 3γ) F(c), c = |x̂| + δ/ε. ‖Σ_i M(c_i)‖_F² ≤ (Σ_i ‖M(c_i)‖_F)² (M_i the
    per-sample Hessian on magnitudes) bounds the pair sum in O(n)."""
    n = prim.x.shape[0]
    eps = max(RAY_STEP, 2.0 ** math.floor(math.log2(g)))  # ε F(c) no larger than γ F(c)
    factor = (eps + 3 * g) * (1 + 2 * g) / (1 - g)
    fc = factors(prim.magnitude(_scaled_errors(err, 1.0 / eps)))
    trace_c = _trace_sum(fc)
    triangle_c = float(_self_pairs(fc).sqrt().sum()) ** 2
    trace_err = factor * trace_c / n
    fro2_err = factor * (1 + 2 * g) * triangle_c / n**2
    scale = max(abs(trace), math.sqrt(fro2 * num_params))
    if trace_err <= rel_target * scale and fro2_err <= rel_target * fro2:
        return trace_err, fro2_err
    # Looser than the target: the two-pass bound is ≥ 3γ F(|x̂|), so it can only do much
    # better where the ray inflated the magnitudes (δ/ε not small against |x̂|); else the
    # n² pass on c tightens the triangle inequality.
    fb = factors(prim.magnitude())
    triangle_b = float(_self_pairs(fb).sqrt().sum()) ** 2
    if triangle_c > 2 * triangle_b or trace_c > 2 * _trace_sum(fb):
        return None, None
    return trace_err, min(fro2_err, factor * _pair_sum(fc) / n**2)


def _scaled_errors(err: DeepPrimitives, factor: float) -> DeepPrimitives:
    def each(ts):
        return tuple(t * factor for t in ts)

    return replace(err, x=err.x * factor, a=each(err.a), s1=each(err.s1), s2=each(err.s2),
                   g=err.g * factor, A=err.A * factor)


def subject_deep_traces(subject: Subject, with_errors: bool = True,
                        rel_target: float = REL_TARGET) -> ClosedFormTraces:
    x, y = subject_data(subject)
    net = deep_net(subject)
    _check_forward(net, subject, x)
    return deep_traces(net, x, y, with_errors, rel_target)


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
