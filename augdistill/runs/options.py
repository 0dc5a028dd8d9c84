"""How a job runs (device, checkpoint and validation cadence, evaluation size), checked before any work.

The options are frozen dataclasses validated by :func:`augdistill.config.check_fields`, the same
mechanism as the run configuration: a new option declares its flag and range with
:func:`~augdistill.config.setting` and is checked with everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from augdistill.config import check_fields, setting
from augdistill.errors import ConfigError

__all__ = ["check_device", "DistillOptions", "EvalOptions", "PROTOCOLS"]

#: Evaluation protocols of :func:`augdistill.runs.jobs.evaluate_run`.
PROTOCOLS = ("replay", "standard", "random-subset", "herding", "full-data")


def check_device(name: str) -> str:
    """``name`` if it is a device torch knows and this machine has, else a :class:`ConfigError` saying which
    devices are available.

    Example:
        >>> check_device("cpu")
        'cpu'
        >>> check_device("banana")
        Traceback (most recent call last):
        augdistill.errors.ConfigError: --device 'banana' is not a device; expected cpu, cuda or cuda:N, mps
    """
    expected = "expected cpu, cuda or cuda:N, mps"
    if not isinstance(name, str):
        raise ConfigError(f"--device {name!r} is not a device; {expected}")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device; {expected}") from None
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise ConfigError(f"--device {name!r}: there is one cpu device; use cpu")
        return name
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name!r}: no CUDA GPU is available on this machine; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 .. cuda:{count - 1}")
        return name
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name!r}: MPS is not available on this machine; use --device cpu")
        return name
    raise ConfigError(f"--device {name!r} is not supported; {expected}")


@dataclass(frozen=True)
class DistillOptions:
    """How :func:`~augdistill.runs.jobs.distill_run` runs: ``device``; a checkpoint every
    ``checkpoint_every`` outer steps; validation every ``eval_every`` steps with ``eval_nets`` networks
    (0: never, the last iteration is kept); ``final_nets`` fresh networks for the test replay (0: skip);
    ``time_budget`` seconds of distillation per launch (0: none), after which the run validates the step it
    is at and finishes as if it had reached its last iteration."""

    device: str = setting("cpu", "--device")
    checkpoint_every: int = setting(100, "--checkpoint-every", low=1, high=10_000_000)
    eval_every: int = setting(100, "--eval-every", low=0, high=10_000_000)
    eval_nets: int = setting(5, "--eval-nets", low=1, high=100)
    final_nets: int = setting(5, "--final-nets", low=0, high=1000, why="each is a full replay")
    time_budget: float = setting(0.0, "--time-budget", low=0, high=1e9)

    def __post_init__(self) -> None:
        check_fields(self)
        check_device(self.device)


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`~augdistill.runs.jobs.evaluate_run` runs: ``protocol``, ``nets`` fresh networks, standard-protocol
    ``epochs`` and ``batch_size`` (``None``: the protocol's defaults), the augmentation ``augment`` they train with,
    the share ``cutmix`` of their minibatches mixed by CutMix, ``device``, the first network's ``seed``, and the
    ConvNet's ``first_padding`` (``None``: the run's ``--first-padding``)."""

    protocol: str = setting("replay", "--protocol", choices=PROTOCOLS)
    nets: int = setting(5, "--nets", low=1, high=1000, why="each is a fresh network trained from scratch")
    epochs: int | None = setting(None, "--epochs", low=1, high=10_000, why="the papers train for 1000")
    augment: str = setting("none", "--aug")
    device: str = setting("cpu", "--device")
    batch_size: int | None = setting(None, "--batch-size", low=1, high=100_000, why="memory")
    cutmix: float = setting(0.0, "--cutmix", low=0, high=1)
    seed: int = setting(0, "--seed", low=0, high=2**31 - 1)
    first_padding: int | None = setting(None, "--first-padding", low=0, high=64)

    def __post_init__(self) -> None:
        check_fields(self)
        check_device(self.device)
