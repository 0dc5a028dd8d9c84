"""Differentiable image kernels behind the augmentation ops.

Every function here is pure: it takes a batch ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]``
and a per-sample value tensor ``v`` of shape ``(B,)`` in the op's physical unit, and is
differentiable with respect to both. Pixel maths comes from :mod:`kornia.enhance`; geometric
ops do not warp on their own but return a *sampling matrix* so that a run of consecutive
geometric ops is composed into one matrix and warped once (:func:`warp`).

Sampling matrices are ``(B, 3, 3)`` maps from output to input coordinates in the normalised
``[-1, 1]`` frame of :func:`torch.nn.functional.affine_grid` with ``align_corners=False``
(pixel centres; the image centre is the origin, ``x`` points right and ``y`` down). Applying
op 1 then op 2 samples the input at ``T1 @ T2 @ p``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.enhance import (adjust_brightness, adjust_contrast_with_mean_subtraction, adjust_hue,
                            adjust_saturation_with_gray_subtraction, sharpness)
from torch import Tensor

__all__ = [
    "rotate_matrix", "translate_x_matrix", "translate_y_matrix", "scale_matrix", "shear_x_matrix",
    "shear_y_matrix", "hflip_matrix", "warp", "brightness", "contrast", "saturation", "hue",
    "sharpen", "cutout", "cutout_mask",
]


def _matrix(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """Stack per-sample entries into ``(B, 3, 3)`` matrices ``[[a, b, c], [d, e, f], [0, 0, 1]]``."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=-1).view(-1, 3, 3)


def rotate_matrix(v: Tensor, height: int, width: int) -> Tensor:
    """Rotation by ``v`` degrees counter-clockwise on screen about the image centre (kornia's sign)."""
    rad = v * (math.pi / 180.0)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(v)
    return _matrix(cos, -sin * (height / width), zero, sin * (width / height), cos, zero)


def translate_x_matrix(v: Tensor, height: int, width: int) -> Tensor:
    """Shift right by ``v`` times the image width (zero fill)."""
    zero, one = torch.zeros_like(v), torch.ones_like(v)
    return _matrix(one, zero, -2.0 * v, zero, one, zero)


def translate_y_matrix(v: Tensor, height: int, width: int) -> Tensor:
    """Shift down by ``v`` times the image height (zero fill)."""
    zero, one = torch.zeros_like(v), torch.ones_like(v)
    return _matrix(one, zero, zero, zero, one, -2.0 * v)


def scale_matrix(v: Tensor, height: int, width: int) -> Tensor:
    """Isotropic zoom by factor ``v`` about the centre (``v > 1`` enlarges the content)."""
    inv, zero = 1.0 / v, torch.zeros_like(v)
    return _matrix(inv, zero, zero, zero, inv, zero)


def shear_x_matrix(v: Tensor, height: int, width: int) -> Tensor:
    """Horizontal shear by ``v`` degrees: the output at ``(x, y)`` samples ``(x + tan(v) y, y)``.

    This is the sign convention of ``K.RandomAffine(shear=...)`` and torchvision's ``RandomAffine``.
    """
    t, zero, one = torch.tan(v * (math.pi / 180.0)), torch.zeros_like(v), torch.ones_like(v)
    return _matrix(one, t * (height / width), zero, zero, one, zero)


def shear_y_matrix(v: Tensor, height: int, width: int) -> Tensor:
    """Vertical shear by ``v`` degrees: the output at ``(x, y)`` samples ``(x, y + tan(v) x)``."""
    t, zero, one = torch.tan(v * (math.pi / 180.0)), torch.zeros_like(v), torch.ones_like(v)
    return _matrix(one, zero, zero, t * (width / height), one, zero)


def hflip_matrix(v: Tensor, height: int, width: int) -> Tensor:
    """Mirror left-right (``v`` is ignored; flip has no magnitude). Exact on the pixel grid."""
    zero, one = torch.zeros_like(v), torch.ones_like(v)
    return _matrix(-one, zero, zero, zero, one, zero)


def warp(x: Tensor, matrix: Tensor) -> Tensor:
    """Resample ``x`` (B, C, H, W) at ``matrix`` (B, 3, 3) @ output coordinates; bilinear, zero fill."""
    grid = F.affine_grid(matrix[:, :2, :], list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def brightness(x: Tensor, v: Tensor) -> Tensor:
    """Add ``v`` (pixel-value delta) to every pixel, clipped to ``[0, 1]`` (kornia ``adjust_brightness``)."""
    return adjust_brightness(x, v)


def contrast(x: Tensor, v: Tensor) -> Tensor:
    """Blend with the per-image grey mean: ``v x + (1 - v) mean``, clipped (torchvision's contrast)."""
    return adjust_contrast_with_mean_subtraction(x, v)


def saturation(x: Tensor, v: Tensor) -> Tensor:
    """Blend with the greyscale image: ``v x + (1 - v) grey`` (identity on 1-channel images)."""
    return adjust_saturation_with_gray_subtraction(x, v)


def hue(x: Tensor, v: Tensor) -> Tensor:
    """Rotate the hue by ``v`` turns (``0.5`` = 180°) in HSV space (identity on 1-channel images)."""
    if x.shape[1] == 1:
        return x
    return adjust_hue(x, v * (2.0 * math.pi))


def sharpen(x: Tensor, v: Tensor) -> Tensor:
    """Blend with a 3x3-smoothed image: factor 0 blurs, 1 is the identity, 2 sharpens (PIL convention)."""
    return sharpness(x, v)


def cutout_mask(height: int, width: int, side: Tensor, centre: Tensor) -> Tensor:
    """Keep-mask ``(B, H, W)`` of DSA-style cutout: 0 inside the square, 1 outside, anti-aliased.

    Args:
        height, width: image size in pixels.
        side: ``(B,)`` side of the square as a fraction of each image side, in ``[0, 1]``.
        centre: ``(B, 2)`` centre ``(x, y)`` as fractions of width and height, in ``[0, 1]``.

    Each pixel keeps ``1 - cov_x cov_y``, where ``cov`` is the fraction of the pixel's extent (per
    axis) covered by the square: pixels well inside are exactly 0, pixels outside exactly 1, and the
    side receives gradient through the border pixels. The square may be clipped by the image border.
    Depends on ``torch`` only (it is inlined into exported snippets).

    Example:
        >>> cutout_mask(4, 4, torch.tensor([0.5]), torch.tensor([[0.5, 0.5]]))[0].tolist()
        [[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """
    def coverage(size: int, c: Tensor) -> Tensor:
        pos = (torch.arange(size, device=side.device, dtype=side.dtype) + 0.5) / size  # pixel centres
        half = (side * 0.5).unsqueeze(1)
        return ((half - (pos - c.unsqueeze(1)).abs()) * size + 0.5).clamp(0.0, 1.0)  # (B, size)

    return 1.0 - coverage(height, centre[:, 1]).unsqueeze(2) * coverage(width, centre[:, 0]).unsqueeze(1)


def cutout(x: Tensor, v: Tensor, centre: Tensor) -> Tensor:
    """Zero a square of side ``v`` (fraction of each side) centred at ``centre`` (B, 2) in ``[0, 1]^2``.

    See :func:`cutout_mask` (anti-aliased border, clipped by the image border as in DSA).
    """
    return x * cutout_mask(x.shape[2], x.shape[3], v, centre).unsqueeze(1)
