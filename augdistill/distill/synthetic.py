"""What dataset distillation learns: images, labels and per-step learning rates."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.errors import ConfigError

__all__ = ["SyntheticSet"]


class SyntheticSet(nn.Module):
    """A learnable synthetic training set with its own training schedule.

    Images are stored class-major: image ``c * ipc + i`` is the ``i``-th image of class ``c``.

    Args:
        images: initial images ``(num_classes * ipc, C, H, W)`` in ``[0, 1]`` pixel units.
        num_classes: number of classes ``K``.
        total_steps: number of inner SGD steps ``T`` (one learning rate each).
        lr_init: initial learning rate of every step.
        lr_cap: learning rates are ``lr_cap * sigmoid(raw)``, so they stay in ``(0, lr_cap)``.
        learn_labels: learn soft labels (logits ``(N, K)``, initialised to the one-hot class with
            ``label_init_confidence``) instead of keeping hard class ids.

    Example:
        >>> syn = SyntheticSet(torch.rand(20, 1, 8, 8), num_classes=10, total_steps=5, lr_init=0.1, lr_cap=1.0)
        >>> syn.targets().tolist()[:3], syn.lrs().shape
        ([0, 0, 1], torch.Size([5]))
    """

    def __init__(self, images: Tensor, num_classes: int, total_steps: int, *, lr_init: float, lr_cap: float,
                 learn_labels: bool = False, label_init_confidence: float = 0.9) -> None:
        super().__init__()
        if images.shape[0] % num_classes:
            raise ConfigError(f"{images.shape[0]} images cannot be split evenly over {num_classes} classes")
        if not 0.0 < lr_init < lr_cap:
            raise ConfigError(f"need 0 < lr_init < lr_cap, got lr_init={lr_init}, lr_cap={lr_cap}")
        self.num_classes = num_classes
        self.ipc = images.shape[0] // num_classes
        self.lr_cap = float(lr_cap)
        self.images = nn.Parameter(images.detach().clone())
        ratio = lr_init / lr_cap
        self.raw_lrs = nn.Parameter(torch.full((total_steps,), math.log(ratio / (1 - ratio)),
                                               device=images.device))
        self.register_buffer("labels", torch.arange(num_classes, device=images.device).repeat_interleave(self.ipc))
        if learn_labels:
            off = (1 - label_init_confidence) / (num_classes - 1)
            logit = math.log(label_init_confidence / off)
            self.label_logits: nn.Parameter | None = nn.Parameter(F.one_hot(self.labels, num_classes).float() * logit)
        else:
            self.label_logits = None

    def lrs(self) -> Tensor:
        """Per-step learning rates ``(T,)`` in ``(0, lr_cap)``."""
        return self.lr_cap * torch.sigmoid(self.raw_lrs)

    def targets(self) -> Tensor:
        """Class ids ``(N,)`` or, with learned labels, class probabilities ``(N, K)``."""
        return self.labels if self.label_logits is None else torch.softmax(self.label_logits, dim=1)

    def export(self) -> dict[str, Tensor]:
        """Plain detached CPU tensors: ``images``, ``labels`` (ids), ``lrs`` and ``soft_labels`` if learned."""
        out = {"images": self.images.detach().cpu(), "labels": self.labels.cpu(), "lrs": self.lrs().detach().cpu()}
        if self.label_logits is not None:
            out["soft_labels"] = self.targets().detach().cpu()
        return out
