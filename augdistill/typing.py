"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Callable, Dict

from torch import Tensor

__all__ = ["Params", "Augment", "ImageShape"]

#: Network parameters as a flat ``name -> tensor`` dict (``torch.func.functional_call`` form).
Params = Dict[str, Tensor]

#: An augmentation applied to a ``(B, C, H, W)`` batch in ``[0, 1]`` pixel space.
#: It receives the batch and the index of the inner step it is called from.
Augment = Callable[[Tensor, int], Tensor]

#: ``(channels, height, width)`` of one image.
ImageShape = tuple[int, int, int]
