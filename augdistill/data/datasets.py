"""Datasets: one entry point, :func:`load_dataset`, returning tensors plus metadata.

All images are ``float32`` in ``[0, 1]`` pixel space, shape ``(N, C, H, W)``; labels are
``int64`` of shape ``(N,)``. Normalisation is *not* applied here: the mean/std travel in
:class:`DatasetInfo` and the models normalise their input, so augmentation always acts on
``[0, 1]`` images.

Splits are fixed and documented:

* ``digits`` (scikit-learn's 8x8 handwritten digits, shipped inside this package):
  a stratified 70/30 train/test split drawn with seed 0.
* ``digits-rot``: ``digits`` with every image (train, val and test) rotated by an angle
  drawn uniformly from [-180, 180) degrees with seed 1234.
* ``fashion-mnist`` / ``mnist`` / ``cifar10``: the official train/test files.

A validation split (``val_fraction`` of the training set, stratified, seed ``split_seed``)
is carved from the training data: anything selected is selected on it, never on ``test``.
"""

from __future__ import annotations

import gzip
import math
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from augdistill.errors import DataError

__all__ = ["DatasetInfo", "Split", "Dataset", "load_dataset", "DATASET_NAMES", "DEFAULT_FASHION_ROOT"]

DEFAULT_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
DIGIT_CLASSES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a policy need to know about a dataset.

    Attributes:
        name: canonical dataset name, e.g. ``"digits"``.
        image_shape: ``(C, H, W)`` of one image.
        num_classes: number of classes.
        class_names: human-readable class names, ``num_classes`` of them.
        mean: per-channel mean of the training images in ``[0, 1]`` units.
        std: per-channel standard deviation of the training images.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Split:
    """Images ``x`` of shape ``(N, C, H, W)`` in ``[0, 1]`` and labels ``y`` of shape ``(N,)``."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of one dataset plus its :class:`DatasetInfo`."""

    train: Split
    val: Split
    test: Split
    info: DatasetInfo

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.train.to(device), self.val.to(device), self.test.to(device), self.info)


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)`` with ``fraction`` of every class held out (at least 1)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = max(1, int(round(fraction * len(idx)))) if fraction > 0 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as a numpy array, validating its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(dims):
        raise DataError(f"{path}: IDX header says {dims} but the file holds {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find_file(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz", root / "raw" / stem, root / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_pair(root: Path, name: str, how_to_get: str) -> tuple[np.ndarray, ...]:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [_find_file(root, s) for s in stems]
    missing = [s for s, p in zip(stems, paths) if p is None]
    if missing:
        raise DataError(f"dataset '{name}' not found: looked in {root} (and {root}/raw) for "
                        f"{', '.join(m + '[.gz]' for m in missing)}; {how_to_get}")
    return tuple(_read_idx(p) for p in paths)  # type: ignore[arg-type]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("augdistill.data").joinpath("digits.csv.gz").open("rb") as f:
        table = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.float32)
    x = (table[:, :64] / 16.0).reshape(-1, 1, 8, 8)
    return x, table[:, 64].astype(np.int64)


def _rotate(x: np.ndarray, seed: int) -> np.ndarray:
    """Rotate every image by its own angle drawn from U[-180, 180) degrees (bilinear, zero fill)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(x)
    angle = (torch.rand(images.shape[0], generator=g) * 2 - 1) * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros").clamp(0, 1).numpy()


def _load_digits(rotated: bool) -> tuple[np.ndarray, ...]:
    x, y = _digits_arrays()
    if rotated:
        x = _rotate(x, seed=1234)
    train, test = _stratified_split(y, 0.3, seed=0)
    return x[train], y[train], x[test], y[test]


def _load_cifar10(root: Path) -> tuple[np.ndarray, ...]:
    binary = root / "cifar-10-batches-bin"
    python = root / "cifar-10-batches-py"
    if binary.is_dir():
        def read(name: str) -> tuple[np.ndarray, np.ndarray]:
            path = binary / name
            if not path.is_file():
                raise DataError(f"dataset 'cifar10': missing {path}")
            rec = np.fromfile(path, dtype=np.uint8)
            if rec.size % 3073:
                raise DataError(f"{path}: size {rec.size} is not a multiple of 3073-byte records")
            rec = rec.reshape(-1, 3073)
            return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)
        names = [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]
    elif python.is_dir():
        def read(name: str) -> tuple[np.ndarray, np.ndarray]:
            path = python / name
            if not path.is_file():
                raise DataError(f"dataset 'cifar10': missing {path}")
            batch = _safe_unpickle(path)
            return (np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
                    np.asarray(batch[b"labels"], dtype=np.int64))
        names = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        raise DataError(f"dataset 'cifar10' not found: looked for {binary} and {python}; "
                        "download CIFAR-10 (binary or python version) and pass its parent folder "
                        "as --data-root")
    train = [read(n) for n in names[0]]
    test = read(names[1][0])
    return (np.concatenate([t[0] for t in train]).astype(np.float32) / 255.0,
            np.concatenate([t[1] for t in train]), test[0].astype(np.float32) / 255.0, test[1])


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds plain containers and numpy arrays and refuses everything else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _safe_unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e})") from None


def _how_to_get(name: str) -> str:
    if name == "fashion-mnist":
        return ("install it with `apt-get install -y dataset-fashion-mnist` "
                f"(files land in {DEFAULT_FASHION_ROOT}) or pass --data-root")
    return "put the IDX files under --data-root (torchvision layout: ROOT/MNIST/raw/)"


def _load_raw(name: str, root: Path | None) -> tuple[tuple[np.ndarray, ...], int, tuple[str, ...]]:
    """Return ``(train_x, train_y, test_x, test_y), channels, class_names`` as numpy arrays."""
    if name in ("digits", "digits-rot"):
        return _load_digits(rotated=name == "digits-rot"), 1, DIGIT_CLASSES
    if name == "fashion-mnist":
        base = root if root is not None else DEFAULT_FASHION_ROOT
        candidates = [base, base / "FashionMNIST"]
    elif name == "mnist":
        if root is None:
            raise DataError("dataset 'mnist' needs --data-root (a folder holding MNIST/raw/ or the IDX files)")
        candidates = [root, root / "MNIST"]
    elif name == "cifar10":
        if root is None:
            raise DataError("dataset 'cifar10' needs --data-root (the folder holding cifar-10-batches-bin/ "
                            "or cifar-10-batches-py/)")
        return _load_cifar10(root), 3, CIFAR10_CLASSES
    else:
        raise DataError(f"unknown dataset '{name}'; expected one of {', '.join(DATASET_NAMES)}")
    if root is not None and not root.exists():
        raise DataError(f"--data-root {root} does not exist (dataset '{name}')")
    for folder in candidates:
        if _find_file(folder, "train-images-idx3-ubyte") is not None:
            arrays = _load_idx_pair(folder, name, _how_to_get(name))
            tx, ty, vx, vy = arrays
            classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
            return ((tx[:, None].astype(np.float32) / 255.0, ty.astype(np.int64),
                     vx[:, None].astype(np.float32) / 255.0, vy.astype(np.int64)), 1, classes)
    raise DataError(f"dataset '{name}' not found: looked in {', '.join(str(c) for c in candidates)} "
                    f"for train-images-idx3-ubyte[.gz]; {_how_to_get(name)}")


DATASET_NAMES = ("digits", "digits-rot", "fashion-mnist", "mnist", "cifar10")


def load_dataset(name: str = "digits", root: str | Path | None = None, *,
                 val_fraction: float = 0.1, split_seed: int = 0) -> Dataset:
    """Load a dataset as ``[0, 1]`` float tensors with a held-out validation split.

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: folder holding the files (``fashion-mnist`` defaults to
            ``/usr/share/datasets/fashion-mnist``; ``digits`` ships inside the package).
        val_fraction: fraction of every class of the training files moved to ``val``.
        split_seed: seed of the stratified validation split.

    Returns:
        A :class:`Dataset` whose splits hold ``x`` of shape ``(N, C, H, W)`` and ``y`` of shape ``(N,)``.

    Raises:
        DataError: unknown name, missing or malformed files. Nothing is downloaded.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.info.image_shape, len(ds.train) + len(ds.val), len(ds.test)
        ((1, 8, 8), 1258, 539)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    (tx, ty, sx, sy), channels, classes = _load_raw(name, Path(root) if root is not None else None)
    keep, held = _stratified_split(ty, val_fraction, seed=split_seed)
    train_x = torch.from_numpy(np.ascontiguousarray(tx[keep]))
    dims = (0, 2, 3)
    info = DatasetInfo(
        name=name,
        image_shape=(channels, int(tx.shape[2]), int(tx.shape[3])),
        num_classes=len(classes),
        class_names=classes,
        mean=tuple(float(v) for v in train_x.mean(dim=dims)),
        std=tuple(float(v) for v in train_x.std(dim=dims)),
    )
    return Dataset(
        train=Split(train_x, torch.from_numpy(ty[keep])),
        val=Split(torch.from_numpy(np.ascontiguousarray(tx[held])), torch.from_numpy(ty[held])),
        test=Split(torch.from_numpy(np.ascontiguousarray(sx)), torch.from_numpy(sy)),
        info=info,
    )
