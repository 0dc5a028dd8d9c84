"""Independent references for trajectory matching: the full unroll on ``higher``, and TESLA's first-order
gradient written as a plain autograd graph (memory grows with the steps; the library's constant-memory
unroll must give the same numbers)."""

from __future__ import annotations

from typing import Callable, Sequence

import higher
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.inner import InnerSchedule
from augdistill.typing import Params

__all__ = ["higher_trajectory_gradients", "first_order_trajectory_gradients", "matching_loss"]


def matching_loss(theta: Sequence[Tensor], start: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """``Σ‖θ − target‖² / Σ‖start − target‖²`` over parallel parameter lists."""
    num = sum(((a - b) ** 2).sum() for a, b in zip(theta, target))
    den = sum(((a - b) ** 2).sum() for a, b in zip(start, target))
    return num / den  # type: ignore[operator]


def higher_trajectory_gradients(net: nn.Module, start: Params, target: Params, images: Tensor, targets: Tensor,
                                syn_lr: Tensor, schedule: InnerSchedule, wrt: Sequence[Tensor],
                                augment: Callable[[Tensor, int], Tensor] | None = None) -> tuple[Tensor, ...]:
    """MTT's loss after ``schedule.total_steps`` plain-SGD steps at the scalar ``syn_lr`` from ``start``,
    unrolled with ``higher.innerloop_ctx``; returns ``(loss, *gradients w.r.t. wrt)``.

    ``net``'s parameters are overwritten with ``start``.
    """
    names = [n for n, _ in net.named_parameters()]
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(start[name])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)  # overridden at every step
    with higher.innerloop_ctx(net, opt, copy_initial_weights=True) as (fnet, diffopt):
        for t in range(schedule.total_steps):
            idx = schedule.batches[t % schedule.steps].to(images.device)
            x = images[idx] if augment is None else augment(images[idx], t)
            diffopt.step(F.cross_entropy(fnet(x), targets[idx]), override={"lr": [syn_lr]})
        loss = matching_loss(list(fnet.parameters()), [start[n] for n in names], [target[n] for n in names])
        return (loss.detach(), *torch.autograd.grad(loss, list(wrt)))


def first_order_trajectory_gradients(net: nn.Module, start: Params, target: Params, images: Tensor,
                                     targets: Tensor, lrs: Tensor, schedule: InnerSchedule, wrt: Sequence[Tensor],
                                     momentum: float = 0.0, augment: Callable[[Tensor, int], Tensor] | None = None,
                                     extra_loss: Callable[[Params], Tensor] | None = None) -> tuple[Tensor, ...]:
    """TESLA's gradient as one autograd graph: the unroll with every θ_t *detached* before its gradient is
    taken, so a step's batch reaches θ_T only through its own gradient ``g_t`` (and ``α_t`` only through
    ``α_t u_t``). Loss: MTT's (plus ``extra_loss(θ_T)``); returns ``(loss, *gradients w.r.t. wrt)``."""
    names = list(start)
    theta = [start[n].detach() for n in names]
    velocity: list[Tensor] | None = None
    for t in range(schedule.total_steps):
        idx = schedule.batches[t % schedule.steps].to(images.device)
        x = images[idx] if augment is None else augment(images[idx], t)
        current = [p.detach().requires_grad_() for p in theta]
        loss = F.cross_entropy(functional_call(net, dict(zip(names, current)), (x,)), targets[idx])
        grads = torch.autograd.grad(loss, current, create_graph=True)
        velocity = list(grads) if velocity is None else [momentum * u + g for u, g in zip(velocity, grads)]
        theta = [p - lrs[t] * u for p, u in zip(theta, velocity)]
    final = dict(zip(names, theta))
    loss = matching_loss(theta, [start[n] for n in names], [target[n] for n in names])
    if extra_loss is not None:
        loss = loss + extra_loss(final)
    return (loss.detach(), *torch.autograd.grad(loss, list(wrt), allow_unused=True))
