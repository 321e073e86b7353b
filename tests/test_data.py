"""Data sets: bundled tables, synthetic generators (checked against brute force), local image
folders (through a stand-in torchvision: tests never need the real one), and clear errors."""

import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boundcheck.harness import data


def test_bundled_shapes_and_image_layout():
    x, y = data.bundled("digits")
    assert x.shape == (1797, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x.mean(0), torch.zeros(64), atol=1e-5)
    images, y2 = data.bundled("digits", images=True)
    assert images.shape == (1797, 1, 8, 8)
    assert torch.equal(images.reshape(1797, 64), x) and torch.equal(y, y2)
    for name, shape in [("iris", (150, 4)), ("wine", (178, 13)), ("breast_cancer", (569, 30))]:
        assert data.bundled(name)[0].shape == shape
    sub, _ = data.bundled("iris", n=20, seed=1)
    assert sub.shape == (20, 4)


def test_gaussian_mixture_is_seeded():
    a = data.gaussian_mixture(50, 3, 4, seed=2)
    b = data.gaussian_mixture(50, 3, 4, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(a[1].tolist()) <= set(range(4))


def test_teacher_labels_are_the_teachers_argmax():
    from boundcheck.harness.zoo import mlp

    x, y = data.teacher(64, 5, 3, hidden=[7], activation="tanh", seed=4)
    teacher = mlp([5, 7, 3], "tanh", seed=5)  # the generator seeds its teacher with seed + 1
    with torch.no_grad():
        assert torch.equal(teacher(x).argmax(1), y)
        xr, yr = data.teacher(64, 5, 3, hidden=[7], regression=True, seed=4)
        assert torch.allclose(teacher(xr), yr)
    assert yr.shape == (64, 3) and yr.is_floating_point()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), extra=st.integers(0, 5), rho=st.floats(-0.05, 0.999),
       radius=st.floats(0.1, 10.0), seed=st.integers(0, 100))
def test_orthogonal_samples_have_the_chosen_cosine(n, extra, rho, radius, seed):
    if rho <= -1.0 / (n - 1):
        return
    x, y = data.orthogonal(n, n + extra, rho, classes=2, radius=radius, seed=seed)
    v = x.to(torch.float64)
    norms = v.norm(dim=1)
    cos = (v @ v.T) / torch.outer(norms, norms)
    off = cos[~torch.eye(n, dtype=torch.bool)]
    assert torch.allclose(norms, torch.full((n,), radius, dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(off, torch.full_like(off, rho), atol=1e-5)
    assert data.max_abs_cosine(x) == pytest.approx(abs(rho), abs=1e-5)
    counts = torch.bincount(y, minlength=2)
    assert abs(int(counts[0]) - int(counts[1])) <= 1  # balanced labels


def test_max_abs_cosine_brute_force():
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    best = max(abs(float(torch.dot(x[i], x[j]) / (x[i].norm() * x[j].norm())))
               for i in range(7) for j in range(7) if i != j)
    assert data.max_abs_cosine(x) == pytest.approx(best, rel=1e-6)
    with pytest.raises(ValueError, match="two samples"):
        data.max_abs_cosine(x[:1])


def test_orthogonal_errors():
    with pytest.raises(ValueError, match="dim ≥ n"):
        data.orthogonal(10, 5, 0.1)
    with pytest.raises(ValueError, match="rho must lie"):
        data.orthogonal(5, 5, 1.0)
    with pytest.raises(ValueError, match="rho must lie"):
        data.orthogonal(5, 5, -0.5)


def test_tokens_label_is_the_most_frequent_token():
    ids, y = data.tokens(200, length=7, vocab=3, seed=1, one_hot=False)
    for row, label in zip(ids.tolist(), y.tolist(), strict=True):
        counts = [row.count(t) for t in range(3)]
        assert label == counts.index(max(counts))
    hot, y2 = data.tokens(200, length=7, vocab=3, seed=1)
    assert hot.shape == (200, 7, 3) and torch.equal(hot.argmax(-1), ids) and torch.equal(y, y2)


def test_load_lays_out_data_for_the_architecture():
    flat = data.load("digits", layout="flat")
    image = data.load("digits", layout="image")
    assert flat.x.shape == (1797, 64) and image.x.shape == (1797, 1, 8, 8)
    assert flat.num_outputs == image.num_outputs == 10
    tok = data.load("tokens", n=10, layout="tokens", vocab=5, length=4)
    assert tok.x.shape == (10, 4, 5) and tok.num_outputs == 5
    assert data.load("tokens", n=10, layout="flat").x.shape == (10, 32)  # defaults 8 × 4
    # the declared class count, even when a class drew no sample
    few = data.load("gaussian_mixture", n=3, dim=2, classes=9)
    assert few.num_outputs == 9
    reg = data.load("teacher", n=8, dim=3, classes=2, regression=True)
    assert reg.num_outputs == 2 and reg.y.shape == (8, 2)
    assert data.load("orthogonal", n=4, dim=6, rho=0.3).num_outputs == 2


@pytest.mark.parametrize("call, error, match", [
    (lambda: data.load("imagenet"), ValueError, "unknown data set 'imagenet'"),
    (lambda: data.load("iris", layout="image"), ValueError,
     "needs image inputs but data set 'iris' has flat"),
    (lambda: data.load("gaussian_mixture", dim=2, classes=2), ValueError, "needs n_samples"),
    (lambda: data.load("gaussian_mixture", n=5, dim=2), ValueError, "bad options"),
    (lambda: data.load("digits", dim=3), ValueError, "bad options for data set 'digits'"),
    (lambda: data.load("tokens", n=5, layout="image"), ValueError, "needs image inputs"),
    (lambda: data.load("digits", layout="sparse"), ValueError, "unknown layout"),
    (lambda: data.load("mnist"), ValueError, "set data_root"),
    (lambda: data.bundled("digits", n=0), ValueError, r"n must be in \[1, 1797\]"),
    (lambda: data.gaussian_mixture(0, 2, 2), ValueError, "positive integers"),
    (lambda: data.tokens(5, vocab=0), ValueError, "positive integers"),
])
def test_bad_input_gives_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_local_missing_folder_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        data.local("mnist", missing)
    with pytest.raises(ValueError, match="unknown local data set"):
        data.local("svhn", tmp_path)


def test_local_without_torchvision_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails
    with pytest.raises(ImportError, match="torchvision, which cannot be imported"):
        data.local("cifar10", tmp_path)


def _fake_torchvision(monkeypatch, folder):
    """A stand-in for torchvision.datasets: MNIST-like uint8 tensors, CIFAR-like numpy."""

    def dataset(images, labels):
        class Fake:
            def __init__(self, root, train=True, download=True):
                assert download is False and root == str(folder)
                if not any(folder.iterdir()):
                    raise RuntimeError("Dataset not found. You can use download=True")
                self.data, self.targets = images, labels

        return Fake

    g = np.random.default_rng(0)
    mnist = torch.tensor(g.integers(0, 256, (12, 5, 5)), dtype=torch.uint8)
    cifar = g.integers(0, 256, (12, 4, 4, 3)).astype(np.uint8)
    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(MNIST=dataset(mnist, torch.arange(12) % 10),
                                        FashionMNIST=dataset(mnist, torch.arange(12) % 10),
                                        CIFAR10=dataset(cifar, list(range(12))))
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tv.datasets)
    return mnist, cifar


def test_local_reads_torchvision_datasets(tmp_path, monkeypatch):
    mnist, cifar = _fake_torchvision(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no MNIST data found in {tmp_path}"):
        data.local("mnist", tmp_path)
    (tmp_path / "MNIST").mkdir()
    x, y = data.local("mnist", tmp_path, standardize=False)
    assert x.shape == (12, 1, 5, 5) and torch.allclose(x[:, 0], mnist.float() / 255)
    assert y.dtype == torch.int64
    x, y = data.local("cifar10", tmp_path)
    assert x.shape == (12, 3, 4, 4)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    raw = torch.tensor(cifar).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(x[:, 1] * raw[:, 1].std() + raw[:, 1].mean(), raw[:, 1], atol=1e-5)
    ds = data.load("fashion_mnist", root=tmp_path, n=5, layout="flat")
    assert ds.x.shape == (5, 25) and ds.num_outputs <= 10
