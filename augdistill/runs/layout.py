"""The run directory: what ``augdistill distill`` writes and ``evaluate`` / ``show`` read.

Files:
    ``synthetic.pt``   plain tensors: decoded images, labels, learned lrs, soft labels, schedule, and the
                       stored tensors with the recipe that decodes them (:meth:`DistilledSet.redecode`)
    ``config.json``    the :class:`DistillConfig`
    ``metrics.json``   per-iteration history, selected iteration, final evaluation
    ``checkpoint.pt``  the full resumable state (atomic, rewritten periodically)
    ``policy.json``    the augmentation policy (when one is used)
    ``augdistill-run.json``, ``.augdistill.lock``   the marker and the writer's lock (:mod:`augdistill.runs.folder`)
    ``synthetic.png``, ``loss.png``  pictures
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from augdistill.runs import schema
from augdistill.runs.atomic import load_json, load_tensors, save_tensors
from augdistill.config import DistillConfig, config_from_dict
from augdistill.distill.synthetic import decode_stored
from augdistill.errors import CheckpointError, ConfigError
from augdistill.inner import InnerSchedule

__all__ = ["DistilledSet", "save_distilled", "load_distilled", "load_config", "load_metrics", "check_fits",
           "SYNTHETIC_FILE", "CONFIG_FILE", "METRICS_FILE", "CHECKPOINT_FILE", "POLICY_FILE"]

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

    @property
    def stored_floats(self) -> int:
        """Floats of the stored tensors (what counts against the ``ipc`` budget)."""
        return sum(t.numel() for t in self.stored.values())

    def storage(self) -> str:
        """One line: the parameterisation, stored floats against the budget, and how many images they decode to."""
        image_floats = math.prod(self.images.shape[1:])
        classes = int(self.labels.max()) + 1 if self.labels.numel() else 0
        return (f"--param {self.param}: {self.stored_floats} stored floats = {self.stored_floats / image_floats:.2f} "
                f"full images (budget --ipc {self.ipc}: {classes * self.ipc} images, "
                f"{classes * self.ipc * image_floats} floats) -> {self.images.shape[0]} decoded images")

    def redecode(self) -> Tensor:
        """The decoded images rebuilt from :attr:`stored` and :attr:`recipe` (equal to :attr:`images`)."""
        try:
            with torch.no_grad():
                return decode_stored(self.stored, self.recipe)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"stored tensors {sorted(self.stored)} do not decode with the "
                                  f"'{self.recipe.get('kind', 'pixels')}' recipe ({type(e).__name__}: {e})") from None


def save_distilled(s: DistilledSet, path: str | Path) -> None:
    """Atomically write ``s`` as plain tensors and values (readable with ``torch.load(weights_only=True)``).

    Raises:
        CheckpointError: if :func:`load_distilled` would refuse the file (checked before anything is written).
    """
    payload = {"format_version": FORMAT_VERSION, "images": s.images.cpu(), "labels": s.labels.cpu(),
               "soft_labels": None if s.soft_labels is None else s.soft_labels.cpu(),
               "lrs": None if s.lrs is None else s.lrs.cpu(),
               "batches": None if s.schedule is None else torch.stack(list(s.schedule.batches)),
               "epochs": None if s.schedule is None else s.schedule.epochs,
               "momentum": float(s.momentum), "dataset": s.dataset, "ipc": s.ipc, "method": s.method,
               "param": s.param, "stored": {k: v.cpu() for k, v in s.stored.items()}, "recipe": s.recipe}
    schema.synthetic_fields(path, payload, FORMAT_VERSION)
    save_tensors(payload, path)


def load_distilled(path: str | Path) -> DistilledSet:
    """Read a ``synthetic.pt`` (format 1 or 2) and validate every field (types, shapes, finite values, pixel
    range, label range, one learning rate per scheduled step; see :func:`augdistill.runs.schema.synthetic_fields`).

    Raises:
        CheckpointError: naming the file, the field, the value found and what was expected.
    """
    raw = load_tensors(path, "synthetic set", required=("format_version", "images", "labels", "lrs", "batches",
                                                         "epochs", "momentum", "dataset", "ipc"))
    f = schema.synthetic_fields(path, raw, FORMAT_VERSION)
    schedule = None if f["lrs"] is None else InnerSchedule(tuple(f["batches"]), f["epochs"])
    return DistilledSet(f["images"], f["labels"], f["soft_labels"], f["lrs"], schedule, f["momentum"], f["dataset"],
                        f["ipc"], f["method"], f["param"], f["stored"], f["recipe"])


def check_fits(s: DistilledSet, path: str | Path, config: DistillConfig, image_shape: tuple[int, ...],
               num_classes: int) -> None:
    """Refuse a synthetic set that does not belong to its run: another dataset or ``ipc`` than ``config``
    (``config.json``), images of another shape or labels of another number of classes than the data."""
    if s.dataset != config.data.name or s.ipc != config.synthetic.ipc:
        raise CheckpointError(f"{path}: a set of dataset {s.dataset!r}, ipc {s.ipc}, but the run's {CONFIG_FILE} says "
                              f"dataset {config.data.name!r}, ipc {config.synthetic.ipc}; the files are from "
                              "different runs")
    if tuple(s.images.shape[1:]) != tuple(image_shape):
        raise schema.fail(path, "images", schema.describe(s.images), f"images of shape {tuple(image_shape)} "
                          f"({config.data.name})")
    schema.tensor(path, "labels", s.labels, kind="int", low=0, high=num_classes - 1)
    if s.soft_labels is not None and s.soft_labels.shape[1] != num_classes:
        raise schema.fail(path, "soft_labels", schema.describe(s.soft_labels), f"{num_classes} classes")


def load_metrics(run_dir: str | Path) -> dict[str, Any]:
    """The validated ``metrics.json`` of a run directory (see :func:`augdistill.runs.schema.metrics_fields`)."""
    path = Path(run_dir) / METRICS_FILE
    return schema.metrics_fields(path, load_json(path, "run metrics"))


def load_config(run_dir: str | Path) -> DistillConfig:
    """The :class:`DistillConfig` of a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    raw: Any = load_json(path, "run config")
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
