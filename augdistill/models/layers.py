"""Small building blocks shared by the model families."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from augdistill.errors import ConfigError

__all__ = ["Normalize", "make_norm", "NORMS"]

NORMS = ("instance", "group", "batch", "none")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]`` units.

    Models take ``[0, 1]`` images so that augmentation never needs to know the normalisation.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer named ``norm`` for ``channels`` feature maps.

    ``instance`` is the field's ConvNet convention (``GroupNorm(channels, channels)``, affine);
    ``group`` uses 4 groups (cheaper double backward on CPU); ``batch`` uses batch statistics
    in training *and* evaluation (no running buffers, so the inner trainer stays a pure function).
    """
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(min(4, channels), channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm '{norm}'; expected one of {', '.join(NORMS)}")
