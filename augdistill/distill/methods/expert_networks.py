"""Networks to embed with, drawn from cached expert trajectories (DANCE's pseudo long-term distribution
alignment, Zhang et al. 2024, arXiv 2406.01063).

Distribution matching under random networks matches features that barely tell classes apart, and IDM's pool of
networks that train a little as the run goes (:mod:`~augdistill.distill.methods.network_pool`) only reaches
semi-trained ones once the run is long. DANCE instead trains a few experts on real data once, beforehand, and
embeds every step with one of them at a random stage of its training. Here a step draws an expert uniformly and
a position ``t ~ U[0, E]`` along its trajectory (``E`` = the trajectories' epochs), and embeds with the
parameters linearly interpolated between the checkpoints of epochs ``⌊t⌋`` and ``⌈t⌉``: from the random
initialisation (``t = 0``) to the trained network (``t = E``).

The trajectories come from ``augdistill experts`` (:mod:`augdistill.distill.experts`), the same files trajectory
matching reads. They are stacked on the run's device once; a draw indexes them with device tensors (no host
sync).
"""

from __future__ import annotations

import torch
from torch import Tensor

from augdistill.devices import upload
from augdistill.typing import Params

__all__ = ["ExpertNetworks"]


class ExpertNetworks:
    """Every expert's trajectory, stacked: ``params[name]`` is ``(X, E + 1, *shape)`` for ``X`` experts.

    Example:
        >>> trajectories = [{"w": torch.tensor([[0.0], [2.0]])}, {"w": torch.tensor([[10.0], [12.0]])}]
        >>> nets = ExpertNetworks(trajectories, "cpu")
        >>> nets.num_experts, nets.epochs
        (2, 1)
        >>> nets.at(torch.tensor(1), torch.tensor(0.25))["w"].tolist()  # a quarter of the way from 10 to 12
        [10.5]
    """

    def __init__(self, trajectories: list[dict[str, Tensor]], device: torch.device | str) -> None:
        """``trajectories``: one dict per expert, each entry ``(E + 1, *shape)`` (epochs ``0..E``), every expert
        with the same names, shapes and ``E >= 1``."""
        self.params = {k: upload(torch.stack([t[k] for t in trajectories]), device) for k in trajectories[0]}
        first = next(iter(self.params.values()))
        self.num_experts, self.epochs = first.shape[0], first.shape[1] - 1
        self.device = first.device

    def at(self, expert: Tensor, position: Tensor) -> Params:
        """θ of ``expert`` (0-d int64) at ``position`` epochs (0-d float in ``[0, E]``), interpolated linearly
        between the checkpoints on either side."""
        low = position.floor().clamp(max=self.epochs - 1)
        fraction = position - low
        low = low.long()
        out = {}
        for name, stacked in self.params.items():
            trajectory = stacked.index_select(0, expert.reshape(1))[0]
            pair = trajectory.index_select(0, torch.stack([low, low + 1]))
            out[name] = torch.lerp(pair[0], pair[1], fraction.to(pair.dtype))
        return out

    def draw(self, generator: torch.Generator) -> Params:
        """An expert drawn uniformly and a position drawn uniformly in ``[0, E]``, both from ``generator`` (on
        any device: the draws are moved to the trajectories' device without a host sync)."""
        expert = torch.randint(self.num_experts, (), generator=generator, device=generator.device)
        position = torch.rand((), generator=generator, device=generator.device) * self.epochs
        return self.at(upload(expert, self.device), upload(position, self.device))
