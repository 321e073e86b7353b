"""Reading MNIST, FashionMNIST and CIFAR-10 from their distribution files, without torchvision
(which cannot be imported beside a CPU-only torch build it was not made for).

* MNIST / FashionMNIST: IDX files (LeCun et al., "THE MNIST DATABASE of handwritten digits",
  http://yann.lecun.com/exdb/mnist/, section "FILE FORMATS"): two zero bytes, a type code
  (0x08 unsigned byte, 0x09 signed byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double), the
  number of dimensions, each dimension as a big-endian 32-bit integer, then the data
  big-endian, row-major. Plain or gzip-compressed (``.gz``).
* CIFAR-10: the "python version" batches (Krizhevsky 2009,
  https://www.cs.toronto.edu/~kriz/cifar.html): pickled dicts with ``b"data"`` (n × 3072
  uint8, the red, green then blue 32×32 planes of each image) and ``b"labels"``. Unpickled
  with only numpy's array constructors allowed, so a batch file cannot run code.

Folders are searched in torchvision's layout (``root/MNIST/raw/``, ``root/FashionMNIST/raw/``,
``root/cifar-10-batches-py/``), then ``root/MNIST/`` and ``root`` itself.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)


class DataFileError(ValueError):
    """A data file is missing, truncated or not in its format; the message names it."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file (plain or gzip), checked against its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            blob = fh.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f"{path}: cannot be read: {err}") from err
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in IDX_TYPES:
        raise DataFileError(f"{path}: not an IDX file (bad magic number {blob[:4].hex()})")
    ndim = blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataFileError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[blob[2]])
    expected = header + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(blob) != expected:
        raise DataFileError(f"{path}: {len(blob)} bytes, but its header {shape} of "
                            f"{dtype.name} needs {expected} (truncated or corrupt)")
    return np.frombuffer(blob, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


def read_mnist(root: str | Path, folder_name: str, train: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,)) of MNIST or FashionMNIST (``folder_name``
    "MNIST" / "FashionMNIST") below ``root``."""
    root = Path(root)
    images_name, labels_name = MNIST_FILES[train]
    folders = [root / folder_name / "raw", root / folder_name, root]
    images = read_idx(_find(folders, images_name, folder_name))
    labels = read_idx(_find(folders, labels_name, folder_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataFileError(f"{folder_name} in {root}: images {images.shape} and labels "
                            f"{labels.shape} do not match (expected (n, H, W) and (n,))")
    return images, labels


def read_cifar10(root: str | Path, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 32, 32, 3) uint8, labels (n,)) of CIFAR-10's python batches below ``root``."""
    root = Path(root)
    folders = [root / CIFAR_FOLDER, root]
    images, labels = [], []
    for name in CIFAR_TRAIN if train else CIFAR_TEST:
        path = _find(folders, name, "CIFAR-10", gz=False)
        batch = _load_batch(path)
        data, batch_labels = batch.get(b"data"), batch.get(b"labels")
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                or batch_labels is None or len(batch_labels) != len(data):
            raise DataFileError(f"{path}: not a CIFAR-10 batch (expected b'data' of shape "
                                "(n, 3072) and n b'labels')")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data batch")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own array constructor
        return getattr(np, name)


def _load_batch(path: Path) -> dict:
    try:
        batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            AttributeError) as err:
        raise DataFileError(f"{path}: not a readable CIFAR-10 batch (truncated or not a "
                            f"pickle of arrays): {err}") from err
    if not isinstance(batch, dict):
        raise DataFileError(f"{path}: not a CIFAR-10 batch (expected a dict, got "
                            f"{type(batch).__name__})")
    return batch


def _find(folders: list[Path], name: str, what: str, gz: bool = True) -> Path:
    for folder in folders:
        for candidate in (folder / name, *([folder / f"{name}.gz"] if gz else [])):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{what}: {name}{'[.gz]' if gz else ''} not found in "
                            f"{', '.join(str(f) for f in folders)} (nothing is downloaded)")
