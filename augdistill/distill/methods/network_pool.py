"""A pool of semi-trained networks to embed with (IDM's enriched model sampling, Zhao et al. 2023,
arXiv 2307.09742).

Distribution matching under untrained networks matches features that barely tell classes apart. IDM keeps a
queue of networks that train a little on real data as the run goes, so the embeddings range from random to
semi-trained. Here the pool holds ``size`` networks; each outer step draws one uniformly, and a member that is
empty or has taken ``lifetime`` SGD steps is replaced by a fresh random network first. The caller trains the
drawn network (:meth:`NetworkPool.store` records the steps it took) and embeds with it.

Everything stays on the device and indexes with tensors: a step takes no host sync. The pool is a buffer of
the method, so checkpoints hold it and a resumed run continues exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from augdistill.devices import upload
from augdistill.models import sample_params
from augdistill.typing import Params

__all__ = ["NetworkPool"]


class NetworkPool(nn.Module):
    """``size`` flattened parameter vectors of ``model``'s architecture and the SGD steps each has taken.

    Buffers:
        flat: ``(size, P)`` the members' parameters, ``P`` = the model's parameter count.
        ages: ``(size,)`` int64 SGD steps each member has taken; ``-1``: empty (never drawn).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> pool = NetworkPool(net, size=4, lifetime=10)
        >>> g = torch.Generator().manual_seed(0)
        >>> index, params, fresh = pool.draw(net, g, g)
        >>> bool(fresh), sorted(params)
        (True, ['bias', 'weight'])
        >>> pool.store(index, params, fresh, steps=3); int(pool.ages[index])
        3
    """

    def __init__(self, model: nn.Module, size: int, lifetime: int) -> None:
        super().__init__()
        self.size, self.lifetime = size, lifetime
        self.shapes = {name: p.shape for name, p in model.named_parameters()}
        numel = sum(p.numel() for p in model.parameters())
        device = next(model.parameters()).device
        self.register_buffer("flat", torch.zeros(size, numel, device=device))
        self.register_buffer("ages", torch.full((size,), -1, dtype=torch.long, device=device))

    def draw(self, model: nn.Module, pick: torch.Generator, init: torch.Generator) -> tuple[Tensor, Params, Tensor]:
        """Draw a member uniformly from ``pick``; a fresh ``model`` network from ``init`` replaces it if it is
        empty or has reached its lifetime (a fresh network is drawn every call, so the streams advance alike).

        Returns:
            ``(index, params, fresh)``: the member's 0-d index, its parameters (leaves without grad), and a
            0-d bool that is true when they are the fresh network.
        """
        index = upload(torch.randint(self.size, (), generator=pick, device=pick.device), self.flat.device)
        fresh_params = sample_params(model, init)
        age = self._row(self.ages, index)
        fresh = (age < 0) | (age >= self.lifetime)
        stored = self._unflatten(self._row(self.flat, index))
        return index, {k: torch.where(fresh, fresh_params[k], stored[k]) for k in stored}, fresh

    def store(self, index: Tensor, params: Params, fresh: Tensor, steps: int) -> None:
        """Put member ``index``'s parameters back after it took ``steps`` SGD steps (from 0 when ``fresh``)."""
        vector = torch.cat([params[k].detach().reshape(-1) for k in self.shapes])
        self.flat.index_copy_(0, index.reshape(1), vector[None])
        age = self._row(self.ages, index)
        age = torch.where(fresh, torch.zeros_like(age), age) + steps
        self.ages.index_copy_(0, index.reshape(1), age.reshape(1))

    @staticmethod
    def _row(table: Tensor, index: Tensor) -> Tensor:
        """``table[index]`` for a 0-d device ``index``, without turning it into a Python int (a host sync)."""
        return table.index_select(0, index.reshape(1))[0]

    def _unflatten(self, vector: Tensor) -> Params:
        params, start = {}, 0
        for name, shape in self.shapes.items():
            numel = shape.numel()
            params[name] = vector[start:start + numel].view(shape)
            start += numel
        return params
