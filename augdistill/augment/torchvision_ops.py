"""Small ``torchvision.transforms.v2`` transforms for the ops torchvision lacks or expresses differently.

Each samples one value per call exactly as the op does (uniform in ``[low, high]``) and works on
``(C, H, W)`` tensors (float in ``[0, 1]`` or uint8), ``tv_tensors.Image`` and PIL images, returning
the input's type (other ``tv_tensors`` such as boxes and masks pass through unchanged). They are
plain picklable ``v2.Transform`` subclasses, so they run inside a ``DataLoader`` with workers. This
module depends on torch, torchvision and PIL only (and on
:func:`~augdistill.augment.functional.cutout_mask`, itself torch only), so that
:func:`~augdistill.augment.export.python_snippet` can paste their source into a user's code.

* ``RandomTranslate``: ``RandomAffine`` rounds shifts to whole pixels and only takes ``±max`` ranges;
* ``RandomBrightnessDelta``: ``ColorJitter``'s brightness multiplies; this op adds a delta (DSA, kornia);
* ``RandomSharpness``: ``RandomAdjustSharpness`` applies one fixed factor, not a sampled range;
* ``RandomCutout``: ``RandomErasing`` keeps the patch inside the image and samples area and aspect,
  while DSA's cutout centres a square anywhere, clipped by the border.
"""

from __future__ import annotations

from typing import Any, Callable

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from augdistill.augment.class_conditional import ClassConditional
from augdistill.augment.functional import cutout_mask

__all__ = ["RandomTranslate", "RandomBrightnessDelta", "RandomSharpness", "RandomCutout", "ClassConditional"]


def _is_plain_tensor(inpt: Any) -> bool:
    """A tensor that is not a ``tv_tensors`` box, mask, ... (those pass through unchanged)."""
    return type(inpt) is torch.Tensor


def _on_float_image(inpt: Any, kernel: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``kernel`` to ``inpt`` seen as a float ``(C, H, W)`` tensor in ``[0, 1]``; same type out."""
    if isinstance(inpt, PIL.Image.Image):
        out = kernel(F.to_dtype(F.pil_to_tensor(inpt), torch.float32, scale=True))
        return F.to_pil_image(F.to_dtype(out, torch.uint8, scale=True), mode=inpt.mode)
    image = inpt.as_subclass(torch.Tensor)
    if image.is_floating_point():
        out = kernel(image)
    else:
        out = F.to_dtype(kernel(F.to_dtype(image, torch.float32, scale=True)), image.dtype, scale=True)
    return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class _UniformValue(v2.Transform):
    """Base: one value uniform in ``[low, high]`` per call, in ``params["value"]``."""

    _transformed_types = (tv_tensors.Image, PIL.Image.Image, _is_plain_tensor)

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        if not low <= high:
            raise ValueError(f"need low <= high, got ({low}, {high})")
        self.low, self.high = float(low), float(high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"value": float(torch.empty(1).uniform_(self.low, self.high))}


class RandomTranslate(_UniformValue):
    """Shift by a fraction of the side drawn uniformly from ``[low, high]`` (sub-pixel, bilinear, zero fill).

    Args:
        axis: ``"x"`` (positive moves right) or ``"y"`` (positive moves down).
        low, high: range of the shift as a fraction of the width (x) or height (y).

    Example:
        >>> RandomTranslate("x", 0.25, 0.25)(torch.eye(4)[None])[0, 0].tolist()  # one pixel right
        [0.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, axis: str, low: float, high: float) -> None:
        super().__init__(low, high)
        if axis not in ("x", "y"):
            raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
        self.axis = axis

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = F.get_size(flat_inputs[0])
        shift = super().make_params(flat_inputs)["value"]
        return {"translate": [shift * width, 0.0] if self.axis == "x" else [0.0, shift * height]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.affine, inpt, angle=0.0, translate=params["translate"], scale=1.0,
                                 shear=[0.0, 0.0], interpolation=v2.InterpolationMode.BILINEAR, fill=None)


class RandomBrightnessDelta(_UniformValue):
    """Add a delta drawn uniformly from ``[low, high]`` to every pixel, clipped to ``[0, 1]``.

    Example:
        >>> RandomBrightnessDelta(0.25, 0.25)(torch.full((1, 1, 2), 0.5)).tolist()
        [[[0.75, 0.75]]]
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _on_float_image(inpt, lambda image: (image + params["value"]).clamp(0.0, 1.0))


class RandomSharpness(_UniformValue):
    """Sharpness factor drawn uniformly from ``[low, high]`` (0 blurs, 1 is the identity, 2 sharpens).

    Example:
        >>> x = torch.rand(3, 8, 8)
        >>> torch.equal(RandomSharpness(1.0, 1.0)(x), x)
        True
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.adjust_sharpness, inpt, sharpness_factor=params["value"])


class RandomCutout(_UniformValue):
    """Zero a square whose side, a fraction of each image side, is drawn uniformly from ``[low, high]``.

    The centre is uniform over the image, so the square may be clipped by the border (DSA's cutout);
    its edge is anti-aliased exactly as the policy's op.

    Example:
        >>> out = RandomCutout(0.5, 0.5)(torch.ones(3, 8, 8))
        >>> 0.75 <= float(out.mean()) <= 1 - 0.25 / 4  # a quarter of the area erased, less where clipped
        True
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        side = super().make_params(flat_inputs)["value"]
        return {"side": side, "centre": torch.rand(2).tolist()}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        def erase(image: torch.Tensor) -> torch.Tensor:
            side = torch.tensor([params["side"]], dtype=image.dtype, device=image.device)
            centre = torch.tensor([params["centre"]], dtype=image.dtype, device=image.device)
            return image * cutout_mask(image.shape[-2], image.shape[-1], side, centre)[0]
        return _on_float_image(inpt, erase)
