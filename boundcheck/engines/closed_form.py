"""T2: closed-form tr H and ‖H‖_F² for softmax cross-entropy in ``f(x) = V σ(W x + b) + c``,
evaluated in vectorised torch from the expressions derived in
:mod:`derivations.closed_form_ce` — no Hessian and no Hessian-vector product.

The per-sample factors (x̃, ã, σ', σ'', g, A) are computed once; every cross-sample term is a
Gram matrix of them (``x̃_i·x̃_j``, ``ã_i·ã_j``, ``⟨F_i, F_j⟩``, ...), formed block-row by
block-row so memory stays O(n·block). The pair expression Φ_ij and the per-sample trace are
``sympy.lambdify``-generated (``cse=True``) torch functions of those Gram matrices. Cost is
O(n² · (D + h·K + min(h², K²·h + K³))): quadratic in n, so stochastic Lanczos/Hutchinson
*estimates* (O(n) per product) overtake it for large n·h; it wins where an exact answer is
needed or n·h is small (see benchmarks/README.md, "Closed form (T2)").

Rounding. Every generated expression and Gram contraction is a polynomial with positive
coefficients in the per-sample primitives, so evaluating the same code on ``|x̂| + δ`` (the
computed primitives' magnitudes plus their error bounds δ) gives a majorant Φ⁺. The error of
the float64 result is at most ``Φ⁺(|x̂| + δ) − Φ⁺(|x̂|)`` (input errors) plus
``3γ_m Φ⁺(|x̂| + δ)`` (rounding of m sequential operations, ``γ_m = m u / (1 − m u)``). The
δ's come from a forward error model of z = Wx + b, σ and its derivatives (Lipschitz constants
of σ, σ', σ'' and a few ulps per evaluation), the logits, and the softmax, which is computed in
the saturation-safe form (``1 − p_k`` is never formed; ``A_kk = p_k Σ_{l≠k} p_l``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

from boundcheck.core.activations import GELU_SUP_D1, Activation, activation_of  # noqa: F401
from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.subject import Subject
from boundcheck.engines.sequential import SequentialMLP, sequential_structure

U = UNIT_ROUNDOFF["float64"]
PAIR_BLOCK_ELEMENTS = 4_000_000  # rows × columns × (K² on the K-route) per Gram block
# --- the architecture -------------------------------------------------------------------------
class ArchitectureMismatch(ValueError):
    """The subject is not f(x) = V σ(W x + b) + c with softmax cross-entropy (reason in msg)."""


@dataclass(frozen=True)
class TwoLayerNet:
    """``f(x) = V σ(W x + b) + c`` read off a subject (float64 tensors; b, c may be None)."""

    W: torch.Tensor
    b: torch.Tensor | None
    V: torch.Tensor
    c: torch.Tensor | None
    activation: Activation

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in (self.W, self.b, self.V, self.c) if t is not None)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.W.T + (self.b if self.b is not None else 0.0)
        out = self.activation.derivatives(z)[0] @ self.V.T
        return out + (self.c if self.c is not None else 0.0)


def _forward_order(structure: SequentialMLP) -> list[nn.Module]:
    return [m for lin, acts in zip(structure.linears, structure.activations, strict=True)
            for m in (lin, *acts)]


def check_subject(subject: object) -> None:
    """A network subject with softmax cross-entropy, else :class:`ArchitectureMismatch`."""
    if not isinstance(subject, Subject):
        raise ArchitectureMismatch("T2 needs a network subject (model, data, loss), not a bare "
                                   "matrix")
    if subject.loss_fn.kind != "cross_entropy":
        raise ArchitectureMismatch(f"T2 is derived for softmax cross-entropy; the loss is "
                                   f"{subject.loss_fn.description}")


def two_layer_net(subject: object) -> TwoLayerNet:
    """Read ``W, b, V, c, σ`` off the subject; raises :class:`ArchitectureMismatch`."""
    check_subject(subject)
    net = subject.net
    structure = sequential_structure(net)
    if isinstance(structure, str):
        if not isinstance(net, nn.Sequential):
            structure = (f"T2 needs an nn.Sequential(Linear, σ, Linear) (its forward is then "
                         f"known); got {type(net).__name__}")
        elif "frozen" in structure:
            structure = ("some parameters are frozen (requires_grad=False): the closed form is "
                         "for the Hessian over all of W, b, V, c")
        raise ArchitectureMismatch(structure)
    # the forward as it runs (a module used twice counts twice; Identity/eval Dropout dropped)
    names = " → ".join(type(m).__name__ for m in (*structure.prefix, *_forward_order(structure)))
    if (structure.depth != 2 or len(structure.activations[0]) > 1
            or structure.activations[1] or any(not isinstance(m, nn.Flatten)
                                               for m in structure.prefix)):
        raise ArchitectureMismatch("T2 Tier A covers one hidden layer, Linear → σ → Linear; "
                                   f"got {names} (depth > 1 is not derived yet)")
    hidden = structure.activations[0]  # empty: σ = identity (Identity/eval Dropout dropped)
    act = activation_of(hidden[0] if hidden else nn.Identity())
    if isinstance(act, str):
        raise ArchitectureMismatch(act)
    lin1, lin2 = structure.linears
    if len(subject.batches[0].x.shape) != 2 and not structure.prefix:
        raise ArchitectureMismatch(f"inputs of shape {tuple(subject.batches[0].x.shape[1:])} "
                                   "need a leading nn.Flatten")

    def detached(t):
        return None if t is None else t.detach().to(torch.float64)

    return TwoLayerNet(detached(lin1.weight), detached(lin1.bias), detached(lin2.weight),
                       detached(lin2.bias), act)


def architecture_reason(subject: object) -> str | None:
    """None when T2 applies to the subject, else why not."""
    try:
        two_layer_net(subject)
    except ArchitectureMismatch as err:
        return str(err)
    return None


def subject_data(subject: Subject) -> tuple[torch.Tensor, torch.Tensor]:
    x = subject.x_all.reshape(subject.n, -1).to(torch.float64)
    return x, subject.y_all.long()


# --- per-sample primitives ----------------------------------------------------------------------
@dataclass(frozen=True)
class Primitives:
    """Per-sample factors the closed forms are polynomials in (and the shared V)."""

    xt: torch.Tensor  # (n, D[+1])
    at: torch.Tensor  # (n, h[+1])
    a: torch.Tensor  # (n, h)
    s1: torch.Tensor  # (n, h)  σ'(z)
    s2: torch.Tensor  # (n, h)  σ''(z)
    g: torch.Tensor  # (n, K)  p − e_y
    A: torch.Tensor  # (n, K, K)  diag(p) − ppᵀ
    V: torch.Tensor  # (K, h)

    def magnitude(self, errors: Primitives | None = None) -> Primitives:
        """``|self| + errors`` entrywise (errors None: just the magnitudes)."""
        names = [f.name for f in fields(self)]
        if errors is None:
            return Primitives(*(getattr(self, k).abs() for k in names))
        return Primitives(*(getattr(self, k).abs() + getattr(errors, k) for k in names))


def _gamma(m: float) -> float:
    mu = m * U
    if mu >= 0.5:
        return math.inf
    return mu / (1 - mu)


def softmax_factors(logits: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(p, g = p − e_y, A = diag(p) − ppᵀ) with ``1 − p_k`` formed as ``Σ_{l≠k} p_l``."""
    p = torch.softmax(logits, dim=1)
    k = logits.shape[1]
    top = p.argmax(dim=1, keepdim=True)
    onehot_top = torch.zeros_like(p).scatter_(1, top, 1.0)
    others_of_top = (p * (1 - onehot_top)).sum(1, keepdim=True)
    one_minus_p = torch.where(onehot_top.bool(), others_of_top, 1.0 - p)  # p_k ≤ ½ off-top
    onehot_y = torch.zeros_like(p).scatter_(1, y.view(-1, 1), 1.0).bool()
    g = torch.where(onehot_y, -one_minus_p, p)
    a = -p.unsqueeze(2) * p.unsqueeze(1)
    idx = torch.arange(k)
    a[:, idx, idx] = p * one_minus_p
    return p, g, a


def softmax_errors(dlog: torch.Tensor, g: torch.Tensor, amat: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Error bounds on g and A from logit error bounds ``dlog`` (n, K)."""
    k = g.shape[1]
    worst = dlog.max(dim=1, keepdim=True).values
    # p_k = e^{f_k}/Σ_l e^{f_l}: logit errors ≤ δ move p_k by a factor within e^{±2δ}, and
    # e^{2δ} − 1 ≤ 2.6δ for δ ≤ ¼ (convexity); softmax's own rounding adds (K + 6)u
    rel_p = torch.where(worst <= 0.25, 2.6 * worst, torch.full_like(worst, math.inf)) \
        + (k + 6) * U
    tiny = torch.finfo(torch.float64).tiny
    dg = (rel_p + (k + 2) * U) * g.abs() + tiny
    da_mat = (2 * rel_p.unsqueeze(2) + (k + 2) * U) * amat.abs() + tiny
    return dg, da_mat


def primitives(net: TwoLayerNet, x: torch.Tensor, y: torch.Tensor,
               with_errors: bool = True) -> tuple[Primitives, Primitives | None]:
    """The per-sample primitives and (optionally) bounds on their absolute rounding errors."""
    n = x.shape[0]
    act = net.activation
    ones = torch.ones(n, 1, dtype=x.dtype, device=x.device)
    z = x @ net.W.T + (net.b if net.b is not None else 0.0)
    a, s1, s2, m1, m2 = act.derivatives(z)
    logits = a @ net.V.T + (net.c if net.c is not None else 0.0)
    _, g, amat = softmax_factors(logits, y)
    xt = torch.cat([x, ones], 1) if net.b is not None else x
    at = torch.cat([a, ones], 1) if net.c is not None else a
    prim = Primitives(xt, at, a, s1, s2, g, amat, net.V)
    if not with_errors:
        return prim, None
    d, h = x.shape[1], a.shape[1]
    dz = _gamma(d + 1) * (x.abs() @ net.W.T.abs() + (net.b.abs() if net.b is not None else 0.0))
    ev = 8 * U  # a few ulps per elementary-function evaluation
    da = act.sup_d1 * dz + ev * a.abs()
    ds1 = act.sup_d2 * dz + ev * m1
    ds2 = act.sup_d3 * dz + ev * m2
    dlog = (_gamma(h + 1) * (a.abs() @ net.V.T.abs() + (net.c.abs() if net.c is not None
                                                         else 0.0))
            + da @ net.V.T.abs())
    dg, da_mat = softmax_errors(dlog, g, amat)
    zeros_x = torch.zeros_like(xt)
    dat = torch.cat([da, torch.zeros(n, 1, dtype=x.dtype)], 1) if net.c is not None else da
    err = Primitives(zeros_x, dat, da, ds1, ds2, dg, da_mat, torch.zeros_like(net.V))
    return prim, err


# --- generated code ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def generated() -> tuple[Callable, Callable]:
    """(trace_i, pair_ij) torch functions code-generated from the derivation's expressions."""
    import sympy

    from boundcheck.core.formulas import closed_form as cf

    trace_fn = sympy.lambdify(cf.TRACE_SYMBOLS, cf.TRACE_EXPR, modules="torch", cse=True)
    pair_fn = sympy.lambdify(cf.PAIR_SYMBOLS, cf.PAIR_EXPR, modules="torch", cse=True)
    return trace_fn, pair_fn


@dataclass(frozen=True)
class _Derived:
    F: torch.Tensor  # (n, h, K) BᵀA
    B: torch.Tensor  # (n, K, h)
    S_diag: torch.Tensor  # (n, h) diag BᵀAB
    S_flat: torch.Tensor | None  # (n, h²) BᵀAB, on the h-route
    q: torch.Tensor  # (n, h)
    aF: torch.Tensor  # (n, h·K) a_r F_rk
    s1g: torch.Tensor  # (n, h·K) σ'_r g_k


def _derive(p: Primitives, route: str) -> _Derived:
    n = p.a.shape[0]
    b = p.V.unsqueeze(0) * p.s1.unsqueeze(1)
    f = torch.einsum("nkr,nkl->nrl", b, p.A)
    s_diag = torch.einsum("nrk,nkr->nr", f, b)
    s_flat = torch.bmm(f, b).reshape(n, -1) if route == "h" else None
    q = p.s2 * (p.g @ p.V)
    af = (p.a.unsqueeze(2) * f).reshape(n, -1)
    s1g = (p.s1.unsqueeze(2) * p.g.unsqueeze(1)).reshape(n, -1)
    return _Derived(f, b, s_diag, s_flat, q, af, s1g)


def pair_flops(n: int, d: int, h: int, k: int) -> float:
    """Rough multiply-adds of the n² Gram work (both routes' cheaper one), for budgets."""
    per_pair = d + 1 + 2 * h * k + k * k + 4 * h + min(h * h, k * k * h + 2 * k**3)
    return float(n) * n * per_pair


def _route(h: int, k: int) -> str:
    """⟨BᵢᵀAᵢBᵢ, BⱼᵀAⱼBⱼ⟩ via h×h Gram (h² per pair) or K×K products (K²h + 2K³ per pair)."""
    return "h" if h * h <= k * k * h + 2 * k**3 else "K"


def _mbb_k_route(p: Primitives, d: _Derived, rows: slice) -> torch.Tensor:
    pm = torch.einsum("ikr,jlr->ijkl", d.B[rows], d.B)  # B_i B_jᵀ
    left = torch.einsum("ikl,ijlm->ijkm", p.A[rows], pm)  # A_i P
    right = torch.einsum("ijkm,jmo->ijko", left, p.A)  # A_i P A_j
    return (right * pm).sum((2, 3))


def _sums(p: Primitives, route: str) -> tuple[float, float]:
    """(Σ_i tr H_i, Σ_{i,j} ⟨H_i,H_j⟩) — the closed forms without the 1/n, 1/n² factors."""
    trace_fn, pair_fn = generated()
    d = _derive(p, route)
    n, k = p.a.shape[0], p.g.shape[1]
    tra = torch.diagonal(p.A, dim1=1, dim2=2).sum(1)
    trace_sum = float(trace_fn(tra, (p.at * p.at).sum(1), (p.xt * p.xt).sum(1),
                               d.S_diag.sum(1), d.q.sum(1)).sum())
    a_flat = p.A.reshape(n, -1)
    f_flat = d.F.reshape(n, -1)
    per_row = n * (k * k if route == "K" else 1)
    block = max(1, min(n, PAIR_BLOCK_ELEMENTS // max(per_row, 1)))
    total = torch.zeros((), dtype=p.a.dtype, device=p.a.device)
    for start in range(0, n, block):
        r = slice(start, min(n, start + block))
        mbb = d.S_flat[r] @ d.S_flat.T if route == "h" else _mbb_k_route(p, d, r)
        phi = pair_fn(p.xt[r] @ p.xt.T, p.at[r] @ p.at.T, a_flat[r] @ a_flat.T, mbb,
                      d.S_diag[r] @ d.q.T, d.q[r] @ d.S_diag.T, d.q[r] @ d.q.T,
                      f_flat[r] @ f_flat.T, d.aF[r] @ d.s1g.T, d.s1g[r] @ d.aF.T,
                      p.s1[r] @ p.s1.T, p.g[r] @ p.g.T)
        total = total + phi.sum(1).sum()  # summation depth ≤ n + block + n/block
    return trace_sum, float(total)


@dataclass(frozen=True)
class ClosedFormTraces:
    """tr H and ‖H‖_F² with absolute error bounds, and how they were computed."""

    trace: float
    fro2: float
    trace_error: float
    fro2_error: float
    num_params: int
    n: int
    route: str
    seconds: float


def closed_form_traces(net: TwoLayerNet, x: torch.Tensor, y: torch.Tensor,
                       with_errors: bool = True, route: str | None = None) -> ClosedFormTraces:
    """Exact tr H and ‖H‖_F² for the mean cross-entropy over (x, y), with rounding bounds."""
    start = time.perf_counter()
    x = x.to(torch.float64)
    n, dim = x.shape
    h, k = net.V.shape[1], net.V.shape[0]
    route = route or _route(h, k)
    prim, err = primitives(net, x, y, with_errors)
    trace_sum, pair_sum = _sums(prim, route)
    trace, fro2 = trace_sum / n, pair_sum / n**2
    trace_err = fro2_err = 0.0
    if with_errors:
        lo_t, lo_f = _sums(prim.magnitude(), route)
        hi_t, hi_f = _sums(prim.magnitude(err), route)
        contraction = dim + h + k * k + h * k + (h * h if route == "h" else k**3 + k * k * h)
        g = _gamma(64 + 2 * contraction + 2 * n)
        # + underflow: each of the ≤ n·contraction products summed per sample (n²·contraction
        # per pair sum) may be lost below the smallest subnormal, 2⁻¹⁰⁷⁴ each; without this a
        # ‖H‖_F² below the smallest double was "exact" [0, 0] (issue 12)
        tiny = 2.0**-1074 * contraction
        trace_err = ((hi_t - lo_t) + 3 * g * hi_t) / n + tiny
        fro2_err = ((hi_f - lo_f) + 3 * g * hi_f) / n**2 + tiny
    return ClosedFormTraces(trace, fro2, trace_err, fro2_err, net.num_params, n, route,
                            time.perf_counter() - start)


def subject_traces(subject: Subject, with_errors: bool = True) -> ClosedFormTraces:
    x, y = subject_data(subject)
    net = two_layer_net(subject)
    with torch.no_grad():
        direct = net.logits(x[:8])
        ref = subject.net(subject.x_all[:8])
    if not torch.allclose(direct, ref.reshape(direct.shape), rtol=1e-9, atol=1e-9):
        raise ArchitectureMismatch("the network's forward pass is not Vσ(Wx+b)+c as read off "
                                   "its layers")
    return closed_form_traces(net, x, y, with_errors)


def ws_upper(trace: float, fro2: float, p: int) -> float:
    """Wolkowicz–Styan's λ_max bound m + s√(P−1) at point values (no error bars)."""
    m = trace / p
    return m + math.sqrt(max(fro2 / p - m * m, 0.0) * (p - 1))



# --- Tier B: the norm-level bound -------------------------------------------------------------
@dataclass(frozen=True)
class TierBIngredients:
    """Tier B's inputs, each as (value, lower, upper); names as in
    :data:`boundcheck.core.formulas.closed_form.INGREDIENTS`."""

    values: dict[str, tuple[float, float, float]]
    bounded: bool  # sup|σ| finite


def _with_rel(value: float, rel: float) -> tuple[float, float, float]:
    return value, value * (1 - rel), value * (1 + rel)


def _max_cosine(x: torch.Tensor) -> float:
    """ρ = max_{i≠j} |x_i·x_j| / (‖x_i‖‖x_j‖); zero vectors have cosine 0 with everything."""
    n = x.shape[0]
    norms = x.norm(dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    unit = x / safe.unsqueeze(1)
    best = 0.0
    block = max(1, PAIR_BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n, block):
        r = slice(start, min(n, start + block))
        cos = (unit[r] @ unit.T).abs()
        idx = torch.arange(r.start, r.stop)
        cos[idx - r.start, idx] = 0.0
        best = max(best, float(cos.max()))
    return min(best, 1.0)


def confidence_gap(g: torch.Tensor, g_err: torch.Tensor, y: torch.Tensor
                   ) -> tuple[float, float, float]:
    """ε = max_i (1 − p_{i,y_i}) as (value, lower, upper), from g = p − e_y and its error."""
    gap = (-g.gather(1, y.view(-1, 1))).squeeze(1)  # 1 − p_y, stably
    gap_err = g_err.gather(1, y.view(-1, 1)).squeeze(1)
    worst = int(gap.argmax())
    eps = float(gap[worst])
    lo = max(eps - float(gap_err[worst]), 1e-300)  # ε > 0; a 0 gap rounds up to 1e-300
    hi = max(min(float((gap + gap_err).max()), 1.0), lo)
    return min(max(eps, lo), hi), lo, hi


def tier_b_ingredients(subject: Subject, saturation: bool = False) -> TierBIngredients:
    net = two_layer_net(subject)
    x, y = subject_data(subject)
    n, d = x.shape
    k, h = net.V.shape
    act = net.activation
    g_d = _gamma(d + 4)
    rho = _max_cosine(x)
    w_fro = float(net.W.norm())
    w2 = float(torch.linalg.matrix_norm(net.W, 2))
    w2_err = 16 * (h + d) * U * w_fro
    const = 8 * U
    vals = {
        "n": (n, n, n), "h": (h, h, h), "K": (k, k, k),
        "P": (net.num_params,) * 3,
        "max_x_norm": _with_rel(float(x.norm(dim=1).max()), g_d),
        "rho": (rho, max(0.0, rho - 4 * g_d), min(1.0, rho + 4 * g_d)),
        "W_spectral": (w2, max(0.0, w2 - w2_err), w2 + w2_err),
        "b_norm": _with_rel(float(net.b.norm()) if net.b is not None else 0.0, _gamma(h + 2)),
        "V_spectral": (lambda v, e: (v, max(0.0, v - e), v + e))(
            float(torch.linalg.matrix_norm(net.V, 2)), 16 * (h + k) * U * float(net.V.norm())),
        "V_frobenius": _with_rel(float(net.V.norm()), _gamma(h * k + 2)),
        "sup_d1": _with_rel(act.sup_d1, const), "sup_d2": _with_rel(act.sup_d2, const),
        "sigma_at_zero": _with_rel(act.at_zero, const),
        "sup_sigma": _with_rel(act.sup_abs, const) if math.isfinite(act.sup_abs) else (0, 0, 0),
        "hidden_bias": (float(net.b is not None),) * 3,
        "output_bias": (float(net.c is not None),) * 3,
        "confidence_gap": (1.0, 1.0, 1.0),
    }
    if saturation:
        prim, err = primitives(net, x, y, with_errors=True)
        vals["confidence_gap"] = confidence_gap(prim.g, err.g, y)
    return TierBIngredients(vals, math.isfinite(act.sup_abs))


@functools.lru_cache(maxsize=4)
def _tier_b_functions(bounded: bool):
    import sympy

    from boundcheck.core.formulas import closed_form as tb

    expr = tb.tier_b_expression(bounded)
    syms = list(tb.INGREDIENTS)
    return expr, syms, sympy.lambdify(syms, expr, modules="math", cse=True)


def tier_b_bound(ingredients: TierBIngredients) -> tuple[float, float, float]:
    """(value, lower, upper) of Tier B's right side: interval evaluation over the ingredients'
    intervals (outward rounded), and its value at the point estimates."""
    from boundcheck.core import intervals
    from boundcheck.core.formulas import closed_form as tb

    expr, syms, point_fn = _tier_b_functions(ingredients.bounded)
    vals = ingredients.values
    bounds = {s: vals[tb.INGREDIENTS[s]][1:] for s in syms}
    lo, hi = intervals.evaluate(expr, bounds)
    value = float(point_fn(*[vals[tb.INGREDIENTS[s]][0] for s in syms]))
    return min(max(value, lo), hi), lo, hi


def tier_b_point(subject: Subject, saturation: bool = False) -> float:
    """Tier B at the point values of its ingredients (for quick scans and checks)."""
    return tier_b_bound(tier_b_ingredients(subject, saturation))[0]
