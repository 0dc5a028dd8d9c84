"""Class-balanced sampling driven by an explicit generator, and the herding coreset."""

from __future__ import annotations

import pytest
import torch

from augdistill.data import ClassBalancedSampler, herd_per_class, take_per_class
from augdistill.data.sampling import herd
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


def _herd_by_hand(rows: list[list[float]], k: int) -> list[int]:
    """Herding written out with Python lists: each pick minimises the distance of the running mean to the mean."""
    dim = len(rows[0])
    mean = [sum(r[d] for r in rows) / len(rows) for d in range(dim)]
    picks: list[int] = []
    for j in range(1, k + 1):
        def gap(i: int) -> float:
            chosen = [rows[p] for p in picks] + [rows[i]]
            return sum((mean[d] - sum(r[d] for r in chosen) / j) ** 2 for d in range(dim))
        picks.append(min((i for i in range(len(rows)) if i not in picks), key=gap))
    return picks


@pytest.mark.parametrize("seed", range(4))
def test_herding_matches_the_greedy_rule_written_out(seed):
    features = torch.randn(12, 3, generator=torch.Generator().manual_seed(seed))
    assert herd(features, 5).tolist() == _herd_by_hand(features.tolist(), 5)


def test_herded_subsets_track_the_class_mean_better_than_random_ones(digits):
    x, y = herd_per_class(digits.train.x, digits.train.y, 10, 3)
    assert torch.bincount(y, minlength=10).tolist() == [3] * 10 and torch.equal(y, y.sort().values)
    again, _ = herd_per_class(digits.train.x, digits.train.y, 10, 3)
    assert torch.equal(x, again)  # deterministic
    flat = digits.train.x.flatten(1)
    assert all(any(torch.equal(row, real) for real in flat) for row in x.flatten(1))  # real training images

    def gaps(subset: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.stack([(subset[labels == c].flatten(1).mean(0)
                             - digits.train.x[digits.train.y == c].flatten(1).mean(0)).norm() for c in range(10)])

    herded = gaps(x, y)
    for seed in range(10):
        rx, ry = take_per_class(digits.train.x, digits.train.y, 10, 3, seed=seed)
        assert (herded <= gaps(rx, ry) + 1e-6).float().mean() >= 0.8


def test_the_first_herded_image_is_the_nearest_to_its_class_mean(digits):
    x, y = herd_per_class(digits.train.x, digits.train.y, 10, 1)
    for c in range(10):
        members = digits.train.x[digits.train.y == c].flatten(1)
        nearest = (members - members.mean(0)).norm(dim=1).argmin()
        assert torch.equal(x[c].flatten(), members[nearest])


def test_herding_refuses_impossible_counts():
    with pytest.raises(DataError, match="herding picks 1 to 4 rows of these 4; got 5"):
        herd(torch.zeros(4, 2), 5)
    x, y = torch.zeros(5, 1, 2, 2), torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(DataError, match="herding needs 3 images of every class; one class has 2"):
        herd_per_class(x, y, 2, 3)
    with pytest.raises(DataError, match="images per class must be >= 1, got 0"):
        herd_per_class(x, y, 2, 0)
