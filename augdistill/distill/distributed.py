"""Multi-process distillation with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m augdistill distill ...`` starts ``N`` copies of the job. Each builds the
same :class:`~augdistill.distill.loop.Distiller` from the same seeds; every outer step then

1. samples the real batch and the step's augmentation from the shared streams (identical on every rank);
2. splits the step's *work units* (the θ₀ draws of Wang et al., the classes of DM) over the ranks: rank ``r`` of ``W``
   computes units ``r, r + W, r + 2W, ...`` (:class:`Shard`). Each unit draws its randomness (θ₀, fresh
   augmentation) from generators derived from ``(seed, iteration, unit, stream)`` (:func:`step_seed`,
   :func:`unit_generator`), never
   from a stream another unit advances, so what unit ``d`` computes does not depend on which rank runs it
   or on how many ranks there are: ``W`` ranks reproduce a single process to float tolerance;
3. all-reduces (sums) the gradients of everything learned — synthetic set, the method's own tensors,
   the policy — in one collective per dtype (:meth:`DistContext.all_reduce_gradients`), before clipping,
   so every rank takes the same optimiser step and the states stay identical (checked at every
   checkpoint with :meth:`DistContext.check_in_sync`).

A method that does not split its work (``Method.shards`` is ``False``) computes everything on every rank;
the loop then scales its loss by ``1 / W`` so the summed gradient is the single-process one: correct,
not faster. Rank 0 alone validates (and broadcasts the accuracy), writes checkpoints, outputs and
progress, and prints the result.

Backends: ``gloo`` on CPU, ``nccl`` with ``--device cuda`` (each rank takes ``cuda:LOCAL_RANK``).
Workers started by ``torchrun`` ask the kernel to kill them when the launcher dies
(``PR_SET_PDEATHSIG``): torchrun starts its workers in their own sessions, so after a ``kill -9`` of
torchrun they would otherwise live on as orphans, still training and writing the run folder.

Example (one process; under ``torchrun`` the same call joins the process group):
    >>> ctx = from_environment("cpu")
    >>> ctx.world_size, ctx.is_main, list(ctx.shard.units(3))
    (1, True, [0, 1, 2])
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from augdistill.errors import AugdistillError

__all__ = ["Shard", "DistContext", "DistributedError", "SINGLE", "from_environment", "shutdown", "leaving_group",
           "step_seed", "unit_generator", "UNIT_STREAMS"]

T = TypeVar("T")

#: The per-unit random streams a method may ask for (:func:`unit_generator`), each with its own offset.
UNIT_STREAMS = {"init": 1, "syn_aug": 2, "real_aug": 3, "method": 4}
_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant of splitmix64
_MASK = (1 << 64) - 1


class DistributedError(AugdistillError):
    """Another rank failed, or the ranks' states diverged; the message says which and where."""


@dataclass(frozen=True)
class Shard:
    """Which of a step's work units this rank computes: units ``rank, rank + world_size, ...``.

    Example:
        >>> [list(Shard(r, 2).units(5)) for r in (0, 1)]
        [[0, 2, 4], [1, 3]]
    """

    rank: int = 0
    world_size: int = 1

    def owns(self, unit: int) -> bool:
        return unit % self.world_size == self.rank

    def units(self, count: int) -> range:
        """The units of ``count`` this rank computes."""
        return range(self.rank, count, self.world_size)


def _splitmix64(x: int) -> int:
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def step_seed(seed: int, iteration: int) -> int:
    """The seed of outer step ``iteration`` of a run seeded ``seed``: a function of both alone, so a resumed run
    (or any rank) derives it without stored state."""
    return _splitmix64(_splitmix64(seed) + iteration)


def unit_generator(step_seed: int, unit: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for ``stream`` of work unit ``unit`` in the outer step whose seed is ``step_seed``.

    The seed is a splitmix64 hash of ``(step_seed, unit, stream)``: independent across units and streams,
    and the same on every rank. On CUDA the generator lives on the device (no host-to-device copy of noise).

    Args:
        step_seed: the outer step's seed (:func:`step_seed`).
        unit: index of the unit (θ₀ draw, ...) within the step.
        stream: one of :data:`UNIT_STREAMS`.
        device: where the generator draws.
    """
    if stream not in UNIT_STREAMS:
        raise AugdistillError(f"unknown unit stream '{stream}'; expected one of {', '.join(UNIT_STREAMS)}")
    seed = _splitmix64(_splitmix64(step_seed ^ _splitmix64(unit)) + UNIT_STREAMS[stream]) >> 1  # < 2**63
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size``; ``backend`` is ``None`` for one process.

    Every collective helper is a no-op (or the identity) for one process, so the loop calls them
    unconditionally.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: validates, writes the run folder, prints."""
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def device(self, requested: str | torch.device) -> torch.device:
        """``requested``, with a bare ``cuda`` mapped to this rank's ``cuda:LOCAL_RANK``."""
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None and self.world_size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    # -- collectives -------------------------------------------------------------------------------
    def all_reduce_gradients(self, params: Sequence[Tensor], scalars: Tensor) -> Tensor:
        """Sum ``.grad`` of ``params`` and the 1-d ``scalars`` over the ranks, in place; returns the summed scalars.

        A parameter that has no gradient on any rank keeps ``grad = None`` (optimisers then skip it, as in
        one process); one that has a gradient on some rank gets the sum, zeros standing in for the others.
        One collective per parameter dtype, plus one for the flags and scalars.
        """
        if self.world_size == 1:
            return scalars
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float64, device=scalars.device)
        meta = torch.cat([flags, scalars.to(torch.float64)])
        dist.all_reduce(meta)
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for p in params:
            by_dtype.setdefault(p.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
            dist.all_reduce(flat)
            for p, chunk in zip(group, flat.split([p.numel() for p in group])):
                p.grad = chunk.view_as(p).clone()
        for p, present in zip(params, meta[:len(params)].tolist()):
            if not present:
                p.grad = None
        return meta[len(params):].to(scalars.dtype)

    def broadcast_float(self, value: float | None, device: torch.device | str = "cpu") -> float:
        """Rank 0's ``value`` on every rank (the others pass ``None``)."""
        if self.world_size == 1:
            return float(value)  # type: ignore[arg-type]
        t = torch.tensor([0.0 if value is None else value], dtype=torch.float64, device=self._collective_device(device))
        dist.broadcast(t, src=0)
        return float(t.item())

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """Whether ``flag`` is true on any rank (e.g. a stop request that reached only some ranks)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=self._collective_device(device))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def from_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its (picklable) result to every rank.

        If it raises on rank 0, every other rank raises :class:`DistributedError` with its message, so no
        rank waits for a collective that will never come.
        """
        if self.world_size == 1:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except BaseException as e:
                box[0] = ("error", f"{type(e).__name__}: {e}")
                self._broadcast_object(box)
                raise
        self._broadcast_object(box)
        if box[0][0] == "error":
            raise DistributedError(f"rank 0 failed, so rank {self.rank} stops: {box[0][1]}")
        return box[0][1]

    def all_ok(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` on every rank; if it raised on any, raise everywhere (the failing rank its own error)."""
        if self.world_size == 1:
            return fn()
        error: BaseException | None = None
        result: Any = None
        try:
            result = fn()
        except BaseException as e:  # every rank must reach the collective below
            error = e
        failed = torch.tensor([0.0 if error is None else 1.0 + self.rank], device=self._collective_device())
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if error is not None:
            raise error
        if failed.item() > 0:
            raise DistributedError(f"rank {int(failed.item()) - 1} failed during {what}; see its error above")
        return result

    def check_in_sync(self, tensors: dict[str, Tensor], what: str) -> None:
        """Raise :class:`DistributedError` naming the first of ``tensors`` that differs between ranks.

        Compares a float64 sum and a position-weighted sum of each tensor (two small all-reduces).
        """
        if self.world_size == 1 or not tensors:
            return
        sums = []
        for t in tensors.values():
            flat = t.detach().reshape(-1).to(torch.float64)
            weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
            sums.append(torch.stack([flat.sum(), (flat * weights).sum()]))
        local = torch.stack(sums).to(self._collective_device(sums[0].device))
        high, low = local.clone(), local.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        differs = ((high - low).abs() > 0).any(dim=1).tolist()
        if any(differs):
            i = differs.index(True)
            raise DistributedError(f"{what}: '{list(tensors)[i]}' differs between ranks (sums {low[i].tolist()} vs "
                                   f"{high[i].tolist()}); the ranks no longer learn the same state")

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _collective_device(self, device: torch.device | str | None = None) -> torch.device:
        """NCCL collectives need CUDA tensors; gloo takes CPU (and CUDA) tensors."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def _broadcast_object(self, box: list[Any]) -> None:
        device = self._collective_device() if self.backend == "nccl" else None
        dist.broadcast_object_list(box, src=0, device=device)


#: The context of a single-process run.
SINGLE = DistContext()


def _exit_with_launcher() -> None:
    """Ask Linux to SIGKILL this worker when its parent (the torchrun agent) dies."""
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before we asked
        os._exit(1)


def from_environment(device: str | torch.device = "cpu") -> DistContext:
    """The context of this process: one process, or (under ``torchrun``: ``WORLD_SIZE`` > 1) a rank of the
    process group, which is initialised here on first use (``nccl`` for a CUDA ``device``, else ``gloo``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return SINGLE
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(local_rank)
        # rank 0 alone validates and (in ``bench``) evaluates while the others wait at the next collective
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=6))
        _exit_with_launcher()
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, str(dist.get_backend()))


def shutdown(wait_for_peers: bool = True) -> None:
    """Leave the process group, if this process joined one.

    With ``wait_for_peers`` every rank first waits for the others to arrive here: rank 0 may still be evaluating and
    writing the run's outputs, and a rank that leaves (and exits) early can abort in the group's teardown, after
    which ``torchrun`` stops rank 0 before it has written them. After an error a rank leaves at once.
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def leaving_group() -> Iterator[None]:
    """Run a command's work, then leave the process group (if one was joined): after the other ranks when the
    work finished, at once when it raised (:func:`shutdown`)."""
    finished = False
    try:
        yield
        finished = True
    finally:
        shutdown(wait_for_peers=finished)
