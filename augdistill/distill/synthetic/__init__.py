"""Parameterisations of the synthetic set: stored tensors -> decoded training batch.

A new parameterisation is one file defining a :class:`SyntheticData` subclass with a
``from_real(images, num_classes, ...)`` constructor, plus its line in :data:`PARAMETERISATIONS`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from augdistill.distill.synthetic.base import SyntheticData
from augdistill.distill.synthetic.latent import LatentSet
from augdistill.distill.synthetic.multiformation import MultiFormation
from augdistill.distill.synthetic.pixels import PixelSet
from augdistill.errors import ConfigError

__all__ = ["SyntheticData", "PixelSet", "MultiFormation", "LatentSet", "PARAMETERISATIONS", "decode_stored"]

#: ``--param`` name -> class.
PARAMETERISATIONS: dict[str, type[SyntheticData]] = {cls.kind: cls for cls in (PixelSet, MultiFormation, LatentSet)}


def decode_stored(stored: dict[str, Tensor], recipe: dict[str, Any]) -> Tensor:
    """Rebuild the decoded images from saved ``stored`` tensors and their ``recipe`` (``recipe["kind"]``)."""
    kind = recipe.get("kind", "pixels")
    if kind not in PARAMETERISATIONS:
        raise ConfigError(f"recipe kind '{kind}' is not one of {', '.join(PARAMETERISATIONS)}")
    return PARAMETERISATIONS[kind].decode_stored(stored, recipe)
