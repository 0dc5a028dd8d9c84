"""IDC's multi-formation (Kim et al. 2022, arXiv 2205.14959): each stored full-size image holds ``f x f``
low-resolution tiles, and each tile is upsampled back to full size, so one stored image of the budget
decodes into ``f²`` training images.

The tiles of an ``H``-pixel side are ``H // f`` pixels, the first ``H % f`` of them one pixel longer
(IDC's initialisation split), so every stored pixel belongs to exactly one tile and ``f`` need not
divide ``H``. Decoding upsamples each tile bilinearly (``align_corners=False``); with ``f = 1`` the
single tile is the image itself and the set behaves exactly like ``pixels``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.distill.synthetic.base import SyntheticData
from augdistill.errors import ConfigError

__all__ = ["MultiFormation", "tile_spans", "form_images", "pack_tiles"]


def tile_spans(size: int, factor: int) -> list[tuple[int, int]]:
    """``(start, length)`` of the ``factor`` tiles along a side of ``size`` pixels; the first ``size % factor``
    tiles are one pixel longer.

    Example:
        >>> tile_spans(28, 3)
        [(0, 10), (10, 9), (19, 9)]
    """
    base, longer = divmod(size, factor)
    spans, start = [], 0
    for i in range(factor):
        length = base + (1 if i < longer else 0)
        spans.append((start, length))
        start += length
    return spans


def _tiles(height: int, width: int, factor: int) -> list[tuple[int, int, int, int]]:
    """``(top, height, left, width)`` of every tile, row-major."""
    return [(top, h, left, w) for top, h in tile_spans(height, factor) for left, w in tile_spans(width, factor)]


def form_images(stored: Tensor, factor: int) -> Tensor:
    """Decode stored images ``(N, C, H, W)`` into ``(N * factor², C, H, W)``: tile ``t`` (row-major) of stored
    image ``n`` becomes image ``n * factor² + t``, bilinearly upsampled to ``(H, W)``.

    Example:
        >>> form_images(torch.rand(3, 1, 8, 8), 2).shape
        torch.Size([12, 1, 8, 8])
    """
    n, c, height, width = stored.shape
    formed = []
    for top, h, left, w in _tiles(height, width, factor):
        tile = stored[:, :, top:top + h, left:left + w]
        if (h, w) != (height, width):
            tile = F.interpolate(tile, size=(height, width), mode="bilinear", align_corners=False)
        formed.append(tile)
    return torch.stack(formed, dim=1).reshape(n * factor * factor, c, height, width)


def pack_tiles(images: Tensor, factor: int) -> Tensor:
    """IDC's initialisation: ``(N * factor², C, H, W)`` full-size images downsampled (area average) into the
    tiles of ``N`` stored images ``(N, C, H, W)``; image ``n * factor² + t`` fills tile ``t`` of stored ``n``,
    so :func:`form_images` brings each back near its original position in the order.

    Example:
        >>> x = torch.rand(8, 1, 8, 8)
        >>> pack_tiles(x, 2).shape, torch.equal(pack_tiles(x, 1), x)
        (torch.Size([2, 1, 8, 8]), True)
    """
    total, c, height, width = images.shape
    per = factor * factor
    if total % per:
        raise ConfigError(f"{total} images cannot fill the {per} tiles of whole stored images (factor {factor})")
    grouped = images.reshape(total // per, per, c, height, width)
    stored = torch.empty((total // per, c, height, width), dtype=images.dtype, device=images.device)
    for t, (top, h, left, w) in enumerate(_tiles(height, width, factor)):
        tile = grouped[:, t]
        if (h, w) != (height, width):
            tile = F.interpolate(tile, size=(h, w), mode="area")
        stored[:, :, top:top + h, left:left + w] = tile
    return stored


class MultiFormation(SyntheticData):
    """Stored full-size images, each decoded into ``factor²`` upsampled tiles (IDC).

    Args:
        images: the stored images ``(K * ipc, C, H, W)``, class-major (already packed; see :meth:`from_real`).
        num_classes: ``K``.
        factor: tiles per side ``f >= 1``; every stored image decodes into ``f²`` training images.
        learn_labels: learn soft labels of the decoded images (see :class:`SyntheticData`).

    The budget is exact: the stored floats are those of ``K * ipc`` full-size images.

    Example:
        >>> syn = MultiFormation(torch.rand(20, 1, 8, 8), num_classes=10, factor=2)
        >>> syn.decode().shape, syn.stored_floats() == syn.budget_floats(), syn.targets().tolist()[:9]
        (torch.Size([80, 1, 8, 8]), True, [0, 0, 0, 0, 0, 0, 0, 0, 1])
    """

    kind = "multi-formation"
    pixel_tensors = ("images",)
    #: tiles per side when ``config.synthetic.factor`` is ``None`` (IDC's default).
    default_factor = 2

    def __init__(self, images: Tensor, num_classes: int, factor: int, *, learn_labels: bool = False,
                 **kwargs: Any) -> None:
        if images.dim() != 4 or images.shape[0] % num_classes:
            raise ConfigError(f"{tuple(images.shape)} images cannot be split evenly over {num_classes} classes")
        _check_factor(factor, tuple(images.shape[2:]))
        ipc = images.shape[0] // num_classes
        super().__init__(num_classes, ipc, tuple(images.shape[1:]), ipc * factor * factor,
                         learn_labels=learn_labels, device=images.device, **kwargs)
        self.factor = factor
        self.images = nn.Parameter(images.detach().clone())

    @classmethod
    def real_per_class(cls, config: Any, num_classes: int, image_shape: tuple[int, int, int]) -> int:
        """``ipc * factor²``: one real image per tile."""
        return config.synthetic.ipc * cls.factor_of(config) ** 2

    @classmethod
    def from_real(cls, images: Tensor, num_classes: int, *, learn_labels: bool = False, config: Any = None,
                  generator: torch.Generator | None = None) -> "MultiFormation":
        """Pack ``images`` ``(K * ipc * f², C, H, W)`` (class-major; ``f``: :meth:`factor_of`) into the
        tiles of ``K * ipc`` stored images, as IDC initialises (``generator`` is not needed)."""
        factor = cls.factor_of(config)
        _check_factor(factor, tuple(images.shape[2:]))
        return cls(pack_tiles(images, factor), num_classes, factor, learn_labels=learn_labels)

    @staticmethod
    def decode_stored(stored: dict[str, Tensor], recipe: dict[str, Any]) -> Tensor:
        return form_images(stored["images"], int(recipe["factor"]))

    def stored_tensors(self) -> dict[str, Tensor]:
        return {"images": self.images}

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "factor": self.factor}


def _check_factor(factor: int, size: tuple[int, ...]) -> None:
    if not 1 <= factor <= min(size):
        raise ConfigError(f"--factor must be between 1 and the image side {min(size)}, got {factor}")
