"""Data sets that ship with the install: scikit-learn's bundled tables and synthetic data.

Nothing here downloads anything.
"""

from __future__ import annotations

import numpy as np
import torch

BUNDLED = ("digits", "iris", "wine", "breast_cancer")


def bundled(name: str, n: int | None = None, seed: int = 0, standardize: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(X float32, y int64) from scikit-learn's bundled data sets, optionally subsampled."""
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "iris": datasets.load_iris,
               "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}
    if name not in loaders:
        raise ValueError(f"unknown bundled data set {name!r}; choose from {BUNDLED}")
    x, y = loaders[name](return_X_y=True)
    x = x.astype(np.float64)
    if n is not None:
        if not 0 < n <= len(x):
            raise ValueError(f"n must be in [1, {len(x)}] for {name}, got {n}")
        idx = np.random.default_rng(seed).permutation(len(x))[:n]
        x, y = x[idx], y[idx]
    if standardize:
        sd = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def gaussian_mixture(n: int, dim: int, classes: int, separation: float = 3.0, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``classes`` isotropic Gaussian blobs in ``dim`` dimensions, means ``separation`` apart."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g) * separation / np.sqrt(2)
    y = torch.randint(0, classes, (n,), generator=g)
    x = means[y] + torch.randn(n, dim, generator=g)
    return x, y
