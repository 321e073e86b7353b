"""T2 at depth L, soundness stress: Wolkowicz–Styan over the closed-form traces (Tier A) and the
Tier B bounds (norms only, and with the confidence gap) against the true λ_max of the exact
layer-block Hessian, over random cases: depth 1–4, widths 2–64, K 2–20, ρ in [0, 0.999],
random and saturated parameters, every smooth σ (tanh, sigmoid, softplus β ∈ {1, 3}, GELU).

    python benchmarks/stress_closed_form_depth.py [--cases 10000] [--seed 0] [--out FILE.json]

A case fails when a bound's value is below λ_max − 1e-9·max(1, |λ_max|) (the exact route's
and the closed form's rounding are far below that). Also records the Tier B / λ_max slack by
depth. Parameters count is capped (P ≤ 1000) so the dense eigendecomposition stays cheap.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
from torch import nn

import boundcheck as bc
from boundcheck.engines import closed_form as cf
from boundcheck.engines import closed_form_depth as cd
from boundcheck.engines.sequential_hessian import exact_dense_hessian
from boundcheck.verification.results import write_json_atomic

ACTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus,
        "softplus3": lambda: nn.Softplus(beta=3.0), "gelu": nn.GELU}
MAX_PARAMS = 1000


def draw(r: np.random.Generator):
    """One random case: (subject, description)."""
    while True:
        depth = int(r.integers(1, 5))
        d = int(r.integers(2, 9))
        hs = [int(r.integers(2, 65)) if r.random() < 0.3 else int(r.integers(2, 12))
              for _ in range(depth)]
        k = int(r.integers(2, 21))
        bias = bool(r.integers(2))
        sizes = [d, *hs, k]
        p = sum((sizes[i] + bias) * sizes[i + 1] for i in range(depth + 1))
        if p <= MAX_PARAMS:
            break
    act = list(ACTS)[int(r.integers(len(ACTS)))]
    mods = []
    for i in range(depth + 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < depth:
            mods.append(ACTS[act]())
    net = nn.Sequential(*mods).double()
    regime = ["random", "large", "saturated"][int(r.integers(3))]
    torch.manual_seed(int(r.integers(1 << 30)))
    with torch.no_grad():
        for lin in net[::2]:
            lin.weight.normal_(0, float(r.choice([0.5, 1.0, 2.0])) / math.sqrt(lin.in_features))
            if lin.bias is not None:
                lin.bias.normal_(0, 0.5)
        if regime == "large":
            for prm in net.parameters():
                prm.mul_(3.0)
        if regime == "saturated":
            net[-1].weight.mul_(40.0)
    n = int(r.integers(2, 17))
    rho = float(r.choice([0.0, float(r.uniform(0, 1)), 0.9, 0.99, 0.999]))
    common = r.normal(size=d)
    x = math.sqrt(rho) * common + math.sqrt(1 - rho) * r.normal(size=(n, d))
    x *= float(r.choice([0.3, 1.0, 3.0]))
    xt = torch.tensor(x)
    with torch.no_grad():
        logits = net(xt)
    # saturated: mostly the predicted class (p_y → 1), sometimes random labels (p_y → 0)
    y = logits.argmax(1) if regime == "saturated" and r.random() < 0.7 else torch.tensor(
        r.integers(k, size=n))
    subject = bc.Subject(net, (xt, y), "cross_entropy")
    return subject, {"depth": depth, "widths": sizes, "act": act, "bias": bias, "n": n,
                     "rho": rho, "regime": regime, "P": p}


def run(cases: int, seed: int, out: str | None = None, every: int = 200) -> dict:
    """``cases`` random cases; with ``out``, the summary so far is written there every
    ``every`` cases (so an interrupted run still counts what it checked)."""
    r = np.random.default_rng(seed)
    fails, slack = [], {}
    start = time.perf_counter()
    for case in range(cases):
        subject, info = draw(r)
        hess = exact_dense_hessian(subject)
        lam = float(torch.linalg.eigvalsh(hess.matrix)[-1])
        tol = 1e-9 * max(1.0, abs(lam))
        if info["depth"] == 1:
            net = cf.two_layer_net(subject)
            t = cf.closed_form_traces(net, *cf.subject_data(subject), with_errors=False)
        else:
            t = cd.subject_deep_traces(subject, with_errors=False)
        ws = cf.ws_upper(t.trace, t.fro2, subject.num_params)
        tb = cd.deep_tier_b_point(subject)
        tbs = cd.deep_tier_b_point(subject, saturation=True)
        for name, bound in (("ws_tier_a", ws), ("tier_b", tb), ("tier_b_sat", tbs)):
            if not bound >= lam - tol:
                fails.append({**info, "case": case, "bound": name, "value": bound,
                              "lambda_max": lam})
        if lam > 1e-12:
            slack.setdefault(info["depth"], []).append(
                {"ws": ws / lam, "tb": tb / lam, "tbs": tbs / lam, "regime": info["regime"]})
        if out and (case + 1) % every == 0:
            write_json_atomic(out, _summary(case + 1, seed, fails, slack, start))
    return _summary(cases, seed, fails, slack, start)


def _summary(cases: int, seed: int, fails: list, slack: dict, start: float) -> dict:
    table = {}
    for depth, rows in sorted(slack.items()):
        random_rows = [x for x in rows if x["regime"] != "saturated"]
        table[depth] = {
            "cases": len(rows),
            "ws_median": statistics.median(x["ws"] for x in rows),
            "tier_b_median": statistics.median(x["tb"] for x in rows),
            "tier_b_median_unsaturated": statistics.median(x["tb"] for x in random_rows)
            if random_rows else None,
            "tier_b_sat_median": statistics.median(x["tbs"] for x in rows)}
    return {"cases": cases, "seed": seed, "failures": len(fails), "failed": fails[:50],
            "slack_by_depth": table, "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = run(args.cases, args.seed, args.out)
    print(json.dumps({k: v for k, v in out.items() if k != "failed"}, indent=1))
    if out["failed"]:
        print(json.dumps(out["failed"][:5], indent=1))
    if args.out:
        write_json_atomic(args.out, out)


if __name__ == "__main__":
    main()
