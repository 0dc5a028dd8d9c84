"""Writers of small, valid dataset files for the data tests to load or to spoil."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

IDX_FILES = {"train-images": "train-images-idx3-ubyte.gz", "train-labels": "train-labels-idx1-ubyte.gz",
             "test-images": "t10k-images-idx3-ubyte.gz", "test-labels": "t10k-labels-idx1-ubyte.gz"}
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (values in [0, 255]) as an uncompressed unsigned-byte IDX file."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path``, gzipped if the name ends in ``.gz``."""
    path.write_bytes(gzip.compress(content, mtime=0) if path.suffix == ".gz" else content)
    return path


def fake_mnist(root: Path, n_train: int = 40, n_test: int = 20, size: int = 28) -> Path:
    """Random MNIST-like IDX files, labels cycling through the 10 classes, in ``root/MNIST/raw`` (returned)."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        write(raw / IDX_FILES[f"{split}-images"], idx_bytes(rng.integers(0, 256, (n, size, size))))
        write(raw / IDX_FILES[f"{split}-labels"], idx_bytes(np.arange(n) % 10))
    return raw


def cifar_records(n: int, seed: int = 0) -> bytes:
    """``n`` CIFAR-10 binary records: labels cycling through the 10 classes, random pixels."""
    labels = (np.arange(n) % 10).astype(np.uint8)[:, None]
    pixels = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes()


def cifar_batch(n: int, seed: int = 0) -> dict:
    """A CIFAR-10 python batch as the official files hold it: ``uint8`` data ``(n, 3072)``, a list of labels."""
    return {b"data": np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(n)], b"batch_label": b"fake"}


def fake_cifar(root: Path, version: str, n: int = 10) -> Path:
    """The six CIFAR-10 batches, ``version`` ``"bin"`` or ``"py"``, in ``root/cifar-10-batches-{version}``."""
    folder = root / f"cifar-10-batches-{version}"
    folder.mkdir()
    for seed, name in enumerate(CIFAR_BATCHES):
        if version == "bin":
            (folder / f"{name}.bin").write_bytes(cifar_records(n, seed))
        else:
            (folder / name).write_bytes(pickle.dumps(cifar_batch(n, seed), protocol=4))
    return folder
