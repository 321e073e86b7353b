"""Subjects: what a theorem is checked on.

``Subject(model, data, loss)`` is a network with its training data and loss; the engine works
on a float64 copy and never changes the user's model. ``MatrixSubject(A)`` is a bare symmetric
matrix, for spectral theorems (T1, T12) stated for any matrix.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from boundcheck.core.activations import use_stable_forwards
from boundcheck.core.losses import (
    Loss,
    check_mean_of_per_sample,
    make_loss,
    resolve_for_output,
)
from boundcheck.core.trajectory import Trajectory

MAX_BATCH = 4096
MODE_PROBE_SAMPLES = 64  # samples on which a train-mode model is checked for mode dependence
_STOCHASTIC_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


class InvalidSubjectError(ValueError):
    """The model, data or loss cannot be measured as given; the message says why."""


class ModelModeError(InvalidSubjectError):
    """The model is in train mode with layers whose output depends on the mode."""


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Subject:
    """A network, its data and its loss, measured in ``dtype`` (float64 by default).

    data: ``(X, Y)`` tensors/arrays, or an iterable of ``(X, Y)`` batches (e.g. a DataLoader).
    Batches are weighted by their number of samples, never equally.
    loss: ``"cross_entropy"``, ``"mse"``, ``"mse:C"``, an ``nn`` loss or a callable; see
    :func:`boundcheck.core.losses.make_loss`.
    eval_mode: a model in train mode with dropout or batch norm is refused unless this is True,
    in which case a copy is measured in eval mode and the switch is recorded in ``notes``.
    trajectory: how training reached these parameters (optimizer, step size, per-step loss
    and gradient norm), for theorems about training dynamics (T10); ``None`` when unknown.
    trainable_only: H and G are over every parameter θ of the model by default (THEOREMS.md;
    ``requires_grad=False`` on the user's model does not matter, the float64 copy
    differentiates everything). ``True`` restricts them to the parameters with
    ``requires_grad`` (fine-tuning's curvature); theorems that need a frozen layer's
    parameters in G are then NOT_APPLICABLE (their precondition says so).
    test_data: optional held-out ``(X, Y)`` (or batches), same shapes and labels as ``data``;
    only theorems that compare train and test distributions use it (T11c); None: none.
    product_dtype: the precision of Hessian-vector products in the matrix-free estimators
    (``torch.float32``/``"float32"``, ``torch.bfloat16``/``"bfloat16"``); None (default):
    ``dtype``, float64 throughout. The estimators still accumulate in float64, and the
    products' rounding is accounted for in every interval built on them by a calibrated
    error model (:mod:`boundcheck.engines.product_error`); dense and exact routes are
    unaffected.
    distributed: ``True`` (or a ``torch.distributed`` process group; ``True`` is the world):
    every rank builds the Subject with the same model and its own shard of the data; ``n``
    stays the shard's count, ``total_samples`` is the all-reduced count, and the
    data-parallel quantities (``hessian.lambda_max``, ``hessian.trace``, ...) all-reduce
    their products and sums with exact weights n_r/n; every other quantity is refused
    (NotApplicableError), never measured on the shard alone. Refused unless
    ``torch.distributed`` is initialised and every rank holds the same parameters.
    """

    model: nn.Module
    data: Any
    loss: Any = "cross_entropy"
    name: str | None = None
    dtype: torch.dtype = torch.float64
    device: str | torch.device | None = None
    eval_mode: bool = False
    notes: list[str] = field(default_factory=list)
    trajectory: Trajectory | None = None
    trainable_only: bool = False
    test_data: Any = None
    product_dtype: Any = None
    distributed: Any = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise InvalidSubjectError(f"model must be a torch.nn.Module, got "
                                      f"{type(self.model).__name__}")
        if self.trajectory is not None and not isinstance(self.trajectory, Trajectory):
            raise InvalidSubjectError(f"trajectory must be a boundcheck.core.trajectory."
                                      f"Trajectory, got {type(self.trajectory).__name__}")
        self.device = torch.device(self.device or "cpu")
        if self.device.type == "meta":
            raise InvalidSubjectError("the meta device holds no values: measure on cpu or cuda")
        self.product_dtype = _product_dtype(self.product_dtype, self.dtype)
        _check_no_meta_tensors(self.model)
        _check_finite_parameters(self.model)
        self.net = self._working_copy()
        self.batches = self._load_batches(self.data)
        self._check_mode_dependence()
        self.n = sum(b.n for b in self.batches)
        out = self._probe_outputs()
        self.output_dim = int(out.shape[1])
        self.loss_fn: Loss = resolve_for_output(make_loss(self.loss), self.output_dim)
        self.test_batches = ([] if self.test_data is None
                             else self._load_batches(self.test_data))
        self._check_targets()
        check_mean_of_per_sample(self.loss_fn, self.net, self.batches[0].x[:64],
                                 self.batches[0].y[:64])
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.param_names = [k for k, p in self.net.named_parameters() if p.requires_grad]
        self.num_params = sum(p.numel() for p in self.params)
        if self.num_params == 0:
            raise InvalidSubjectError("the model has no trainable parameters"
                                      if self.trainable_only else "the model has no parameters")
        self._check_parameters_used()
        self.frozen = [k for k, p in self.model.named_parameters() if not p.requires_grad]
        if self.frozen:
            self.notes.append(
                ("H and G over the trainable parameters only (trainable_only=True; frozen: "
                 if self.trainable_only else
                 "H and G over all parameters, frozen ones included (frozen: ")
                + ", ".join(self.frozen) + ")")
        if self.name is None:
            self.name = type(self.model).__name__
        self.process_group, self.world_size, self.total_samples = self._join_process_group()

    # -- construction -------------------------------------------------------------------
    def _join_process_group(self) -> tuple[Any, int, int]:
        """``(group, ranks, n over all ranks)``; ``(None, 1, n)`` unless ``distributed``. The
        ranks must hold identical parameters (min and max all-reduced agree entrywise):
        otherwise each would measure a different network and the sums would mix them."""
        if self.distributed is False:
            return None, 1, self.n
        if self.product_dtype != self.dtype:
            raise InvalidSubjectError(
                "product_dtype below dtype is not data-parallel yet (each rank would calibrate "
                "its own product error); use float64 products with distributed=True")
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InvalidSubjectError("distributed=True needs torch.distributed initialised: "
                                      "call torch.distributed.init_process_group first "
                                      "(torchrun sets up its environment)")
        if self.distributed is not True and not isinstance(self.distributed,
                                                           dist.ProcessGroup):
            raise InvalidSubjectError(f"distributed must be True/False or a torch.distributed "
                                      f"ProcessGroup, got {self.distributed!r}")
        group = None if self.distributed is True else self.distributed
        comm = torch.device("cpu") if dist.get_backend(group) == "gloo" else self.device
        sizes = torch.tensor([self.num_params, self.output_dim], dtype=torch.float64)
        for values in (sizes, self.flat_params().double()):  # sizes first: equal shapes next
            low, high = values.to(comm).clone(), values.to(comm).clone()
            dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
            dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
            if not torch.equal(low, high):
                raise InvalidSubjectError(
                    "the ranks hold different models (parameter counts, outputs or values "
                    "differ): build the same model on every rank (same seed, or one "
                    "checkpoint) and shard only the data")
        count = torch.tensor([float(self.n)], dtype=torch.float64, device=comm)
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=group)
        return group, dist.get_world_size(group), int(count.item())

    def _working_copy(self) -> nn.Module:
        stochastic = [type(m).__name__ for m in self.model.modules()
                      if isinstance(m, _STOCHASTIC_LAYERS)]
        net = copy.deepcopy(self.model).to(device=self.device, dtype=self.dtype)
        if self.model.training and stochastic:
            if not self.eval_mode:
                raise ModelModeError(
                    f"the model is in train mode and has {', '.join(sorted(set(stochastic)))}: "
                    "its Hessian would depend on the mode (random masks, batch statistics). "
                    "Call model.eval() first, or pass eval_mode=True to measure an eval-mode "
                    "copy (your model is left as it is)."
                )
            self.notes.append(f"measured an eval-mode copy (train-mode layers: "
                              f"{', '.join(sorted(set(stochastic)))})")
        net.eval()
        use_stable_forwards(net)
        if not self.trainable_only:
            net.requires_grad_(True)
        return net

    def _check_mode_dependence(self) -> None:
        """A model in train mode without dropout or batch-norm modules may still depend on
        the mode (functional ``F.dropout(x, training=self.training)``, custom layers): its
        outputs on a few samples are compared between two train-mode passes and eval mode
        (on a copy, the global RNG restored), and a difference is refused like a dropout
        module unless ``eval_mode`` is set."""
        if not self.model.training or any(isinstance(m, _STOCHASTIC_LAYERS)
                                          for m in self.model.modules()):
            return
        probe = copy.deepcopy(self.net).train()
        x = self.batches[0].x[:MODE_PROBE_SAMPLES]
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                first, second = probe(x), probe(x)
                evaluated = probe.eval()(x)
        except RuntimeError:  # the shape check that follows reports what is wrong
            return
        same = all(isinstance(o, torch.Tensor) and o.shape == first.shape and
                   torch.allclose(o, first, rtol=1e-9, atol=1e-12, equal_nan=True)
                   for o in (second, evaluated))
        if same:
            return
        if not self.eval_mode:
            raise ModelModeError(
                "the model is in train mode and its outputs change between two forward passes "
                "or between train and eval mode (e.g. F.dropout(x, training=self.training)): "
                "its Hessian would depend on the mode. Call model.eval() first, or pass "
                "eval_mode=True to measure an eval-mode copy (your model is left as it is).")
        self.notes.append("measured an eval-mode copy (the outputs depend on the mode)")

    def _load_batches(self, data: Any) -> list[Batch]:
        if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_batch_pair(data[0]):
            pairs: Iterable = [data]
        elif isinstance(data, Iterable):
            pairs = data
        else:
            raise InvalidSubjectError("data must be (X, Y) or an iterable of (X, Y) batches, "
                                      f"got {type(data).__name__}")
        batches = []
        for item in pairs:
            if not (isinstance(item, (tuple, list)) and len(item) >= 2):
                raise InvalidSubjectError("each batch must be a pair (X, Y)")
            x, y = _as_tensor(item[0], "X"), _as_tensor(item[1], "Y")
            if x.is_meta or y.is_meta:
                raise InvalidSubjectError("the data is on the meta device (shapes without "
                                          "values): pass real tensors")
            if x.shape[0] != y.shape[0]:
                raise InvalidSubjectError(f"X has {x.shape[0]} samples but Y has {y.shape[0]}")
            if x.shape[0] == 0:
                continue
            if not torch.isfinite(x).all():
                raise InvalidSubjectError("X contains NaN or inf")
            x = x.to(device=self.device, dtype=self.dtype)
            y = y.to(self.device)
            if y.is_floating_point():
                y = y.to(self.dtype)
            for start in range(0, x.shape[0], MAX_BATCH):
                batches.append(Batch(x[start:start + MAX_BATCH], y[start:start + MAX_BATCH]))
        if not batches:
            raise InvalidSubjectError("the data set is empty: no samples to measure on")
        return batches

    def _probe_outputs(self) -> torch.Tensor:
        b = self.batches[0]
        try:
            with torch.no_grad():
                out = self.net(b.x[:2])
        except RuntimeError as err:
            raise InvalidSubjectError(f"the model cannot be applied to X of shape "
                                      f"{tuple(b.x.shape)}: {err}") from err
        if out.dim() != 2:
            raise InvalidSubjectError(f"the model must output (batch, K); got shape "
                                      f"{tuple(out.shape)}")
        return out

    def _check_parameters_used(self) -> None:
        """Every measured tensor must reach the output: one that does not (a layer built but
        never called) has zero Hessian rows that would still count in P, and the products'
        second backward pass cannot run through it."""
        with torch.enable_grad():
            out = self.net(self.batches[0].x[:2])
        grads = (torch.autograd.grad(out.sum(), self.params, allow_unused=True)
                 if out.requires_grad else [None] * len(self.params))
        unused = [k for k, g in zip(self.param_names, grads, strict=True) if g is None]
        if unused:
            raise InvalidSubjectError(
                f"parameter(s) {', '.join(unused)} do not influence the model's output (never "
                "used in its forward pass): their Hessian rows would be zero yet count in P. "
                "Remove them, or freeze them (requires_grad_(False)) and pass "
                "trainable_only=True")

    def _check_targets(self) -> None:
        k = self.output_dim
        for b in self.batches + self.test_batches:
            if b.x.shape[1:] != self.batches[0].x.shape[1:]:
                raise InvalidSubjectError(f"test inputs have shape {tuple(b.x.shape[1:])}, "
                                          f"training inputs {tuple(self.batches[0].x.shape[1:])}")
            if self.loss_fn.kind == "cross_entropy":
                if b.y.is_floating_point() or b.y.dim() != 1:
                    raise InvalidSubjectError("cross-entropy needs integer class labels Y of "
                                              "shape (n,)")
                if b.y.min() < 0 or b.y.max() >= k:
                    raise InvalidSubjectError(f"class labels must lie in [0, {k}), got "
                                              f"[{int(b.y.min())}, {int(b.y.max())}]")
            elif self.loss_fn.kind == "mse":
                if b.y.numel() != b.n * k:
                    raise InvalidSubjectError(f"MSE targets must have shape (n, {k}); got "
                                              f"{tuple(b.y.shape)}")
                if not torch.isfinite(b.y).all():
                    raise InvalidSubjectError("Y contains NaN or inf")

    # -- evaluation ---------------------------------------------------------------------
    @property
    def x_all(self) -> torch.Tensor:
        return torch.cat([b.x for b in self.batches])

    @property
    def y_all(self) -> torch.Tensor:
        return torch.cat([b.y for b in self.batches])

    @property
    def test_x(self) -> torch.Tensor | None:
        return torch.cat([b.x for b in self.test_batches]) if self.test_batches else None

    @property
    def test_y(self) -> torch.Tensor | None:
        return torch.cat([b.y for b in self.test_batches]) if self.test_batches else None

    def loss_value(self) -> float:
        with torch.no_grad():
            total = sum(self.loss_fn.per_sample(self.net(b.x), b.y).sum() for b in self.batches)
        return float(total) / self.n

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def describe(self) -> dict[str, Any]:
        held_out = sum(b.n for b in self.test_batches)
        return ({"num_test_samples": held_out} if held_out else {}) | {
            "name": self.name,
            "model": type(self.model).__name__,
            "architecture": _architecture_summary(self.net),
            "num_params": self.num_params,
            "num_samples": self.total_samples,
            "input_shape": list(self.batches[0].x.shape[1:]),
            "output_dim": self.output_dim,
            "loss": self.loss_fn.description,
            "loss_kind": self.loss_fn.kind,
            "mse_scale": self.loss_fn.mse_scale,
            "dtype": str(self.dtype).replace("torch.", ""),
            "product_dtype": str(self.product_dtype).replace("torch.", ""),
            "device": str(self.device),
            "notes": list(self.notes),
        } | ({"ranks": self.world_size, "shard_samples": self.n} if self.world_size > 1 else {})


class MatrixSubject:
    """A symmetric matrix whose spectrum the ``hessian.*`` quantities describe."""

    def __init__(self, matrix: Any, name: str = "matrix"):
        a = _as_tensor(matrix, "matrix")
        if a.is_complex():
            raise InvalidSubjectError("the matrix is complex: MatrixSubject takes a real "
                                      "symmetric matrix (a complex Hermitian A has the spectrum "
                                      "of the real symmetric [[Re A, −Im A], [Im A, Re A]], "
                                      "each eigenvalue twice)")
        a = a.to(torch.float64)
        if a.dim() != 2 or a.shape[0] != a.shape[1]:
            raise InvalidSubjectError(f"the matrix must be square, got shape {tuple(a.shape)}")
        if a.shape[0] == 0:
            raise InvalidSubjectError("the matrix is empty")
        if not torch.isfinite(a).all():
            raise InvalidSubjectError("the matrix contains NaN or inf")
        scale = float(a.abs().max()) or 1.0
        if float((a - a.T).abs().max()) > 1e-12 * scale:
            raise InvalidSubjectError("the matrix is not symmetric")
        self.matrix = 0.5 * (a + a.T)
        self.name = name
        self.num_params = a.shape[0]
        self.notes: list[str] = []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": "MatrixSubject", "dimension": self.num_params}


PRODUCT_DTYPES = {"float64": torch.float64, "float32": torch.float32,
                  "bfloat16": torch.bfloat16}


def _product_dtype(value: Any, dtype: torch.dtype) -> torch.dtype:
    """``product_dtype`` as a torch dtype (None: ``dtype``); anything else is refused."""
    if value is None:
        return dtype
    name = value.replace("torch.", "") if isinstance(value, str) else (
        str(value).replace("torch.", "") if isinstance(value, torch.dtype) else None)
    if name not in PRODUCT_DTYPES:
        hint = (" (float16's range, ≤ 65504, overflows in loss curvature: use bfloat16)"
                if name == "float16" else "")
        raise InvalidSubjectError(f"product_dtype must be one of {sorted(PRODUCT_DTYPES)} or "
                                  f"None, got {value!r}{hint}")
    wanted = PRODUCT_DTYPES[name]
    if wanted != dtype and dtype != torch.float64:
        raise InvalidSubjectError(f"product_dtype {name} needs dtype=torch.float64 (the "
                                  f"precision the estimators accumulate and calibrate in), got "
                                  f"dtype {dtype}")
    return wanted


def _is_batch_pair(x: Any) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidSubjectError(f"{what} cannot be turned into a tensor: {err}") from err


def _check_no_meta_tensors(model: nn.Module) -> None:
    for kind, named in (("parameter", model.named_parameters()),
                        ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_meta:
                raise InvalidSubjectError(
                    f"model {kind} {name!r} is on the meta device (no values): load real "
                    "weights first (e.g. model.to_empty(device='cpu') then load_state_dict)")


def _check_finite_parameters(model: nn.Module) -> None:
    """Parameters and floating-point buffers (batch-norm running statistics) are finite."""
    for kind, named in (("parameter", model.named_parameters()),
                        ("buffer", model.named_buffers())):
        for name, t in named:
            if not t.is_floating_point():
                continue
            bad = int((~torch.isfinite(t.detach())).sum())
            if bad:
                raise InvalidSubjectError(f"model {kind} {name!r} has {bad} NaN/inf entries")


def _architecture_summary(net: nn.Module) -> str:
    leaves = [m for m in net.modules() if not list(m.children())]
    parts = []
    for m in leaves:
        if isinstance(m, nn.Linear):
            parts.append(f"Linear({m.in_features}→{m.out_features}"
                         f"{'' if m.bias is not None else ', no bias'})")
        elif isinstance(m, nn.Conv2d):
            parts.append(f"Conv2d({m.in_channels}→{m.out_channels}, k={m.kernel_size[0]})")
        else:
            parts.append(type(m).__name__)
    return " → ".join(parts)
