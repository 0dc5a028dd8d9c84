"""The plain parameterisation: the synthetic images are the stored pixels."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from augdistill.distill.synthetic.base import SyntheticData
from augdistill.errors import ConfigError

__all__ = ["PixelSet"]


class PixelSet(SyntheticData):
    """Learnable images, one stored image per training image (Wang et al., DC, DM, MTT).

    Args:
        images: initial images ``(num_classes * ipc, C, H, W)`` in ``[0, 1]``, class-major.
        num_classes: number of classes ``K``.
        learn_labels: learn soft labels (see :class:`SyntheticData`).

    Example:
        >>> syn = PixelSet(torch.rand(20, 1, 8, 8), num_classes=10)
        >>> syn.targets().tolist()[:3], syn.decode().shape, syn.stored_floats() == syn.budget_floats()
        ([0, 0, 1], torch.Size([20, 1, 8, 8]), True)
    """

    kind = "pixels"
    pixel_tensors = ("images",)

    def __init__(self, images: Tensor, num_classes: int, *, learn_labels: bool = False, **kwargs: Any) -> None:
        if images.dim() != 4 or images.shape[0] % num_classes:
            raise ConfigError(f"{tuple(images.shape)} images cannot be split evenly over {num_classes} classes")
        ipc = images.shape[0] // num_classes
        super().__init__(num_classes, ipc, tuple(images.shape[1:]), ipc, learn_labels=learn_labels,
                         device=images.device, **kwargs)
        self.images = nn.Parameter(images.detach().clone())

    @classmethod
    def from_real(cls, images: Tensor, num_classes: int, *, learn_labels: bool = False,
                  config: Any = None, generator: torch.Generator | None = None) -> "PixelSet":
        """Start from real (or noise) images ``(K * ipc, C, H, W)``, class-major (``config`` and
        ``generator`` are not needed)."""
        return cls(images, num_classes, learn_labels=learn_labels)

    @staticmethod
    def decode_stored(stored: dict[str, Tensor], recipe: dict[str, Any]) -> Tensor:
        return stored["images"]

    def decode(self) -> Tensor:
        return self.images

    def stored_tensors(self) -> dict[str, Tensor]:
        return {"images": self.images}
