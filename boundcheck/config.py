"""Run configurations: what to train, what to verify, with which budgets.

A config is a plain dict / TOML file::

    name = "digits-mlp"
    theorems = ["hessian.ws"]          # ids or family prefixes; omit for all
    confidence = 0.99
    seed = 0

    [subject]
    dataset = "digits"                 # bundled: digits, iris, wine, breast_cancer
    n_samples = 1797                   # optional subsample
    model = "mlp"
    hidden = [32]
    activation = "tanh"
    bias = true
    loss = "cross_entropy"             # or "mse", "mse:0.5"

    [recipe]                           # boundcheck.training.Recipe fields
    optimizer = "gd"
    lr = 0.5
    momentum = 0.9
    steps = 3000
    target_loss = 1e-3

    [budget]                           # boundcheck.quantities.Budget fields
    max_dense_params = 6000
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .quantities import Budget
from .training import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class SubjectConfig:
    dataset: str = "digits"
    n_samples: int | None = None
    model: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [32])
    activation: str = "tanh"
    bias: bool = True
    loss: str = "cross_entropy"
    seed: int = 0


@dataclass
class RunConfig:
    name: str = "digits-mlp"
    subject: SubjectConfig = field(default_factory=SubjectConfig)
    recipe: Recipe = field(default_factory=lambda: Recipe(
        optimizer="gd", lr=0.5, momentum=0.9, steps=3000, target_loss=1e-3))
    budget: Budget = field(default_factory=Budget)
    theorems: list[str] | None = None
    confidence: float = 0.99
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        base = cls()
        return cls(
            name=str(d.get("name", base.name)),
            subject=_sub(SubjectConfig, d.get("subject", {}), "subject"),
            recipe=_sub(Recipe, {**dataclasses.asdict(base.recipe), **d.get("recipe", {})},
                        "recipe"),
            budget=_sub(Budget, d.get("budget", {}), "budget"),
            theorems=d.get("theorems", base.theorems),
            confidence=float(d.get("confidence", base.confidence)),
            seed=int(d.get("seed", base.seed)),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{path}: invalid TOML: {err}") from err
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash identifying this configuration (for provenance and caching)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _sub(kind, values: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown [{where}] keys {sorted(unknown)}; known: {sorted(names)}")
    return kind(**values)
