"""Is a labelled training set separated by the network's last affine layer? (An LP.)

For cross-entropy with an output layer ``z = W h + b`` (nothing after it), write
``h̃ = (h, 1)``. If some affine map ``V`` has ``(v_y − v_k)·h̃_i > 0`` for every sample i and
class k ≠ y_i, then ``d/dα L(W + αV_W, b + αV_b)`` at α = 0 equals
``(1/n) Σ_i Σ_{k≠y_i} p_ik ((V h̃_i)_k − (V h̃_i)_{y_i}) < 0`` (``p_ik > 0`` always): the
gradient is non-zero. The condition is open in h, and h is continuous in θ, so no critical
point lies near θ, and GD cannot be converging to a finite critical point there (the loss
decreases towards 0 only as ‖θ‖ → ∞; Soudry et al., "The implicit bias of gradient descent on
separable data", JMLR 2018).

:func:`separation_margin` decides it by the LP ``max t`` s.t. ``(v_{y_i} − v_k)·h̃_i ≥ t`` for
all i, k ≠ y_i, ``|V| ≤ 1`` entrywise, ``t ≤ 1`` (scipy's HiGHS), on features scaled to
max |h̃| = 1 (a positive rescaling changes no sign). Separation is only *claimed* from a
witness: the LP's V is re-checked in float64 and its smallest margin, less a rounding
allowance, must be > 0. An LP that finds no positive margin claims nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, sparse
from torch import nn

U64 = 2.0**-53


@dataclass(frozen=True)
class Separation:
    """``margin_lower``: a certified lower bound on the witness's smallest margin (> 0 proves
    separation); ``lp_optimum``: the LP's optimal t (≤ 0 up to its tolerance: no separating
    map with |V| ≤ 1 found); margins are in units of the features scaled to max |h̃| = 1."""

    margin_lower: float
    lp_optimum: float
    witness_margin: float
    num_constraints: int
    status: str

    @property
    def separated(self) -> bool:
        return self.margin_lower > 0


def final_affine_inputs(net: nn.Module, xs: list[torch.Tensor]) -> torch.Tensor:
    """The inputs ``h`` (n × d) of the ``nn.Linear`` whose output is the network's output.

    Raises ValueError when the output is not produced by an ``nn.Linear`` call (then the
    scaling argument above does not apply as stated)."""
    captured: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(module, args, output):
        captured[module] = (args[0], output)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.Linear)]
    features = []
    try:
        with torch.no_grad():
            for x in xs:
                captured.clear()
                out = net(x)
                last = [inp for inp, o in captured.values() if o is out]
                if not last or last[0].dim() != 2:
                    raise ValueError("the network's output is not the output of an nn.Linear "
                                     "applied to (batch, features): the last-layer separation "
                                     "check does not apply")
                features.append(last[0].detach().double())
    finally:
        for h in handles:
            h.remove()
    return torch.cat(features)


def separation_margin(h: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Separation:
    """Certified separation of classes ``labels`` by an affine map of the rows of ``h``."""
    feats = h.detach().cpu().double().numpy()
    y = labels.detach().cpu().numpy().astype(int)
    n, d = feats.shape
    ht = np.hstack([feats, np.ones((n, 1))])
    ht /= np.abs(ht).max()
    k_all = num_classes
    rows_i, rows_k = [], []
    for k in range(k_all):
        mask = y != k
        rows_i.append(np.nonzero(mask)[0])
        rows_k.append(np.full(mask.sum(), k))
    idx_i, idx_k = np.concatenate(rows_i), np.concatenate(rows_k)
    m = len(idx_i)
    if m == 0:  # a single class: every map separates it
        return Separation(np.inf, np.inf, np.inf, 0, "one class")
    width = d + 1
    nvar = k_all * width + 1  # V (row-major by class), then t
    # constraint t − (v_y − v_k)·h̃ ≤ 0, one row per (i, k ≠ y_i)
    row = np.arange(m)
    cols_y = (y[idx_i] * width)[:, None] + np.arange(width)
    cols_k = (idx_k * width)[:, None] + np.arange(width)
    data = np.concatenate([-ht[idx_i].ravel(), ht[idx_i].ravel(), np.ones(m)])
    rr = np.concatenate([np.repeat(row, width), np.repeat(row, width), row])
    cc = np.concatenate([cols_y.ravel(), cols_k.ravel(), np.full(m, nvar - 1)])
    a_ub = sparse.csr_matrix((data, (rr, cc)), shape=(m, nvar))
    cost = np.zeros(nvar)
    cost[-1] = -1.0
    bounds = [(-1.0, 1.0)] * (nvar - 1) + [(None, 1.0)]
    res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(m), bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        return Separation(-np.inf, np.nan, -np.inf, m, f"LP: {res.message}")
    v = res.x[:-1].reshape(k_all, width)
    scores = ht @ v.T  # (n, K)
    margins = scores[idx_i, y[idx_i]] - scores[idx_i, idx_k]
    witness = float(margins.min())
    # each score is a (d+1)-term dot product of |h̃| ≤ 1 and |v| ≤ max|V|: error ≤ γ(d+1)max|V|
    gamma = (width + 2) * U64 / (1 - (width + 2) * U64)
    allowance = 2 * gamma * width * max(1.0, float(np.abs(v).max()))
    return Separation(witness - allowance, float(res.x[-1]), witness, m, res.message)
