"""Searching for a counterexample to a theorem, or for its tightest instance (issue 12).

The objective is the verify slack itself, so every registered theorem (and every planted
variant, :mod:`boundcheck.harness.planted`) can be searched without a differentiable
surrogate: ``score = lhs − rhs`` for difference-slack bounds, ``log(lhs / rhs)`` for ratio
bounds, on the point values of :func:`boundcheck.verify`; ``score > 0`` means violated at the
point values, and only a certified VIOLATED verdict is called a counterexample.

This module holds the derivative-free local search over the parameters *and* inputs of small
subjects (a (1+1) evolution strategy with the 1/5th success rule and random restarts, Rechenberg
1973 / Auger & Hansen 2011), and the reproducible subject files. The hypothesis-driven search
over architectures, spectra and data, and the ``falsify`` entry point, are in
:mod:`boundcheck.outputs.falsify` (they use :mod:`boundcheck.outputs.strategies`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from boundcheck.core.subject import InvalidSubjectError, MatrixSubject, Subject
from boundcheck.core.theorem import Theorem
from boundcheck.core.verdict import TheoremResult, Verdict
from boundcheck.harness.zoo.mlp import ACTIVATIONS, mlp
from boundcheck.quantities import Budget
from boundcheck.verification.api import verify
from boundcheck.verification.results import write_json_atomic


@dataclass
class Instance:
    """One evaluated subject: its verdict, score (> 0: violated at the point values) and the
    search that found it."""

    subject: Any
    result: TheoremResult
    score: float
    search: str

    @property
    def violated(self) -> bool:
        return self.result.verdict == Verdict.VIOLATED


# The search scores point values and needs no refinement rounds (a VIOLATED without them is
# certified at the full confidence); the final re-verification uses the default budget.
SEARCH_BUDGET = Budget(max_refinements=0)


@dataclass
class Tracker:
    """The best instance so far, the evaluation count and the deadline of one search."""

    theorem: Theorem
    deadline: float
    confidence: float = 0.99
    seed: int = 0
    best: Instance | None = None
    evaluations: int = 0
    applicable: int = 0
    by_search: dict[str, int] = field(default_factory=dict)
    crashes: dict[str, str] = field(default_factory=dict)  # message -> where first seen

    def out_of_time(self) -> bool:
        """Checked between evaluations: one evaluation (a T12 SDP bisection) may overrun."""
        return time.monotonic() >= self.deadline

    def evaluate(self, subject, search: str) -> Instance | None:
        """Verify the theorem on ``subject``; None if it does not apply or cannot be built."""
        self.evaluations += 1
        self.by_search[search] = self.by_search.get(search, 0) + 1
        try:
            result = verify(subject, [self.theorem], confidence=self.confidence,
                            seed=self.seed, budget=SEARCH_BUDGET)[self.theorem.id]
        except (InvalidSubjectError, ValueError, RuntimeError, FloatingPointError,
                OverflowError, ZeroDivisionError):
            return None  # an unbuildable or unmeasurable point is no candidate
        except (AttributeError, TypeError) as err:  # a crash inside verify: counted, reported
            self.crashes.setdefault(f"{type(err).__name__}: {err}", search)
            return None
        s = score(self.theorem, result)
        if s is None:
            return None
        self.applicable += 1
        inst = Instance(subject, result, s, search)
        if self.best is None or _better(inst, self.best):
            self.best = inst
        return inst


def _better(a: Instance, b: Instance) -> bool:
    """A certified violation beats everything; otherwise the larger score."""
    if a.violated != b.violated:
        return a.violated
    return a.score > b.score


def score(thm: Theorem, result: TheoremResult) -> float | None:
    """``lhs − rhs`` (difference slack) or ``log(lhs/rhs)`` (ratio slack) at the point values;
    None when the theorem did not apply or a side is not a finite number."""
    if result.verdict == Verdict.NOT_APPLICABLE or result.lhs is None or result.rhs is None:
        return None
    lhs, rhs = result.lhs.value, result.rhs.value
    if math.isnan(lhs) or math.isnan(rhs):
        return None
    if lhs == -math.inf:
        return -math.inf
    if not (math.isfinite(lhs) and math.isfinite(rhs)):
        return None
    if thm.slack == "ratio" and lhs > 0 and rhs > 0:
        return math.log(lhs / rhs)
    return lhs - rhs


# -- parametrised subject families: a flat vector θ ↦ a subject ---------------------------
@dataclass(frozen=True)
class Family:
    """Small subjects with every real number in them (weights, inputs, free targets, matrix
    entries) in one vector θ, so a local search can move all of them."""

    name: str
    spec: dict
    dim: int
    build: Callable[[np.ndarray], Any]
    start: Callable[[np.random.Generator], np.ndarray]


def _matrix_family(n: int) -> Family:
    iu = np.triu_indices(n)

    def build(theta: np.ndarray) -> MatrixSubject:
        a = np.zeros((n, n))
        a[iu] = theta
        return MatrixSubject(a + np.triu(a, 1).T, name=f"falsify-matrix-{n}")

    def start(rng: np.random.Generator) -> np.ndarray:
        """Near rank one with either sign (where T1 and T12 are tight), or a GOE matrix."""
        u = rng.standard_normal(n)
        if rng.random() < 0.5:
            a = rng.choice([-1.0, 1.0]) * np.outer(u, u) + 0.1 * rng.standard_normal((n, n))
        else:
            a = rng.standard_normal((n, n))
        return (0.5 * (a + a.T))[iu]

    return Family(f"matrix{n}", {"kind": "matrix", "n": n}, len(iu[0]), build, start)


def _net_family(name: str, sizes: list[int], activation: str, bias: bool, loss: str, n: int,
                targets: str) -> Family:
    """``targets``: "outputs" (Y = f(X), a zero-loss MSE minimum), "free" (Y in θ) or
    "labels" (fixed class labels 0, 1, …)."""
    template = mlp(sizes, activation, bias, seed=0).double()
    shapes = [p.shape for p in template.parameters()]
    n_par = sum(int(np.prod(s)) for s in shapes)
    d, k = sizes[0], sizes[-1]
    dim = n_par + n * d + (n * k if targets == "free" else 0)
    labels = torch.arange(n) % k

    def build(theta: np.ndarray) -> Subject:
        net = mlp(sizes, activation, bias, seed=0).double()
        t = torch.as_tensor(theta, dtype=torch.float64)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(t[:n_par], net.parameters())
            x = t[n_par: n_par + n * d].reshape(n, d).clone()
            if targets == "outputs":
                y = net(x).detach().clone()
            elif targets == "free":
                y = t[n_par + n * d:].reshape(n, k).clone()
            else:
                y = labels
        return Subject(net, (x, y), loss, name=f"falsify-{name}")

    def start(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(dim) * 0.8

    spec = {"kind": "mlp", "sizes": sizes, "activation": activation, "bias": bias,
            "loss": loss, "n": n, "targets": targets}
    return Family(name, spec, dim, build, start)


def families() -> list[Family]:
    """The subject families the local search tries (each kept only where the theorem
    applies): a symmetric matrix, bias-free linear and tanh nets at a zero-loss MSE minimum
    (where T3–T8 are tight), tanh nets off a minimum, and cross-entropy nets (T2, the centred
    T4/T5 forms)."""
    return [
        _matrix_family(4),
        _net_family("mse_linear_min", [3, 1], "tanh", False, "mse", 3, "outputs"),
        _net_family("mse_tanh_min", [3, 3, 2], "tanh", False, "mse", 3, "outputs"),
        _net_family("mse_tanh", [3, 3, 2], "tanh", True, "mse", 3, "free"),
        _net_family("ce_linear", [3, 2], "tanh", False, "cross_entropy", 3, "labels"),
        _net_family("ce_tanh", [2, 3, 3], "tanh", True, "cross_entropy", 3, "labels"),
    ]


def applicable_families(tracker: Tracker, rng: np.random.Generator) -> list[Family]:
    """The families on which the theorem applies at a random starting point (all are probed,
    whatever the deadline)."""
    return [f for f in families()
            if tracker.evaluate(f.build(f.start(rng)), f"probe:{f.name}") is not None]


def local_search(tracker: Tracker, fams: list[Family], rng: np.random.Generator,
                 deadline: float) -> None:
    """(1+1)-ES on θ per family — half the steps on the family with the best score so far,
    half round robin — restarting a family from a fresh random point when its step collapses
    or after ``RESTART_AFTER`` steps without progress; stops at the deadline or at a certified
    violation."""
    if not fams:
        return
    states = [_restart(tracker, f, rng) for f in fams]
    turn = 0
    while time.monotonic() < deadline and not (tracker.best and tracker.best.violated):
        scores = [st[1] if st[1] is not None else -math.inf for st in states]
        if rng.random() < 0.5 and max(scores) > -math.inf:
            i = int(np.argmax(scores))
        else:
            i, turn = turn % len(fams), turn + 1
        fam = fams[i]
        theta, fx, sigma, stale = states[i]
        if fx is None or sigma < 1e-7 or stale > RESTART_AFTER:
            states[i] = _restart(tracker, fam, rng)
            continue
        trial = theta + sigma * rng.standard_normal(fam.dim)
        inst = tracker.evaluate(fam.build(trial), f"local:{fam.name}")
        if inst is not None and inst.score >= fx:
            states[i] = (trial, inst.score, sigma * 1.5, 0 if inst.score > fx else stale + 1)
        else:
            states[i] = (theta, fx, sigma * 1.5 ** -0.25, stale + 1)


RESTART_AFTER = 25


def _restart(tracker: Tracker, fam: Family, rng: np.random.Generator):
    theta = fam.start(rng)
    inst = tracker.evaluate(fam.build(theta), f"local:{fam.name}")
    return theta, (inst.score if inst else None), 0.3, 0


# -- reproducible subject files ----------------------------------------------------------
def _mlp_spec(net: nn.Module) -> dict | None:
    """sizes / activation / bias of an ``nn.Sequential`` MLP as built by ``zoo.mlp``."""
    if not isinstance(net, nn.Sequential):
        return None
    linears = [m for m in net if isinstance(m, nn.Linear)]
    acts = [m for m in net if not isinstance(m, nn.Linear)]
    names = {type(m): k for k, m in ((k, c()) for k, c in ACTIVATIONS.items())}
    kinds = {names.get(type(m)) for m in acts}
    if not linears or None in kinds or len(kinds) > 1:
        return None
    bias = {m.bias is not None for m in linears}
    if len(bias) > 1:
        return None
    return {"sizes": [linears[0].in_features] + [m.out_features for m in linears],
            "activation": kinds.pop() if kinds else "tanh", "bias": bias.pop()}


def save_instance(inst: Instance, theorem: Theorem, theorem_id: str, plant: str | None,
                  confidence: float, seed: int, path: Path) -> dict:
    """Write ``path`` (.pt: tensors only, loadable with ``weights_only=True``) and
    ``path.with_suffix('.json')`` (verdict, score, command); return the JSON record."""
    subj = inst.subject
    if isinstance(subj, MatrixSubject):
        payload = {"kind": "matrix", "matrix": subj.matrix.clone()}
    else:
        spec = _mlp_spec(subj.model)
        if spec is None or not isinstance(subj.loss, str):
            raise ValueError("only MLP subjects with a named loss can be saved")
        x, y = subj.data
        payload = {"kind": "mlp", **spec, "loss": subj.loss,
                   "state": {k: v.detach().clone() for k, v in subj.model.state_dict().items()},
                   "x": torch.as_tensor(x).detach().clone(),
                   "y": torch.as_tensor(y).detach().clone()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    command = f"boundcheck falsify {theorem_id} --replay {path}"
    if plant:
        command += f" --plant '{plant}'"
    command += f" --confidence {confidence} --seed {seed}"
    record = {"theorem": theorem_id, "plant": plant, "subject_file": str(path),
              "search": inst.search, "score": inst.score,
              "score_kind": "log(lhs/rhs)" if theorem.slack == "ratio" else "lhs − rhs",
              "result": inst.result.to_dict(), "subject": subj.describe(),
              "confidence": confidence, "seed": seed, "replay": command}
    write_json_atomic(path.with_suffix(".json"), record)
    return record


def load_instance(path: str | Path):
    """The subject saved by :func:`save_instance`."""
    payload = torch.load(Path(path), weights_only=True)
    if payload.get("kind") == "matrix":
        return MatrixSubject(payload["matrix"], name=f"replay:{Path(path).name}")
    if payload.get("kind") != "mlp":
        raise ValueError(f"{path}: not a boundcheck falsify subject file")
    net = mlp(payload["sizes"], payload["activation"], payload["bias"], seed=0).double()
    net.load_state_dict(payload["state"])
    return Subject(net, (payload["x"], payload["y"]), payload["loss"],
                   name=f"replay:{Path(path).name}")
