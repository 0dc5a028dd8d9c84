"""Class-balanced sampling of real batches, driven by an explicit ``torch.Generator``."""

from __future__ import annotations

import torch
from torch import Tensor

from augdistill.devices import upload
from augdistill.errors import DataError

__all__ = ["ClassBalancedSampler", "herd", "herd_per_class", "take_per_class"]


class ClassBalancedSampler:
    """Draws batches holding the same number of images of every class.

    Args:
        x: images, shape ``(N, C, H, W)``.
        y: integer labels, shape ``(N,)``, values in ``[0, num_classes)``.
        num_classes: number of classes; every class must have at least one image.

    Example:
        >>> x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
        >>> xb, yb = ClassBalancedSampler(x, y, 2).sample(3, torch.Generator().manual_seed(0))
        >>> xb.shape, yb.tolist()
        (torch.Size([6, 1, 8, 8]), [0, 0, 0, 1, 1, 1])
    """

    def __init__(self, x: Tensor, y: Tensor, num_classes: int) -> None:
        self.x, self.y = x, y
        self.class_indices = [torch.nonzero(y == c).flatten() for c in range(num_classes)]
        empty = [c for c, idx in enumerate(self.class_indices) if idx.numel() == 0]
        if empty:
            raise DataError(f"classes {empty} have no images to sample from")

    def indices(self, per_class: int, generator: torch.Generator) -> Tensor:
        """Indices ``(num_classes * per_class,)`` grouped by class; with replacement only when a class is short."""
        picks = []
        for idx in self.class_indices:
            if per_class <= idx.numel():
                order = torch.randperm(idx.numel(), generator=generator)[:per_class]
            else:
                order = torch.randint(idx.numel(), (per_class,), generator=generator)
            picks.append(idx[upload(order, idx.device)])
        return torch.cat(picks)

    def sample(self, per_class: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A batch ``(x, y)`` with ``per_class`` images of every class, ordered by class."""
        idx = self.indices(per_class, generator)
        return self.x[idx], self.y[idx]


def herd(features: Tensor, k: int) -> Tensor:
    """Herding (Welling 2009): ``k`` row indices ``(k,)`` of ``features`` ``(n, D)``, chosen greedily so that the
    mean of the rows chosen so far stays as close as possible (squared Euclidean) to the mean of all rows.

    Deterministic: ties go to the lowest index. The first pick is the row nearest the mean.

    Example:
        >>> herd(torch.tensor([[0.0], [10.0], [4.0], [6.0]]), 2).tolist()
        [2, 3]
    """
    n = features.shape[0]
    if not 1 <= k <= n:
        raise DataError(f"herding picks 1 to {n} rows of these {n}; got {k}")
    features = features.flatten(1).double()
    mean, total = features.mean(0), torch.zeros(features.shape[1], dtype=features.dtype, device=features.device)
    taken = torch.zeros(n, dtype=torch.bool, device=features.device)
    picks = []
    for j in range(1, k + 1):  # indices stay on the device: no host sync per pick
        gap = (mean - (total + features) / j).pow(2).sum(1).masked_fill(taken, float("inf"))
        i = torch.argmin(gap)
        picks.append(i)
        taken[i] = True
        total += features[i]
    return torch.stack(picks)


def herd_per_class(x: Tensor, y: Tensor, num_classes: int, per_class: int) -> tuple[Tensor, Tensor]:
    """A class-balanced subset ``(x, y)`` chosen by :func:`herd` on the pixels of each class, ordered by class
    (the herding coreset; DC's baseline herds the features of a trained network instead of pixels)."""
    if per_class < 1:
        raise DataError(f"images per class must be >= 1, got {per_class}")
    picks = []
    for idx in ClassBalancedSampler(x, y, num_classes).class_indices:
        if per_class > idx.numel():
            raise DataError(f"herding needs {per_class} images of every class; one class has {idx.numel()}")
        picks.append(idx[herd(x[idx], per_class)])
    rows = torch.cat(picks)
    return x[rows], y[rows]


def take_per_class(x: Tensor, y: Tensor, num_classes: int, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """A random class-balanced subset (the random-subset baseline and real-image initialisation)."""
    if per_class < 1:
        raise DataError(f"images per class must be >= 1, got {per_class}")
    return ClassBalancedSampler(x, y, num_classes).sample(per_class, torch.Generator().manual_seed(seed))
