"""An exponential moving average of the synthetic set's stored tensors (Polyak averaging).

The outer loop updates the synthetic set with SGD or Adam on a stochastic objective (a fresh network, a real
batch and an augmentation draw every step), at a constant learning rate: the iterate keeps moving around the
minimiser of the expected loss, and at 1 image per class two validations 10 steps apart can differ by 2 points.
The average of the recent iterates is nearer that minimiser. With ``--ema β`` the loop keeps

    avg_t = β_t · avg_{t−1} + (1 − β_t) · s_t,    β_t = min(β, (1 + t) / (10 + t)),

where ``s_t`` are the stored tensors after outer step ``t`` (``t`` from 1) and ``avg_0 = s_0``. The warm-up
β_t (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) lets the first steps count before the
horizon ``1 / (1 − β)`` is reached, so the average does not sit on the initialisation. Validation, the
selected state and the exported set are the average; the raw tensors keep training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from augdistill.distill.synthetic import SyntheticData

__all__ = ["SyntheticAverage", "ema_decay"]


def ema_decay(beta: float, step: int) -> float:
    """β_t of step ``step`` (from 1): ``min(beta, (1 + step) / (10 + step))``.

    Example:
        >>> ema_decay(0.99, 1), ema_decay(0.99, 10_000)
        (0.18181818181818182, 0.99)
    """
    return min(beta, (1 + step) / (10 + step))


class SyntheticAverage(nn.Module):
    """The moving average of ``synthetic``'s parameters, held as a frozen copy of the module itself, so that it
    decodes, exports and checkpoints exactly like the set it averages.

    Args:
        synthetic: the set the loop trains; its parameters at construction are ``avg_0``.
        beta: β in ``[0, 1)``.

    Example:
        >>> from augdistill.distill.synthetic import PixelSet
        >>> s = PixelSet(torch.zeros(2, 1, 2, 2), num_classes=2)
        >>> avg = SyntheticAverage(s, beta=0.5)
        >>> with torch.no_grad():
        ...     _ = s.images.fill_(1.0)
        >>> avg.update(s, step=100); float(avg.set.images.mean())
        0.5
    """

    def __init__(self, synthetic: SyntheticData, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.set = copy.deepcopy(synthetic).requires_grad_(False)

    @torch.no_grad()
    def update(self, synthetic: SyntheticData, step: int) -> None:
        """Move the average toward ``synthetic``'s current parameters (step ``step`` from 1); no host sync."""
        averaged = list(self.set.parameters())
        current = [p.detach() for p in synthetic.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - ema_decay(self.beta, step))
