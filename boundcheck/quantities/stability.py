"""Quantities of a gradient-descent run, for the linear-stability theorem (T10).

==================================  ===========================================================
``gd.step_size``                    η of plain full-batch GD (NOT_APPLICABLE for SGD, Adam,
                                    momentum, or a subject without a training trajectory);
                                    exact up to the training dtype's rounding of η
``gd.convergence_tolerance``        tol of the CONVERGED precondition
                                    (``Budget.converged_grad_tol``)
``gd.gradient_norm_window_max``     max ‖∇L(θ_t)‖ over the last K = ``Budget.converged_window``
                                    steps of the trajectory, θ_T included, as training computed
                                    them (details: K, steps recorded, the loss's change)
``loss.gradient_norm``              ‖∇L(θ)‖ at the measured point, in float64
``cross_entropy.separation_margin`` certified margin by which an affine map of the last
                                    layer's inputs separates the training classes (> 0: the
                                    classes are separated; −∞ for a loss other than
                                    cross-entropy, where no separation check is needed)
``activation.kink_distance``        min |z − κ| / max |z| over the training pre-activations of
                                    piecewise-linear activations (∞ when there are none)
==================================  ===========================================================

The trajectory is :attr:`boundcheck.Subject.trajectory`
(:class:`boundcheck.core.trajectory.Trajectory`), which full-batch GD training records.
"""

from __future__ import annotations

import math

import torch

from boundcheck.core.estimate import UNIT_ROUNDOFF, Estimate
from boundcheck.core.subject import Subject
from boundcheck.core.trajectory import Trajectory
from boundcheck.engines.kinks import kink_distances
from boundcheck.engines.separation import final_affine_inputs, separation_margin
from boundcheck.quantities.registry import Context, NotApplicableError, quantity

U = UNIT_ROUNDOFF["float64"]


def trajectory_of(ctx: Context) -> Trajectory:
    traj = getattr(ctx.subject, "trajectory", None)
    if traj is None:
        raise NotApplicableError("the subject has no training trajectory (train it with "
                                 "boundcheck's full-batch GD, or pass Subject(trajectory=...))")
    return traj


@quantity("gd.step_size", "η, the step size of plain full-batch gradient descent", r"\eta")
def _step_size(ctx: Context) -> Estimate:
    traj = trajectory_of(ctx)
    if not traj.plain_gd:
        what = (f"momentum {traj.momentum:g}" if traj.momentum else
                "mini-batches" if not traj.full_batch else f"optimizer {traj.optimizer!r}")
        raise NotApplicableError(f"trained with {what}, not plain full-batch gradient descent "
                                 "θ ← θ − η∇L(θ)")
    eta = traj.step_size
    return Estimate.exact(eta, eta * traj.unit_roundoff,
                          f"recipe lr, applied in {traj.dtype} (rounding of η)")


@quantity("gd.convergence_tolerance", "tol of the CONVERGED precondition ‖∇L(θ_t)‖ ≤ tol",
          r"\mathrm{tol}")
def _tolerance(ctx: Context) -> Estimate:
    return Estimate.exact(ctx.budget.converged_grad_tol, 0.0, "Budget.converged_grad_tol",
                          window=ctx.budget.converged_window)


@quantity("gd.gradient_norm_window_max",
          "max ‖∇L(θ_t)‖ over the last K training steps (K = Budget.converged_window)",
          r"\max_{t > T-K} \|\nabla L(\theta_t)\|")
def _window_max(ctx: Context) -> Estimate:
    traj = trajectory_of(ctx)
    window = ctx.budget.converged_window
    tail = traj.losses[-window:]
    change = (max(tail) - min(tail)) / max(abs(tail[-1]), 1e-300)
    return Estimate.exact(traj.window_max(window), 0.0,
                          f"recorded by training in {traj.dtype} (one full-batch gradient per "
                          "step)", window=window, points_recorded=traj.steps + 1,
                          final=traj.gradient_norms[-1],
                          loss_relative_change=change)


@quantity("loss.gradient_norm", "‖∇L(θ)‖ at the measured parameters (float64)",
          r"\|\nabla L\|")
def _gradient_norm(ctx: Context) -> Estimate:
    s = _subject(ctx)
    for p in s.params:
        p.grad = None
    total = None
    with torch.enable_grad():
        for b in s.batches:
            part = s.loss_fn.per_sample(s.net(b.x), b.y).sum() / s.n
            grads = torch.autograd.grad(part, s.params)
            total = grads if total is None else [a + g for a, g in zip(total, grads,
                                                                       strict=True)]
    flat = torch.cat([g.reshape(-1) for g in total])
    value = float(torch.linalg.vector_norm(flat))
    # rounding allowance: the norm's own summation (relative P·u), not a bound on backprop
    return Estimate.exact(value, value * s.num_params * U + 2.0**-1074,
                          "autograd in float64 over all the data")


@quantity("cross_entropy.separation_margin",
          "certified margin of an affine separation of the last layer's inputs by class "
          "(> 0: separated; −∞ when the loss is not cross-entropy)", r"\gamma_{\mathrm{sep}}")
def _separation(ctx: Context) -> Estimate:
    s = _subject(ctx)
    if s.loss_fn.kind != "cross_entropy":
        return Estimate.exact(-math.inf, 0.0, f"not measured: the loss is {s.loss_fn.kind}, "
                              "not cross-entropy")
    try:
        h = final_affine_inputs(s.net, [b.x for b in s.batches])
    except ValueError as err:
        raise NotApplicableError(f"cannot check whether cross-entropy has a finite minimiser "
                                 f"here: {err}") from err
    sep = separation_margin(h, s.y_all, s.output_dim)
    details = {"lp_optimum": sep.lp_optimum, "constraints": sep.num_constraints,
               "status": sep.status}
    if not math.isfinite(sep.witness_margin):
        return Estimate.exact(sep.margin_lower, 0.0, "LP (HiGHS) found no witness", **details)
    upper = max(sep.witness_margin, sep.lp_optimum) if math.isfinite(sep.lp_optimum) \
        else sep.witness_margin
    return Estimate(sep.witness_margin, min(sep.margin_lower, sep.witness_margin), upper,
                    "exact", "LP (HiGHS) witness re-checked in float64; lower side certified, "
                    "upper side the LP optimum", details=details)


@quantity("activation.kink_distance",
          "min |z − κ| / max |z| over training pre-activations z of piecewise-linear "
          "activations and their kinks κ (∞ when there are none)", r"d_{\mathrm{kink}}")
def _kink_distance(ctx: Context) -> Estimate:
    s = _subject(ctx)
    k = kink_distances(s.net, [b.x for b in s.batches])
    if k.unchecked:
        raise NotApplicableError(f"max pooling ({', '.join(k.unchecked)}) is piecewise linear "
                                 "and its ties are not measured: cannot show the loss is "
                                 "twice differentiable here")
    value = k.relative
    return Estimate.exact(value, 0.0 if math.isinf(value) else 4 * U * value,
                          "forward hooks on the piecewise-linear activations",
                          closest=k.closest, modules=len(k.per_module))


def _subject(ctx: Context) -> Subject:
    if not isinstance(ctx.subject, Subject):
        raise NotApplicableError("needs a network subject (model, data, loss)")
    return ctx.subject
