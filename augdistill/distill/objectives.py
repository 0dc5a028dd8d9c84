"""Outer objectives: losses of the trained parameters θ_T that the outer loop minimises.

An objective is any callable ``objective(model, theta, x_real, y_real) -> scalar``; the outer loop
sums a list of them, so new ones (matching losses, …) plug in without touching the loop.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.typing import Params

__all__ = ["Objective", "RealLoss", "AugmentedRealLoss"]


class Objective(Protocol):
    def __call__(self, model: nn.Module, theta: Params, x_real: Tensor, y_real: Tensor) -> Tensor: ...


class RealLoss:
    """Wang et al.'s distillation objective: cross-entropy of θ_T on a real batch ``(B, C, H, W)``."""

    def __call__(self, model: nn.Module, theta: Params, x_real: Tensor, y_real: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, theta, (x_real,)), y_real)


class AugmentedRealLoss:
    """The augmentation objective: loss of θ_T on ``copies`` augmented copies of the real batch minus
    ``width_weight * width()`` (Augerino's bonus that keeps the policy from collapsing to the identity).

    Args:
        augment: draws and applies one augmentation to a real batch (gradient flows to the policy).
        width: the policy's differentiable width (a scalar tensor).
        copies: J, the number of augmented copies averaged.
        width_weight: λ.
        weight: scale of the whole term relative to the other objectives.
    """

    def __init__(self, augment: Callable[[Tensor], Tensor], width: Callable[[], Tensor], *, copies: int = 1,
                 width_weight: float = 0.05, weight: float = 1.0) -> None:
        self.augment, self.width = augment, width
        self.copies, self.width_weight, self.weight = copies, width_weight, weight

    def __call__(self, model: nn.Module, theta: Params, x_real: Tensor, y_real: Tensor) -> Tensor:
        augmented = torch.cat([self.augment(x_real) for _ in range(self.copies)])
        logits = functional_call(model, theta, (augmented,))
        loss = F.cross_entropy(logits, y_real.repeat(self.copies))
        return self.weight * (loss - self.width_weight * self.width())
