"""An independent implementation of the unrolled inner loop on ``higher``, the reference that tests and
benchmarks compare :func:`augdistill.inner.unroll` against."""

from __future__ import annotations

from typing import Sequence

import higher
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.inner import InnerSchedule
from augdistill.typing import Params

__all__ = ["higher_hypergradients"]


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
