"""T2 Tier B at depth L — a parameter-level λ_max bound for cross-entropy in
``f = W_{L+1} σ(W_L ⋯ σ(W_1 x + b_1) ⋯ + b_L) + b_{L+1}``: data only through n,
``R = max_i ‖x_i‖`` and ``ρ = max_{i≠j} |cos(x_i, x_j)|``; parameters only through the
per-layer ``‖W_l‖₂, ‖W_l‖_F, ‖b_l‖`` (and widths, bias flags); σ through ``sup|σ'|,
sup|σ''|, |σ(0)|, sup|σ|`` (the largest over the layers); optionally the confidence gap
``ε = max_i (1 − p_{i,y_i})`` (ε = 1: norms only).

Source: relaxation of Tier A at depth L (:mod:`derivations.closed_form_ce_depth`), in the
setting of Omae et al., arXiv 2604.10202 (2026); derived here. The pieces and both routes are
:func:`boundcheck.core.formulas.closed_form_depth.depth_pieces` (its docstring lists them).

Proof outline. (i) Forward norms: ‖a_l‖ ≤ α_l layer by layer (the one-layer lemma applied to
each layer). (ii) Backward norms by the recursions of J, δ, Q, D, E (sub-multiplicativity,
‖diag v‖₂ ≤ ‖v‖_∞ ≤ ‖v‖, ‖diag v‖_F = ‖v‖, |tr Q| ≤ √h‖Q‖_F). (iii) Per-sample block norms:
P_ll ⪯ μ_l I, ‖P_ll‖_F ≤ m^F_l, tr P_ll in its box; the off-diagonal block of layers l < m is
``C_lm ⊗ u_lᵀ`` with ``C_{(s,e),r} = P_{lm,rs} u_{m,e} + δ_{m,s} E_{ml,er}``, so
``‖C_lm‖ ≤ ‖P_lm‖‖u_m‖ + ‖δ_m‖‖E_ml‖`` in both norms. (iv) Route 1: Cauchy–Schwarz on each block
of ⟨H_i, H_j⟩ with |u_1^i·u_1^j| ≤ ρR² + β_1 and |u_l^i·u_l^j| ≤ U_l beyond; WS maximised over
the box (the one-layer lemma). (v) Route 2: ``λ_max(H) ≤ λ_max(N)`` for any symmetric N with
``N_ll ≥ λ_max(H_ll)``, ``N_lm ≥ ‖H_lm‖₂`` (l < m) — vᵀHv ≤ wᵀNw with w_l = ‖v_l‖ — and
λ_max(N) is nondecreasing in every entry of a matrix with nonnegative off-diagonal (Perron);
``λ_max(H_ll) ≤ μ_l G_l`` and ``‖H_lm‖₂ ≤ c_lm √G_l`` by the one-layer block lemmas with the
layer's input u_l in place of x̃. (vi) At L = 1 both routes are the one-layer Tier B's.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import sympy

from boundcheck.core.formulas import closed_form as one
from boundcheck.core.formulas.closed_form_depth import (
    LAYER_NAMES,
    SCALARS,
    depth_pieces,
    depth_symbols,
    route1_function,
    route2_matrix,
)
from boundcheck.core.theorem import Theorem

from .closed_form_ce_tier_b import (
    _block_sampler,
    _bound_step,
    _bound_step_expr,
    _cross_block_sampler,
    _gram_sampler,
    _hidden_block_sampler,
    _ws_box_sampler,
)
from .proof import Derivation, Step

SOURCE = ("relaxation of T2 Tier A at depth L (derivations/closed_form_ce_depth.py); setting of "
          "Y. Omae et al., arXiv 2604.10202 (2026); derived in "
          "derivations/closed_form_ce_depth_tier_b.py")
THEOREMS: tuple[Theorem, ...] = ()  # the statements are hessian.tier_b[_sat]_lambda_max

_ACTIVATIONS = ("tanh", "sigmoid", "softplus", "softplus2", "gelu")


def _activation(name: str):
    import torch

    from boundcheck.core.activations import activation_of

    return activation_of({"tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid(),
                          "softplus": torch.nn.Softplus(),
                          "softplus2": torch.nn.Softplus(beta=2.0),
                          "gelu": torch.nn.GELU()}[name])


class DeepSample:
    """A random depth-L net and one (or two) samples: every per-sample factor in numpy, the
    dense per-sample Hessian assembled from the blocks, and the Tier B ingredient values."""

    def __init__(self, rng: random.Random, samples: int = 1):
        import torch

        r = np.random.default_rng(rng.getrandbits(63))
        self.depth = int(r.integers(1, 5))
        self.widths = [int(r.integers(1, 5)) for _ in range(self.depth + 1)] + [
            int(r.integers(2, 6))]
        self.bias = [bool(r.integers(2)) for _ in range(self.depth + 1)]
        self.act = _activation(_ACTIVATIONS[int(r.integers(len(_ACTIVATIONS)))])
        scale = float(r.choice([0.3, 1.0, 3.0]))
        self.W = [r.normal(size=(self.widths[i + 1], self.widths[i])) * scale
                  / math.sqrt(self.widths[i]) for i in range(self.depth + 1)]
        self.b = [r.normal(size=self.widths[i + 1]) * scale if self.bias[i]
                  else np.zeros(self.widths[i + 1]) for i in range(self.depth + 1)]
        self.x = r.normal(size=(samples, self.widths[0])) * float(r.choice([0.3, 1.0, 5.0]))
        self.y = r.integers(self.widths[-1], size=samples)
        self.s = [self._sample(self.x[i], int(self.y[i]), torch) for i in range(samples)]

    def _sample(self, x: np.ndarray, y: int, torch) -> dict:
        ins, s1, s2 = [x], [], []
        for w, b in zip(self.W[:-1], self.b[:-1], strict=True):
            a, d1, d2, _, _ = self.act.derivatives(torch.tensor(w @ ins[-1] + b))
            ins.append(a.numpy())
            s1.append(d1.numpy())
            s2.append(d2.numpy())
        logits = self.W[-1] @ ins[-1] + self.b[-1]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        k, layers = len(p), self.depth + 1
        g = p - np.eye(k)[y]
        amat = np.diag(p) - np.outer(p, p)
        jac, delta, q = {layers: np.eye(k)}, {layers: g}, {layers: np.zeros((k, k))}
        for l in range(self.depth, 0, -1):
            w = self.W[l]
            back = w.T @ delta[l + 1]
            jac[l] = jac[l + 1] @ w * s1[l - 1]
            delta[l] = s1[l - 1] * back
            q[l] = (s1[l - 1][:, None] * (w.T @ q[l + 1] @ w) * s1[l - 1][None, :]
                    + np.diag(s2[l - 1] * back))
        dmat, emat, pmat, cmat = {}, {}, {}, {}
        u = {l: np.append(ins[l - 1], 1.0) if self.bias[l - 1] else ins[l - 1]
             for l in range(1, layers + 1)}
        for l in range(1, layers + 1):
            dmat[l, l] = np.eye(self.widths[l])
            for m in range(l + 1, layers + 1):
                emat[m, l] = s1[m - 2][:, None] * dmat[m - 1, l]
                dmat[m, l] = self.W[m - 1] @ emat[m, l]
            for m in range(l, layers + 1):
                pmat[l, m] = jac[l].T @ amat @ jac[m] + dmat[m, l].T @ q[m]
                if m > l:
                    e_pad = np.zeros((len(u[m]), self.widths[l]))
                    e_pad[:self.widths[m - 1]] = emat[m, l]
                    cmat[l, m] = (np.einsum("rs,e->ser", pmat[l, m], u[m])
                                  + np.einsum("s,er->ser", delta[m], e_pad)).reshape(
                                      -1, self.widths[l])
        return {"u": u, "J": jac, "delta": delta, "Q": q, "D": dmat, "E": emat, "P": pmat,
                "C": cmat, "gap": 1.0 - p[y], "x": x}

    def hessian(self, i: int) -> np.ndarray:
        """The per-sample Hessian from the blocks (rows of layer l: (r, d) → r·len(u_l) + d)."""
        s, layers = self.s[i], self.depth + 1
        sizes = [self.widths[l] * len(s["u"][l]) for l in range(1, layers + 1)]
        off = np.concatenate([[0], np.cumsum(sizes)])
        out = np.zeros((off[-1], off[-1]))
        for l in range(1, layers + 1):
            for m in range(l, layers + 1):
                if m == l:
                    blk = np.kron(s["P"][l, l], np.outer(s["u"][l], s["u"][l]))
                else:  # (C_lm ⊗ u_lᵀ)ᵀ: rows (r, d) of layer l, columns (s, e) of layer m
                    blk = np.kron(s["C"][l, m], s["u"][l][None, :]).T
                out[off[l - 1]:off[l], off[m - 1]:off[m]] = blk
                out[off[m - 1]:off[m], off[l - 1]:off[l]] = blk.T
        return out

    def values(self, eps: float | None = None) -> dict:
        """Ingredient values (symbol → float) for the pieces of depth_pieces(L, ·)."""
        syms = depth_symbols(self.depth)
        norms = np.linalg.norm(self.x, axis=1)
        cos = np.abs(self.x @ self.x.T) / np.maximum(np.outer(norms, norms), 1e-300)
        np.fill_diagonal(cos, 0.0)
        vals = {one.n: len(self.x), one.K: self.widths[-1], one.P: 2, one.R: float(norms.max()),
                one.rho: float(cos.max()), one.s1: self.act.sup_d1, one.s2: self.act.sup_d2,
                one.s0: self.act.at_zero,
                one.smax: self.act.sup_abs if math.isfinite(self.act.sup_abs) else 0.0,
                one.eps: max(s["gap"] for s in self.s) if eps is None else eps}
        per = {"W_spectral": [np.linalg.norm(w, 2) for w in self.W],
               "W_frobenius": [np.linalg.norm(w) for w in self.W],
               "b_norm": [np.linalg.norm(b) for b in self.b],
               "h": self.widths[1:], "bias": [float(b) for b in self.bias]}
        for name in LAYER_NAMES:
            vals.update({s: float(v) for s, v in zip(syms[name], per[name], strict=True)})
        return vals

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.act.sup_abs)


@functools.lru_cache(maxsize=512)
def _piece_fn(depth: int, bounded: bool, key: str, index):
    piece = depth_pieces(depth, bounded)[key]
    expr = piece if index is None else piece[index]
    syms = [*SCALARS, *(s for name in LAYER_NAMES for s in depth_symbols(depth)[name])]
    return syms, sympy.lambdify(syms, expr, modules="math")


def piece(sample: DeepSample, key: str, index=None, eps: float | None = None) -> float:
    syms, fn = _piece_fn(sample.depth, sample.bounded, key, index)
    vals = sample.values(eps)
    return float(fn(*[vals[s] for s in syms]))


def _layer_step(name: str, measure, key: str, kind: str = "hidden", because: str = "") -> Step:
    """A per-sample lemma at a random layer (kind "hidden": l ≤ L; "all": l ≤ L+1; "pair":
    l < m ≤ L+1; "path": l < m ≤ L+1 for D/E) of a random depth-L instance."""
    def evaluate(rng):
        s = DeepSample(rng)
        top = s.depth + 1
        if kind == "pair":
            l = rng.randint(1, top - 1)
            idx = (l, rng.randint(l + 1, top))
        else:
            idx = rng.randint(1, s.depth if kind == "hidden" else top)
        return measure(s, s.s[0], idx), piece(s, key, idx)

    return Step(name, sympy.Symbol("measured"), sympy.Symbol("bound"), relation="<=",
                check="numeric", evaluate=evaluate, because=because)


def _norm2(m):
    return float(np.linalg.norm(m, 2)) if m.size else 0.0


def _alpha_measure(s: DeepSample, smp: dict, l: int) -> float:
    return float(np.linalg.norm(smp["u"][l + 1][:s.widths[l]])) if l <= s.depth else 0.0


def _dnorm_step() -> Step:
    def evaluate(rng):
        s = DeepSample(rng)
        top = s.depth + 1
        l = rng.randint(1, top - 1)
        m = rng.randint(l + 1, top)
        bound = 1.0
        for t in range(l + 1, m + 1):
            bound *= s.act.sup_d1 * float(np.linalg.norm(s.W[t - 1], 2))
        return _norm2(s.s[0]["D"][m, l]), bound

    return Step("‖D_ml‖₂ ≤ Π_{t=l+1}^{m} sup|σ'|‖W_t‖₂ (D_ml = W_m diag σ'_{m−1} ⋯ W_{l+1} "
                "diag σ'_l)", sympy.Symbol("measured"), sympy.Symbol("bound"), relation="<=",
                check="numeric", evaluate=evaluate)


def _pair_cs_step() -> Step:
    """|⟨H_i,H_j⟩| against the Cauchy–Schwarz sum over blocks with the route-1 Gram bounds."""
    def evaluate(rng):
        s = DeepSample(rng, samples=2)
        top = s.depth + 1
        lhs = abs(float(np.sum(s.hessian(0) * s.hessian(1))))
        o = {l: piece(s, "O", l) for l in range(1, top + 1)}
        mf = {l: piece(s, "mF", l) for l in range(1, top + 1)}
        cf = {(l, m): piece(s, "cF", (l, m)) for l in range(1, top) for m in range(l + 1, top + 1)}
        rhs = sum(o[l] ** 2 * mf[l] ** 2 for l in range(1, top + 1)) + 2 * sum(
            o[l] * v**2 for (l, _), v in cf.items())
        return lhs, rhs

    return Step("|⟨H_i,H_j⟩| ≤ Σ_l O_l²(m^F_l)² + 2Σ_{l<m} O_l(c^F_lm)² (i ≠ j; Φ_o of route 1)",
                sympy.Symbol("measured"), sympy.Symbol("bound"), relation="<=", check="numeric",
                evaluate=evaluate,
                because="Cauchy–Schwarz on each block: |⟨P_i,P_j⟩| ≤ ‖P_i‖_F‖P_j‖_F, "
                        "|⟨C_i,C_j⟩| ≤ ‖C_i‖_F‖C_j‖_F; |u_1^i·u_1^j| ≤ ρR² + β_1, "
                        "|u_l^i·u_l^j| ≤ U_l")


def _diag_cs_step() -> Step:
    def evaluate(rng):
        s = DeepSample(rng)
        top = s.depth + 1
        hh = s.hessian(0)
        lhs = float(np.sum(hh * hh))
        rhs = sum(piece(s, "U", l) ** 2 * piece(s, "mF", l) ** 2 for l in range(1, top + 1))
        rhs += 2 * sum(piece(s, "U", l) * piece(s, "cF", (l, m)) ** 2
                       for l in range(1, top) for m in range(l + 1, top + 1))
        return lhs, rhs

    return Step("‖H_i‖_F² ≤ Σ_l U_l²(m^F_l)² + 2Σ_{l<m} U_l(c^F_lm)² (Φ_d of route 1)",
                sympy.Symbol("measured"), sympy.Symbol("bound"), relation="<=", check="numeric",
                evaluate=evaluate)


def _trace_box_step(which: str) -> Step:
    def evaluate(rng):
        s = DeepSample(rng)
        tr = float(np.trace(s.hessian(0)))
        if which == "hi":
            return tr, piece(s, "t_hi")
        return piece(s, "t_lo"), tr

    side = "≤ Σ_l U_l tr_hi,l" if which == "hi" else "≥ Σ_l U_l tr_lo,l"
    return Step(f"tr H_i {side}", sympy.Symbol("measured"), sympy.Symbol("bound"),
                relation="<=", check="numeric", evaluate=evaluate)


def _perron_sampler(rng):
    """λ_max(H) ≤ λ_max(N) with N_ll = λ_max(H_ll), N_lm = ‖H_lm‖₂, for L+1 ≥ 2 blocks."""
    r = np.random.default_rng(rng.getrandbits(63))
    sizes = [int(r.integers(1, 4)) for _ in range(int(r.integers(2, 6)))]
    m = r.normal(size=(sum(sizes), sum(sizes)))
    m = m + m.T
    off = np.concatenate([[0], np.cumsum(sizes)])
    nb = len(sizes)
    big_n = np.zeros((nb, nb))
    for i in range(nb):
        for j in range(nb):
            blk = m[off[i]:off[i + 1], off[j]:off[j + 1]]
            big_n[i, j] = np.linalg.eigvalsh(blk)[-1] if i == j else np.linalg.norm(blk, 2)
    return {"lhs": float(np.linalg.eigvalsh(m)[-1]), "rhs": float(np.linalg.eigvalsh(big_n)[-1])}


def _perron_monotone_sampler(rng):
    """N ≤ N' entrywise, off-diagonals ≥ 0 ⇒ λ_max(N) ≤ λ_max(N')."""
    r = np.random.default_rng(rng.getrandbits(63))
    k = int(r.integers(2, 6))
    a = np.abs(r.normal(size=(k, k)))
    a = a + a.T
    np.fill_diagonal(a, r.normal(size=k))
    b = np.abs(r.normal(size=(k, k))) * r.choice([0.0, 0.1, 1.0])
    return {"lhs": float(np.linalg.eigvalsh(a)[-1]),
            "rhs": float(np.linalg.eigvalsh(a + b + b.T)[-1])}


def _route2_step() -> Step:
    """λ_max of the true per-sample layer-block norm matrix (one sample, n = 1) ≤ λ_max(N)."""
    def evaluate(rng):
        s = DeepSample(rng)
        top = s.depth + 1
        smp = s.s[0]
        n_true = np.zeros((top, top))
        for l in range(1, top + 1):
            ul = smp["u"][l]
            n_true[l - 1, l - 1] = max(np.linalg.eigvalsh(smp["P"][l, l])[-1], 0.0) * ul @ ul
            for m in range(l + 1, top + 1):
                n_true[l - 1, m - 1] = n_true[m - 1, l - 1] = _norm2(smp["C"][l, m]) * math.sqrt(
                    ul @ ul)
        bound = route2_matrix(s.depth, s.bounded, s.values())
        return float(np.linalg.eigvalsh(n_true)[-1]), float(np.linalg.eigvalsh(bound)[-1])

    return Step("route 2 entrywise: N_ll ≥ λ_max(P_ll)⁺‖u_l‖², N_lm ≥ ‖C_lm‖₂‖u_l‖ "
                "(so λ_max ordered by Perron)", sympy.Symbol("measured"), sympy.Symbol("bound"),
                relation="<=", check="numeric", evaluate=evaluate)


def _end_to_end_step() -> Step:
    """λ_max of the assembled mean Hessian of a random depth-L net ≤ min(route 1, route 2)."""
    def evaluate(rng):
        s = DeepSample(rng, samples=rng.randint(2, 5))
        hh = sum(s.hessian(i) for i in range(len(s.s))) / len(s.s)
        vals = s.values()
        vals[one.P] = hh.shape[0]
        expr, syms, fn = route1_function(s.depth, s.bounded)
        r1 = float(fn(*[vals[x] for x in syms]))
        r2 = float(np.linalg.eigvalsh(route2_matrix(s.depth, s.bounded, vals))[-1])
        return float(np.linalg.eigvalsh(hh)[-1]), min(r1, r2)

    return Step("λ_max(H) ≤ min(route 1, route 2) on random depth-1…4 instances (H assembled "
                "from the Tier A blocks)", sympy.Symbol("measured"), sympy.Symbol("bound"),
                relation="<=", check="numeric", evaluate=evaluate)


@functools.lru_cache(maxsize=4)
def _one_layer_route(route: str, bounded: bool):
    return sympy.lambdify(list(one.INGREDIENTS), one.pieces(bounded)[route], modules="math")


def _reduction_step(route: str) -> Step:
    """At L = 1 the depth-L route equals the one-layer Tier B's, at random ingredient values."""
    sy = depth_symbols(1)
    ren = {sy["W_spectral"][0]: one.w2, sy["b_norm"][0]: one.bnorm, sy["W_spectral"][1]: one.v2,
           sy["W_frobenius"][1]: one.vf, sy["h"][0]: one.h, sy["bias"][0]: one.bh,
           sy["bias"][1]: one.bo}

    def evaluate(rng):
        r = np.random.default_rng(rng.getrandbits(63))
        bounded = bool(r.integers(2))
        vals = {s: float(r.uniform(0.05, 3)) for s in one.INGREDIENTS}
        vals.update({one.n: int(r.integers(1, 50)), one.h: int(r.integers(1, 20)),
                     one.K: int(r.integers(2, 10)), one.P: int(r.integers(2, 500)),
                     one.rho: float(r.uniform(0, 1)), one.eps: float(r.uniform(0.01, 1)),
                     one.bh: float(r.integers(2)), one.bo: float(r.integers(2))})
        deep = {s: vals.get(ren.get(s, s), 0.0) for s in
                [*SCALARS, *(x for name in LAYER_NAMES for x in sy[name])]}
        deep[sy["W_frobenius"][0]] = 1.0  # does not enter at L = 1
        deep[sy["b_norm"][1]] = 1.0
        if route == "route1":
            _, syms, fn = route1_function(1, bounded)
            got = float(fn(*[deep[x] for x in syms]))
        else:
            got = float(np.linalg.eigvalsh(route2_matrix(1, bounded, deep))[-1])
        want = float(_one_layer_route(route, bounded)(*[vals[x] for x in one.INGREDIENTS]))
        return abs(got - want), 1e-9 * max(1.0, abs(want))

    return Step(f"L = 1: the depth-L {route.replace('route', 'route ')} is the one-layer Tier "
                f"B's (|difference| ≤ 1e-9 relative at random ingredients)",
                sympy.Symbol("difference"), sympy.Symbol("tolerance"), relation="<=",
                check="numeric", evaluate=evaluate)


def _dict_step(name: str, sampler, because: str = "") -> Step:
    def evaluate(rng):
        out = sampler(rng)
        return out["lhs"], out["rhs"]

    return Step(name, sympy.Symbol("measured"), sympy.Symbol("bound"), relation="<=",
                check="numeric", evaluate=evaluate, because=because)


def _steps() -> tuple[Step, ...]:
    def tr_hi(s, smp, l):
        return float(np.trace(smp["P"][l, l]))

    return (
        # (i) forward
        _layer_step("‖a_l‖ ≤ α_l (α_0 = R; α_l = min(√h_l sup|σ|, √h_l|σ(0)| + "
                    "sup|σ'|(‖W_l‖₂α_{l−1} + ‖b_l‖)))", _alpha_measure, "alpha",
                    because="the one-layer lemma ‖σ(Wa+b)‖ ≤ √h|σ(0)| + sup|σ'|‖Wa+b‖, "
                            "layer by layer"),
        # (ii) backward
        _layer_step("‖J_l‖₂ ≤ j_l = sup|σ'|‖W_{l+1}‖₂ j_{l+1}",
                    lambda s, smp, l: _norm2(smp["J"][l]), "j"),
        _layer_step("‖J_l‖_F ≤ j^F_l = sup|σ'|‖W_{l+1}‖_F j_{l+1}",
                    lambda s, smp, l: float(np.linalg.norm(smp["J"][l])), "jF"),
        _layer_step("‖δ_l‖ ≤ γ_l = sup|σ'|‖W_{l+1}‖₂γ_{l+1}, γ_{L+1} = √2ε",
                    lambda s, smp, l: float(np.linalg.norm(smp["delta"][l])), "gamma"),
        _layer_step("‖Q_l‖₂ ≤ ω_l = sup|σ'|²‖W_{l+1}‖₂²ω_{l+1} + sup|σ''|‖W_{l+1}‖₂γ_{l+1}",
                    lambda s, smp, l: _norm2(smp["Q"][l]), "omega"),
        _layer_step("‖Q_l‖_F ≤ ω^F_l (the same recursion in ‖·‖_F)",
                    lambda s, smp, l: float(np.linalg.norm(smp["Q"][l])), "omegaF"),
        _dnorm_step(),
        # (iii) per-sample blocks
        _layer_step("λ_max(P_ll) ≤ μ_l = λ_A j_l² + ω_l (output layer: λ_A)",
                    lambda s, smp, l: float(np.linalg.eigvalsh(smp["P"][l, l])[-1]), "mu", "all"),
        _layer_step("‖P_ll‖_F ≤ m^F_l = λ_A j_l j^F_l + ω^F_l (output layer: a_F)",
                    lambda s, smp, l: float(np.linalg.norm(smp["P"][l, l])), "mF", "all"),
        _layer_step("tr P_ll ≤ λ_A (j^F_l)² + √h_l ω^F_l (output layer: τ)", tr_hi, "trace_hi",
                    "all"),
        _neg_trace_step(),
        _layer_step("‖C_lm‖₂ ≤ c_lm = (λ_A j_l j_m + d_ml ω_m)√U_m + γ_m e_ml",
                    lambda s, smp, lm: _norm2(smp["C"][lm]), "c2", "pair"),
        _layer_step("‖C_lm‖_F ≤ c^F_lm = (λ_A j^F_l j_m + d_ml ω^F_m)√U_m + γ_m e^F_ml",
                    lambda s, smp, lm: float(np.linalg.norm(smp["C"][lm])), "cF", "pair"),
        # (iv) route 1
        _trace_box_step("hi"), _trace_box_step("lo"), _diag_cs_step(), _pair_cs_step(),
        _bound_step_expr("λ_max(Σ x̃_ix̃_iᵀ) ≤ X̂² + (n−1)X_ρ (Gershgorin; G_1 = that / n)",
                         one.pieces(True)["lam_x"], _gram_sampler),
        _bound_step("WS over the box (the one-layer lemma)", _ws_box_sampler,
                    because="φ increases in F; concave in m with its maximum at m* = √F̄/P"),
        # (v) route 2
        _dict_step("block-norm matrix: λ_max(H) ≤ λ_max(N), N_ll = λ_max(H_ll), N_lm = "
                   "‖H_lm‖₂ (L+1 blocks)", _perron_sampler,
                   because="vᵀHv ≤ Σ_l λ_ll‖v_l‖² + 2Σ_{l<m}‖H_lm‖‖v_l‖‖v_m‖ = wᵀNw"),
        _dict_step("Perron monotonicity: 0 ≤ N' − N (entrywise), N off-diagonal ≥ 0 ⇒ "
                   "λ_max(N) ≤ λ_max(N')", _perron_monotone_sampler),
        _bound_step("2×2 case of the block-norm bound (the one-layer lemma)", _block_sampler),
        _bound_step("λ_max(H_ll) ≤ μ̄ λ_max(Σ u_lu_lᵀ)/n when P_ll ⪯ μ̄I (one-layer lemma, u_l "
                    "for x̃)", _hidden_block_sampler),
        _bound_step("‖H_lm‖₂ ≤ max‖C_lm‖₂ √(λ_max(Σ u_lu_lᵀ)/n) (one-layer lemma)",
                    _cross_block_sampler),
        _route2_step(),
        # (vi) the bound, and L = 1
        _end_to_end_step(),
        _reduction_step("route1"), _reduction_step("route2"),
    )


def _neg_trace_step() -> Step:
    def evaluate(rng):
        s = DeepSample(rng)
        l = rng.randint(1, s.depth + 1)
        return piece(s, "trace_lo", l), float(np.trace(s.s[0]["P"][l, l]))

    return Step("tr P_ll ≥ −√h_l ω^F_l (output layer: 0)", sympy.Symbol("measured"),
                sympy.Symbol("bound"), relation="<=", check="numeric", evaluate=evaluate)


@functools.lru_cache(maxsize=1)
def _derivation() -> Derivation:
    return Derivation(
        title="T2 Tier B at depth L: a norm-level λ_max bound (CE, L smooth hidden layers)",
        source=SOURCE, steps=_steps(),
        conclusion="λ_max(H) ≤ min(route 1, λ_max(N)) (depth_pieces); at L = 1 the one-layer "
                   "Tier B")


def __getattr__(name: str):
    if name == "DERIVATION":
        return _derivation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
