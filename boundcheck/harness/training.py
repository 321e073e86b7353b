"""Training recipes: full-batch GD, SGD (with momentum) and Adam, seeded, with a progress bar.

Training runs in the model's own dtype (float32 by default) on ``device``; measurement later
works on a float64 copy. Stops at ``target_loss`` or after ``steps`` steps, whichever comes
first. ``on_checkpoint(step, model)`` is called at each step listed in ``recipe.checkpoints``
(0 = the initialisation) and once more at the end, so quantities can be tracked along
training. On CPU with one thread, the same seed gives bit-identical runs.

Full-batch GD (optimizer "gd") also records, for every step t = 0..T, the loss ``L(θ_t)`` and
the gradient norm ``‖∇L(θ_t)‖`` of the step it takes (one more gradient at θ_T at the end):
the :class:`boundcheck.core.trajectory.Trajectory` that T10's convergence precondition reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from boundcheck.core import checks
from boundcheck.core.estimate import UNIT_ROUNDOFF
from boundcheck.core.losses import make_loss, resolve_for_output
from boundcheck.core.trajectory import Trajectory

OPTIMIZERS = ("gd", "sgd", "adam")


@dataclass
class Recipe:
    optimizer: str = "gd"  # "gd" (full batch), "sgd", "adam"
    lr: float = 0.1
    momentum: float = 0.0  # heavy-ball momentum for gd / sgd
    batch_size: int | None = None  # None: full batch
    steps: int = 1000
    target_loss: float | None = None
    seed: int = 0
    log_every: int = 50
    checkpoints: list[int] = field(default_factory=list)  # steps at which to measure

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: gd, sgd or adam")
        checks.real(self.lr, "recipe.lr", above=0.0)
        checks.real(self.momentum, "recipe.momentum", at_least=0.0)
        if self.batch_size is not None:
            checks.integer(self.batch_size, "recipe.batch_size (or unset: full batch)", least=1)
        checks.integer(self.steps, "recipe.steps", least=0)
        if self.target_loss is not None:
            checks.real(self.target_loss, "recipe.target_loss", at_least=0.0)
        checks.integer(self.seed, "recipe.seed")
        checks.integer(self.log_every, "recipe.log_every", least=1)
        if not isinstance(self.checkpoints, (list, tuple)):
            raise ValueError(f"recipe.checkpoints must be a list of steps, got "
                             f"{self.checkpoints!r}")
        for s in self.checkpoints:
            checks.integer(s, "each of recipe.checkpoints")
        bad = [s for s in self.checkpoints if not 0 <= s <= self.steps]
        if bad:
            raise ValueError(f"checkpoints {bad} lie outside [0, steps={self.steps}]")
        self.checkpoints = sorted({int(s) for s in self.checkpoints})


Checkpoint = Callable[[int, nn.Module], None]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss="cross_entropy",
          recipe: Recipe | None = None, progress: bool = True, *,
          device: str | torch.device | None = None,
          on_checkpoint: Checkpoint | None = None) -> dict:
    """Train ``model`` in place (moved to ``device`` when given; left in eval mode).

    Returns a summary: recipe, steps taken, final loss, the loss history, seconds, whether
    the target was reached, ``checkpoints``: [(step, full-data loss)] for each call of
    ``on_checkpoint``, and for full-batch GD ``trajectory``: the per-step
    :class:`~boundcheck.core.trajectory.Trajectory` (else None) and
    ``gradient_norm_history``: [(step, ‖∇L(θ_step)‖)] every ``log_every`` steps.
    """
    recipe = recipe or Recipe()
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"training data must be non-empty and matched: X {tuple(x.shape)}, "
                         f"Y {tuple(y.shape)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if device is not None:
        model.to(device)
    x, y = _to_model(x, params[0]), _to_model(y, params[0])
    torch.manual_seed(recipe.seed)
    with torch.no_grad():
        k = model(x[:1]).shape[-1]
    loss_fn = resolve_for_output(make_loss(loss), k)
    if recipe.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=recipe.lr)
    else:
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum)
    n = x.shape[0]
    batch = n if recipe.optimizer == "gd" or not recipe.batch_size else min(recipe.batch_size, n)
    gen = torch.Generator().manual_seed(recipe.seed)
    history: list[tuple[int, float]] = []
    checkpoints: list[tuple[int, float]] = []
    full_batch = batch == n
    # ‖∇L(θ_t)‖ and L(θ_t) of every full-batch step, kept on the device (no per-step sync)
    record = torch.full((2, recipe.steps + 1), float("nan"), device=x.device,
                        dtype=torch.float32 if x.device.type == "mps" else torch.float64) \
        if full_batch else None

    def checkpoint(step: int) -> None:
        loss_now = _full_loss(model, x, y, loss_fn)
        checkpoints.append((step, loss_now))
        if on_checkpoint is not None:
            model.eval()
            try:
                on_checkpoint(step, model)
            finally:
                model.train()

    model.train()
    start = time.perf_counter()
    bar = tqdm(total=recipe.steps, disable=not progress, desc="training", unit="step",
               leave=False)
    step = 0
    try:
        if 0 in recipe.checkpoints:
            checkpoint(0)
        for step in range(1, recipe.steps + 1):
            idx = torch.randperm(n, generator=gen)[:batch].to(x.device) if batch < n else \
                slice(None)
            opt.zero_grad(set_to_none=True)
            batch_loss = loss_fn.mean(model(x[idx]), y[idx])
            if not torch.isfinite(batch_loss):
                raise FloatingPointError(f"training diverged at step {step} (loss "
                                         f"{batch_loss.item()}); lower the learning rate")
            batch_loss.backward()
            if record is not None:
                record[0, step - 1] = _gradient_norm(params, record.dtype)
                record[1, step - 1] = batch_loss.detach()
            opt.step()
            bar.update(1)
            if step in recipe.checkpoints and step != recipe.steps:
                checkpoint(step)
            if step % recipe.log_every == 0 or step == recipe.steps:
                full_loss = _full_loss(model, x, y, loss_fn)
                history.append((step, full_loss))
                bar.set_postfix(loss=f"{full_loss:.3g}")
                if recipe.target_loss is not None and full_loss <= recipe.target_loss:
                    break
        if not checkpoints or checkpoints[-1][0] != step:
            checkpoint(step)
        if record is not None:  # the gradient at θ_T, where the subject is measured
            opt.zero_grad(set_to_none=True)
            final_loss = loss_fn.mean(model(x), y)
            final_loss.backward()
            record[0, step], record[1, step] = (_gradient_norm(params, record.dtype),
                                                final_loss.detach())
            opt.zero_grad(set_to_none=True)
    finally:
        bar.close()
        model.eval()
    full_loss = checkpoints[-1][1]
    if not torch.isfinite(torch.tensor(full_loss)):
        raise FloatingPointError(f"training diverged: the final loss is {full_loss}")
    trajectory = None
    grad_history: list[tuple[int, float]] = []
    dtype = str(params[0].dtype).replace("torch.", "")
    if record is not None and dtype in UNIT_ROUNDOFF:  # (half precision: no rounding model)
        norms, losses = record[:, :step + 1].cpu().tolist()
        trajectory = Trajectory.from_history(recipe.optimizer, recipe.lr, recipe.momentum,
                                             full_batch, dtype, norms, losses)
        grad_history = [(t, norms[t]) for t, _ in history]
    return {"recipe": asdict(recipe), "steps": step, "final_loss": full_loss,
            "history": history, "checkpoints": checkpoints,
            "seconds": time.perf_counter() - start,
            "reached_target": recipe.target_loss is not None and full_loss <= recipe.target_loss,
            "trajectory": trajectory, "gradient_norm_history": grad_history}


def _gradient_norm(params: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """‖∇L‖ of the gradients in ``.grad``, accumulated in ``dtype`` (float64 except on MPS)."""
    return torch.sqrt(sum(p.grad.detach().to(dtype).pow(2).sum() for p in params
                          if p.grad is not None))


def _to_model(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t).to(like.device)
    return t.to(like.dtype) if t.is_floating_point() else t


def _full_loss(model, x, y, loss_fn) -> float:
    """The loss on all the data in eval mode (what is measured; batch-norm statistics are
    left alone)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(loss_fn.mean(model(x), y))
    finally:
        model.train(was_training)
