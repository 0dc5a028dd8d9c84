"""An exponential moving average of the synthetic set's stored tensors (Polyak averaging).

The outer loop updates the synthetic set with SGD or Adam on a stochastic objective (a fresh network, a real
batch and an augmentation draw every step), at a constant learning rate: the iterate keeps moving around the
minimiser of the expected loss, and at 1 image per class two validations 10 steps apart can differ by 2 points.
The average of the recent iterates is nearer that minimiser. With ``--ema β`` the loop keeps the
bias-corrected exponential moving average of the iterates ``s_1 … s_t`` (the stored tensors after each outer
step), as Adam corrects its moments:

    avg_t = Σ_{i ≤ t} β^{t−i} s_i / Σ_{i ≤ t} β^{t−i},   i.e.   avg_t = avg_{t−1} + w_t (s_t − avg_{t−1}),
    w_t = (1 − β) / (1 − β^t),

so ``avg_1 = s_1``, the first steps are averaged nearly uniformly, and from about ``3 / (1 − β)`` steps on the average
spans the last ``1 / (1 − β)`` of them (β = 0.95: 20 steps). Validation, the selected state and the exported set
are the average; the raw tensors keep training and never see it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from augdistill.distill.synthetic import SyntheticData

__all__ = ["SyntheticAverage", "ema_weight"]


def ema_weight(beta: float, step: int) -> float:
    """w_t of step ``step`` (from 1): the weight ``(1 − β) / (1 − β^t)`` of the newest iterate.

    Example:
        >>> ema_weight(0.9, 1), round(ema_weight(0.9, 2), 4), round(ema_weight(0.9, 10_000), 4)
        (1.0, 0.5263, 0.1)
    """
    return (1.0 - beta) / (1.0 - beta ** step)


class SyntheticAverage(nn.Module):
    """The moving average of ``synthetic``'s parameters, held as a frozen copy of the module itself, so that it
    decodes, exports and checkpoints exactly like the set it averages.

    Args:
        synthetic: the set the loop trains (its parameters at construction stand until the first update).
        beta: β in ``[0, 1)``.

    Example:
        >>> from augdistill.distill.synthetic import PixelSet
        >>> s = PixelSet(torch.zeros(2, 1, 2, 2), num_classes=2)
        >>> avg = SyntheticAverage(s, beta=0.5)
        >>> with torch.no_grad():
        ...     _ = s.images.fill_(1.0)
        >>> avg.update(s, step=1); float(avg.set.images.mean())  # w_1 = 1: the first iterate itself
        1.0
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
        torch._foreach_lerp_(averaged, current, ema_weight(self.beta, step))
