"""The finite-perturbation local volumetric ratio (LVR), by Monte Carlo with Gaussian input noise.

THEOREMS.md T6 defines ``log LVR(x) = Σ_{k≤r} log σ_k(J_x(x))``, r = min(K, D): the log of the
factor by which f scales r-dimensional volumes near x. Its finite-perturbation counterpart at
noise scale ε replaces the Jacobian by what Gaussian perturbations actually do to the outputs.

Estimator (one input x, D entries, m > D perturbations). Draw ``ξ_j ~ N(0, ε² I_D)`` and
``y_j = f(x + ξ_j)``, j = 1..m; centre both (``ξ̄``, ``ȳ`` subtracted). Let ``Σ̂_y`` (K×K) and
``Σ̂_ξ`` (D×D) be their sample covariances, ``B̂`` (K×D) the least-squares regression of the
outputs on the inputs, and Q (r×D) an orthonormal basis of the row space of ``B̂`` (its top-r
right singular vectors). Then

    log LVR_ε(x) = ½ Σ_{k≤r} log λ_k(Σ̂_y) − ½ log det(Q Σ̂_ξ Qᵀ),

the log ratio of the output volume to the volume of the input noise projected onto the
directions f responds to ("projected appropriately": for K ≥ D that is all of R^D).

Why it converges to the Jacobian form. If f is linear near x, ``y_j − ȳ = J(ξ_j − ξ̄)``
exactly, so ``Σ̂_y = J Σ̂_ξ Jᵀ``, ``B̂ = J`` and, with the thin SVD ``J = U S V_rᵀ``,
``∏_{k≤r} λ_k(J Σ̂_ξ Jᵀ) = det(S²) det(V_rᵀ Σ̂_ξ V_r)``: the noise cancels and
``log LVR_ε = Σ_k log σ_k(J)`` for every m > D, with no Monte Carlo error. For smooth f the
linearisation error is O(ε), so ``log LVR_ε → log LVR`` as ε → 0 (tested). At a finite ε the
value differs from the Jacobian form by the curvature of f at the scale ε; as m → ∞ it tends
to the population quantity ``½ Σ_{k≤r} log λ_k(Cov f(x+ξ)) − r log ε`` (Q then spans the
population regression's row space, and ``Q Σ̂_ξ Qᵀ → ε² I_r``).

A rank-deficient J gives λ_r(Σ̂_y) of order ε⁴ instead of ε², so the value tends to −∞, as the
Jacobian form does.

The data-set mean (quantity ``lvr.finite_perturbation``) is reported with a statistical
interval: R independent replicates, each on an independent uniform subset of at most
:data:`MAX_SAMPLES` samples (all of them when n is smaller) with independent noise; their
means are averaged and a Student-t interval is put around the average (coverage tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy import stats

from boundcheck.core.estimate import Estimate

MAX_SAMPLES = 256  # samples per replicate
REPLICATES = 5
CHUNK_ELEMENTS = 2**22  # input entries per forward pass


def perturbations_for(dim: int) -> int:
    """Default m: enough beyond D for a well-conditioned regression."""
    return 2 * dim + 16


def finite_log_lvr(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float,
                   perturbations: int, generator: torch.Generator) -> torch.Tensor:
    """``log LVR_ε`` of each row of ``x`` (n, *input shape) for ``f`` (batch → (batch, K))."""
    n, shape = x.shape[0], x.shape[1:]
    dim = math.prod(shape)
    m = perturbations
    if m <= dim + 1:
        raise ValueError(f"need more perturbations than input dimensions + 1 (m={m}, D={dim})")
    out = []
    step = max(1, CHUNK_ELEMENTS // (m * dim))
    for start in range(0, n, step):
        xs = x[start:start + step]
        noise = eps * torch.randn((xs.shape[0], m, dim), generator=generator,
                                  dtype=x.dtype).to(x.device)
        with torch.no_grad():
            y = f((xs.reshape(xs.shape[0], 1, dim) + noise).reshape(-1, *shape))
        y = y.reshape(xs.shape[0], m, -1)
        out.append(_log_volume_ratio(noise, y))
    return torch.cat(out)


def _log_volume_ratio(noise: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched ½ Σ_{k≤r} log λ_k(Σ̂_y) − ½ log det(Q Σ̂_ξ Qᵀ) (module docstring)."""
    xi = noise - noise.mean(1, keepdim=True)
    yc = y - y.mean(1, keepdim=True)
    m, dim, k = xi.shape[1], xi.shape[2], yc.shape[2]
    r = min(k, dim)
    coef = torch.linalg.lstsq(xi, yc).solution  # (b, D, K) = B̂ᵀ
    basis = torch.linalg.svd(coef, full_matrices=False).U[:, :, :r]  # (b, D, r)
    cov_y = yc.transpose(1, 2) @ yc / (m - 1)
    proj = xi @ basis
    cov_in = proj.transpose(1, 2) @ proj / (m - 1)
    top = torch.linalg.eigvalsh(cov_y)[:, -r:]
    logs = torch.where(top > 0, torch.log(top.clamp_min(torch.finfo(top.dtype).tiny)),
                       torch.full_like(top, -math.inf))
    return 0.5 * (logs.sum(1) - torch.linalg.slogdet(cov_in).logabsdet)


def finite_log_lvr_mean(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float,
                        confidence: float, seed: int, perturbations: int | None = None,
                        replicates: int = REPLICATES, max_samples: int = MAX_SAMPLES
                        ) -> Estimate:
    """(1/n) Σ_i log LVR_ε(x_i) with a Student-t interval over independent replicates."""
    if replicates < 2:
        raise ValueError("the interval needs at least two replicates")
    n, dim = x.shape[0], math.prod(x.shape[1:])
    m = perturbations or perturbations_for(dim)
    gen = torch.Generator().manual_seed(seed)
    means = []
    for _ in range(replicates):
        rows = torch.randperm(n, generator=gen)[:max_samples] if n > max_samples else \
            torch.arange(n)
        means.append(float(finite_log_lvr(f, x[rows.to(x.device)], eps, m, gen).mean()))
    method = (f"Monte Carlo, Gaussian noise ε = {eps:g}, m = {m} perturbations, "
              f"{replicates} replicates of ≤ {max_samples} samples, Student-t interval")
    details = {"eps": eps, "perturbations": m, "replicates": means}
    value = sum(means) / replicates
    if not all(math.isfinite(v) for v in means):
        if all(v == -math.inf for v in means):
            return Estimate(-math.inf, -math.inf, -math.inf, "statistical", method, confidence,
                            details)
        return Estimate(-math.inf, -math.inf, math.inf, "statistical", method, confidence,
                        details)
    sd = math.sqrt(sum((v - value) ** 2 for v in means) / (replicates - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, replicates - 1)) * sd / math.sqrt(replicates)
    half += 64 * torch.finfo(x.dtype).eps * max(1.0, abs(value))
    return Estimate(value, value - half, value + half, "statistical", method, confidence, details)
