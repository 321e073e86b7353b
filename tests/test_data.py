"""Data sets: bundled tables, synthetic generators (checked against brute force), local image
files (IDX, CIFAR batches, written here), and clear errors."""

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


def write_idx(path, array, gz=False):
    """An IDX file as LeCun's format describes it (big-endian header and data)."""
    import gzip

    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
             np.float64: 0x0E}
    array = np.asarray(array)
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)
    return path


def write_mnist(root, folder="MNIST", n=12, gz=False, seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, 5, 5)).astype(np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images, gz)
    write_idx(raw / "train-labels-idx1-ubyte", labels, gz)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:4], gz)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:4], gz)
    return images, labels


def write_cifar(root, per_batch=3, seed=0):
    """CIFAR-10's python batches: dicts of bytes keys, data (n, 3072) as R, G, B planes."""
    import pickle

    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (6 * per_batch, 32, 32, 3)).astype(np.uint8)
    labels = list(range(len(images)))
    labels = [v % 10 for v in labels]
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        part = slice(k * per_batch, (k + 1) * per_batch)
        planes = images[part].transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        (folder / name).write_bytes(pickle.dumps({b"data": planes, b"labels": labels[part],
                                                  b"batch_label": name.encode()}))
    return images, np.array(labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_round_trip(tmp_path, gz):
    from boundcheck.harness.image_files import read_idx

    for array in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                  np.array([-3, 7, 1000], dtype=np.int32), np.linspace(0, 1, 6).reshape(3, 2)):
        path = write_idx(tmp_path / f"a{array.dtype}", array, gz)
        back = read_idx(path)
        assert back.dtype == array.dtype.newbyteorder("=") and np.array_equal(back, array)


@pytest.mark.parametrize("gz", [False, True])
def test_local_reads_mnist_and_fashion_mnist_idx_files(tmp_path, gz):
    images, labels = write_mnist(tmp_path, gz=gz)
    x, y = data.local("mnist", tmp_path, standardize=False)
    assert x.shape == (12, 1, 5, 5) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.tensor(images, dtype=torch.float32) / 255)
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    xt, yt = data.local("mnist", tmp_path, train=False, standardize=False)
    assert xt.shape == (4, 1, 5, 5) and torch.equal(xt, x[:4]) and torch.equal(yt, y[:4])
    write_mnist(tmp_path, "FashionMNIST", gz=gz, seed=1)
    ds = data.load("fashion_mnist", root=tmp_path, n=5, layout="flat")
    assert ds.x.shape == (5, 25) and ds.num_outputs <= 10
    x, _ = data.local("fashion_mnist", tmp_path)
    assert torch.allclose(x.mean(), torch.zeros(()), atol=1e-5)


def test_local_reads_cifar10_batches(tmp_path):
    images, labels = write_cifar(tmp_path)
    x, y = data.local("cifar10", tmp_path, standardize=False)
    assert x.shape == (15, 3, 32, 32) and y.tolist() == labels[:15].tolist()
    raw = torch.tensor(images[:15]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(x, raw)  # channel order: the R, G, B planes
    xt, yt = data.local("cifar10", tmp_path, train=False, standardize=False)
    assert torch.equal(xt, torch.tensor(images[15:]).permute(0, 3, 1, 2).float() / 255)
    x, _ = data.local("cifar10", tmp_path)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)


def test_bad_image_files_name_the_file(tmp_path):
    from boundcheck.harness.image_files import DataFileError

    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.local("mnist", tmp_path)
    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.*truncated"):
        data.local("mnist", tmp_path)
    images.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataFileError, match="not an IDX file"):
        data.local("mnist", tmp_path)
    write_idx(images, np.zeros((3, 5, 5), np.uint8))  # 3 images, 12 labels
    with pytest.raises(DataFileError, match="do not match"):
        data.local("mnist", tmp_path)
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataFileError, match="data_batch_3"):
        data.local("cifar10", tmp_path)
    import os
    import pickle

    batch.write_bytes(pickle.dumps(os.system))  # a pickle that would call a function
    with pytest.raises(DataFileError, match="not allowed"):
        data.local("cifar10", tmp_path)
    batch.write_bytes((batch.parent / "data_batch_4").read_bytes())
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        data.local("cifar10", tmp_path)
