"""Independent references for tests and benchmarks: the unrolled inner loop on ``higher`` (what
:func:`augdistill.inner.unroll` is compared against), and plain modules holding given parameters."""

from __future__ import annotations

import copy
from typing import Sequence

import higher
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.inner import InnerSchedule, unroll
from augdistill.typing import Params

__all__ = ["higher_hypergradients", "assert_unroll_matches_higher", "network_at"]


def network_at(model: nn.Module, theta: Params) -> nn.Module:
    """A copy of ``model`` whose parameters are detached copies of ``theta`` (name -> tensor): an ordinary
    module, so a reference computation can call it without ``functional_call``."""
    net = copy.deepcopy(model)
    for name, p in net.named_parameters():
        p.data = theta[name].detach().clone()
    return net


def higher_hypergradients(net: nn.Module, theta0: Params, images: Tensor, targets: Tensor, lrs: Tensor,
                          schedule: InnerSchedule, x_real: Tensor, y_real: Tensor,
                          wrt: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Gradients of the real-batch cross-entropy of θ_T w.r.t. ``wrt``, unrolling with ``higher.innerloop_ctx``.

    Plain SGD (no momentum); ``net``'s parameters are overwritten with ``theta0``.
    """
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(theta0[name])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)  # the lr is overridden at every step
    with higher.innerloop_ctx(net, opt, copy_initial_weights=True) as (fnet, diffopt):
        for t in range(schedule.total_steps):
            idx = schedule.batches[t % schedule.steps].to(images.device)
            diffopt.step(F.cross_entropy(fnet(images[idx]), targets[idx]), override={"lr": [lrs[t]]})
        return torch.autograd.grad(F.cross_entropy(fnet(x_real), y_real), list(wrt))


def assert_unroll_matches_higher(net: nn.Module, theta0: Params, images: Tensor, targets: Tensor, lrs: Tensor,
                                 schedule: InnerSchedule, x_real: Tensor, y_real: Tensor, wrt: Sequence[Tensor], *,
                                 rtol: float, atol: float) -> None:
    """Assert that the hypergradients of the real-batch cross-entropy of :func:`~augdistill.inner.unroll`'s θ_T
    w.r.t. ``wrt`` are non-zero and equal :func:`higher_hypergradients` within ``rtol`` / ``atol``."""
    theta = unroll(net, theta0, images, targets, lrs, schedule)
    ours = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(net, theta, (x_real,)), y_real), list(wrt))
    reference = higher_hypergradients(net, theta0, images, targets, lrs, schedule, x_real, y_real, wrt)
    for a, b in zip(ours, reference):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
