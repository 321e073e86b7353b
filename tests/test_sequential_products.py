"""The R-operator Hessian-vector products of sequential MLPs against autograd (float64)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from test_sequential_hessian import (
    autograd_hessian,
    make_subject,
    mlp_problems,
    rel_diff,
    saturated_problem,
)
from torch import nn

import boundcheck as bc
from boundcheck.engines.curvature import HessianOperator, hessian_operator
from boundcheck.engines.estimators.lanczos import extreme_eigenvalue
from boundcheck.engines.sequential import subject_structure
from boundcheck.engines.sequential_products import SequentialHessianOperator


def r_operator(subject: bc.Subject) -> SequentialHessianOperator:
    structure = subject_structure(subject)
    assert not isinstance(structure, str), structure
    return SequentialHessianOperator(subject, structure)


def directions(subject: bc.Subject, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, subject.num_params, generator=g, dtype=torch.float64)


@settings(max_examples=30)
@given(mlp_problems())
def test_products_match_the_autograd_hessian_on_drawn_mlps(problem):
    """Depths 1–4, bias on/off, six activations, MSE/cross-entropy/generic losses, batches of
    unequal size: H v and H V against ``torch.autograd.functional.hessian``."""
    subject = make_subject(**problem)
    h = autograd_hessian(subject)
    op = r_operator(subject)
    v = directions(subject, 3, problem["seed"])
    reference = v @ h.T
    assert rel_diff(op.matvec(v[0]), reference[0]) <= 1e-12
    assert rel_diff(op.matmat(v), reference) <= 1e-12
    assert rel_diff(op._product(v), reference) <= 1e-12  # the batched sweep (GPU path)


@pytest.mark.parametrize("net", [
    nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.GELU(), nn.Linear(6, 5), nn.Softplus(),
                  nn.Linear(5, 3)),
    nn.Sequential(nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3), nn.Sigmoid()),  # trailing
    nn.Sequential(nn.Linear(12, 6, bias=False), nn.ELU(), nn.Linear(6, 3)),
], ids=["flatten", "trailing-activation", "no-bias-first"])
def test_structures_against_the_graph_reusing_autograd_operator(net):
    torch.manual_seed(3)
    net = net.double()
    x = torch.randn(11, 12, dtype=torch.float64)
    if isinstance(net[0], nn.Flatten):
        x = x.reshape(11, 3, 2, 2)
    y = torch.randint(0, 3, (11,))
    subject = bc.Subject(net, [(x[:4], y[:4]), (x[4:], y[4:])])
    v = directions(subject, 4)
    assert rel_diff(r_operator(subject).matmat(v), HessianOperator(subject).matmat(v)) <= 1e-12


def test_saturated_cross_entropy_products():
    """1 − p_y < 1e-10: the products use the stable output Hessian and agree with the
    stable autograd route, whose Hessian agrees with 40-digit mpmath (test_sequential_hessian)."""
    net, x, y = saturated_problem([3, 5, 4], margin=28.0, n=8, seed=4)
    subject = bc.Subject(net, (x, y))
    v = directions(subject, 2)
    reference = HessianOperator(subject).matmat(v)
    assert float(reference.abs().max()) > 0
    assert rel_diff(r_operator(subject).matmat(v), reference) <= 1e-10


def test_the_factory_routes_mlps_to_the_r_operator_and_others_to_autograd():
    mlp_subject = make_subject([4, 5, 3], n=6)
    assert isinstance(hessian_operator(mlp_subject), SequentialHessianOperator)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)).double()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    conv_subject = bc.Subject(conv, (x, torch.randint(0, 3, (5,))))
    assert isinstance(hessian_operator(conv_subject), HessianOperator)


def test_lanczos_on_the_r_operator_brackets_the_dense_lambda_max():
    subject = make_subject([5, 8, 6, 3], act="softplus", n=20, seed=5)
    truth = float(torch.linalg.eigvalsh(autograd_hessian(subject))[-1])
    est = extreme_eigenvalue(r_operator(subject), confidence=0.99, rel_tol=1e-10, seed=1)
    assert est.lower <= truth <= est.upper
    assert est.upper - est.lower <= 1e-8 * abs(truth)


@pytest.mark.parametrize("k", [1, 2, 8])
def test_block_sweep_of_any_width_matches_the_dense_hessian_over_unequal_batches(k):
    """The samples-major block sweep (k directions in one GEMM) and the one-vector sweep, with
    the batch weights n_b/n folded into the cached values: three batches of 2, 5 and 7."""
    subject = make_subject([6, 7, 5, 4], act="softplus", n=14, seed=8, cuts=(2, 7))
    h = autograd_hessian(subject)
    op = r_operator(subject)
    v = directions(subject, k, seed=k)
    assert rel_diff(op._product(v), v @ h.T) <= 1e-12
    assert rel_diff(op._product(v[0]), h @ v[0]) <= 1e-12
    assert op._product(v[0]).shape == (subject.num_params,)
