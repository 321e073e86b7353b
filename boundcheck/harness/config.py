"""Run configurations: what to train, what to verify, with which budgets, and what to sweep.

A config is a plain dict / TOML file::

    name = "digits-mlp"
    theorems = ["hessian.ws"]          # ids or family prefixes; omit for all
    confidence = 0.99
    seed = 0                           # seed of the measurement (stochastic estimators)
    device = "cpu"                     # or "cuda"; training and measurement run there

    [subject]
    dataset = "digits"                 # see boundcheck.harness.data.DATASETS
    n_samples = 1797                   # subsample (bundled, local) / sample count (synthetic)
    model = "mlp"                      # see boundcheck.harness.zoo.ARCHITECTURES
    hidden = [32]                      # shorthands for model_options.hidden / activation /
    activation = "tanh"                #   bias; unset: the architecture's default
    bias = true
    loss = "cross_entropy"             # or "mse", "mse:0.5"
    seed = 0                           # seeds the initialisation and the data
    data_root = "~/data"               # folder of mnist / fashion_mnist / cifar10

    [subject.model_options]            # any option of the architecture (boundcheck.harness.zoo)
    [subject.dataset_options]          # options of the data set (e.g. dim, classes, rho)

    [recipe]                           # boundcheck.harness.training.Recipe fields
    optimizer = "gd"
    lr = 0.5
    momentum = 0.9
    steps = 3000
    target_loss = 1e-3
    checkpoints = [0, 100, 1000]       # also measure at these steps (the end always)

    [budget]                           # boundcheck.quantities.Budget fields
    max_dense_params = 6000

    [sweep.grid]                       # every combination (dotted paths into this config)
    "recipe.lr" = [0.05, 0.1]
    "recipe.batch_size" = [32, 1797]
    [[sweep.list]]                     # and/or explicit variants (each crossed with the grid)
    "subject.model" = "lenet"
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boundcheck.core import checks
from boundcheck.harness.training import Recipe
from boundcheck.quantities import Budget

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHORTHANDS = ("hidden", "activation", "bias")


@dataclass
class SubjectConfig:
    dataset: str = "digits"
    n_samples: int | None = None
    model: str = "mlp"
    hidden: list[int] | None = None
    activation: str | None = None
    bias: bool | None = None
    loss: str = "cross_entropy"
    seed: int = 0
    data_root: str | None = None
    test_fraction: float = 0.0  # held out (seeded split) as test data; 0: none (T11c N/A)
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    product_dtype: str | None = None  # "float32"/"bfloat16": Hessian-vector products in it
    # (bc.Subject's product_dtype: calibrated error model, float64 accumulation); None: float64

    def __post_init__(self) -> None:
        for key in ("dataset", "model", "loss"):
            checks.text(getattr(self, key), f"subject.{key}")
        if self.n_samples is not None:
            checks.integer(self.n_samples, "subject.n_samples", least=1)
        if self.hidden is not None:
            if not isinstance(self.hidden, list):  # [] is allowed: no hidden dense layer
                raise ValueError(f"subject.hidden must be a list of layer widths, e.g. [32], "
                                 f"got {self.hidden!r}")
            for width in self.hidden:
                checks.integer(width, "each width in subject.hidden", least=1)
        for key in ("activation", "data_root", "product_dtype"):
            if getattr(self, key) is not None:
                checks.text(getattr(self, key), f"subject.{key}")
        if self.bias is not None:
            checks.flag(self.bias, "subject.bias")
        checks.integer(self.seed, "subject.seed")
        for key in ("model_options", "dataset_options"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"subject.{key} must be a table, got {getattr(self, key)!r}")

    def model_config(self) -> dict[str, Any]:
        """The config :func:`boundcheck.harness.zoo.build_model` takes."""
        shorthands = {k: getattr(self, k) for k in SHORTHANDS if getattr(self, k) is not None}
        both = sorted(set(shorthands) & set(self.model_options))
        if both:
            raise ValueError(f"[subject] sets {both} both directly and in model_options")
        return {"model": self.model, "seed": self.seed, **shorthands, **self.model_options}


@dataclass
class SweepSpec:
    """A grid (every combination of the listed values) crossed with a list of variants; keys
    are dotted paths into the run config, e.g. ``"recipe.lr"``."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        unknown = set(d) - {"grid", "list"}
        if unknown:
            raise ValueError(f"unknown [sweep] keys {sorted(unknown)}; known: grid, list")
        grid = flatten_paths(d.get("grid", {}))
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.grid.{key} must be a non-empty list of values")
        cases = d.get("list", [])
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise ValueError("sweep.list must be a list of tables ([[sweep.list]])")
        return cls(grid, [flatten_paths(c) for c in cases])

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "list": self.cases}


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
    device: str = "cpu"
    sweep: SweepSpec | None = None
    experiment: str | None = None  # a module in boundcheck.harness.experiments, run after the sweep
    record: list[str] = field(default_factory=list)  # quantities kept at every checkpoint

    def __post_init__(self) -> None:
        checks.text(self.name, "name")
        if self.theorems is not None and not isinstance(self.theorems, str) and not (
                isinstance(self.theorems, list) and all(isinstance(t, str)
                                                        for t in self.theorems)):
            raise ValueError(f"theorems must be a list of theorem ids or family prefixes, got "
                             f"{self.theorems!r}")
        checks.confidence(self.confidence)
        checks.integer(self.seed, "seed")
        checks.text(self.device, "device")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        base = cls()
        sweep = d.get("sweep")
        return cls(
            name=d.get("name", base.name),
            subject=_sub(SubjectConfig, d.get("subject", {}), "subject"),
            recipe=_sub(Recipe, {**dataclasses.asdict(base.recipe), **_table(d, "recipe")},
                        "recipe"),
            budget=_sub(Budget, d.get("budget", {}), "budget"),
            theorems=d.get("theorems", base.theorems),
            confidence=d.get("confidence", base.confidence),
            seed=d.get("seed", base.seed),
            device=d.get("device", base.device),
            sweep=SweepSpec.from_dict(sweep) if sweep else None,
            experiment=_experiment(d.get("experiment")),
            record=[str(q) for q in d.get("record", [])],
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
        d = dataclasses.asdict(self)
        d["sweep"] = self.sweep.to_dict() if self.sweep else None
        return d

    def validate(self) -> RunConfig:
        """Raise a clear error, before any work, for theorem ids that match nothing and for
        a model or model options the zoo does not know. Returns the config."""
        from boundcheck.harness.zoo import check_options
        from boundcheck.verification.registry import select

        select(self.theorems)  # UnknownTheoremError (with suggestions) for an unknown id
        options = self.subject.model_config()
        check_options(options.pop("model"), {k: v for k, v in options.items() if k != "seed"})
        return self

    def digest(self) -> str:
        """A short hash identifying what is computed (the sweep and the device excluded), for
        provenance, and as the job id of a sweep."""
        d = self.to_dict()
        del d["sweep"], d["device"], d["experiment"]
        # the model as built: shorthands and model_options merged over the architecture's
        # defaults, so a config that spells out a default hashes like one that omits it
        from boundcheck.harness.zoo import architecture

        subject = d["subject"]
        model = {**architecture(self.subject.model).options, **self.subject.model_config()}
        for key in (*SHORTHANDS, "model_options"):
            subject.pop(key)
        subject["model_options"] = {k: v for k, v in model.items() if k not in ("model", "seed")}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def flatten_paths(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"recipe": {"lr": x}}`` and ``{"recipe.lr": x}`` both become ``{"recipe.lr": x}``
    (so a sweep sets single values and merges tables key by key; lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_paths(value, path + "."))
        else:
            out[path] = value
    return out


def set_path(d: dict[str, Any], path: str, value: Any) -> None:
    """Set ``d["a"]["b"] = value`` for ``path = "a.b"``, creating tables on the way."""
    *parents, last = path.split(".")
    node = d
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {path!r}: {key!r} is not a table")
        node = child
    node[last] = value


def _table(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"[{key}] must be a table, got {value!r}")
    return value


def _sub(kind, values: Any, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"[{where}] must be a table, got {values!r}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown [{where}] keys {sorted(unknown)}; known: {sorted(names)}")
    return kind(**values)


EXPERIMENTS = ("compression",)


def _experiment(name: Any) -> str | None:
    if name is None:
        return None
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return str(name)
