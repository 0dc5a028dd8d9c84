"""Parameterisations of the synthetic set: stored tensors -> decoded training batch.

A new parameterisation is one file defining a :class:`SyntheticData` subclass with a
``from_real(images, num_classes, ...)`` constructor, plus its line in :data:`PARAMETERISATIONS`.
"""

from __future__ import annotations

from augdistill.distill.synthetic.base import SyntheticData
from augdistill.distill.synthetic.pixels import PixelSet

__all__ = ["SyntheticData", "PixelSet", "PARAMETERISATIONS"]

#: ``--param`` name -> class.
PARAMETERISATIONS: dict[str, type[SyntheticData]] = {cls.kind: cls for cls in (PixelSet,)}
