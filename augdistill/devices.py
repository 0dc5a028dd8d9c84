"""Moving values drawn on the host onto the device without making the host wait.

Every random draw of a run comes from a CPU ``torch.Generator``, so that a run draws the same numbers on every
device. A plain ``tensor.to("cuda")`` of such a draw copies from pageable memory, and that copy waits until the
device has finished the work queued before it: a host synchronisation in the middle of a step.
:func:`upload` copies through pinned memory instead, asynchronously, so the host keeps queueing work.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["upload"]


def upload(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``; a host tensor bound for CUDA goes through pinned memory with a non-blocking copy.

    The pinned staging buffer comes from torch's caching host allocator, which keeps it until the copy has run,
    so ``t`` may be freed or changed right away. Anything else is an ordinary ``t.to(device)``.

    Example:
        >>> upload(torch.arange(3), "cpu").tolist()
        [0, 1, 2]
    """
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
