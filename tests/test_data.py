"""Datasets, splits, IDX reading and class-balanced sampling."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from augdistill.data import ClassBalancedSampler, load_dataset, take_per_class
from augdistill.data.datasets import DEFAULT_FASHION_ROOT
from augdistill.errors import DataError


def test_digits_splits_are_disjoint_stratified_and_in_unit_range():
    ds = load_dataset("digits")
    assert ds.info.image_shape == (1, 8, 8) and ds.info.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1132, 126, 539)
    everything = torch.cat([ds.train.x, ds.val.x, ds.test.x]).flatten(1)
    assert torch.unique(everything, dim=0).shape[0] >= 1797 - 20  # the raw data holds a few duplicates
    for split in (ds.train, ds.val, ds.test):
        assert 0 <= split.x.min() and split.x.max() <= 1
        counts = torch.bincount(split.y, minlength=10)
        assert counts.min() >= 0.8 * counts.float().mean()
    torch.testing.assert_close(torch.tensor(ds.info.mean), ds.train.x.mean(dim=(0, 2, 3)))


def test_digits_rot_rotates_every_image_with_a_fixed_seed():
    plain, rotated = load_dataset("digits"), load_dataset("digits-rot")
    again = load_dataset("digits-rot")
    assert torch.equal(rotated.test.x, again.test.x)
    assert torch.equal(plain.test.y, rotated.test.y)
    changed = (plain.test.x - rotated.test.x).abs().flatten(1).amax(1) > 0.1
    assert changed.float().mean() > 0.9


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_mnist_reads_torchvision_layout(tmp_path):
    _fake_mnist(tmp_path)
    ds = load_dataset("mnist", tmp_path)
    assert ds.info.image_shape == (1, 28, 28)
    assert len(ds.train) + len(ds.val) == 40 and len(ds.test) == 20
    assert ds.train.x.dtype == torch.float32 and ds.train.x.max() <= 1


def test_truncated_idx_file_names_the_file(tmp_path):
    _fake_mnist(tmp_path)
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") * 3 + b"\x00" * 10)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("name, root, message", [
    ("imagenet", None, "unknown dataset 'imagenet'"),
    ("mnist", "/definitely/not/here", "does not exist"),
    ("fashion-mnist", "/tmp", "not found: looked in"),
    ("cifar10", "/tmp", "cifar-10-batches"),
])
def test_missing_data_gives_one_clear_error(name, root, message):
    with pytest.raises(DataError, match=message):
        load_dataset(name, root)


@pytest.mark.skipif(not DEFAULT_FASHION_ROOT.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion-mnist")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert ds.info.class_names[0] == "T-shirt/top"


def test_cifar10_binary_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([np.arange(10, dtype=np.uint8)[:, None],
                                  rng.integers(0, 256, (10, 3072), dtype=np.uint8)], axis=1)
        records.tofile(folder / name)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.info.image_shape == (3, 32, 32) and len(ds.test) == 10


def test_sampler_is_balanced_and_reproducible():
    ds = load_dataset("digits")
    sampler = ClassBalancedSampler(ds.train.x, ds.train.y, 10)
    x1, y1 = sampler.sample(7, torch.Generator().manual_seed(3))
    x2, y2 = sampler.sample(7, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.bincount(y1).tolist() == [7] * 10
    x3, _ = sampler.sample(7, torch.Generator().manual_seed(4))
    assert not torch.equal(x1, x3)
    with pytest.raises(DataError):
        take_per_class(ds.train.x, ds.train.y, 10, 0, seed=0)
