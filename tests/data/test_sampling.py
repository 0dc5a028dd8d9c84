"""Class-balanced sampling driven by an explicit generator."""

from __future__ import annotations

import pytest
import torch

from augdistill.data import ClassBalancedSampler, take_per_class
from augdistill.errors import DataError


def test_sampler_is_balanced_and_reproducible(digits):
    sampler = ClassBalancedSampler(digits.train.x, digits.train.y, 10)
    x1, y1 = sampler.sample(7, torch.Generator().manual_seed(3))
    x2, y2 = sampler.sample(7, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.bincount(y1).tolist() == [7] * 10
    x3, _ = sampler.sample(7, torch.Generator().manual_seed(4))
    assert not torch.equal(x1, x3)


def test_short_classes_are_drawn_with_replacement():
    x, y = torch.arange(5.0).view(5, 1, 1, 1), torch.tensor([0, 0, 0, 0, 1])
    xb, yb = ClassBalancedSampler(x, y, 2).sample(3, torch.Generator().manual_seed(0))
    assert yb.tolist() == [0, 0, 0, 1, 1, 1] and xb[3:].flatten().tolist() == [4.0] * 3
    assert len(set(xb[:3].flatten().tolist())) == 3  # without replacement where the class has enough


def test_empty_class_and_bad_count_are_refused(digits):
    with pytest.raises(DataError, match=r"classes \[2\] have no images"):
        ClassBalancedSampler(torch.zeros(4, 1, 1, 1), torch.tensor([0, 1, 0, 1]), 3)
    with pytest.raises(DataError, match="images per class must be >= 1, got 0"):
        take_per_class(digits.train.x, digits.train.y, 10, 0, seed=0)
