"""Data sets: scikit-learn's bundled tables, synthetic generators, and image sets from a local
folder. Nothing here downloads anything.

* bundled: digits (1,797 8×8 images; also as (1, 8, 8) images), iris, wine, breast_cancer.
* synthetic: Gaussian mixtures (as vectors, or as (C, H, W) images); labels from a random
  teacher network; samples with a chosen pairwise cosine ρ (the "degree of orthogonality" of
  THEOREMS.md T2); token sequences.
* local: MNIST, FashionMNIST (IDX files) and CIFAR-10 (python batches) from a folder the
  user names, read directly (:mod:`boundcheck.harness.image_files`; no torchvision).

:func:`load` picks any of them by name and lays the inputs out for an architecture
("flat" vectors, "image" (C, H, W) or "tokens").
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BUNDLED = ("digits", "iris", "wine", "breast_cancer")
SYNTHETIC = ("gaussian_mixture", "gaussian_images", "teacher", "orthogonal", "tokens")
LOCAL = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
DATASETS = (*BUNDLED, *SYNTHETIC, *LOCAL)
LAYOUTS = ("flat", "image", "tokens")


@dataclass
class DataSet:
    """Inputs ``x`` (float32), targets ``y`` (int64 labels, or float (n, K) regression targets)
    and the number of outputs a model needs."""

    x: torch.Tensor
    y: torch.Tensor
    num_outputs: int
    name: str


def bundled(name: str, n: int | None = None, seed: int = 0, standardize: bool = True,
            images: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(X float32, y int64) from scikit-learn's bundled data sets, optionally subsampled.

    ``images=True`` (digits only) returns X of shape (n, 1, 8, 8); pixels are standardised
    one by one either way, so an MLP and a CNN see the same numbers.
    """
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "iris": datasets.load_iris,
               "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}
    if name not in loaders:
        raise ValueError(f"unknown bundled data set {name!r}; choose from {BUNDLED}")
    if images and name != "digits":
        raise ValueError(f"{name} is a table, not images: only digits has an image layout")
    x, y = loaders[name](return_X_y=True)
    x, y = _subsample(x.astype(np.float64), y, n, seed, name)
    if standardize:
        sd = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    x = torch.tensor(x, dtype=torch.float32)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return x, torch.tensor(y, dtype=torch.int64)


def gaussian_mixture(n: int, dim: int, classes: int, separation: float = 3.0, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``classes`` isotropic Gaussian blobs in ``dim`` dimensions, means ``separation`` apart
    on average (means drawn N(0, separation²/2 · I))."""
    _check_sizes(n=n, dim=dim, classes=classes)
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g) * separation / np.sqrt(2)
    y = torch.randint(0, classes, (n,), generator=g)
    x = means[y] + torch.randn(n, dim, generator=g)
    return x, y


def gaussian_images(n: int, channels: int = 3, size: int = 32, classes: int = 10,
                    separation: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A :func:`gaussian_mixture` in ``channels·size·size`` dimensions laid out as images
    (n, C, H, W), CIFAR-sized by default; pixels divided by ``√(1 + separation²/2)`` so that
    each has variance 1 over the mixture (as standardised CIFAR pixels do)."""
    _check_sizes(channels=channels, size=size)
    x, y = gaussian_mixture(n, channels * size * size, classes, separation, seed)
    x = x / float(np.sqrt(1.0 + separation**2 / 2.0))
    return x.reshape(n, channels, size, size).contiguous(), y


def teacher(n: int, dim: int, classes: int, hidden: tuple[int, ...] | list[int] = (16,),
            activation: str = "tanh", regression: bool = False, noise: float = 0.0,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, I); labels ``argmax f*(x)`` of a random teacher MLP ``f*`` (or its outputs
    plus Gaussian noise as (n, classes) regression targets when ``regression``)."""
    from boundcheck.harness.zoo import mlp

    _check_sizes(n=n, dim=dim, classes=classes)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    net = mlp([dim, *hidden, classes], activation, seed=seed + 1)
    with torch.no_grad():
        out = net(x)
    if regression:
        return x, out + noise * torch.randn(out.shape, generator=g)
    return x, out.argmax(dim=1)


def orthogonal(n: int, dim: int, rho: float, classes: int = 2, radius: float = 1.0,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of norm ``radius`` whose pairwise cosines all equal ``rho`` (to rounding),
    with balanced random labels.

    Construction: X = L Qᵀ, where L Lᵀ = (1 − ρ) I + ρ 11ᵀ (the equicorrelation Gram matrix,
    positive definite for −1/(n−1) < ρ < 1) and Q is a random dim × n matrix with orthonormal
    columns; so it needs ``dim ≥ n``. ρ = 0 gives orthogonal samples, ρ → 1 nearly parallel
    ones. :func:`max_abs_cosine` measures the result.
    """
    _check_sizes(n=n, dim=dim, classes=classes)
    if dim < n:
        raise ValueError(f"equal pairwise cosines need dim ≥ n (got dim={dim}, n={n})")
    low = -1.0 / (n - 1) if n > 1 else -1.0
    if not low < rho < 1.0:
        raise ValueError(f"rho must lie in ({low:.4g}, 1) for n={n}, got {rho}")
    rng = np.random.default_rng(seed)
    gram = (1.0 - rho) * np.eye(n) + rho * np.ones((n, n))
    q, _ = np.linalg.qr(rng.standard_normal((dim, n)))
    x = radius * np.linalg.cholesky(gram) @ q.T
    y = rng.permutation(np.arange(n) % classes)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def max_abs_cosine(x: torch.Tensor) -> float:
    """ρ = max_{i≠j} |cos(x_i, x_j)| over the rows of ``x`` (flattened), in float64."""
    v = x.reshape(x.shape[0], -1).to(torch.float64)
    if v.shape[0] < 2:
        raise ValueError("the orthogonality ρ needs at least two samples")
    v = v / v.norm(dim=1, keepdim=True)
    cos = (v @ v.T).abs()
    cos.fill_diagonal_(0.0)
    return float(cos.max())


def tokens(n: int, length: int = 8, vocab: int = 4, seed: int = 0, one_hot: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences labelled by their most frequent token (ties: the smallest), a
    task that needs the whole sequence. X is one-hot (n, length, vocab) float32, or ids
    (n, length) int64 when ``one_hot`` is False; ``vocab`` classes."""
    _check_sizes(n=n, length=length, vocab=vocab)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    counts = torch.nn.functional.one_hot(ids, vocab).sum(dim=1)
    y = counts.argmax(dim=1)  # first maximum: the smallest of tied tokens
    if one_hot:
        return torch.nn.functional.one_hot(ids, vocab).to(torch.float32), y
    return ids, y


def local(name: str, root: str | Path, train: bool = True, n: int | None = None, seed: int = 0,
          standardize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST, FashionMNIST or CIFAR-10 from ``root`` (torchvision's folder layout, e.g.
    ``root/MNIST/raw/train-images-idx3-ubyte[.gz]`` or ``root/cifar-10-batches-py/``; see
    :mod:`boundcheck.harness.image_files`), never downloaded. Returns images (n, C, H, W)
    float32 (pixels in [0, 1], then standardised per channel) and int64 labels."""
    from boundcheck.harness.image_files import read_cifar10, read_mnist

    if name not in LOCAL:
        raise ValueError(f"unknown local data set {name!r}; choose from {', '.join(LOCAL)}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: data folder {folder} does not exist; put the "
                                f"{LOCAL[name]} files there (nothing is downloaded)")
    if name == "cifar10":
        raw, targets = read_cifar10(folder, train=train)
    else:
        raw, targets = read_mnist(folder, LOCAL[name], train=train)
    images = torch.from_numpy(raw.astype(np.float32)) / 255.0
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.from_numpy(targets.astype(np.int64))
    images, labels = _subsample(images, labels, n, seed, name)
    if standardize:
        mean = images.mean(dim=(0, 2, 3), keepdim=True)
        sd = images.std(dim=(0, 2, 3), keepdim=True)
        images = (images - mean) / torch.where(sd > 0, sd, torch.ones_like(sd))
    return images.contiguous(), labels


def load(name: str, *, n: int | None = None, seed: int = 0, layout: str = "flat",
         root: str | Path | None = None, **options) -> DataSet:
    """Any data set by name, with inputs laid out for an architecture (see :data:`LAYOUTS`).

    ``n`` subsamples (bundled, local) or sets the sample count (synthetic; required there);
    ``options`` go to the generator (e.g. ``dim``, ``classes``, ``rho``); ``root`` is the
    folder of a local data set.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    if name in LOCAL and root is None:
        raise ValueError(f"{name} is read from a local folder: set data_root")
    if name in _GENERATORS and n is None:
        raise ValueError(f"the synthetic data set {name!r} needs n_samples")
    try:
        if name in BUNDLED:
            x, y = bundled(name, n=n, seed=seed, images=layout == "image" and name == "digits",
                           **options)
        elif name in LOCAL:
            x, y = local(name, root, n=n, seed=seed, **options)
        else:
            x, y = _GENERATORS[name](n, seed=seed, **options)
    except TypeError as err:  # an option the loader does not take
        raise ValueError(f"bad options for data set {name!r}: {err}") from err
    kind = "tokens" if name == "tokens" else "image" if x.dim() == 4 else "flat"
    if layout == "flat":
        x = x.reshape(x.shape[0], -1)
    elif layout != kind:
        raise ValueError(f"the model needs {layout} inputs but data set {name!r} has {kind} "
                         "inputs")
    if y.is_floating_point():
        outputs = int(y.shape[1])
    elif name in _GENERATORS:  # the declared number of classes, even if some drew no sample
        params = inspect.signature(_GENERATORS[name]).parameters
        outputs = int(options.get("classes", options.get("vocab"))
                      or params["classes" if "classes" in params else "vocab"].default)
    else:
        outputs = int(y.max()) + 1
    return DataSet(x, y, outputs, name)


_GENERATORS = {"gaussian_mixture": gaussian_mixture, "gaussian_images": gaussian_images,
               "teacher": teacher, "orthogonal": orthogonal, "tokens": tokens}


def _subsample(x, y, n: int | None, seed: int, name: str):
    if n is None:
        return x, y
    if not 0 < n <= len(x):
        raise ValueError(f"n must be in [1, {len(x)}] for {name}, got {n}")
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[idx], y[idx]


def _check_sizes(**sizes: int) -> None:
    bad = {k: v for k, v in sizes.items() if not (isinstance(v, (int, np.integer)) and v >= 1)}
    if bad:
        raise ValueError(f"sizes must be positive integers, got {bad}")
