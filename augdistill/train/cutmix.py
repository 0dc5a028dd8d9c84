"""CutMix (Yun et al. 2019, arXiv 1905.04899) for training evaluation networks, as IDC evaluates its sets.

A box of a random area is cut from a shuffled copy of the batch and pasted into it; the loss mixes the two
targets in proportion to the areas. IDC (arXiv 2205.14959) trains its evaluation networks with DSA's augmentation
and then CutMix on half of the minibatches (``λ ~ Beta(1, 1)``, uniform; the box is clipped at the border).
Every draw comes from a CPU ``generator``, so a mix is the same on every device and the host never waits for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from augdistill.devices import upload

__all__ = ["CutMix", "cutmix"]


@dataclass(frozen=True)
class CutMix:
    """One mixed batch: ``images`` ``(B, C, H, W)`` hold rows ``partner`` ``(B,)`` of the batch inside the box,
    and ``keep`` (in ``[0, 1]``) is the fraction of each image's area that is its own."""

    images: Tensor
    partner: Tensor
    keep: float

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``keep`` · CE(own targets) + (1 − ``keep``) · CE(partner's targets); targets are ids or probabilities."""
        return self.keep * F.cross_entropy(logits, targets) + \
            (1.0 - self.keep) * F.cross_entropy(logits, targets[self.partner])


def cutmix(x: Tensor, generator: torch.Generator) -> CutMix:
    """Paste a box of each image's partner (a random permutation of the batch) into ``x`` ``(B, C, H, W)``.

    The box covers a fraction ``1 − λ`` of the image, ``λ`` uniform in ``[0, 1]`` (CutMix's ``Beta(1, 1)``), its
    centre uniform over the image and its sides clipped at the border; ``keep`` is computed from the clipped box.

    Example:
        >>> mix = cutmix(torch.zeros(4, 1, 8, 8), torch.Generator().manual_seed(0))
        >>> 0.0 <= mix.keep <= 1.0 and sorted(mix.partner.tolist()) == [0, 1, 2, 3]
        True
    """
    b, _, h, w = x.shape
    lam, fy, fx = torch.rand(3, generator=generator).tolist()
    cut, cy, cx = math.sqrt(1.0 - lam), int(fy * h), int(fx * w)
    half_h, half_w = int(h * cut) // 2, int(w * cut) // 2
    y0, y1, x0, x1 = max(cy - half_h, 0), min(cy + half_h, h), max(cx - half_w, 0), min(cx + half_w, w)
    partner = upload(torch.randperm(b, generator=generator), x.device)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]
    return CutMix(mixed, partner, 1.0 - (y1 - y0) * (x1 - x0) / (h * w))
