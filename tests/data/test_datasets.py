"""load_dataset: the fixed splits, the file layouts, its arguments, and the checks on a loaded Dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from augdistill.data import Split, load_dataset
from augdistill.data.datasets import DEFAULT_FASHION_ROOT, _check_splits
from augdistill.errors import DataError

from .files import IDX_FILES, fake_cifar, fake_mnist, idx_bytes, write


def test_digits_splits_are_disjoint_stratified_and_in_unit_range(digits):
    assert digits.info.image_shape == (1, 8, 8) and digits.info.num_classes == 10
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1132, 126, 539)
    everything = torch.cat([digits.train.x, digits.val.x, digits.test.x]).flatten(1)
    assert torch.unique(everything, dim=0).shape[0] >= 1797 - 20  # the raw data holds a few duplicates
    for split in (digits.train, digits.val, digits.test):
        assert 0 <= split.x.min() and split.x.max() <= 1
        counts = torch.bincount(split.y, minlength=10)
        assert counts.min() >= 0.8 * counts.float().mean()
    torch.testing.assert_close(torch.tensor(digits.info.mean), digits.train.x.mean(dim=(0, 2, 3)))


def test_digits_rot_rotates_every_image_with_a_fixed_seed(digits):
    rotated, again = load_dataset("digits-rot"), load_dataset("digits-rot")
    assert torch.equal(rotated.test.x, again.test.x)
    assert torch.equal(digits.test.y, rotated.test.y)
    changed = (digits.test.x - rotated.test.x).abs().flatten(1).amax(1) > 0.1
    assert changed.float().mean() > 0.9


def test_split_seed_and_val_fraction_move_the_validation_split(digits):
    other = load_dataset("digits", split_seed=1)
    assert len(other.val) == len(digits.val) and not torch.equal(other.val.x, digits.val.x)
    assert torch.equal(other.test.x, digits.test.x)
    bigger = load_dataset("digits", val_fraction=0.5)
    assert len(bigger.val) == pytest.approx(1258 / 2, abs=10)


def test_mnist_reads_torchvision_layout(tmp_path):
    fake_mnist(tmp_path)
    ds = load_dataset("mnist", tmp_path)
    assert ds.info.image_shape == (1, 28, 28)
    assert len(ds.train) + len(ds.val) == 40 and len(ds.test) == 20
    assert ds.train.x.dtype == torch.float32 and ds.train.x.max() <= 1
    assert ds.test.y.tolist() == (np.arange(20) % 10).tolist()


def test_mnist_reads_uncompressed_files_in_the_root(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        images = rng.integers(0, 256, (n, 5, 5))
        write(tmp_path / IDX_FILES[f"{split}-images"].removesuffix(".gz"), idx_bytes(images))
        write(tmp_path / IDX_FILES[f"{split}-labels"].removesuffix(".gz"), idx_bytes(np.arange(n) % 10))
    ds = load_dataset("mnist", tmp_path)
    torch.testing.assert_close(ds.test.x[:, 0], torch.from_numpy(images / 255.0).float())


@pytest.mark.parametrize("version", ["bin", "py"])
def test_cifar10_layouts(tmp_path, version):
    fake_cifar(tmp_path, version)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.info.image_shape == (3, 32, 32) and len(ds.test) == 10 and len(ds.train) + len(ds.val) == 50
    assert ds.info.class_names[0] == "airplane"


@pytest.mark.skipif(not DEFAULT_FASHION_ROOT.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion-mnist")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert ds.info.class_names[0] == "T-shirt/top"


@pytest.mark.parametrize("name, root, message", [
    ("imagenet", None, "unknown dataset 'imagenet'; expected one of digits, digits-rot"),
    ("mnist", None, "needs --data-root"),
    ("cifar10", None, "needs --data-root"),
    ("mnist", "/definitely/not/here", "does not exist"),
    ("fashion-mnist", "/tmp", "not found: looked in /tmp, /tmp/FashionMNIST"),
    ("cifar10", "/tmp", "cifar-10-batches-bin and /tmp/cifar-10-batches-py"),
])
def test_missing_data_gives_one_clear_error(name, root, message):
    with pytest.raises(DataError, match=message):
        load_dataset(name, root)


def test_missing_second_idx_file_is_named(tmp_path):
    raw = fake_mnist(tmp_path)
    (raw / IDX_FILES["test-labels"]).unlink()
    with pytest.raises(DataError, match=r"looked in .*/MNIST \(and .*/MNIST/raw\) for t10k-labels-idx1-ubyte\[\.gz\];"):
        load_dataset("mnist", tmp_path)


def test_data_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="file is not a directory"):
        load_dataset("fashion-mnist", tmp_path / "file")


def test_data_root_that_cannot_be_looked_into_is_refused(tmp_path, monkeypatch):
    def refuse(path: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "exists", refuse)
    with pytest.raises(DataError, match=f"^{tmp_path}: cannot be accessed \\(Permission denied\\)"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": 5}, "dataset name 5 has type int; expected a str"),
    ({"name": None}, "dataset name None has type NoneType"),
    ({"name": "digits", "root": 5}, "root 5 has type int; expected a folder path"),
    ({"name": "mnist", "root": ""}, "root is an empty string"),
    ({"val_fraction": math.nan}, "val_fraction is nan; expected a number in \\(0, 1\\)"),
    ({"val_fraction": math.inf}, "val_fraction is inf"),
    ({"val_fraction": 0.0}, "val_fraction is 0.0"),
    ({"val_fraction": 1.0}, "val_fraction is 1.0"),
    ({"val_fraction": -0.1}, "val_fraction is -0.1"),
    ({"val_fraction": "0.1"}, "val_fraction is '0.1'"),
    ({"val_fraction": True}, "val_fraction is True"),
    ({"split_seed": -1}, "split_seed is -1; expected an integer >= 0"),
    ({"split_seed": 1.5}, "split_seed is 1.5"),
    ({"split_seed": False}, "split_seed is False"),
])
def test_bad_arguments_are_refused_before_any_file_is_read(kwargs, message):
    with pytest.raises(DataError, match=message):
        load_dataset(**kwargs)


def test_numpy_scalars_are_fine_arguments():
    ds = load_dataset("digits", val_fraction=np.float64(0.1), split_seed=np.int64(0))
    assert len(ds.val) == 126


def test_class_missing_from_the_training_files_is_named(tmp_path):
    raw = fake_mnist(tmp_path)
    write(raw / IDX_FILES["train-labels"], idx_bytes(np.arange(40) % 9))
    with pytest.raises(DataError, match=r"class 9 \('9'\) has 0 images in train and 0 in val \(0 in the training"):
        load_dataset("mnist", tmp_path)


def test_val_fraction_that_leaves_a_class_out_of_train_is_refused(tmp_path):
    fake_mnist(tmp_path, n_train=20)  # two images per class
    assert len(load_dataset("mnist", tmp_path, val_fraction=0.5).train) == 10
    with pytest.raises(DataError, match=r"class 0 \('0'\) has 0 images in train and 2 in val .*val_fraction 0.8"):
        load_dataset("mnist", tmp_path, val_fraction=0.8)


def _check(x: torch.Tensor, test_x: torch.Tensor | None = None) -> None:
    """Run the loaded-dataset checks on toy splits: ``x`` for train and val (two classes), ``test_x`` for test."""
    split = Split(x, torch.arange(len(x)) % 2)
    test = split if test_x is None else Split(test_x, torch.zeros(len(test_x), dtype=torch.long))
    _check_splits("dataset 'toy' (here)", split, split, test, ("a", "b"), 0.1)


@pytest.mark.parametrize("bad, message", [(math.nan, "holds the value nan"), (1.5, "holds the value 1.5"),
                                          (-0.25, "holds the value -0.25"), (math.inf, "holds the value inf")])
def test_loaded_pixels_must_be_finite_and_in_unit_range(bad, message):
    x = torch.rand(4, 1, 2, 2)
    _check(x)
    x[2, 0, 1, 0] = bad
    with pytest.raises(DataError, match=f"dataset 'toy' \\(here\\): train image 2 {message}; expected finite"):
        _check(x)


def test_loaded_splits_must_not_be_empty():
    with pytest.raises(DataError, match="the test split is empty"):
        _check(torch.rand(4, 1, 2, 2), test_x=torch.rand(0, 1, 2, 2))
