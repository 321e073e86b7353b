"""Training recipes: full-batch GD, SGD (with momentum) and Adam, seeded, with a progress bar.

Training runs in the model's own dtype (float32 by default); measurement later works on a
float64 copy. Stops at ``target_loss`` or after ``steps`` steps, whichever comes first.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .losses import make_loss, resolve_for_output


@dataclass
class Recipe:
    optimizer: str = "gd"  # "gd" (full batch), "sgd", "adam"
    lr: float = 0.1
    momentum: float = 0.0
    batch_size: int | None = None  # None: full batch
    steps: int = 1000
    target_loss: float | None = None
    seed: int = 0
    log_every: int = 50


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss="cross_entropy",
          recipe: Recipe | None = None, progress: bool = True) -> dict:
    """Train ``model`` in place; returns a summary (losses along the way, steps, time)."""
    recipe = recipe or Recipe()
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"training data must be non-empty and matched: X {tuple(x.shape)}, "
                         f"Y {tuple(y.shape)}")
    torch.manual_seed(recipe.seed)
    with torch.no_grad():
        k = model(x[:1]).shape[-1]
    loss_fn = resolve_for_output(make_loss(loss), k)
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer in ("gd", "sgd"):
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum)
    elif recipe.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=recipe.lr)
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}: gd, sgd or adam")
    n = x.shape[0]
    batch = n if recipe.optimizer == "gd" or not recipe.batch_size else min(recipe.batch_size, n)
    gen = torch.Generator().manual_seed(recipe.seed)
    history: list[tuple[int, float]] = []
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=recipe.steps, disable=not progress, desc="training", unit="step",
               leave=False)
    full_loss = float("nan")
    step = 0
    try:
        for step in range(1, recipe.steps + 1):
            idx = torch.randperm(n, generator=gen)[:batch] if batch < n else slice(None)
            opt.zero_grad(set_to_none=True)
            batch_loss = loss_fn.mean(model(x[idx]), y[idx])
            if not torch.isfinite(batch_loss):
                raise FloatingPointError(f"training diverged at step {step} (loss "
                                         f"{float(batch_loss)}); lower the learning rate")
            batch_loss.backward()
            opt.step()
            if step % recipe.log_every == 0 or step == recipe.steps:
                full_loss = _full_loss(model, x, y, loss_fn)
                history.append((step, full_loss))
                bar.set_postfix(loss=f"{full_loss:.3g}")
                if recipe.target_loss is not None and full_loss <= recipe.target_loss:
                    bar.update(step - bar.n)
                    break
            bar.update(1)
    finally:
        bar.close()
        model.eval()
    full_loss = _full_loss(model, x, y, loss_fn)
    return {"recipe": asdict(recipe), "steps": step, "final_loss": full_loss,
            "history": history, "seconds": time.perf_counter() - start,
            "reached_target": recipe.target_loss is not None and full_loss <= recipe.target_loss}


def _full_loss(model, x, y, loss_fn) -> float:
    with torch.no_grad():
        return float(loss_fn.mean(model(x), y))
