"""Hypothesis strategies for property-testing theorems: spectra, symmetric matrices with a
chosen spectrum, small MLPs, data sets and ready-made subjects.

    from hypothesis import given
    from boundcheck import strategies as bst

    @given(bst.matrix_subjects(min_size=2))
    def test_my_bound_never_violated(subject):
        assert bc.verify(subject, "mine")["mine.bound"].verdict != bc.Verdict.VIOLATED

Sizes accept an int, an ``(lo, hi)`` range or a strategy. Randomness that hypothesis should
not search element by element (orthogonal bases, weights, data) comes from a drawn seed, so
examples shrink towards seed 0 and small sizes. Everything is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from hypothesis import strategies as st

SizeSpec = int | tuple[int, int] | st.SearchStrategy
SEEDS = st.integers(0, 2**32 - 1)


class SymmetricMatrix(NamedTuple):
    """A symmetric matrix and the spectrum it was built from (ascending)."""

    matrix: np.ndarray
    eigenvalues: np.ndarray


def _size(draw, spec: SizeSpec) -> int:
    if isinstance(spec, st.SearchStrategy):
        return int(draw(spec))
    if isinstance(spec, tuple):
        return draw(st.integers(*spec))
    return int(spec)


@st.composite
def spectra(draw, size: SizeSpec = (1, 8), *, exponents: tuple[int, int] = (-6, 6),
            repeats: bool = True, shift: bool = True, nonnegative: bool = False) -> np.ndarray:
    """Eigenvalues (ascending float64): a spread at scale ``10**e`` for e in ``exponents``,
    optionally with repeated values and a common shift at its own scale (the shift-dominated
    spectra where ``tr(A²)/N − m²`` cancels catastrophically)."""
    n = _size(draw, size)
    unit = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)
    if repeats and n > 1:
        levels = draw(st.lists(unit, min_size=1, max_size=n))
        base = np.array([levels[draw(st.integers(0, len(levels) - 1))] for _ in range(n)])
    else:
        base = np.array(draw(st.lists(unit, min_size=n, max_size=n)))
    values = base * 10.0 ** draw(st.integers(*exponents))
    if shift and draw(st.booleans()):
        values = values + draw(unit) * 10.0 ** draw(st.integers(*exponents))
    if nonnegative:
        values = np.abs(values)
    return np.sort(values.astype(np.float64))


@st.composite
def orthogonal_matrices(draw, size: SizeSpec = (1, 8)) -> np.ndarray:
    """Haar-random orthogonal matrices (QR of a Gaussian matrix with the signs fixed)."""
    n = _size(draw, size)
    rng = np.random.default_rng(draw(SEEDS))
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))


@st.composite
def symmetric_matrices(draw, eigenvalues: st.SearchStrategy | Sequence[float] | None = None,
                       *, basis: str = "random") -> SymmetricMatrix:
    """``Q diag(λ) Qᵀ`` (exactly symmetric) with λ drawn from ``eigenvalues`` (default
    :func:`spectra`) and Q Haar-random (``basis="random"``) or the identity (``"identity"``:
    diagonal matrices, easy to read in a shrunk counterexample)."""
    if eigenvalues is None:
        eigenvalues = spectra()
    lam = np.sort(np.asarray(draw(eigenvalues) if isinstance(eigenvalues, st.SearchStrategy)
                             else eigenvalues, dtype=np.float64))
    if basis == "identity":
        return SymmetricMatrix(np.diag(lam), lam)
    if basis != "random":
        raise ValueError(f"basis must be 'random' or 'identity', got {basis!r}")
    q = draw(orthogonal_matrices(len(lam)))
    a = (q * lam) @ q.T
    return SymmetricMatrix(0.5 * (a + a.T), lam)


@st.composite
def mlps(draw, input_dim: SizeSpec = (1, 6), output_dim: SizeSpec = (1, 4), *,
         depth: SizeSpec = (1, 2), width: SizeSpec = (1, 8),
         activations: Sequence[str] = ("tanh", "gelu", "sigmoid", "softplus", "relu"),
         bias: bool | st.SearchStrategy | None = None) -> torch.nn.Sequential:
    """A float64 MLP ``[D, h_1, …, h_depth, K]`` with PyTorch's default initialisation from a
    drawn seed; the activation is one of ``activations``; ``bias`` None draws it."""
    from boundcheck.harness.models import mlp

    d, k = _size(draw, input_dim), _size(draw, output_dim)
    hidden = [_size(draw, width) for _ in range(_size(draw, depth))]
    if bias is None:
        bias = st.booleans()
    use_bias = draw(bias) if isinstance(bias, st.SearchStrategy) else bool(bias)
    net = mlp([d, *hidden, k], draw(st.sampled_from(list(activations))), use_bias,
              seed=draw(st.integers(0, 2**31 - 1)))
    return net.to(torch.float64).eval()


@st.composite
def datasets(draw, n: SizeSpec = (1, 16), input_dim: SizeSpec = (1, 6),
             output_dim: SizeSpec = (2, 4), *, targets: str = "classes",
             kinds: Sequence[str] = ("gaussian", "bounded")) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, Y)`` in float64: X Gaussian (scale 10**e, e in [-2, 2]) or uniform on [−1, 1];
    Y class labels in ``[0, K)`` (``targets="classes"``) or Gaussian ``(n, K)`` regression
    targets (``"regression"``)."""
    size, d, k = _size(draw, n), _size(draw, input_dim), _size(draw, output_dim)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**63 - 1)))
    kind = draw(st.sampled_from(list(kinds)))
    if kind == "gaussian":
        x = torch.randn(size, d, generator=gen, dtype=torch.float64)
        x = x * 10.0 ** draw(st.integers(-2, 2))
    elif kind == "bounded":
        x = 2 * torch.rand(size, d, generator=gen, dtype=torch.float64) - 1
    else:
        raise ValueError(f"unknown data kind {kind!r}: gaussian or bounded")
    if targets == "classes":
        y = torch.randint(0, k, (size,), generator=gen)
    elif targets == "regression":
        y = torch.randn(size, k, generator=gen, dtype=torch.float64)
    else:
        raise ValueError(f"targets must be 'classes' or 'regression', got {targets!r}")
    return x, y


@st.composite
def subjects(draw, losses: Sequence[str] = ("cross_entropy", "mse"), n: SizeSpec = (1, 12),
             input_dim: SizeSpec = (1, 5), output_dim: SizeSpec = (2, 3),
             **mlp_options: Any):
    """A :class:`boundcheck.Subject`: an :func:`mlps` network on :func:`datasets` data with a
    matching loss (class labels for cross-entropy, real targets for MSE)."""
    from boundcheck.core.subject import Subject

    loss = draw(st.sampled_from(list(losses)))
    d, k = _size(draw, input_dim), _size(draw, output_dim)
    if loss.startswith("cross_entropy") and k < 2:
        k = 2
    net = draw(mlps(d, k, **mlp_options))
    x, y = draw(datasets(n, d, k, targets="classes" if loss == "cross_entropy"
                         else "regression"))
    return Subject(net, (x, y), loss, name=f"hypothesis-{loss}")


@st.composite
def matrix_subjects(draw, eigenvalues: st.SearchStrategy | None = None,
                    basis: str = "random", min_size: int = 1, max_size: int = 8):
    """A :class:`boundcheck.MatrixSubject` from :func:`symmetric_matrices`."""
    from boundcheck.core.subject import MatrixSubject

    if eigenvalues is None:
        eigenvalues = spectra((min_size, max_size))
    a = draw(symmetric_matrices(eigenvalues, basis=basis))
    return MatrixSubject(a.matrix, name="hypothesis-matrix")
