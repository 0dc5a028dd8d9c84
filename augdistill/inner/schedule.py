"""Which (synthetic) images each unrolled inner step sees."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from augdistill.errors import ConfigError

__all__ = ["InnerSchedule"]


@dataclass(frozen=True)
class InnerSchedule:
    """Which synthetic images each inner step sees.

    Attributes:
        batches: one index tensor per step of an epoch; step ``t`` uses ``batches[t % steps]``.
        epochs: passes over ``batches``. The total number of steps is ``len(batches) * epochs``
            and is the number of learning rates ``unroll`` expects.
    """

    batches: tuple[Tensor, ...]
    epochs: int

    @property
    def steps(self) -> int:
        return len(self.batches)

    @property
    def total_steps(self) -> int:
        return len(self.batches) * self.epochs

    def on(self, device: torch.device) -> tuple[Tensor, ...]:
        """The index tensors on ``device``, moved once and cached (no per-step copies)."""
        cache = self.__dict__.setdefault("_on_device", {})
        if device not in cache:
            cache[device] = tuple(b.to(device) for b in self.batches)
        return cache[device]

    @staticmethod
    def full_batch(num_images: int, steps: int, epochs: int) -> "InnerSchedule":
        """Every step sees all ``num_images`` images (the usual choice at 1-10 images per class)."""
        _check_positive(steps=steps, epochs=epochs, num_images=num_images)
        everything = torch.arange(num_images)
        return InnerSchedule(tuple(everything for _ in range(steps)), epochs)

    @staticmethod
    def class_chunks(num_classes: int, ipc: int, per_class: int, steps: int, epochs: int) -> "InnerSchedule":
        """Step ``s`` sees ``per_class`` images of every class: chunk ``s mod (ipc / per_class)``.

        Images are stored class-major (index ``c * ipc + i``), as :class:`SyntheticSet` keeps them.
        """
        _check_positive(steps=steps, epochs=epochs, ipc=ipc, per_class=per_class)
        if ipc % per_class:
            raise ConfigError(f"images per class ({ipc}) must be a multiple of the per-step batch ({per_class})")
        chunks = ipc // per_class
        base = torch.arange(num_classes)[:, None] * ipc
        batches = tuple((base + (s % chunks) * per_class + torch.arange(per_class)).flatten()
                        for s in range(steps))
        return InnerSchedule(batches, epochs)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
