"""The augmentation-aware functional inner trainer shared by every method and objective.

``unroll`` runs ``T = steps * epochs`` SGD(-momentum) steps on a (synthetic) training set as a
pure function of the starting parameters and keeps the autograd graph, so a loss on the
returned θ_T back-propagates into the images, the targets (when they are soft and learnable),
the per-step learning rates and anything the augmentation depends on. With
``create_graph=False`` the same code trains a network without building any graph (evaluation,
and the network updates between gradient-matching steps).

Example:
    >>> import torch
    >>> from augdistill.models import build_model, sample_params
    >>> net = build_model("mlp", (1, 4, 4), 3, width=8, depth=1)
    >>> theta0 = sample_params(net, torch.Generator().manual_seed(0))
    >>> x = torch.rand(6, 1, 4, 4, requires_grad=True)
    >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> lrs = torch.full((4,), 0.1, requires_grad=True)
    >>> schedule = InnerSchedule.full_batch(num_images=6, steps=2, epochs=2)
    >>> theta = unroll(net, theta0, x, y, lrs, schedule)
    >>> torch.nn.functional.cross_entropy(torch.func.functional_call(net, theta, (x,)), y).backward()
    >>> x.grad.abs().sum() > 0 and lrs.grad.abs().sum() > 0
    tensor(True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.errors import ConfigError
from augdistill.inner.schedule import InnerSchedule
from augdistill.typing import Augment, Params

__all__ = ["unroll", "inner_step_loss"]


def inner_step_loss(model: nn.Module, params: Params, x: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of ``model(x)`` under ``params``; ``targets`` are class ids ``(B,)`` or probabilities ``(B, K)``."""
    return F.cross_entropy(functional_call(model, params, (x,)), targets)


def unroll(model: nn.Module, params: Params, images: Tensor, targets: Tensor, lrs: Tensor,
           schedule: InnerSchedule, *, momentum: float | Tensor = 0.0, augment: Augment | None = None,
           create_graph: bool = True) -> Params:
    """Train from ``params`` for ``schedule.total_steps`` SGD steps and return the final parameters.

    Args:
        model: the network architecture; only its structure (and buffers) is used.
        params: θ₀ as ``name -> tensor``; leaves that do not require grad are made to.
        images: training images ``(N, C, H, W)`` in ``[0, 1]``.
        targets: class ids ``(N,)`` or class probabilities ``(N, K)``.
        lrs: per-step learning rates ``(T,)`` with ``T = schedule.total_steps``.
        schedule: which images every step sees.
        momentum: heavy-ball momentum μ (``v ← μ v + g``, ``θ ← θ − lr v``); float or 0-d tensor.
        augment: ``augment(batch, t)`` applied to each step's minibatch (``t`` = global step index).
        create_graph: keep the graph of every step (needed for hypergradients). With ``False`` the
            result is detached and no graph is built (evaluation, plain training).

    Returns:
        θ_T as a new dict; with ``create_graph`` it is differentiable w.r.t. ``params``,
        ``images``, ``targets``, ``lrs``, ``momentum`` and whatever ``augment`` depends on.
    """
    if lrs.shape != (schedule.total_steps,):
        raise ConfigError(f"expected {schedule.total_steps} learning rates (steps x epochs), got shape "
                          f"{tuple(lrs.shape)}")
    names = list(params)
    theta = [p if p.requires_grad else p.detach().requires_grad_() for p in params.values()]
    velocity: list[Tensor] | None = None
    batches = schedule.on(images.device)
    with torch.enable_grad():
        for t in range(schedule.total_steps):
            idx = batches[t % schedule.steps]
            x = images[idx]
            if augment is not None:
                x = augment(x, t)
            loss = inner_step_loss(model, dict(zip(names, theta)), x, targets[idx])
            grads = torch.autograd.grad(loss, theta, create_graph=create_graph)
            if velocity is None:
                velocity = list(grads)
            else:
                velocity = [momentum * v + g for v, g in zip(velocity, grads)]
            theta = [p - lrs[t] * v for p, v in zip(theta, velocity)]
            if not create_graph:
                theta = [p.detach().requires_grad_() for p in theta]
                velocity = [v.detach() for v in velocity]
    if not create_graph:
        theta = [p.detach() for p in theta]
    return dict(zip(names, theta))
