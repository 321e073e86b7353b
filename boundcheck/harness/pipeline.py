"""One run end to end: build the subject from a config, train it, and verify it at each
checkpoint (writing the outputs is ``boundcheck.outputs.run``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from boundcheck.core.subject import Subject
from boundcheck.harness import data as datasets
from boundcheck.harness import zoo
from boundcheck.harness.config import RunConfig
from boundcheck.harness.training import train
from boundcheck.quantities import Context, NotAffordableError, NotApplicableError
from boundcheck.quantities.projections import loss_surfaces
from boundcheck.verification.api import verify
from boundcheck.verification.registry import select
from boundcheck.verification.results import Results


def prepare(cfg: RunConfig) -> tuple[torch.nn.Module, datasets.DataSet, torch.Tensor]:
    """The untrained model, the data laid out for it, and the training targets."""
    check_device(cfg.device)
    s = cfg.subject
    arch = zoo.architecture(s.model)
    data = datasets.load(s.dataset, n=s.n_samples, seed=s.seed, layout=arch.input_kind,
                         root=s.data_root, **s.dataset_options)
    targets = training_targets(data.y, s.loss, data.num_outputs)
    net = zoo.build_model(s.model_config(), input_shape=tuple(data.x.shape[1:]),
                          output_dim=data.num_outputs)
    return net, data, targets


def split_held_out(x: torch.Tensor, targets: torch.Tensor, fraction: float, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    """Training inputs and targets, and the held-out ``(X, Y)`` (a seeded random
    ``fraction`` of the samples; None when the fraction is 0)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"subject.test_fraction must lie in [0, 1), got {fraction}")
    n_test = int(round(fraction * len(x)))
    if n_test == 0:
        return x, targets, None
    if n_test >= len(x) - 1:
        raise ValueError(f"test_fraction {fraction} leaves fewer than 2 training samples")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = order[n_test:], order[:n_test]
    return x[train], targets[train], (x[test], targets[test])


def record_quantities(ctx: Context, names: list[str]) -> dict[str, dict]:
    """Each named quantity's estimate where it can be measured (``extras.measurements``:
    the report correlates them across checkpoints, e.g. T11a's λ_max vs mean ‖J_x‖_F²)."""
    out: dict[str, dict] = {}
    for name in names:
        try:
            e = ctx.get(name)
            out[name] = e.to_dict()
        except (NotApplicableError, NotAffordableError):
            continue  # not measurable at this checkpoint: no point in the correlation
    return out


def check_device(device: str) -> None:
    """A clear error for a device name torch does not know or a GPU that is not there."""
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} (cpu, cuda, cuda:N, mps): {err}") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here (torch "
                         f"{torch.__version__})")


def training_targets(y: torch.Tensor, loss: str, k: int) -> torch.Tensor:
    """Class labels for cross-entropy; one-hot targets for MSE (regression targets as given)."""
    if y.is_floating_point():
        if not loss.startswith("mse"):
            raise ValueError(f"the data set has real-valued targets: use an MSE loss, not "
                             f"{loss!r}")
        return y
    if loss.startswith("mse"):
        return torch.nn.functional.one_hot(y, k).to(torch.float32)
    return y


def train_and_verify(cfg: RunConfig, *, progress: bool = True,
                     log: Callable[[str], None] = print) -> list[Results]:
    """Train as the config says and verify at every checkpoint (the end of training always).

    One :class:`Results` per checkpoint, in step order; ``results.training`` holds the
    training summary plus ``step``, ``loss`` (on all the data at that step) and ``final``.
    """
    if cfg.sweep is not None:
        raise ValueError("this config has a [sweep]: run it with "
                         "boundcheck.harness.sweep.run_sweep")
    cfg.validate()
    started = time.perf_counter()
    net, data, targets = prepare(cfg)
    log(f"training {cfg.name}: {sum(p.numel() for p in net.parameters())} parameters on "
        f"{cfg.subject.dataset} (n={len(data.x)})")
    x_train, t_train, held_out = split_held_out(data.x, targets, cfg.subject.test_fraction,
                                                cfg.subject.seed)
    snapshots: list[tuple[int, dict]] = []
    info = train(net, x_train, t_train, cfg.subject.loss, cfg.recipe, progress=progress,
                 device=cfg.device,
                 on_checkpoint=lambda step, m: snapshots.append(
                     (step, copy.deepcopy(m.state_dict()))))
    log(f"  {info['steps']} steps, final loss {info['final_loss']:.3g} "
        f"({info['seconds']:.1f} s)")
    losses = dict(info["checkpoints"])
    trajectory = info["trajectory"]
    summary = {k: v for k, v in info.items() if k not in ("checkpoints", "trajectory")}
    runs = []
    for step, state in snapshots:
        net.load_state_dict(state)
        name = cfg.name if len(snapshots) == 1 else f"{cfg.name} @ step {step}"
        subject = Subject(net, (x_train, t_train), cfg.subject.loss, name=name,
                          device=cfg.device, test_data=held_out,
                          product_dtype=cfg.subject.product_dtype,
                          trajectory=trajectory.until(step) if trajectory else None)
        log(f"verifying at step {step} ...")
        verify_start = time.perf_counter()
        ctx = Context(subject, confidence=cfg.confidence, seed=cfg.seed, budget=cfg.budget)
        results = verify(subject, cfg.theorems, context=ctx)
        spectrum = ctx.cached("hessian.dense_spectrum")
        if spectrum is not None:  # measured anyway: keep it for the report's figure
            results.extras["hessian_spectrum"] = (spectrum.eigenvalues
                                                  * spectrum.scale).tolist()
        if any(t.family == "projection" for t in select(cfg.theorems)):
            results.extras["loss_surfaces"] = loss_surfaces(ctx)
        recorded = record_quantities(ctx, cfg.record)
        if recorded:
            results.extras["measurements"] = recorded  # the report correlates these
        results.training = {**summary, "step": step, "loss": losses[step],
                            "final": step == info["steps"]}
        results.provenance.update(
            config=cfg.to_dict(), config_hash=cfg.digest(), device=str(subject.device),
            seeds={"subject": cfg.subject.seed, "recipe": cfg.recipe.seed, "verify": cfg.seed},
            train_s=info["seconds"], verify_s=time.perf_counter() - verify_start,
            total_s=time.perf_counter() - started)
        runs.append(results)
    return runs
