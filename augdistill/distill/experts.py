"""Expert trajectories for trajectory matching (MTT, arXiv 2203.11932): train networks on real data, cache
their parameters after every epoch, and load them back, validated.

An expert directory holds::

    experts.json            the setup every expert was trained with (dataset, network, SGD, augmentation)
    expert_0000.pt          a finished trajectory: θ after epochs 0 (the initialisation), 1, ..., E
    expert_0001.partial.pt  a half-trained expert: its trajectory so far, optimiser and generator state

Every file is written atomically (:mod:`augdistill.runs.atomic`) and holds only tensors and plain values,
readable with ``torch.load(weights_only=True)``. A killed run resumes: finished experts are kept (after
checking them), a half-trained one continues from its last finished epoch exactly as if it had not been
interrupted (its generator state is saved with it), one killed before its first epoch restarts.

Example:
    >>> import tempfile
    >>> from augdistill.config import ModelConfig
    >>> from augdistill.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> setup = ExpertSetup.for_dataset(ds.info, ModelConfig("convnet", width=8, depth=2, norm="instance"),
    ...                                 epochs=2)
    >>> out = tempfile.mkdtemp()
    >>> summary = train_experts(setup, ds, out, num_experts=1)
    >>> bank = ExpertBank.load(out, info=ds.info, model=build_for(ds.info, setup.model), min_epochs=2)
    >>> len(bank), bank.epochs, sorted(bank.params(0, 2))[:1]
    (1, 2, ['classifier.bias'])
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.config import ModelConfig
from augdistill.data import Dataset, DatasetInfo
from augdistill.devices import upload
from augdistill.errors import CheckpointError, ConfigError
from augdistill.models import build_model, reset_parameters_
from augdistill.runs.atomic import load_json, load_tensors, save_json, save_tensors
from augdistill.train.evaluate import accuracy
from augdistill.typing import Params

__all__ = ["ExpertSetup", "ExpertBank", "train_experts", "build_for", "EpochReport", "MANIFEST", "FORMAT_VERSION"]

MANIFEST = "experts.json"
FORMAT_VERSION = 1
_KIND = "augdistill-expert"
_FINISHED = re.compile(r"^expert_(\d{4})\.pt$")


@dataclass(frozen=True)
class ExpertSetup:
    """How every expert of a directory is trained (MTT's ``buffer.py`` defaults: lr 0.01, no momentum, no weight
    decay, batch 256).

    Attributes:
        dataset: dataset name; ``mean`` / ``std``: the input normalisation the networks were built with.
        model: the network (``name``, ``width``, ``depth``, ``norm``; the family's default where ``None``).
        epochs: ``E``; a trajectory holds ``E + 1`` parameter sets.
        lr, momentum, weight_decay, batch_size: plain SGD on shuffled real minibatches, constant lr.
        augmentation: what the minibatches were augmented with (``none``, ``dsa`` or a policy file), a label.
        seed: expert ``i`` draws its initialisation and its shuffles from seeds derived from ``(seed, i)``.
    """

    dataset: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model: ModelConfig
    epochs: int = 30
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    augmentation: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model.name is None:
            raise ConfigError("ExpertSetup.model.name must name a network (e.g. convnet)")
        checks = {"epochs": self.epochs >= 1, "lr": self.lr > 0, "momentum": 0 <= self.momentum < 1,
                  "weight_decay": self.weight_decay >= 0, "batch_size": self.batch_size >= 1, "seed": self.seed >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"expert setup: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} out of range "
                              "(need epochs >= 1, lr > 0, 0 <= momentum < 1, weight_decay >= 0, batch_size >= 1, "
                              "seed >= 0)")

    @staticmethod
    def for_dataset(info: DatasetInfo, model: ModelConfig, **kwargs: Any) -> "ExpertSetup":
        """The setup for ``info``'s dataset and normalisation; ``kwargs`` are the other fields."""
        return ExpertSetup(info.name, tuple(info.mean), tuple(info.std), model, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @staticmethod
    def from_dict(raw: Any, where: Path) -> "ExpertSetup":
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: the expert setup is a {type(raw).__name__}; expected a dict")
        try:
            values = dict(raw)
            values["model"] = ModelConfig(**values["model"])
            values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
            return ExpertSetup(**values)
        except (KeyError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{where}: not a valid expert setup ({type(e).__name__}: {e})") from None


def build_for(info: DatasetInfo, model: ModelConfig) -> nn.Module:
    """The network ``model`` for ``info``'s images, classes and normalisation."""
    if model.name is None:
        raise ConfigError("the experts' network needs a name (e.g. convnet)")
    return build_model(model.name, info.image_shape, info.num_classes, mean=info.mean, std=info.std, **model.kwargs())


def _expert_path(out: Path, index: int, partial: bool = False) -> Path:
    return out / f"expert_{index:04d}{'.partial' if partial else ''}.pt"


def _generators(seed: int, index: int) -> tuple[torch.Generator, torch.Generator]:
    """``(init, data)`` generators of expert ``index``: independent of the order experts are trained in."""
    base = (seed * 1_000_003 + index) * 2
    return torch.Generator().manual_seed(base), torch.Generator().manual_seed(base + 1)


@dataclass(frozen=True)
class EpochReport:
    """What :func:`train_experts` reports after every epoch (for a progress line)."""

    expert: int
    epoch: int
    epochs: int
    loss: float
    val_acc: float | None = None


# -- reading ------------------------------------------------------------------------------------------

def _read_manifest(out: Path) -> ExpertSetup:
    raw = load_json(out / MANIFEST, "expert manifest")
    if (not isinstance(raw, dict) or raw.get("kind") != "augdistill-experts"
            or raw.get("format_version") != FORMAT_VERSION):
        raise CheckpointError(f"{out / MANIFEST}: not an augdistill expert manifest of format {FORMAT_VERSION} "
                              "(expected kind 'augdistill-experts')")
    return ExpertSetup.from_dict(raw.get("setup"), out / MANIFEST)


def _read_expert(path: Path, setup: ExpertSetup, shapes: dict[str, torch.Size], index: int, *,
                 partial: bool) -> dict[str, Any]:
    """Load one expert file and check it against the directory's setup and the network's parameter shapes."""
    required = ("format_version", "kind", "index", "setup", "epoch", "trajectory")
    required += ("optimizer", "generator_data") if partial else ("val_acc",)
    raw = load_tensors(path, "expert trajectory", required=required)
    kind = _KIND + ("-partial" if partial else "")
    if raw["kind"] != kind or raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: kind {raw['kind']!r} format {raw['format_version']!r}; expected {kind!r} "
                              f"format {FORMAT_VERSION}")
    if raw["index"] != index:
        raise CheckpointError(f"{path}: holds expert {raw['index']!r}, expected {index} (renamed file?)")
    if raw["setup"] != setup.to_dict():
        raise CheckpointError(f"{path}: trained with a different setup than {path.parent / MANIFEST} "
                              f"({_differences(raw['setup'], setup.to_dict())})")
    epoch, trajectory = raw["epoch"], raw["trajectory"]
    if not isinstance(epoch, int) or not 0 <= epoch <= setup.epochs or (not partial and epoch != setup.epochs):
        expected = f"0..{setup.epochs}" if partial else setup.epochs
        raise CheckpointError(f"{path}: epoch {epoch!r}; expected {expected}")
    if not isinstance(trajectory, dict) or set(trajectory) != set(shapes):
        got = sorted(trajectory) if isinstance(trajectory, dict) else type(trajectory).__name__
        raise CheckpointError(f"{path}: parameters {got} do not match the network's {sorted(shapes)}")
    for name, shape in shapes.items():
        t = trajectory[name]
        if not isinstance(t, Tensor) or tuple(t.shape) != (epoch + 1, *shape) or not t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise CheckpointError(f"{path}: parameter {name!r} has shape {got}; expected {(epoch + 1, *shape)}")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: parameter {name!r} holds NaN or infinite values")
    return raw


def _differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)) or "?"


def _shapes(net: nn.Module) -> dict[str, torch.Size]:
    return {name: p.shape for name, p in net.named_parameters()}


def _architecture(net: nn.Module) -> str:
    return re.sub(r"\s+", " ", repr(net))


def _describe(model: ModelConfig) -> str:
    return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(model).items() if v is not None)


class ExpertBank:
    """The cached trajectories of a directory, validated, on the CPU (only the epochs a run can use).

    Build it with :meth:`load`; :meth:`params` gives θ of expert ``i`` after ``epoch`` epochs.
    """

    def __init__(self, directory: Path, setup: ExpertSetup, trajectories: list[dict[str, Tensor]], epochs: int) -> None:
        self.directory, self.setup, self.trajectories, self.epochs = directory, setup, trajectories, epochs

    def __len__(self) -> int:
        return len(self.trajectories)

    @staticmethod
    def load(directory: str | Path, *, info: DatasetInfo, model: nn.Module, min_epochs: int | None) -> "ExpertBank":
        """Read every finished expert of ``directory`` (``expert_NNNN.pt``; half-trained ones are skipped).

        Args:
            info: the run's dataset; its name and input normalisation must be the experts'.
            model: the network the run distils with; it must be the experts' network.
            min_epochs: the latest epoch a run reads (``max_start_epoch + expert_epochs``); only epochs
                ``0..min_epochs`` are kept in memory. ``None``: every epoch the experts have.

        Raises:
            CheckpointError: no manifest or no finished expert, a mismatch, or a bad file (each named).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"expert directory {directory} does not exist; make one with "
                                  "`augdistill experts --dataset D --num-experts N --epochs E --out DIR`")
        setup = _read_manifest(directory)
        manifest = directory / MANIFEST
        if setup.dataset != info.name:
            raise CheckpointError(f"{manifest}: the experts were trained on {setup.dataset!r}, this run distils "
                                  f"{info.name!r}")
        if len(setup.mean) != len(info.mean) or not all(
                math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
                for a, b in zip((*setup.mean, *setup.std), (*info.mean, *info.std))):
            raise CheckpointError(f"{manifest}: the experts normalise inputs with mean {setup.mean} std {setup.std}, "
                                  f"this run with mean {info.mean} std {info.std} (another validation split?)")
        if _architecture(build_for(info, setup.model)) != _architecture(model):
            raise CheckpointError(f"{manifest}: the experts are {_describe(setup.model)} but this run distils with "
                                  "another network; pass the experts' one (--model, --width, --depth, --norm, "
                                  "--first-padding)")
        if min_epochs is None:
            min_epochs = setup.epochs
        if setup.epochs < min_epochs:
            raise CheckpointError(f"{manifest}: the experts have {setup.epochs} epochs but the run reads epoch "
                                  f"{min_epochs} (max start epoch - 1 + expert epochs); lower those or train "
                                  "longer experts")
        indices = sorted(int(m.group(1)) for p in directory.iterdir() if (m := _FINISHED.match(p.name)))
        if not indices:
            raise CheckpointError(f"{directory} holds no finished expert (expert_NNNN.pt); train some with "
                                  "`augdistill experts`")
        shapes = _shapes(model)
        trajectories = []
        for i in indices:
            raw = _read_expert(_expert_path(directory, i), setup, shapes, i, partial=False)
            trajectories.append({k: v[:min_epochs + 1].clone() for k, v in raw["trajectory"].items()})
        return ExpertBank(directory, setup, trajectories, min_epochs)

    def params(self, expert: int, epoch: int, device: torch.device | str = "cpu") -> Params:
        """θ of expert ``expert`` after ``epoch`` epochs (``0``: its initialisation), on ``device``."""
        if not 0 <= epoch <= self.epochs:
            raise ConfigError(f"epoch {epoch} is outside the loaded epochs 0..{self.epochs}")
        return {k: upload(v[epoch], device) for k, v in self.trajectories[expert].items()}


# -- training -----------------------------------------------------------------------------------------

class _Lock:
    """An exclusive ``flock`` on ``path`` (created if missing): held by one process at a time.

    ``acquire(wait=False)`` returns ``False`` at once when another process holds it; ``wait=True`` blocks.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, -1

    def acquire(self, wait: bool) -> bool:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1


def _temporaries(name: str) -> re.Pattern[str]:
    """What an atomic write of ``name`` leaves behind when killed (``.NAME.<random>.tmp``)."""
    return re.compile(rf"^\.{re.escape(name)}\..*\.tmp$")


def _remove_temporaries(out: Path, *names: str) -> None:
    patterns = [_temporaries(n) for n in names]
    for p in out.iterdir():
        if any(pattern.match(p.name) for pattern in patterns):
            p.unlink(missing_ok=True)


def _prepare(out: Path, setup: ExpertSetup) -> None:
    """Write the manifest, or check that an existing one has the same setup (under a short directory lock, so
    that processes sharing ``out`` agree on it); drop temporaries a killed manifest write left."""
    manifest, lock = out / MANIFEST, _Lock(out / ".manifest.lock")
    lock.acquire(wait=True)
    try:
        _remove_temporaries(out, MANIFEST)
        if manifest.exists():
            found = _read_manifest(out)
            if found != setup:
                raise CheckpointError(f"{manifest}: this directory's experts were trained with another setup "
                                      f"({_differences(found.to_dict(), setup.to_dict())}); use the same options "
                                      "or another --out")
        else:
            save_json({"format_version": FORMAT_VERSION, "kind": "augdistill-experts", "setup": setup.to_dict()},
                      manifest)
    finally:
        lock.release()


def _snapshot(net: nn.Module) -> dict[str, Tensor]:
    return {k: p.detach().to("cpu", copy=True) for k, p in net.named_parameters()}


def _stack(trajectory: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([theta[k] for theta in trajectory]) for k in trajectory[0]}


def _train_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, batch_size: int,
                 generator: torch.Generator, policy: nn.Module | None) -> Tensor:
    """One pass over ``(x, y)`` in shuffled minibatches, each augmented with a fresh ``policy`` draw from
    ``generator`` (as are the shuffles); the mean minibatch loss as a 0-d tensor."""
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    total, batches = torch.zeros((), device=x.device), 0
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx]
        if policy is not None:
            xb = policy(xb, params=policy.sample(xb.shape[0], generator=generator, device=xb.device), labels=y[idx])
        loss = F.cross_entropy(net(xb), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, batches = total + loss.detach(), batches + 1
    return total / batches


def _train_one(setup: ExpertSetup, data: Dataset, out: Path, index: int, policy: nn.Module | None,
               device: torch.device, on_epoch: Callable[[EpochReport], None] | None,
               checkpoint_seconds: float) -> float:
    net = build_for(data.info, setup.model).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=setup.lr, momentum=setup.momentum,
                                weight_decay=setup.weight_decay)
    init, shuffle = _generators(setup.seed, index)
    partial = _expert_path(out, index, partial=True)
    if partial.exists():
        raw = _read_expert(partial, setup, _shapes(net), index, partial=True)
        trajectory = [{k: v[e] for k, v in raw["trajectory"].items()} for e in range(raw["epoch"] + 1)]
        with torch.no_grad():
            for k, p in net.named_parameters():
                p.copy_(trajectory[-1][k])
        try:
            optimizer.load_state_dict(raw["optimizer"])
            shuffle.set_state(raw["generator_data"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{partial}: its optimiser or generator state does not fit ({e})") from None
    else:
        reset_parameters_(net, init)
        trajectory = [_snapshot(net)]
    record = {"format_version": FORMAT_VERSION, "index": index, "setup": setup.to_dict()}
    net.train()
    saved = time.monotonic()
    for epoch in range(len(trajectory), setup.epochs + 1):
        loss = float(_train_epoch(net, optimizer, data.train.x, data.train.y, setup.batch_size, shuffle, policy))
        if not math.isfinite(loss):
            raise ConfigError(f"expert {index} diverged at epoch {epoch} (loss {loss}); lower --lr")
        trajectory.append(_snapshot(net))
        if epoch < setup.epochs and time.monotonic() - saved >= checkpoint_seconds:
            saved = time.monotonic()
            save_tensors({**record, "kind": _KIND + "-partial", "epoch": epoch, "trajectory": _stack(trajectory),
                          "optimizer": optimizer.state_dict(), "generator_data": shuffle.get_state()}, partial)
        if epoch < setup.epochs and on_epoch is not None:
            on_epoch(EpochReport(index, epoch, setup.epochs, loss))
    net.eval()
    val_acc = float(accuracy(net, data.val.x, data.val.y))
    save_tensors({**record, "kind": _KIND, "epoch": setup.epochs, "trajectory": _stack(trajectory),
                  "val_acc": val_acc}, _expert_path(out, index))
    partial.unlink(missing_ok=True)
    if on_epoch is not None:
        on_epoch(EpochReport(index, setup.epochs, setup.epochs, loss, val_acc))
    return val_acc


def train_experts(setup: ExpertSetup, dataset: Dataset, out: str | Path, num_experts: int, *,
                  policy: nn.Module | None = None, device: str | torch.device = "cpu",
                  on_epoch: Callable[[EpochReport], None] | None = None,
                  checkpoint_seconds: float = 60.0) -> list[float]:
    """Train experts ``0 .. num_experts - 1`` into ``out`` and return their validation accuracies.

    Finished experts already in ``out`` are checked and kept, a half-trained one resumes from its last
    finished epoch, the others are trained from scratch: on ``dataset.train`` (never ``val``/``test``),
    SGD as ``setup`` says, minibatches augmented with ``policy`` (fresh draws) when given.

    Several processes may share ``out`` (one per GPU, or several on one): each expert is locked while it is
    trained, a process skips the experts others hold, then waits for them (and trains one itself if its
    holder died). Expert ``i`` is the same whichever process trains it (its generators derive from
    ``(seed, i)``).

    Args:
        setup: the training setup; must equal the one in ``out/experts.json`` if that exists.
        dataset: real data (``setup.dataset`` and its normalisation).
        policy: an augmentation policy in training mode (e.g. DSA's), or ``None``.
        on_epoch: called after every epoch with an :class:`EpochReport` (a progress line).
        checkpoint_seconds: a half-trained expert is saved after an epoch when this long has passed since its
            last save (0: after every epoch); a kill loses at most that much training. (Each save rewrites the
            trajectory so far, so saving every epoch would write O(epochs²) bytes per expert.)

    Raises:
        CheckpointError: another setup in ``out`` or a bad file there (named).
        ConfigError: ``num_experts < 1``, a dataset that is not ``setup.dataset``, or a diverged expert.
    """
    if num_experts < 1:
        raise ConfigError(f"--num-experts must be >= 1, got {num_experts}")
    info = dataset.info
    if info.name != setup.dataset or tuple(info.mean) != tuple(setup.mean) or tuple(info.std) != tuple(setup.std):
        raise ConfigError(f"the expert setup is for {setup.dataset!r} (mean {setup.mean}) but the data is "
                          f"{info.name!r} (mean {info.mean})")
    out, device = Path(out), torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    data = dataset.to(device)
    if policy is not None:
        policy = policy.to(device).train().requires_grad_(False)
    _prepare(out, setup)
    shapes = _shapes(build_for(info, setup.model))

    def obtain(i: int, wait: bool) -> float | None:
        """Expert ``i``'s validation accuracy: read if finished, else trained here; ``None`` (only when not
        ``wait``) if another process is training it."""
        lock = _Lock(out / f".expert_{i:04d}.lock")
        if not lock.acquire(wait):
            return None
        try:
            final = _expert_path(out, i)
            if final.exists():
                return float(_read_expert(final, setup, shapes, i, partial=False)["val_acc"])
            _remove_temporaries(out, final.name, _expert_path(out, i, partial=True).name)
            return _train_one(setup, data, out, i, policy, device, on_epoch, checkpoint_seconds)
        finally:
            lock.release()

    accs = [obtain(i, wait=False) for i in range(num_experts)]
    # A second pass waits for the experts other processes held (obtain(wait=True) never returns None).
    return [acc if acc is not None else obtain(i, wait=True) for i, acc in enumerate(accs)]  # type: ignore[misc]
