"""An independent float64 reference for the quantities the registered theorems are written in,
used to decide whether a planted variant is true or false on a subject (never boundcheck's own
engines): dense Hessians by ``torch.autograd.functional.hessian`` (reverse over reverse),
Jacobians by ``torch.func.jacrev`` and ``torch.autograd.functional.jacobian``,
spectra by ``numpy.linalg.eigvalsh`` / ``svd``.

Networks must be ``nn.Sequential`` stacks of ``nn.Linear`` and elementwise activations, with
every parameter trainable; losses ``"mse"`` (``ℓ = ½‖z − y‖²``, c = 1) or ``"cross_entropy"``
(unsaturated: the plain autograd Hessian is accurate there). A quantity the reference cannot
compute independently (the T2 Tier B bound, the T12 moment bound) gets the widest interval it
can prove from other facts: ``λ_max ≤ B_k ≤ T1`` and ``λ_max ≤ B_T2B``.

``truth(theorem, ref)`` evaluates both sides at 50 digits (mpmath) on those values and says
whether ``lhs ≤ rhs`` is TRUE, FALSE, or TIGHT (within a relative 1e-7 of equality, or not
decidable from the reference's intervals). Only the bracketed bounds above have non-point
intervals, and each appears alone on its side (monotonically), so evaluating a side at the
lower and the upper ends of every interval encloses it.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import sympy
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

TOL = 1e-7
Ref = dict[str, tuple[float, float]]


def _point(v: float) -> tuple[float, float]:
    return (float(v), float(v))


def spectral_reference(h: np.ndarray) -> Ref:
    """λ's of a symmetric matrix: mean, std (‖H − mI‖_F²/N), extremes, and T12's bracket."""
    h = np.asarray(h, dtype=np.float64)
    n = h.shape[0]
    lam = np.linalg.eigvalsh(h)
    m = float(np.trace(h)) / n
    s = math.sqrt(float(np.sum((h - m * np.eye(n)) ** 2)) / n)
    ref = {"hessian.dim": _point(n), "hessian.eigenvalue_mean": _point(m),
           "hessian.eigenvalue_std": _point(s), "hessian.lambda_max": _point(lam[-1]),
           "hessian.lambda_min": _point(lam[0]), "hessian.trace": _point(np.trace(h)),
           "closed_form.trace": _point(np.trace(h)),
           "closed_form.fro2": _point(float(np.sum(h * h)))}
    ws = m + s * math.sqrt(n - 1) if n > 1 else math.inf
    for k in (3, 4):  # λ_max ≤ B_k ≤ B_2 = T1 (an outer relaxation tightening WS)
        ref[f"moment_bound.lambda_max_k{k}"] = (float(lam[-1]), ws)
    for name in ("closed_form.tier_b_lambda_max", "closed_form.tier_b_sat_lambda_max"):
        ref[name] = (float(lam[-1]), math.inf)
    return ref


def _loss(z: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return 0.5 * ((z - y) ** 2).sum(dim=1).mean()
    return F.cross_entropy(z, y)


def _output_hessian(z: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return torch.eye(z.numel(), dtype=z.dtype)
    p = torch.softmax(z, dim=0)
    return torch.diag(p) - torch.outer(p, p)


def _svals(j: torch.Tensor) -> np.ndarray:
    return np.linalg.svd(j.detach().numpy(), compute_uv=False)


def mlp_reference(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, kind: str,
                  tau: float = 1e-3) -> Ref:
    """Every quantity of the compression, relative-flatness and Hessian theorems on an MLP."""
    net = net.double()
    mods = list(net)
    pos = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    params = {k: v.detach() for k, v in net.named_parameters()}
    names = list(params)
    n, k_out = x.shape[0], net(x[:1]).shape[1]

    def f(p, xi):
        return functional_call(net, p, (xi[None],))[0]

    def total(flat):
        p, off = {}, 0
        for name in names:
            p[name] = flat[off: off + params[name].numel()].view_as(params[name])
            off += params[name].numel()
        return _loss(functional_call(net, p, (x,)), y, kind)

    flat = torch.cat([params[k].reshape(-1) for k in names])
    # reverse-over-reverse, vectorised by autograd: torch.func.hessian (and jacrev(jacrev))
    # give an asymmetric, wrong Hessian through nn.LayerNorm's weight in torch 2.13
    hess = torch.autograd.functional.hessian(total, flat, vectorize=True).detach().numpy()
    ref = spectral_reference(0.5 * (hess + hess.T))
    ref["hessian.trace"] = _point(np.trace(hess))

    tr_g, tr_g_layer = 0.0, [0.0] * len(pos)
    hs, jh, grad_w, a_mats, jx = [], [], [], [], []
    for i in range(n):
        xi = x[i]
        z = f(params, xi).detach()
        a = _output_hessian(z, kind)
        a_mats.append(a.numpy())
        jp = jacrev(f)(params, xi)
        for name in names:
            jm = jp[name].reshape(k_out, -1)
            contrib = float(torch.einsum("kp,kl,lp->", jm, a, jm)) / n
            tr_g += contrib
            for l_idx, p_idx in enumerate(pos):
                if name == f"{p_idx}.weight":
                    tr_g_layer[l_idx] += contrib
        hs_i, jh_i, gw_i = [], [], []
        for p_idx in pos:
            h = nn.Sequential(*mods[:p_idx])(xi[None])[0] if p_idx else xi
            tail = nn.Sequential(*mods[p_idx:])
            hs_i.append(h.detach())
            jh_i.append(torch.autograd.functional.jacobian(lambda u, t=tail: t(u[None])[0], h))
            gw_i.append(float(jp[f"{p_idx}.weight"].reshape(k_out, -1).norm()))
        hs.append(hs_i)
        jh.append(jh_i)
        grad_w.append(gw_i)
        jx.append(jh_i[0])
    wn = [float(np.linalg.norm(mods[p].weight.detach().numpy(), 2)) for p in pos]
    hn2 = np.array([[float(hs[i][l] @ hs[i][l]) for l in range(len(pos))] for i in range(n)])
    sv = [[_svals(jh[i][l]) for l in range(len(pos))] for i in range(n)]
    fro = np.array([[float(np.sqrt(np.sum(s ** 2))) for s in row] for row in sv])
    s1 = np.array([[float(s[0]) for s in row] for row in sv])
    gw = np.array(grad_w)
    c = 1.0 if kind == "mse" else math.nan
    dims = [hs[0][l].numel() for l in range(len(pos))]
    r_l = [min(k_out, d) for d in dims]
    logvol = np.array([[float(np.sum(np.log(s[: r_l[l]]))) if np.all(s[: r_l[l]] > 0)
                        else -math.inf for l, s in enumerate(row)] for row in sv])
    gm = np.exp(np.mean(np.log(hn2), axis=0))
    ref.update({
        "layer.1.weight_norm": _point(wn[0]), "ggn.trace": _point(tr_g),
        "loss.mse_scale": _point(c), "sharpness.residual_tolerance": _point(tau),
        "jacobian.r": _point(r_l[0]), "jacobian.mls": _point(s1[:, 0].mean()),
        "jacobian.log_lvr": _point(logvol[:, 0].mean()),
        "data.sq_norm_gmean": _point(gm[0]),
        "data.inv_sq_norm_mean": _point(np.mean(1.0 / hn2[:, 0])),
        "jacobian.sensitivity_ratio_max": _point(np.max(s1[:, 0] * np.sqrt(hn2[:, 0])
                                                        / gw[:, 0])),
        "jacobian.sensitivity_ratio_fro_max": _point(np.max(fro[:, 0] * np.sqrt(hn2[:, 0])
                                                            / gw[:, 0])),
        "compression.input_gradient_layers_ratio": _point(np.max(
            s1 * np.sqrt(hn2) / (np.array(wn) * gw))),
        "compression.input_gradient_layers_ratio_fro": _point(np.max(
            fro * np.sqrt(hn2) / (np.array(wn) * gw))),
        "network.nmls": _point(s1.sum(axis=1).mean()),
        "network.nmls_factor": _point(np.mean(np.sum(np.array(wn) ** 2 / hn2, axis=1))),
        "network.nvr": _point(logvol.sum(axis=1).mean()),
        "compression.nvr_rank_sum": _point(sum(r_l)),
    })
    bounds = [r_l[l] / 2 * math.log(wn[l] ** 2 * tr_g_layer[l] / c / (r_l[l] * gm[l]))
              for l in range(len(pos))]
    ref["compression.nvr_bound"] = _point(sum(bounds))
    ref["compression.nvr_constant"] = _point(sum(
        r_l[l] / 2 * math.log(wn[l] ** 2 / (r_l[l] * gm[l])) for l in range(len(pos))))
    ref["compression.lvr_layers_gap"] = _point(max(
        logvol[:, l].mean() - bounds[l] for l in range(len(pos))))
    ref["compression.mls_layers_ratio"] = _point(max(
        s1[:, l].mean() / (wn[l] * math.sqrt(np.mean(1 / hn2[:, l]) * tr_g_layer[l] / c))
        for l in range(len(pos))))
    kappa = [np.mean([hn2[i, l] * float(np.trace(jh[i][l].numpy().T @ a_mats[i]
                                                   @ jh[i][l].numpy())) for i in range(n)])
             for l in range(len(pos))]
    ref["relative_flatness.mls_ratio"] = _point(max(
        c * np.mean(hn2[:, l] * s1[:, l] ** 2) / kappa[l] for l in range(len(pos))))
    if kind == "cross_entropy" and k_out >= 2:
        proj = np.eye(k_out) - 1.0 / k_out
        q = np.linalg.qr(np.eye(k_out) - 1.0 / k_out)[0][:, : k_out - 1]
        ref["loss.output_curvature_floor"] = _point(min(
            float(np.linalg.eigvalsh(q.T @ a @ q)[0]) for a in a_mats))
        cs1 = np.array([[float(np.linalg.svd(proj @ jh[i][l].numpy(), compute_uv=False)[0])
                         for l in range(len(pos))] for i in range(n)])
        ref["compression.mls_centered"] = _point(cs1[:, 0].mean())
        ref["compression.nmls_centered"] = _point(cs1.mean(axis=0).sum())
    return ref


@functools.lru_cache(maxsize=4096)
def _compiled(expr: sympy.Expr, symbols: tuple[sympy.Symbol, ...]):
    return sympy.lambdify(list(symbols), expr, modules="mpmath")


def _eval(expr: sympy.Expr, thm, ref: Ref, which: int) -> mpmath.mpf:
    symbols = tuple(thm.symbols)
    with mpmath.workdps(50):
        return _compiled(expr, symbols)(*(mpmath.mpf(ref[thm.symbols[s]][which])
                                          for s in symbols))


def truth(thm, ref: Ref) -> str:
    """TRUE, FALSE or TIGHT for ``thm`` on the reference values (a quantity missing from the
    reference, or a side undefined there, gives UNKNOWN)."""
    if any(q not in ref for q in thm.symbols.values()):
        return "UNKNOWN"
    if any(math.isnan(v) for q in thm.symbols.values() for v in ref[q]):
        return "UNKNOWN"
    sides = []
    try:
        for expr in (thm.lhs, thm.rhs):  # widest interval by evaluating at both endpoints
            vals = [_eval(expr, thm, ref, w) for w in (0, 1)]
            if any(isinstance(v, mpmath.mpc) and v.imag != 0 for v in vals):
                return "UNKNOWN"
            vals = [mpmath.re(v) for v in vals]
            sides.append((min(vals), max(vals)))
    except (ZeroDivisionError, ValueError, TypeError):
        return "UNKNOWN"
    (l_lo, l_hi), (r_lo, r_hi) = sides
    if l_hi == -mpmath.inf:
        return "TRUE"
    scale = max(abs(l_hi), abs(r_lo), abs(l_lo), abs(r_hi), mpmath.mpf(1e-300))
    if not mpmath.isfinite(scale):
        scale = mpmath.mpf(1)
    if l_hi < r_lo - TOL * scale:
        return "TRUE"
    if l_lo > r_hi + TOL * scale:
        return "FALSE"
    return "TIGHT"


def dense_loss_hessian(subject) -> torch.Tensor:
    """The dense Hessian of a cross-entropy Subject's mean loss over all its parameters, on the
    CPU (reverse over reverse; any architecture)."""
    model = subject.net.to("cpu")
    try:
        names = [k for k, _ in model.named_parameters()]
        shapes = [p.shape for p in model.parameters()]
        sizes = [p.numel() for p in model.parameters()]
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        buffers = dict(model.named_buffers())
        x = torch.cat([b.x for b in subject.batches]).cpu()
        y = torch.cat([b.y for b in subject.batches]).cpu()

        def loss(theta):
            parts = torch.split(theta, sizes)
            params = {k: v.reshape(s) for k, v, s in zip(names, parts, shapes, strict=True)}
            z = functional_call(model, (params, buffers), (x,))
            return torch.nn.functional.cross_entropy(z, y)

        # reverse-over-reverse: torch.func.hessian (forward-over-reverse) is wrong through
        # nn.LayerNorm's weight in torch 2.13 (an asymmetric "Hessian", off by 0.3 on the ViT
        # below; its first-order jvp is right), so the ViT's truth would be wrong
        return torch.autograd.functional.hessian(loss, flat)
    finally:
        model.to(subject.device)


def dense_gauss_newton(subject) -> torch.Tensor:
    """G = (1/n) Σ_i J_iᵀ A_i J_i of a cross-entropy Subject from torch.func's per-sample
    parameter Jacobians (CPU; any architecture)."""
    model = subject.net.to("cpu")
    try:
        params = {k: p.detach() for k, p in model.named_parameters()}
        buffers = dict(model.named_buffers())
        x = torch.cat([b.x for b in subject.batches]).cpu()
        jac = torch.func.jacrev(lambda p: functional_call(model, (p, buffers), (x,)))(params)
        j = torch.cat([v.reshape(x.shape[0], subject.output_dim, -1) for v in jac.values()],
                      dim=2)  # (n, K, P)
        with torch.no_grad():
            prob = torch.softmax(model(x), dim=1)
        a = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]
        return torch.einsum("nkp,nkl,nlq->pq", j, a, j) / x.shape[0]
    finally:
        model.to(subject.device)
