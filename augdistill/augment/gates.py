"""Relaxed Bernoulli gates, Gumbel-softmax choices and straight-through helpers.

A gate decides per sample whether an op applies. It is a function of the op's probability
``p`` and of pre-drawn noise ``n ~ U(0, 1)`` (kept in the sampled params, so it replays):

* hard decision ``1[n < p]`` — exactly 0 for ``p = 0`` and exactly 1 for ``p = 1``;
* relaxed gate ``sigmoid((logit p - logit n) / tau)`` — the binary-Concrete / relaxed Bernoulli
  of Maddison et al. 2017 whose ``tau -> 0`` limit is the hard decision.

With ``hard=True`` the forward value is the hard decision and the gradient is the relaxed gate's
(straight-through). With ``hard=False`` the value is the relaxed gate itself: smooth in ``p`` (what a
finite-difference check sees) but never exactly 0 or 1, so ``p = 0`` is only approximately the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["straight_through", "clamp_st", "bernoulli_gate", "gumbel_choice", "NOISE_EPS"]

#: Noise drawn in ``[NOISE_EPS, 1 - NOISE_EPS]`` so logits stay finite.
NOISE_EPS = 1e-6


class _StraightThrough(torch.autograd.Function):
    """Forward returns ``value`` bit-exactly; backward sends the whole gradient to ``surrogate``."""

    @staticmethod
    def forward(ctx, value: Tensor, surrogate: Tensor) -> Tensor:  # type: ignore[override]
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        return None, grad


def straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` in the forward pass, ``d/d surrogate`` in the backward pass (same shape)."""
    return _StraightThrough.apply(value.detach(), surrogate)


def clamp_st(x: Tensor, low: float, high: float) -> Tensor:
    """Clamp ``x`` to ``[low, high]`` but pass the gradient through unchanged.

    Lets a learnable probability or magnitude that an optimiser pushed past its bound come back.
    """
    return straight_through(x.clamp(low, high), x)


def bernoulli_gate(p: Tensor, noise: Tensor, tau: float, hard: bool) -> Tensor:
    """Per-sample gate in ``[0, 1]`` from probability ``p`` (0-d or (B,)) and noise (B,) in (0, 1).

    Returns:
        ``(B,)`` tensor: hard 0/1 values with relaxed gradients (``hard=True``) or the relaxed gate.

    Example:
        >>> p = torch.tensor(0.3, requires_grad=True)
        >>> bernoulli_gate(p, torch.tensor([0.1, 0.5]), tau=0.5, hard=True)
        tensor([1., 0.], grad_fn=<_StraightThroughBackward>)
    """
    p_soft = clamp_st(p, NOISE_EPS, 1.0 - NOISE_EPS)
    logit_p = torch.log(p_soft) - torch.log1p(-p_soft)
    soft = torch.sigmoid((logit_p - (torch.log(noise) - torch.log1p(-noise))) / tau)
    if not hard:
        return soft
    return straight_through((noise < p).to(soft.dtype), soft)


def gumbel_choice(weights: Tensor, noise: Tensor, tau: float, hard: bool) -> Tensor:
    """Choose one of ``K`` options per sample with probabilities ``weights / weights.sum()``.

    Args:
        weights: ``(K,)`` non-negative relative weights (learnable).
        noise: ``(B, K)`` uniform noise in (0, 1), turned into Gumbel noise ``-log(-log n)``.
        tau: softmax temperature.
        hard: one-hot forward value with Gumbel-softmax gradients (straight-through).

    Returns:
        ``(B, K)`` selection weights summing to 1 per row.
    """
    logits = torch.log(clamp_st(weights, 1e-12, float("inf")))
    scores = logits - torch.log(-torch.log(noise))
    soft = torch.softmax(scores / tau, dim=1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(1, scores.argmax(dim=1, keepdim=True), 1.0)  # no host sync
    return straight_through(one_hot, soft)
