"""The run directory: what ``augdistill distill`` writes and ``evaluate`` / ``show`` read.

Files:
    ``synthetic.pt``   plain tensors: images, labels, learned lrs, soft labels, schedule, normalisation
    ``config.json``    the :class:`DistillConfig`
    ``metrics.json``   per-iteration history, selected iteration, final evaluation
    ``checkpoint.pt``  the full resumable state (atomic, rewritten periodically)
    ``policy.json``    the augmentation policy (when one is used)
    ``synthetic.png``, ``loss.png``  pictures
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from augdistill.runs.atomic import load_json, load_tensors, save_tensors
from augdistill.config import DistillConfig, config_from_dict
from augdistill.errors import CheckpointError, ConfigError
from augdistill.inner import InnerSchedule

__all__ = ["DistilledSet", "save_distilled", "load_distilled", "load_config", "SYNTHETIC_FILE", "CONFIG_FILE",
           "METRICS_FILE", "CHECKPOINT_FILE", "POLICY_FILE"]

SYNTHETIC_FILE, CONFIG_FILE, METRICS_FILE = "synthetic.pt", "config.json", "metrics.json"
CHECKPOINT_FILE, POLICY_FILE = "checkpoint.pt", "policy.json"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class DistilledSet:
    """A distilled training set, ready for any training code, and how it was made.

    Attributes:
        images: decoded training images ``(N, C, H, W)`` in ``[0, 1]`` pixel units, class-major.
        labels: class ids ``(N,)``.
        soft_labels: learned class probabilities ``(N, K)`` or ``None``.
        lrs: learned per-step learning rates ``(T,)``, or ``None`` if the method learns none.
        schedule: which images each of the ``T`` steps uses (``None`` with ``lrs``).
        momentum: inner momentum the lrs were learned with.
        dataset: dataset name; ``ipc``: the storage budget in images per class.
        method: the distillation method; ``param``: the parameterisation.
        stored: the stored tensors the decoded images come from; ``recipe``: plain values rebuilding
            the decoder (see :mod:`augdistill.distill.synthetic`).
    """

    images: Tensor
    labels: Tensor
    soft_labels: Tensor | None
    lrs: Tensor | None
    schedule: InnerSchedule | None
    momentum: float
    dataset: str
    ipc: int
    method: str = "wang"
    param: str = "pixels"
    stored: dict[str, Tensor] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def targets(self) -> Tensor:
        """What to train on: soft labels if learned, else class ids."""
        return self.soft_labels if self.soft_labels is not None else self.labels


def save_distilled(s: DistilledSet, path: str | Path) -> None:
    """Atomically write ``s`` as plain tensors and values (readable with ``torch.load(weights_only=True)``)."""
    save_tensors({"format_version": FORMAT_VERSION, "images": s.images.cpu(), "labels": s.labels.cpu(),
                  "soft_labels": None if s.soft_labels is None else s.soft_labels.cpu(),
                  "lrs": None if s.lrs is None else s.lrs.cpu(),
                  "batches": None if s.schedule is None else torch.stack(list(s.schedule.batches)),
                  "epochs": None if s.schedule is None else s.schedule.epochs,
                  "momentum": float(s.momentum), "dataset": s.dataset, "ipc": s.ipc, "method": s.method,
                  "param": s.param, "stored": {k: v.cpu() for k, v in s.stored.items()}, "recipe": s.recipe}, path)


def load_distilled(path: str | Path) -> DistilledSet:
    """Read a ``synthetic.pt`` (format 1 or 2) and validate its fields and shapes."""
    raw = load_tensors(path, "synthetic set", required=("format_version", "images", "labels", "lrs", "batches",
                                                         "epochs", "momentum", "dataset", "ipc"))
    if raw["format_version"] not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path}: format_version {raw['format_version']} is not 1 or {FORMAT_VERSION}")
    images, labels, lrs, batches = raw["images"], raw["labels"], raw["lrs"], raw["batches"]
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise CheckpointError(f"{path}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
    schedule = None
    if lrs is not None:
        schedule = InnerSchedule(tuple(batches), int(raw["epochs"]))
        if lrs.shape != (schedule.total_steps,):
            raise CheckpointError(f"{path}: {lrs.numel()} learning rates for {schedule.total_steps} steps")
    return DistilledSet(images, labels, raw["soft_labels"], lrs, schedule, float(raw["momentum"]),
                        str(raw["dataset"]), int(raw["ipc"]), str(raw.get("method", "wang")),
                        str(raw.get("param", "pixels")), dict(raw.get("stored") or {"images": images}),
                        dict(raw.get("recipe") or {}))


def load_config(run_dir: str | Path) -> DistillConfig:
    """The :class:`DistillConfig` of a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    raw: Any = load_json(path, "run config")
    try:
        return config_from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None
