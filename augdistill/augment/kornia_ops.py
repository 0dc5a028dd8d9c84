"""Small kornia augmentations for what ``kornia.augmentation`` lacks or expresses differently.

Each draws its parameters per sample, uniform in ``[low, high]`` exactly as the op does, and applies
with per-sample probability ``p`` (kornia's own machinery), on ``(B, C, H, W)`` float batches in
``[0, 1]``. This module depends on torch and kornia only (and on
:func:`~augdistill.augment.functional.cutout_mask`, itself torch only), so that
:func:`~augdistill.augment.export.python_snippet` can paste their source into a user's code.

* ``RandomTranslate``: kornia's ``RandomAffine`` only takes symmetric ``±max`` shifts;
* ``RandomCutout``: ``RandomErasing`` keeps the patch inside the image and samples area and aspect,
  while DSA's cutout centres a square anywhere, clipped by the border;
* ``RandomChoice``: ``AugmentationSequential(random_apply=1)`` chooses one branch per *batch*; this
  chooses per sample.
"""

from __future__ import annotations

from typing import Any, Sequence

import kornia.augmentation as K
import torch
from kornia.augmentation.random_generator import PlainUniformGenerator
from kornia.geometry.transform import warp_affine
from torch import nn

from augdistill.augment.class_conditional import ClassConditional
from augdistill.augment.functional import cutout_mask

__all__ = ["RandomTranslate", "RandomCutout", "RandomChoice", "ClassConditional"]


class RandomTranslate(K.GeometricAugmentationBase2D):
    """Shift by a fraction of the side drawn uniformly from ``[low, high]`` (bilinear, zero fill).

    Args:
        axis: ``"x"`` (positive moves right) or ``"y"`` (positive moves down).
        low, high: range of the shift as a fraction of the width (x) or height (y).
        p: probability of applying, per sample.

    Example:
        >>> RandomTranslate("x", 0.25, 0.25)(torch.eye(4)[None, None])[0, 0, 0].tolist()  # one pixel right
        [0.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, axis: str, low: float, high: float, p: float = 1.0) -> None:
        super().__init__(p=p)
        if axis not in ("x", "y") or not low <= high:
            raise ValueError(f"need axis 'x' or 'y' and low <= high, got {axis!r}, ({low}, {high})")
        self.axis = axis
        self._param_generator = PlainUniformGenerator((torch.tensor([float(low), float(high)]), "shift", None, None))

    def compute_transformation(self, input: torch.Tensor, params: dict[str, torch.Tensor],
                               flags: dict[str, Any]) -> torch.Tensor:
        height, width = input.shape[-2:]
        matrix = torch.eye(3, device=input.device, dtype=input.dtype).repeat(input.shape[0], 1, 1)
        shift = params["shift"].to(input.device, input.dtype)
        matrix[:, 0 if self.axis == "x" else 1, 2] = shift * (width if self.axis == "x" else height)
        return matrix

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        return warp_affine(input, transform[:, :2, :], tuple(input.shape[-2:]), "bilinear",  # type: ignore[index]
                           align_corners=False, padding_mode="zeros")


class RandomCutout(K.IntensityAugmentationBase2D):
    """Zero a square whose side, a fraction of each image side, is drawn uniformly from ``[low, high]``.

    The centre is uniform over the image, so the square may be clipped by the border (DSA's cutout);
    its edge is anti-aliased exactly as the policy's op.

    Args:
        low, high: range of the side, a fraction of each image side.
        p: probability of applying, per sample.

    Example:
        >>> _ = torch.manual_seed(0)  # kornia draws from the global generator
        >>> out = RandomCutout(0.5, 0.5)(torch.ones(64, 3, 8, 8))
        >>> kept = out.mean((1, 2, 3))  # a quarter of the area erased, down to ~1/16 where a corner clips it
        >>> bool(((kept > 0.75 - 1e-6) & (kept < 1 - 0.04)).all()), bool((kept < 0.76).any())
        (True, True)
    """

    def __init__(self, low: float, high: float, p: float = 1.0) -> None:
        super().__init__(p=p)
        if not low <= high:
            raise ValueError(f"need low <= high, got ({low}, {high})")
        self._param_generator = PlainUniformGenerator((torch.tensor([float(low), float(high)]), "side", None, None),
                                                      (torch.tensor([0.0, 1.0]), "centre_x", None, None),
                                                      (torch.tensor([0.0, 1.0]), "centre_y", None, None))

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        side = params["side"].to(input.device, input.dtype)
        centre = torch.stack([params["centre_x"], params["centre_y"]], dim=1).to(input.device, input.dtype)
        return input * cutout_mask(input.shape[-2], input.shape[-1], side, centre).unsqueeze(1)


class RandomChoice(nn.Module):
    """Apply one of ``branches`` per sample, branch ``k`` with probability ``weights[k] / sum(weights)``.

    Args:
        branches: modules mapping a ``(b, C, H, W)`` batch to the same shape.
        weights: relative selection weights, one per branch (non-negative, not all 0).

    Example:
        >>> choose = RandomChoice([nn.Identity(), K.RandomHorizontalFlip(p=1.0)], [0.0, 1.0])
        >>> x = torch.rand(2, 1, 4, 4)
        >>> torch.equal(choose(x), x.flip(3))
        True
    """

    def __init__(self, branches: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(branches) == 0 or len(weights) != len(branches) or min(weights) < 0 or not sum(weights) > 0:
            raise ValueError(f"need one weight >= 0 per branch, not all 0; got {len(branches)} branches, {weights}")
        self.branches = nn.ModuleList(branches)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        choice = torch.multinomial(self.weights, input.shape[0], replacement=True).to(input.device)
        output = input.clone()
        for k, branch in enumerate(self.branches):
            rows = (choice == k).nonzero().flatten()
            if len(rows):
                output[rows] = branch(input[rows])
        return output
