"""Gates and choices with gradients that stay alive at every probability, 0 and 1 included.

A gate decides per sample whether an op applies. It is a function of the op's probability ``p``
and of pre-drawn noise ``n ~ U(0, 1)`` (kept in the sampled params, so it replays). Two modes:

* **hard** (the default, and every shipped policy): the forward value is the exact decision
  ``h = 1[n < p]`` — 0 for every sample at ``p = 0``, 1 for every sample at ``p = 1`` — and the
  backward pass treats the gate as if it were ``p`` itself: ``d gate / d p = 1`` for every sample.
  A gated op ``y = x + h (A(x) - x)`` then gets ``d y / d p = A(x) - x`` per sample, which is exactly
  ``d/dp`` of the expected output ``E[y] = p A(x) + (1 - p) x`` (and the exact gradient of the
  expected loss for any loss that is linear in ``y``). It never saturates: it is the same at
  ``p = 0``, ``0.5`` and ``1``.
* **relaxed** (``hard=False``): the value is the binary-Concrete gate
  ``sigmoid((logit p - logit n) / tau)`` of Maddison et al. 2017 and its gradient is exact. It is
  smooth in ``p`` (what a finite-difference check sees) but never exactly 0 or 1, and like every
  relaxation with ``tau < 1`` its gradient vanishes as ``p`` approaches 0 or 1.

Choices among ``K`` ops or sub-policies follow the same two modes (:func:`gumbel_choice`).

Learnable values live inside a range (a probability in ``[0, 1]``, a magnitude inside the op's
bounds). :func:`clamp_st` clamps the value but keeps the gradient: inside the range, bounds
included, the gradient passes unchanged (so a value sitting on its bound can leave it in either
direction); a stored value that an optimiser's momentum carried past the bound receives only the
part of the gradient that brings it back, so it never drifts further out.
"""

from __future__ import annotations

import math

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
    """``value`` in the forward pass, ``d/d surrogate`` in the backward pass (same shape).

    Where no gradient is recorded (``surrogate`` needs none, or grad mode is off) this is ``value``
    detached, without a copy.

    Example:
        >>> p = torch.tensor(0.25, requires_grad=True)
        >>> y = straight_through(torch.tensor(1.0), 3 * p)
        >>> y.backward(); y.item(), p.grad.item()
        (1.0, 3.0)
    """
    if not (surrogate.requires_grad and torch.is_grad_enabled()):
        return value.detach()
    return _StraightThrough.apply(value.detach(), surrogate)


class _ClampST(torch.autograd.Function):
    """``x.clamp(low, high)``; backward: the gradient, less its outward part where ``x`` is out of range."""

    @staticmethod
    def forward(ctx, x: Tensor, low: float, high: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # Gradient descent moves x by -grad: past `high` a negative grad pushes further out, past `low` a positive one.
        outward = ((x > ctx.high) & (grad < 0)) | ((x < ctx.low) & (grad > 0))
        return grad.masked_fill(outward, 0.0), None, None


def clamp_st(x: Tensor, low: float, high: float) -> Tensor:
    """Clamp ``x`` to ``[low, high]``, keeping the gradient alive at and beyond the bounds.

    Inside ``[low, high]`` (bounds included) the gradient passes unchanged, so a probability at
    exactly 1 or a magnitude on its bound still learns in both directions. Outside, only the part of
    the gradient that moves ``x`` back toward the range passes: an optimiser cannot push the stored
    value ever further out (where it would take as many steps to come back).

    Example:
        >>> x = torch.tensor([1.0, 1.3, 1.3], requires_grad=True)
        >>> y = clamp_st(x, 0.0, 1.0)
        >>> y.backward(torch.tensor([-1.0, -1.0, 1.0])); y.tolist(), x.grad.tolist()
        ([1.0, 1.0, 1.0], [-1.0, 0.0, 1.0])
    """
    return _ClampST.apply(x, low, high)


def bernoulli_gate(p: Tensor, noise: Tensor, tau: float, hard: bool) -> Tensor:
    """Per-sample gate in ``[0, 1]`` from probability ``p`` (0-d or (B,)) and noise (B,) in (0, 1).

    Args:
        p: probability of applying the op (a value outside ``[0, 1]`` acts as its clamp).
        noise: ``(B,)`` uniform noise in ``[NOISE_EPS, 1 - NOISE_EPS]``.
        tau: temperature of the relaxed gate (unused when ``hard``).
        hard: exact 0/1 values whose gradient is that of the expected gate ``p`` (see the module
            docstring); otherwise the relaxed binary-Concrete gate.

    Returns:
        ``(B,)`` tensor in ``noise``'s dtype.

    Example:
        >>> p = torch.tensor(1.0, requires_grad=True)
        >>> g = bernoulli_gate(p, torch.tensor([0.1, 0.9]), tau=0.5, hard=True)
        >>> g.sum().backward(); g.tolist(), p.grad.item()
        ([1.0, 1.0], 2.0)
    """
    if hard:
        p_soft = clamp_st(p, 0.0, 1.0)
        return straight_through((noise < p).to(noise.dtype), p_soft.expand_as(noise))
    p_soft = clamp_st(p, NOISE_EPS, 1.0 - NOISE_EPS)
    logit_p = torch.log(p_soft) - torch.log1p(-p_soft)
    return torch.sigmoid((logit_p - (torch.log(noise) - torch.log1p(-noise))) / tau)


def gumbel_choice(weights: Tensor, noise: Tensor, tau: float, hard: bool) -> Tensor:
    """Choose one of ``K`` options per sample with probabilities ``weights / weights.sum()``.

    Args:
        weights: ``(K,)`` non-negative relative weights (learnable; negative values act as 0).
        noise: ``(B, K)`` uniform noise in (0, 1), turned into Gumbel noise ``-log(-log n)``.
        tau: temperature of the relaxed (Gumbel-softmax) choice; unused when ``hard``.
        hard: one-hot forward value (Gumbel-max: option ``k`` with probability ``pi_k``) whose
            gradient is that of the expected one-hot vector ``pi = w / sum(w)`` — the output
            ``sum_k c_k y_k`` gets ``d/d pi_k = y_k``, the gradient of the expected output, at any
            ``pi`` including 0 and 1. Otherwise the relaxed Gumbel-softmax with exact gradients.

    Returns:
        ``(B, K)`` selection weights summing to 1 per row.

    Example:
        >>> w = torch.tensor([0.0, 1.0], requires_grad=True)
        >>> c = gumbel_choice(w, torch.tensor([[0.5, 0.5]]), tau=0.5, hard=True)
        >>> c.tolist()
        [[0.0, 1.0]]
    """
    if hard:
        w = clamp_st(weights, 0.0, math.inf)
        scores = torch.log(w.detach().clamp(min=1e-12)) - torch.log(-torch.log(noise))
        one_hot = torch.zeros_like(scores).scatter_(1, scores.argmax(dim=1, keepdim=True), 1.0)  # no host sync
        return straight_through(one_hot, (w / w.sum()).expand_as(one_hot))
    logits = torch.log(clamp_st(weights, 1e-12, math.inf))
    return torch.softmax((logits - torch.log(-torch.log(noise))) / tau, dim=1)
