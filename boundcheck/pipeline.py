"""One run end to end: build the subject from a config, train it, verify, write the outputs."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import torch

from . import data as datasets
from . import models
from .api import verify
from .config import RunConfig
from .results import Results
from .subject import Subject
from .training import train


def build_model(cfg: RunConfig, input_dim: int, output_dim: int) -> torch.nn.Module:
    s = cfg.subject
    if s.model != "mlp":
        raise ValueError(f"unknown model {s.model!r} (available: mlp)")
    return models.mlp([input_dim, *s.hidden, output_dim], s.activation, s.bias, seed=s.seed)


def load_data(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    s = cfg.subject
    return datasets.bundled(s.dataset, n=s.n_samples, seed=s.seed)


def training_targets(y: torch.Tensor, loss: str, k: int) -> torch.Tensor:
    """Class labels for cross-entropy; one-hot targets for MSE."""
    if loss.startswith("mse"):
        return torch.nn.functional.one_hot(y, k).to(torch.float32)
    return y


def run(cfg: RunConfig, out_dir: str | Path | None = None, *, progress: bool = True,
        pdf: bool = True, log=print) -> tuple[Results, Path]:
    """Train, verify and write ``results.json`` and ``report.tex`` (+ PDF) into ``out_dir``."""
    out = Path(out_dir) if out_dir else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = load_data(cfg)
    k = int(y.max()) + 1
    targets = training_targets(y, cfg.subject.loss, k)
    net = build_model(cfg, x.shape[1], k)
    log(f"training {cfg.name}: {sum(p.numel() for p in net.parameters())} parameters on "
        f"{cfg.subject.dataset} (n={len(x)})")
    info = train(net, x, targets, cfg.subject.loss, cfg.recipe, progress=progress)
    log(f"  {info['steps']} steps, final loss {info['final_loss']:.3g} "
        f"({info['seconds']:.1f} s)")
    subject = Subject(net, (x, targets), cfg.subject.loss, name=cfg.name)
    log("verifying ...")
    results = verify(subject, cfg.theorems, confidence=cfg.confidence, seed=cfg.seed,
                     budget=cfg.budget)
    results.training = {k_: v for k_, v in info.items() if k_ != "history"}
    results.training["history"] = info["history"]
    results.provenance.update(config=cfg.to_dict(), config_hash=cfg.digest(),
                              device=str(subject.device), seeds={"subject": cfg.subject.seed,
                                                                 "recipe": cfg.recipe.seed,
                                                                 "verify": cfg.seed},
                              total_s=time.perf_counter() - started)
    results.save(out / "results.json")
    from .report import write_report

    write_report([results], out / "report.tex", pdf=pdf, log=log)
    return results, out


def default_out_dir() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / stamp

