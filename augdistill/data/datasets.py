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

Every file is read and validated by :mod:`augdistill.data.readers`; a loaded :class:`Dataset` is
checked once more as a whole (finite values in ``[0, 1]``, every class in train and val, no empty
split). Anything wrong raises one :class:`DataError` that says what and where.
"""

from __future__ import annotations

import math
import numbers
import os
import reprlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from augdistill.data.readers import (read_cifar_binary, read_cifar_python, read_digits_csv,
                                     read_idx_split)
from augdistill.errors import DataError

__all__ = ["DatasetInfo", "Split", "Dataset", "load_dataset", "DATASET_NAMES", "DEFAULT_FASHION_ROOT"]

DEFAULT_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
_CLASS_NAMES = {"digits": DIGIT_CLASSES, "digits-rot": DIGIT_CLASSES, "fashion-mnist": FASHION_CLASSES,
                "mnist": DIGIT_CLASSES, "cifar10": CIFAR10_CLASSES}
DATASET_NAMES = tuple(_CLASS_NAMES)


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


@dataclass(frozen=True)
class _Files:
    """A dataset's train and test files as ``float32`` images ``(N, C, H, W)`` in ``[0, 1]`` and ``int64``
    labels ``(N,)``, with ``source``, where they were read from, for error messages."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str


def _unit(x: np.ndarray) -> np.ndarray:
    """``uint8`` pixels as ``float32`` in ``[0, 1]``."""
    return x.astype(np.float32) / 255.0


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)`` with ``fraction`` of every class held out (at least 1)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = max(1, int(round(fraction * len(idx))))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_file(root: Path, stem: str) -> Path | None:
    """The first of ``root/stem[.gz]`` and ``root/raw/stem[.gz]`` that exists (a directory there is the reader's
    to refuse)."""
    for candidate in (root / stem, root / f"{stem}.gz", root / "raw" / stem, root / "raw" / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _how_to_get(name: str) -> str:
    if name == "fashion-mnist":
        return ("install it with `apt-get install -y dataset-fashion-mnist` "
                f"(files land in {DEFAULT_FASHION_ROOT}) or pass --data-root")
    return "put the IDX files under --data-root (torchvision layout: ROOT/MNIST/raw/)"


def _load_idx(name: str, folders: tuple[Path, ...], num_classes: int) -> _Files:
    """Read the four IDX files of the first of ``folders`` that holds training images."""
    folder = next((f for f in folders if _find_file(f, _IDX_STEMS[0]) is not None), None)
    if folder is None:
        raise DataError(f"dataset '{name}' not found: looked in {', '.join(str(f) for f in folders)} "
                        f"for {_IDX_STEMS[0]}[.gz]; {_how_to_get(name)}")
    paths = [_find_file(folder, s) for s in _IDX_STEMS]
    missing = [s for s, p in zip(_IDX_STEMS, paths) if p is None]
    if missing:
        raise DataError(f"dataset '{name}' not found: looked in {folder} (and {folder}/raw) for "
                        f"{', '.join(m + '[.gz]' for m in missing)}; {_how_to_get(name)}")
    train_images, train_labels, test_images, test_labels = paths
    train_x, train_y = read_idx_split(train_images, train_labels, num_classes)  # type: ignore[arg-type]
    test_x, test_y = read_idx_split(test_images, test_labels, num_classes)  # type: ignore[arg-type]
    if test_x.shape[1:] != train_x.shape[1:]:
        raise DataError(f"{test_images}: images are {'x'.join(map(str, test_x.shape[1:]))} pixels but those of "
                        f"{train_images} are {'x'.join(map(str, train_x.shape[1:]))}; expected one image size")
    return _Files(_unit(train_x[:, None]), train_y, _unit(test_x[:, None]), test_y, str(folder))


_CIFAR_LAYOUTS = (("cifar-10-batches-bin", ".bin", read_cifar_binary),
                  ("cifar-10-batches-py", "", read_cifar_python))


def _load_cifar10(root: Path, num_classes: int) -> _Files:
    """Read the five training batches and the test batch, binary version first, then python version."""
    for folder_name, suffix, read in _CIFAR_LAYOUTS:
        folder = root / folder_name
        if folder.is_dir():
            train = [read(folder / f"data_batch_{i}{suffix}", num_classes) for i in range(1, 6)]
            test_x, test_y = read(folder / f"test_batch{suffix}", num_classes)
            return _Files(_unit(np.concatenate([x for x, _ in train])), np.concatenate([y for _, y in train]),
                          _unit(test_x), test_y, str(folder))
    looked = " and ".join(str(root / folder_name) for folder_name, _, _ in _CIFAR_LAYOUTS)
    raise DataError(f"dataset 'cifar10' not found: looked for {looked}; "
                    "download CIFAR-10 (binary or python version) and pass its parent folder as --data-root")


def _load_digits(rotated: bool) -> _Files:
    with resources.as_file(resources.files("augdistill.data").joinpath("digits.csv.gz")) as path:
        pixels, y = read_digits_csv(path)
    x = (pixels.astype(np.float32) / 16.0)[:, None]
    if rotated:
        x = _rotate(x, seed=1234)
    train, test = _stratified_split(y, 0.3, seed=0)
    return _Files(x[train], y[train], x[test], y[test], "the built-in digits csv")


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


def _load_files(name: str, root: Path | None, num_classes: int) -> _Files:
    """Read the train and test files of the dataset ``name`` from ``root`` (or its default place)."""
    if name in ("digits", "digits-rot"):
        return _load_digits(rotated=name == "digits-rot")
    if root is None and name == "mnist":
        raise DataError("dataset 'mnist' needs --data-root (a folder holding MNIST/raw/ or the IDX files)")
    if root is None and name == "cifar10":
        raise DataError("dataset 'cifar10' needs --data-root (the folder holding cifar-10-batches-bin/ "
                        "or cifar-10-batches-py/)")
    if root is not None and not root.exists():
        raise DataError(f"--data-root {root} does not exist (dataset '{name}')")
    if root is not None and not root.is_dir():
        raise DataError(f"--data-root {root} is not a directory; expected the folder holding dataset '{name}'")
    if name == "cifar10":
        return _load_cifar10(root, num_classes)  # type: ignore[arg-type]
    base = root if root is not None else DEFAULT_FASHION_ROOT
    subfolder = "FashionMNIST" if name == "fashion-mnist" else "MNIST"
    return _load_idx(name, (base, base / subfolder), num_classes)


def _check_arguments(name: Any, root: Any, val_fraction: Any, split_seed: Any) -> None:
    """Refuse :func:`load_dataset` arguments of the wrong type or out of range, before any file is read."""
    if not isinstance(name, str):
        raise DataError(f"dataset name {reprlib.repr(name)} has type {type(name).__name__}; expected a str, one of "
                        f"{', '.join(DATASET_NAMES)}")
    if name not in _CLASS_NAMES:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise DataError(f"root {reprlib.repr(root)} has type {type(root).__name__}; expected a folder path or None")
    if root == "":
        raise DataError("root is an empty string; expected a folder path or None")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction is {reprlib.repr(val_fraction)}; expected a number in (0, 1) "
                        "(the share of every class held out for validation)")
    if isinstance(split_seed, bool) or not isinstance(split_seed, numbers.Integral) or split_seed < 0:
        raise DataError(f"split_seed is {reprlib.repr(split_seed)}; expected an integer >= 0")


def _check_splits(where: str, train: Split, val: Split, test: Split, class_names: tuple[str, ...],
                  val_fraction: float) -> None:
    """Refuse splits where a class is absent from train or val, a split is empty, or a pixel is non-finite or
    outside ``[0, 1]``; ``where`` (the dataset and its files) starts every message."""
    n_train = torch.bincount(train.y, minlength=len(class_names))
    n_val = torch.bincount(val.y, minlength=len(class_names))
    for c, name in enumerate(class_names):
        if n_train[c] == 0 or n_val[c] == 0:
            raise DataError(f"{where}: class {c} ({name!r}) has {int(n_train[c])} images in train and "
                            f"{int(n_val[c])} in val ({int(n_train[c] + n_val[c])} in the training files, "
                            f"val_fraction {val_fraction}); expected at least one in each")
    for split_name, split in (("train", train), ("val", val), ("test", test)):
        if len(split) == 0:
            raise DataError(f"{where}: the {split_name} split is empty; expected at least one image")
        low, high = torch.aminmax(split.x)
        if not (0 <= low and high <= 1):  # NaN fails both comparisons
            flat = split.x.flatten()
            i = int(torch.nonzero(~((flat >= 0) & (flat <= 1)))[0])
            raise DataError(f"{where}: {split_name} image {i // split.x[0].numel()} holds the value {float(flat[i])}; "
                            "expected finite values in [0, 1]")


def load_dataset(name: str = "digits", root: str | os.PathLike[str] | None = None, *,
                 val_fraction: float = 0.1, split_seed: int = 0) -> Dataset:
    """Load a dataset as ``[0, 1]`` float tensors with a held-out validation split.

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: folder holding the files (``fashion-mnist`` defaults to
            ``/usr/share/datasets/fashion-mnist``; ``digits`` ships inside the package).
        val_fraction: fraction of every class of the training files moved to ``val``, in ``(0, 1)``;
            at least one image of every class is moved.
        split_seed: seed (``>= 0``) of the stratified validation split.

    Returns:
        A :class:`Dataset` whose splits hold ``x`` of shape ``(N, C, H, W)`` and ``y`` of shape ``(N,)``.

    Raises:
        DataError: unknown name, a bad argument, missing or malformed files, or a dataset that fails
            the checks above. Nothing is downloaded.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.info.image_shape, len(ds.train) + len(ds.val), len(ds.test)
        ((1, 8, 8), 1258, 539)
    """
    _check_arguments(name, root, val_fraction, split_seed)
    classes = _CLASS_NAMES[name]
    try:
        files = _load_files(name, Path(root) if root is not None else None, len(classes))
    except OSError as e:  # a folder that cannot even be looked into; the readers report their own files
        raise DataError(f"{e.filename}: cannot be accessed ({e.strerror}); expected a readable folder "
                        f"holding dataset '{name}'") from None
    keep, held = _stratified_split(files.train_y, val_fraction, seed=split_seed)
    splits = [Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
              for x, y in ((files.train_x[keep], files.train_y[keep]), (files.train_x[held], files.train_y[held]),
                           (files.test_x, files.test_y))]
    _check_splits(f"dataset '{name}' ({files.source})", *splits, classes, val_fraction)
    train, val, test = splits
    info = DatasetInfo(
        name=name,
        image_shape=tuple(int(d) for d in files.train_x.shape[1:]),  # type: ignore[arg-type]
        num_classes=len(classes),
        class_names=classes,
        mean=tuple(float(v) for v in train.x.mean(dim=(0, 2, 3))),
        std=tuple(float(v) for v in train.x.std(dim=(0, 2, 3))),
    )
    return Dataset(train, val, test, info)
