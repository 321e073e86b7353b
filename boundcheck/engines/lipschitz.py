"""ℓ₂ Lipschitz constant of a feed-forward chain: certified upper bounds and searched lower ones.

A *chain* is an ``nn.Sequential`` (nested ones flattened) of affine maps (``Linear``,
``Conv1d/2d/3d``), linear re-indexings (``Flatten``, non-overlapping ``AvgPool``), elementwise
slope-restricted activations (:func:`boundcheck.core.activations.slope_bounds`) and
non-overlapping ``MaxPool`` (1-Lipschitz in ℓ₂: each output is the max of its own window, and
``|max a − max b| ≤ ‖a − b‖_∞ ≤ ‖a − b‖₂`` per window). Anything else is not handled (the
reason is returned).

Upper bounds (THEOREMS.md T11b):

* product: ``Lip(f) ≤ Π ‖A‖₂`` over the chain's maps, ``‖σ‖ = Lip(σ) = max(|α|, |β|)``,
  pooling ``1/√(k)`` (average of k entries: ‖(1/k)1ᵀ‖₂ = 1/√k) or 1 (max) — submultiplicativity;
* LipSDP-Neuron (M. Fazlyab, A. Robey, H. Hassani, M. Morari, G. Pappas, "Efficient and
  accurate estimation of Lipschitz constants for deep neural networks", NeurIPS 2019), with
  diagonal multipliers T ⪰ 0: the linear maps between activations are folded into dense
  matrices W_1, …, W_L (pooling included; max pooling is not elementwise: not handled), hidden
  units stacked as x = (x_1, …, x_{L−1}) ∈ R^N, v = (Δx_0, Δx), z = C v with
  ``z_k = W_k x_{k−1}``. Slope restriction gives per unit ``(Δz_j − α_j Δx_j)… ≥ 0`` in the
  form ``−2α_jβ_j Δz_j² + 2(α_j+β_j) Δz_j Δx_j − 2Δx_j² ≥ 0``; if
  ``M(ρ, T) = Cᵀ diag(−2αβt) C + Cᵀ diag((α+β)t) B + Bᵀ diag((α+β)t) C − 2Bᵀ diag(t) B
  + diag(−ρ I, 0, W_Lᵀ W_L) ⪯ 0`` (B picks x), then ``vᵀMv ≤ 0`` gives
  ``‖W_L Δx_{L−1}‖² ≤ ρ ‖Δx_0‖² − (Σ of nonnegative terms)``: ``Lip(f) ≤ √ρ``.
  The SDP (min ρ) is solved by cvxpy; the answer is then **certified**: with the solver's
  multipliers (clipped to ≥ 0) fixed, ``S = −M(ρ, t)`` is built in float64 and
  ``λ_min(S̃) ≥ ‖|M|‖_F γ + 16 n u ‖S̃‖_F`` is required (entrywise product rounding γ of the
  build, plus eigvalsh's backward error, both bounded in the Frobenius norm): then S ⪰ 0 and
  √ρ is a true bound whatever the solver's accuracy. ρ is raised (doubling, then bisection
  back down) until the check passes.

Lower bounds: any pair a ≠ b gives ``Lip(f) ≥ ‖f(a) − f(b)‖/‖a − b‖``; the pairs are all pairs
of samples, the best ones refined by a search along their segment and by gradient ascent on the
quotient (Adam). Where f is differentiable at x, ``‖J_x(x)‖₂ ≤ Lip(f)`` (mean-value / limit of
quotients): :func:`differentiable_mask` says where that is certain for a chain (no kinked
pre-activation within rounding of a kink, no tie in a max-pooling window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from torch import nn

from boundcheck.core.activations import kinks, slope_bounds
from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.engines.estimators import clock

U64 = UNIT_ROUNDOFF["float64"]
AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


@dataclass(frozen=True)
class Op:
    """One map of a chain: ``kind`` is "affine", "linear" (flatten, average pool),
    "activation" (with slope bounds α, β) or "maxpool"."""

    kind: str
    module: nn.Module
    alpha: float = 1.0
    beta: float = 1.0

    @property
    def lip(self) -> float:
        return max(abs(self.alpha), abs(self.beta))


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flatten(child)]
    return [module]


def _pool_window(module: nn.Module) -> int | str:
    """Entries per window of a non-overlapping, unpadded pool, or why it is not one."""
    k = module.kernel_size
    s = module.stride if module.stride is not None else k
    nd = {nn.AvgPool1d: 1, nn.MaxPool1d: 1, nn.AvgPool2d: 2, nn.MaxPool2d: 2}.get(type(module), 3)
    ks = (k,) * nd if isinstance(k, int) else tuple(k)
    ss = (s,) * nd if isinstance(s, int) else tuple(s)
    pad = module.padding
    pads = (pad,) * nd if isinstance(pad, int) else tuple(pad)
    dil = getattr(module, "dilation", 1)
    dils = (dil,) * nd if isinstance(dil, int) else tuple(dil)
    if ks != ss or any(pads) or any(d != 1 for d in dils) or getattr(module, "ceil_mode", False):
        return (f"{type(module).__name__}(kernel={k}, stride={s}, padding={pad}) overlaps, pads "
                "or dilates: only non-overlapping unpadded pooling is handled")
    if isinstance(module, AVG_POOLS) and getattr(module, "divisor_override", None):
        return f"{type(module).__name__} with divisor_override is not handled"
    return math.prod(ks)


def chain(net: nn.Module) -> list[Op] | str:
    """The chain of maps of ``net``, or the reason it is not a chain this module handles."""
    if not isinstance(net, nn.Sequential):
        return (f"the model is a {type(net).__name__}, not an nn.Sequential chain: its "
                "Lipschitz bounds need the composition order")
    ops: list[Op] = []
    for m in _flatten(net):
        if isinstance(m, AFFINE):
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.padding_mode != "zeros":
                return f"{type(m).__name__} with padding_mode={m.padding_mode!r} is not handled"
            ops.append(Op("affine", m))
        elif isinstance(m, nn.Flatten | nn.Identity | nn.Dropout):
            ops.append(Op("linear", m))
        elif isinstance(m, AVG_POOLS + MAX_POOLS):
            window = _pool_window(m)
            if isinstance(window, str):
                return window
            if isinstance(m, AVG_POOLS):
                ops.append(Op("linear", m, 1 / math.sqrt(window), 1 / math.sqrt(window)))
            else:
                ops.append(Op("maxpool", m))
        else:
            bounds = slope_bounds(m)
            if isinstance(bounds, str):
                return f"layer {type(m).__name__}: {bounds}"
            ops.append(Op("activation", m, *bounds))
    if not any(op.kind == "affine" for op in ops):
        return "the chain has no affine layer"
    return ops


# -- the product bound --------------------------------------------------------------------
def product_factor(ops: list[Op]) -> float:
    """Π over the non-affine maps of their ℓ₂ Lipschitz constants (rounded up)."""
    factor = 1.0
    for op in ops:
        if op.kind == "activation" or (op.kind == "linear" and isinstance(op.module, AVG_POOLS)):
            factor *= op.lip
    return factor * (1 + 4 * len(ops) * U64)


# -- dense segments -------------------------------------------------------------------------
def segments(ops: list[Op], input_shape: tuple[int, ...]
             ) -> tuple[list[np.ndarray], list[tuple[float, float]], list[int]] | str:
    """Dense matrices W_1..W_L of the linear maps between activations (biases dropped), the
    slope bounds of each activation, and each activation's width; or why not."""
    if any(op.kind == "maxpool" for op in ops):
        return "max pooling is not an elementwise activation: LipSDP does not handle it"
    mats, slopes, widths = [], [], []
    shape = input_shape
    current: list[nn.Module] = []

    def close(shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
        n = math.prod(shape)
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
        zero = torch.zeros((1, *shape), dtype=torch.float64)
        with torch.no_grad():
            out, base = basis, zero
            for m in current:
                out, base = m(out), m(base)
            cols = (out - base).reshape(n, -1)  # affine maps: A e_j = f(e_j) − f(0)
        return cols.T.numpy().copy(), tuple(out.shape[1:])

    for op in ops:
        if op.kind == "activation":
            mat, shape = close(shape)
            mats.append(mat)
            slopes.append((op.alpha, op.beta))
            widths.append(mat.shape[0])
            current = []
        else:
            current.append(op.module)
    mat, shape = close(shape)
    mats.append(mat)
    return mats, slopes, widths


# -- LipSDP ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LipSDP:
    value: float  # √ρ, certified upper bound on Lip(f)
    rho: float
    solver_rho: float
    solver: str
    certify_steps: int
    min_eig_margin: float


def _lmi_parts(mats: list[np.ndarray], slopes: list[tuple[float, float]]):
    """C (N × (n0+N)), per-unit α, β, and the index ranges."""
    n0 = mats[0].shape[1]
    widths = [m.shape[0] for m in mats[:-1]]
    big_n = sum(widths)
    c = np.zeros((big_n, n0 + big_n))
    a = np.zeros(big_n)
    b = np.zeros(big_n)
    row, col = 0, 0
    for k, w in enumerate(widths):
        c[row:row + w, col:col + mats[k].shape[1]] = mats[k]
        a[row:row + w], b[row:row + w] = slopes[k]
        col = n0 if k == 0 else col + mats[k].shape[1]
        row += w
    return c, a, b, n0, big_n


def lmi(mats, slopes, rho: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M(ρ, t) in float64, and the matrix of absolute values whose products make it up."""
    c, a, b, n0, big_n = _lmi_parts(mats, slopes)
    w_last = mats[-1]
    d = n0 + big_n
    sel = np.zeros((big_n, d))
    sel[:, n0:] = np.eye(big_n)
    cross = c.T @ (((a + b) * t)[:, None] * sel)
    m = c.T @ ((-2 * a * b * t)[:, None] * c) + cross + cross.T - 2 * sel.T @ (t[:, None] * sel)
    m_abs = (np.abs(c).T @ (np.abs(2 * a * b * t)[:, None] * np.abs(c)) + 2 * np.abs(cross)
             + 2 * sel.T @ (t[:, None] * sel))
    last = w_last.shape[1]
    m[d - last:, d - last:] += w_last.T @ w_last
    m_abs[d - last:, d - last:] += np.abs(w_last).T @ np.abs(w_last)
    m[:n0, :n0] -= rho * np.eye(n0)
    m_abs[:n0, :n0] += rho * np.eye(n0)
    return m, m_abs


def certified_psd_margin(s: np.ndarray, s_abs: np.ndarray, inner: int) -> float:
    """λ_min(S̃) minus the rounding allowance: > 0 proves the exact S is positive definite.

    The build error is entrywise ≤ γ_{inner+4} |S|_abs (standard dot-product bounds), hence
    ‖ΔS‖₂ ≤ γ ‖|S|_abs‖_F; eigvalsh is backward stable: its λ_min is that of S̃ + E with
    ‖E‖₂ ≤ 16 n u ‖S̃‖_F (a generous constant). Weyl: λ_min(S) ≥ λ̃_min − both."""
    n = s.shape[0]
    gamma = (inner + 4) * U64 / (1 - (inner + 4) * U64)
    lam = float(np.linalg.eigvalsh(s)[0])
    return lam - gamma * float(np.linalg.norm(s_abs)) - 16 * n * U64 * float(np.linalg.norm(s))


def lipsdp(mats: list[np.ndarray], slopes: list[tuple[float, float]], solver: str = "SCS"
           ) -> LipSDP | str:
    """Certified LipSDP-Neuron bound, or why none could be certified."""
    import cvxpy as cp

    if len(mats) < 2:
        w = mats[0]
        sigma = float(np.linalg.svd(w, compute_uv=False)[0])
        bound = sigma * (1 + 8 * max(w.shape) * U64)
        return LipSDP(bound, bound * bound, bound * bound, "svd (no activation)", 0, 0.0)
    c, a, b, n0, big_n = _lmi_parts(mats, slopes)
    w_last = mats[-1]
    d = n0 + big_n
    t = cp.Variable(big_n, nonneg=True)
    rho = cp.Variable(nonneg=True)
    # M is affine in (ρ, t): M = F_0 + Σ_j t_j F_j − ρ E, F_j = −2α_jβ_j c_j c_jᵀ
    # + (α_j + β_j)(c_j e_jᵀ + e_j c_jᵀ) − 2 e_j e_jᵀ (c_j row j of C, e_j unit j of x)
    cc = (-2 * a * b)[None, None, :] * (c.T[:, None, :] * c.T[None, :, :])
    unit = np.zeros((d, big_n))
    unit[n0:, :] = np.eye(big_n)
    mixed = (a + b)[None, None, :] * (c.T[:, None, :] * unit[None, :, :]
                                      + unit[:, None, :] * c.T[None, :, :])
    diag = -2 * unit[:, None, :] * unit[None, :, :]
    gen = scipy.sparse.csr_matrix((cc + mixed + diag).reshape(d * d, big_n))  # mostly zeros
    fixed = np.zeros((d, d))
    last = w_last.shape[1]
    fixed[d - last:, d - last:] = w_last.T @ w_last
    e0 = np.zeros((d, d))
    e0[:n0, :n0] = np.eye(n0)
    m = fixed + cp.reshape(gen @ t, (d, d), order="C") - rho * e0
    problem = cp.Problem(cp.Minimize(rho), [(m + m.T) / 2 << 0])
    try:
        problem.solve(solver=solver)
    except cp.SolverError as err:
        return f"the SDP solver {solver} failed: {err}"
    if t.value is None or rho.value is None:
        return f"the SDP solver {solver} returned no solution (status {problem.status})"
    t_val = np.maximum(np.asarray(t.value, dtype=np.float64), 0.0)
    rho_hat = max(float(rho.value), 0.0)
    inner = max(max(mt.shape) for mt in mats) + d

    def certified(r: float) -> float:
        mm, mm_abs = lmi(mats, slopes, r, t_val)
        return certified_psd_margin(-mm, mm_abs, inner)

    hi = rho_hat * (1 + 1e-7) if rho_hat > 0 else 1e-12
    steps = 0
    while certified(hi) <= 0:
        steps += 1
        if steps > 60:
            return ("the solver's multipliers could not be certified: −M(ρ, T) is not positive "
                    f"definite within rounding for any ρ up to {hi:.3g} (solver ρ {rho_hat:.6g})")
        hi = hi * 2 if hi > 0 else 1e-12
    lo = rho_hat * (1 - 1e-6)
    for _ in range(40):
        if hi - lo <= 1e-9 * hi:
            break
        mid = 0.5 * (lo + hi)
        steps += 1
        if certified(mid) > 0:
            hi = mid
        else:
            lo = mid
    value = math.nextafter(math.sqrt(hi), math.inf)
    return LipSDP(value, hi, rho_hat, solver, steps, certified(hi))


# -- lower bounds ---------------------------------------------------------------------------
FORWARD_CHUNK = 256  # inputs per forward pass of the quotient search (4,232 CIFAR images at
# once through ResNet-18 in float64 took > 20 GB and were OOM-killed)


def _outputs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` without gradients, ``FORWARD_CHUNK`` rows at a time."""
    with torch.no_grad():
        return torch.cat([net(x[i:i + FORWARD_CHUNK]) for i in range(0, x.shape[0],
                                                                      FORWARD_CHUNK)])


def quotients(net: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖f(a_i) − f(b_i)‖ / ‖a_i − b_i‖ for paired rows."""
    with torch.no_grad():
        num = torch.linalg.vector_norm((_outputs(net, a) - _outputs(net, b)).flatten(1), dim=1)
    return num / torch.linalg.vector_norm((a - b).flatten(1), dim=1)


@dataclass(frozen=True)
class QuotientSearch:
    value: float  # best computed quotient
    lower: float  # the same less its rounding allowance
    a: torch.Tensor
    b: torch.Tensor
    sample_best: float  # best over pairs of samples only
    pairs: int


def search_quotient(net: nn.Module, x: torch.Tensor, rel: float, top: int = 8,
                    segment_points: int = 33, ascent_steps: int = 100, seed: int = 0
                    ) -> QuotientSearch:
    """Best ‖f(a) − f(b)‖/‖a − b‖ over all sample pairs, raised by searching the best pairs'
    segments (all pairs of ``segment_points`` grid points) and by gradient ascent on (a, b).

    Cost in forward passes: ``n`` (the samples), ``top · segment_points`` (each segment's grid
    once; its ``segment_points²/2`` pairs reuse those outputs) and ``2 top`` per ascent step.
    The ascent stops early at the time limit (:mod:`.estimators.clock`): any pair found is a
    valid lower bound, so stopping only makes it less tight."""
    n = x.shape[0]
    flat = x.flatten(1)
    with torch.no_grad():
        out = _outputs(net, x).flatten(1)
    dx = torch.cdist(flat, flat)  # ranking only: cdist's GEMM form may cancel; the quotients
    df = torch.cdist(out, out)    # kept below are recomputed from differences
    q = torch.where(dx > 0, df / dx.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(dx))
    q = torch.triu(q, diagonal=1)
    k = min(top, max(1, n * (n - 1) // 2))
    best = torch.topk(q.flatten(), k).indices
    ii, jj = best // n, best % n
    sample_best = float(q.max())
    grid = torch.linspace(0, 1, segment_points, dtype=x.dtype)
    p, r = torch.triu_indices(segment_points, segment_points, offset=1)
    found = [_pair_quotients(x[ii], x[jj], out[ii], out[jj], rel)]
    for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
        pts = x[i][None] + grid.reshape(-1, *([1] * (x.dim() - 1))) * (x[j] - x[i])[None]
        f_pts = _outputs(net, pts).flatten(1)
        found.append(_pair_quotients(pts[p], pts[r], f_pts[p], f_pts[r], rel))
    a = torch.cat([c[0] for c in found])
    b = torch.cat([c[1] for c in found])
    qs = torch.cat([c[2] for c in found])
    lows = torch.cat([c[3] for c in found])
    if qs.numel():
        order = torch.topk(qs, min(top, qs.numel())).indices
        start_a, start_b = a[order], b[order]
    else:  # every sample coincides: the ascent's start noise separates the pairs
        start_a, start_b = x[ii], x[jj]
    a_up, b_up = _ascend(net, start_a, start_b, ascent_steps, float(dx.max()), seed)
    with torch.no_grad():
        f_a, f_b = _outputs(net, a_up).flatten(1), _outputs(net, b_up).flatten(1)
    up = _pair_quotients(a_up, b_up, f_a, f_b, rel)
    a, b = torch.cat([a, up[0]]), torch.cat([b, up[1]])
    qs, lows = torch.cat([qs, up[2]]), torch.cat([lows, up[3]])
    i = int(torch.argmax(lows))
    return QuotientSearch(float(qs[i]), max(0.0, float(lows[i])), a[i], b[i], sample_best,
                          n * (n - 1) // 2)


def _pair_quotients(a: torch.Tensor, b: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor,
                    rel: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs (a_i, b_i) with outputs (fa_i, fb_i): the pairs with a ≠ b, their quotients and
    the quotients less a rounding allowance ``rel · (‖f(a)‖ + ‖f(b)‖) / ‖a − b‖``, with
    ``rel`` the network's relative rounding floor (8u(P + D + K), as for Jacobians)."""
    gap = torch.linalg.vector_norm((a - b).flatten(1), dim=1)
    keep = gap > 0
    a, b, fa, fb, gap = a[keep], b[keep], fa[keep], fb[keep], gap[keep]
    q = torch.linalg.vector_norm((fa - fb).flatten(1), dim=1) / gap
    allowance = rel * (torch.linalg.vector_norm(fa.flatten(1), dim=1)
                       + torch.linalg.vector_norm(fb.flatten(1), dim=1)) / gap
    return a, b, q, q - allowance


def _ascend(net: nn.Module, a0: torch.Tensor, b0: torch.Tensor, steps: int, scale: float,
            seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam ascent of Σ ‖f(a_i) − f(b_i)‖/‖a_i − b_i‖ from the pairs (a0, b0); at most
    ``steps`` steps, fewer when the time limit passes."""
    gen = torch.Generator().manual_seed(seed)
    a_var = (a0 + 1e-6 * torch.randn(a0.shape, generator=gen, dtype=a0.dtype)).requires_grad_()
    b_var = b0.clone().requires_grad_()
    opt = torch.optim.Adam([a_var, b_var], lr=1e-2 * scale / math.sqrt(a0[0].numel()))
    m = a0.shape[0]
    for step in range(steps):
        if step and clock.expired():
            break
        opt.zero_grad()
        both = net(torch.cat([a_var, b_var]))  # one pass: BN is in eval mode (per-sample)
        diff = (both[:m] - both[m:]).flatten(1)
        gap = (a_var - b_var).flatten(1)
        obj = -(torch.linalg.vector_norm(diff, dim=1)
                / torch.linalg.vector_norm(gap, dim=1).clamp_min(1e-12)).sum()
        obj.backward()
        opt.step()
        clock.report("quotient ascent", step + 1, unit="steps")
    return a_var.detach(), b_var.detach()


def differentiable_mask(ops: list[Op], x: torch.Tensor, rel: float) -> torch.Tensor:
    """True where f is certainly differentiable at x_i: every kinked activation's input is
    farther than ``rel·(1 + |z|)`` from its kinks, and no max-pooling window has a tie within
    that margin. Smooth activations and linear maps are differentiable everywhere."""
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    h = x
    with torch.no_grad():
        for op in ops:
            if op.kind == "activation":
                for kink in kinks(op.module):
                    near = (h - kink).abs() <= rel * (1 + h.abs())
                    ok &= ~near.flatten(1).any(dim=1)
            elif op.kind == "maxpool":
                ok &= ~_pool_ties(op.module, h, rel)
            h = op.module(h)
    return ok


def _pool_ties(module: nn.Module, h: torch.Tensor, rel: float) -> torch.Tensor:
    """Per sample: does some max-pooling window have its two largest entries within the
    margin (then f may have a kink there)? Pools other than 2-D count as tied (unknown)."""
    if not isinstance(module, nn.MaxPool2d):
        return torch.ones(h.shape[0], dtype=torch.bool)
    k = module.kernel_size
    if math.prod((k, k) if isinstance(k, int) else k) == 1:
        return torch.zeros(h.shape[0], dtype=torch.bool)
    n = h.shape[0]
    planes = h.reshape(-1, 1, *h.shape[-2:])
    cols = nn.functional.unfold(planes, k, stride=k)
    top2 = cols.topk(2, dim=1).values
    tie = (top2[:, 0] - top2[:, 1]) <= rel * (1 + top2[:, 0].abs())
    return tie.reshape(n, -1).any(dim=1)
