"""``ClassConditional``: one augmentation pipeline per class, chosen by each image's label (torch only).

What a per-class policy (:class:`~augdistill.augment.class_ranges.ClassRangesPolicy`) exports to: its
classes' torchvision or kornia pipelines behind one module that takes ``(image, label)``. It depends on
torch alone, so that :func:`~augdistill.augment.export.python_snippet` can paste its source.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["ClassConditional"]


class ClassConditional(torch.nn.Module):
    """``(image, label) -> (pipelines[label](image), label)``.

    One image (a torchvision pipeline, e.g. a dataset's ``transforms=`` argument, which receives
    ``(image, target)``): ``label`` an ``int`` or a 0-d tensor. A batch (a kornia pipeline): ``image``
    ``(B, C, H, W)`` and ``label`` ``(B,)``; each class's images go through its own pipeline together.
    Picklable, for ``DataLoader`` workers.

    Args:
        pipelines: one module per class, in class-id order.

    Example:
        >>> keep_or_zero = ClassConditional([torch.nn.Identity(), torch.nn.Threshold(2.0, 0.0)])  # class 1: zeros
        >>> keep_or_zero(torch.ones(2, 1, 1, 1), torch.tensor([0, 1]))[0].flatten().tolist()
        [1.0, 0.0]
    """

    def __init__(self, pipelines: Sequence[Any]) -> None:
        super().__init__()
        if not pipelines:
            raise ValueError("ClassConditional needs one pipeline per class, got none")
        self.pipelines = torch.nn.ModuleList(pipelines)

    def forward(self, image: Any, label: Any) -> tuple[Any, Any]:
        if isinstance(label, torch.Tensor) and label.dim() == 1:
            if not isinstance(image, torch.Tensor) or image.shape[0] != label.shape[0]:
                raise ValueError(f"a batch of labels {tuple(label.shape)} needs a batch of as many images")
            out = image.clone()
            for k in label.unique().tolist():
                rows = (label == k).nonzero().squeeze(1)
                out[rows] = self._pipeline(k)(image[rows])
            return out, label
        return self._pipeline(int(label))(image), label

    def _pipeline(self, k: int) -> Any:
        if not 0 <= k < len(self.pipelines):
            raise ValueError(f"label {k} has no pipeline; expected a class id in [0, {len(self.pipelines)})")
        return self.pipelines[k]
