"""Whole jobs on a run directory: distill (with checkpoints and resume) and evaluate.

These are what the CLI calls; they are equally usable from Python. Every argument and every file is
checked before any work starts (see :mod:`augdistill.runs.options`, :mod:`augdistill.runs.schema`);
a run folder is claimed by one writer at a time (:mod:`augdistill.runs.folder`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import io
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from augdistill.config import DistillConfig
from augdistill.data import Dataset, herd_per_class, load_dataset, take_per_class
from augdistill.distill import Distiller, StepStats, distributed
from augdistill.distill.methods import with_method_defaults
from augdistill.distill.methods.base import MaybeState
from augdistill.distill.validation import policy_augment, replay_augment
from augdistill.errors import CheckpointError, ConfigError, RunInterrupted, TrainingDivergedError
from augdistill.models import build_model
from augdistill.runs import folder, schema
from augdistill.runs.atomic import available_memory, load_tensors, reason, save_json, save_tensors
from augdistill.runs.layout import (CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, POLICY_FILE, SYNTHETIC_FILE,
                                    DistilledSet, check_fits, load_config, load_distilled, load_metrics,
                                    save_distilled)
from augdistill.runs.options import PROTOCOLS, DistillOptions, EvalOptions
from augdistill.runs.plots import save_curves, save_image_grid
from augdistill.runs.progress import Progress
from augdistill.train.evaluate import (EvalResult, StandardProtocol, replay_accuracies, standard_accuracies,
                                       summarize)

__all__ = ["distill_run", "evaluate_run", "Evaluation", "evaluation_policy", "draw_run", "PROTOCOLS",
           "load_run_dataset", "RESUMABLE"]

#: What a resumed run may change: config fields (``section.field``) and job options. Everything else
#: decides what is learned and selected, and must match the run.
RESUMABLE = frozenset({"outer.iterations", "device", "checkpoint_every", "final_nets", "time_budget"})


def load_run_dataset(config: DistillConfig) -> Dataset:
    return load_dataset(config.data.name, config.data.root, val_fraction=config.data.val_fraction)


def _distilled(d: Distiller) -> DistilledSet:
    exported = d.synthetic.export()
    recipe = d.method.replay_recipe()
    return DistilledSet(exported["images"], exported["labels"], exported.get("soft_labels"),
                        None if recipe is None else recipe.lrs.cpu(), None if recipe is None else recipe.schedule,
                        d.config.inner.momentum if recipe is None else recipe.momentum, d.config.data.name,
                        d.config.synthetic.ipc, d.config.method.name, d.config.synthetic.param,
                        exported["stored"], {**exported["recipe"], **d.method.export()})


def _loss_series(history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    return {"outer loss (train batch)": [(h["iteration"], h["loss"]) for h in history if "loss" in h],
            "val accuracy": [(h["iteration"], h["val_acc"]) for h in history if "val_acc" in h]}


def draw_run(run_dir: str | Path) -> list[Path]:
    """(Re)draw ``synthetic.png`` and ``loss.png`` of a run directory; returns the written paths."""
    run_dir = _run_folder(run_dir)
    config = load_config(run_dir)
    s = load_distilled(run_dir / SYNTHETIC_FILE)
    info = load_run_dataset(config).info
    check_fits(s, run_dir / SYNTHETIC_FILE, config, info.image_shape, info.num_classes)
    history = load_metrics(run_dir).get("history", []) if (run_dir / METRICS_FILE).is_file() else None
    save_image_grid(s.images, s.labels, info.class_names, run_dir / "synthetic.png")
    written = [run_dir / "synthetic.png"]
    if history is not None:
        save_curves(_loss_series(history), run_dir / "loss.png", title=f"{config.data.name}, ipc {s.ipc}")
        written.append(run_dir / "loss.png")
    return written


def _run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` if it is a run folder (its marker, when present, of a version this code reads)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} is not a folder")
    if (run_dir / folder.MARKER_FILE).exists():
        folder.read_marker(run_dir)
    return run_dir


class _StopRequest:
    """SIGTERM / Ctrl-C ask the loop to stop after the current step; the checkpoint then holds a whole step.

    A second request stops at once (the last checkpoint is kept).
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "_StopRequest":
        # signal handlers can only be set in the main thread; elsewhere the default behaviour stays
        main = threading.current_thread() is threading.main_thread()
        self.previous = {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def distill_run(config: DistillConfig, out: str | Path, *, resume: bool = False, device: str = "cpu",
                checkpoint_every: int = 100, eval_every: int = 100, eval_nets: int = 5,
                final_nets: int = 5, time_budget: float = 0.0,
                log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Distill into the run folder ``out``: checkpoints atomically, resumes, selects on val, exports and evaluates.

    Every argument is checked before any work (:class:`~augdistill.runs.options.DistillOptions`), the
    folder is claimed (:func:`augdistill.runs.folder.claim`: a marker, one writer at a time, no write
    into a folder that is not a run), and with ``resume`` the configuration must agree with the run's
    ``config.json`` except for :data:`RESUMABLE` fields. A checkpoint is written after every
    ``checkpoint_every`` steps *and* their validation, so a resumed run (after ``kill -9``, SIGTERM or
    Ctrl-C) ends with the same synthetic set, history and selected iteration as an uninterrupted one.
    With ``time_budget`` (seconds, every launch afresh) the run stops after the first step that ends past
    it, validates that step (when ``eval_every``), and finishes; ``metrics.json`` records where it stopped
    (``time_budget``), and ``--resume`` continues it towards ``--iterations``.

    Returns the metrics dict also written to ``out/metrics.json``.

    Raises:
        ConfigError, DataError, PolicyFormatError, CheckpointError: before any training.
        RunInterrupted: SIGTERM / Ctrl-C; the checkpoint holds the last whole step.
        TrainingDivergedError: the loss became non-finite; the last checkpoint is kept.
    """
    options = DistillOptions(device, checkpoint_every, eval_every, eval_nets, final_nets, time_budget)
    config = with_method_defaults(config)
    out = Path(out)
    dist = distributed.from_environment(options.device)  # under torchrun: rank 0 claims, writes and logs
    log = log if dist.is_main else _silent
    record = {**config.to_dict(), "world_size": dist.world_size}
    with contextlib.ExitStack() as claimed:
        state = dist.from_main(lambda: claimed.enter_context(
            folder.claim(out, resume=resume, options=dataclasses.asdict(options), log=log)))

        def setup() -> tuple[Dataset, Distiller]:
            if resume:
                _check_same_run(out, state, config, options)
            if dist.is_main and not (resume and (out / CONFIG_FILE).exists()):  # a killed run resumes as it is
                save_json(record, out / CONFIG_FILE)
            dataset = load_run_dataset(config)
            _check_plausible(config, dataset, options.device)
            distiller = Distiller(config, dataset, device=options.device,
                                  dist=dist)
            if "checkpoint.pt" in state.results:  # claim() refuses results without --resume
                _load_checkpoint(distiller, out / CHECKPOINT_FILE)
                log(f"resumed {out} at iteration {distiller.iteration}/{config.outer.iterations}")
            return dataset, distiller

        dataset, distiller = dist.all_ok(setup, f"the setup of {out}")
        distiller.check_in_sync("after setup")
        if dist.is_main:
            folder.write_marker(out, dataclasses.asdict(options))
            save_json(record, out / CONFIG_FILE)
        spent = _fit(distiller, out, options, log)
        return _finish(distiller, dataset, out, options, log, spent)


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


class _TimeBudgetSpent(Exception):
    """Raised from the step callback once ``--time-budget`` is spent (the step is validated and checkpointed)."""


def _fit(distiller: Distiller, out: Path, options: DistillOptions, log: Callable[[str], None]
         ) -> dict[str, Any] | None:
    """Train to the iteration budget, checkpointing after whole steps (and on SIGTERM / Ctrl-C, then stopping).

    Returns ``None``, or where ``options.time_budget`` stopped the run: ``{"seconds", "stopped_after"}``."""
    path = out / CHECKPOINT_FILE
    started = time.monotonic()
    saved = {"iteration": distiller.iteration if path.exists() else None}

    dist = distiller.dist

    def checkpoint() -> None:
        distiller.check_in_sync(f"checkpoint at iteration {distiller.iteration}")
        if dist.is_main:
            save_tensors(distiller.state_dict(), path)
        saved["iteration"] = distiller.iteration

    progress = Progress(distiller.config.outer.iterations, start=distiller.iteration,
                        stream=None if dist.is_main else io.StringIO(), time_budget=options.time_budget or None)
    last_val: dict[str, float] = {}
    with _StopRequest() as stop:
        def on_step(stats: StepStats, val_acc: float | None) -> None:
            if val_acc is not None:
                last_val["val"] = val_acc
            shown = {"loss": stats.loss, **stats.metrics}
            if stats.policy_width is not None:
                shown["width"] = stats.policy_width
            progress.update(stats.iteration, **shown, **last_val)
            stopping = dist.any(stop.requested, distiller.device)  # every rank stops after the same step
            if stopping or stats.iteration % options.checkpoint_every == 0:
                checkpoint()
            if stopping:
                signum = stop.signum if stop.signum is not None else signal.SIGTERM
                raise RunInterrupted(f"stopped by {signal.Signals(signum).name} after iteration {stats.iteration}; "
                                     f"{path} holds it: continue with --resume", signum)
            if options.time_budget and dist.any(time.monotonic() - started >= options.time_budget, distiller.device):
                if options.eval_every and val_acc is None:  # the state the run ends with is validated like a last step
                    distiller.validate(options.eval_nets)
                raise _TimeBudgetSpent

        try:
            distiller.fit(eval_every=options.eval_every, eval_nets=options.eval_nets, on_step=on_step)
        except TrainingDivergedError as e:
            kept = ("no checkpoint was written yet" if saved["iteration"] is None else
                    f"the last good checkpoint ({path}, iteration {saved['iteration']}) is kept")
            raise TrainingDivergedError(f"{e}; {kept}") from None
        except _TimeBudgetSpent:
            checkpoint()
            log(f"time budget of {options.time_budget:g} s spent after iteration {distiller.iteration}; finishing")
            return {"seconds": options.time_budget, "stopped_after": distiller.iteration}
    checkpoint()
    return None


def _finish(distiller: Distiller, dataset: Dataset, out: Path, options: DistillOptions,
            log: Callable[[str], None], time_budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """Select on val, export ``synthetic.pt``, evaluate, and write ``metrics.json`` (with ``time_budget``, where the
    budget stopped the run), the policy and the pictures."""
    config = distiller.config
    distiller.restore_best()
    validated = distiller.best["state"] is not None
    distilled = _distilled(distiller)
    metrics: dict[str, Any] = {"dataset": config.data.name, "ipc": config.synthetic.ipc, "method": config.method.name,
                               "param": config.synthetic.param, "stored_floats": distiller.synthetic.stored_floats(),
                               "decoded_images": distiller.synthetic.num_decoded,
                               "validation": config.outer.validation,
                               "selected_iteration": distiller.best["iteration"] if validated else distiller.iteration,
                               "selected_val_acc": distiller.best["val_acc"] if validated else None,
                               "world_size": distiller.dist.world_size, "history": distiller.history}
    if time_budget is not None:
        metrics["time_budget"] = time_budget
    if not distiller.dist.is_main:  # the other ranks hold the same state and write nothing
        return metrics
    save_distilled(distilled, out / SYNTHETIC_FILE)
    if options.final_nets and distilled.lrs is not None:
        result = replay_result(distilled, config, dataset, options.final_nets, options.device, distiller.policy)
        metrics["test_replay"] = {"mean": result.mean, "std": result.std, "accs": list(result.accs)}
        log(f"replay accuracy on the test split ({options.final_nets} fresh nets): {result}")
    save_json(metrics, out / METRICS_FILE)
    if distiller.policy is not None:
        measured = {"selected_iteration": metrics["selected_iteration"], "selected_val_acc": metrics["selected_val_acc"]}
        if "test_replay" in metrics:
            measured["test_replay_mean"] = metrics["test_replay"]["mean"]
        _save_policy(distiller, out / POLICY_FILE, measured)
    save_image_grid(distilled.images, distilled.labels, dataset.info.class_names, out / "synthetic.png")
    save_curves(_loss_series(distiller.history), out / "loss.png", title=f"{config.data.name}, ipc {config.synthetic.ipc}")
    return metrics


def _load_checkpoint(distiller: Distiller, path: Path) -> None:
    """Validate ``checkpoint.pt`` (fields, finite values, history, iteration within the budget) and load it."""
    raw = load_tensors(path, "checkpoint", map_location="cpu",
                       required=("iteration", "synthetic", "method", "optimizer", "generators", "history"))
    schema.checkpoint_fields(path, raw, budget=distiller.config.outer.iterations, streams=list(distiller.generators))
    optimizers = [("optimizer", distiller.optimizer), ("policy_optimizer", distiller.policy_optimizer)]
    optimizers = [(name, o) for name, o in optimizers if o is not None]
    hyper = ("lr", "betas", "eps", "weight_decay", "momentum")
    expected = {name: [{k: g[k] for k in hyper if k in g} for g in o.param_groups] for name, o in optimizers}
    modules = {"synthetic": distiller.synthetic, "method": distiller.method, "policy": distiller.policy}
    best = raw.get("best", {}).get("state")  # restored only at the end of training: check it now too
    states = [("", raw)] + ([("best.state.", best)] if best is not None else [])
    for prefix, state in states:
        for key, module in modules.items():
            template = distiller.method.checkpoint_template() if key == "method" else (
                None if module is None else module.state_dict())
            _check_like(path, prefix + key, state.get(key), template)
    _check_like(path, "average", raw.get("average"),
                distiller.synthetic.state_dict() if distiller.average is not None else None)
    try:
        distiller.load_state_dict(raw)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{path} does not fit this configuration ({reason(e)})") from None
    for name, optimizer in optimizers:
        _check_optimizer(path, name, optimizer, expected[name])


def _check_optimizer(path: Path, name: str, optimizer: torch.optim.Optimizer, wanted: list[dict[str, Any]]) -> None:
    """What ``load_state_dict`` does not check: the hyperparameters are the run's, every moment has its
    parameter's shape and dtype, and a step can use the state (tried on a copy, with zero gradients)."""
    for i, (group, settings) in enumerate(zip(optimizer.param_groups, wanted)):
        found = {k: group.get(k) for k in settings}
        if not all(_plain(v) for v in found.values()) or found != settings:
            raise schema.fail(path, f"{name}.param_groups[{i}]", str(found), f"the run's settings {settings}")
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if not isinstance(state, dict):
                raise schema.fail(path, f"{name}.state", schema.describe(state), "a mapping for each parameter")
            for key, value in state.items():
                moment = isinstance(value, torch.Tensor) and value.dim() > 0
                if moment and (value.shape, value.dtype) != (p.shape, p.dtype):
                    raise schema.fail(path, f"{name}.state.{key}", schema.describe(value),
                                      f"{schema.describe(p.detach())} like its parameter")
    probe = copy.deepcopy(optimizer)
    for group in probe.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    try:
        probe.step()
    except Exception as e:  # noqa: BLE001 - whatever a step raises, the state is unusable
        raise CheckpointError(f"{path}: field '{name}.state' cannot be used by {type(optimizer).__name__} "
                              f"({reason(e)})") from None


def _plain(value: Any) -> bool:
    """A number, string, bool or ``None``, or a tuple / list of them (safe to compare with ``==``)."""
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _check_like(path: Path, field: str, found: Any, expected: Any) -> None:
    """Refuse ``found`` unless it has the keys, tensor shapes and dtypes of ``expected`` (nested dicts; a
    :class:`MaybeState` also accepts ``None``)."""
    if isinstance(expected, MaybeState):
        if found is not None:
            _check_like(path, field, found, expected.template)
    elif isinstance(expected, dict):
        if not isinstance(found, dict) or set(found) != set(expected):
            raise schema.fail(path, field, schema.describe(found), f"the fields {sorted(expected)}")
        for k in expected:
            _check_like(path, f"{field}.{k}", found[k], expected[k])
    elif isinstance(expected, torch.Tensor):
        if not isinstance(found, torch.Tensor) or found.shape != expected.shape or found.dtype != expected.dtype:
            raise schema.fail(path, field, schema.describe(found), schema.describe(expected))
    elif (expected is None) != (found is None):
        raise schema.fail(path, field, schema.describe(found), schema.describe(expected))


def _flag(section: str, f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f"{section}.{f.name}"


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _contradictions(saved: DistillConfig, config: DistillConfig) -> list[str]:
    """``--flag=value (section.field is X in the run)`` for every field that differs and may not change."""
    found = []
    for section in dataclasses.fields(DistillConfig):
        old, new = getattr(saved, section.name), getattr(config, section.name)
        for f in dataclasses.fields(old):
            a, b = getattr(old, f.name), getattr(new, f.name)
            if a != b and f"{section.name}.{f.name}" not in RESUMABLE:
                field = f"{section.name}.{f.name}"
                found.append(f"{_flag(section.name, f)}={_shown(b)} ({field} is {_shown(a)} in the run)")
    return found


def _check_same_run(out: Path, state: folder.FolderState, config: DistillConfig, options: DistillOptions) -> None:
    """A resumed run may change only :data:`RESUMABLE` settings; name every other one that differs."""
    found: list[str] = []
    if (out / CONFIG_FILE).exists():
        found += _contradictions(with_method_defaults(load_config(out)), config)
    elif "checkpoint.pt" in state.results:
        raise CheckpointError(f"--resume: {out} holds {CHECKPOINT_FILE} but no {CONFIG_FILE}; it cannot be continued")
    stored = folder.read_marker(out).get("options", {}) if state.marked else {}
    for f in dataclasses.fields(DistillOptions):
        if f.name in stored and f.name not in RESUMABLE and stored[f.name] != getattr(options, f.name):
            found.append(f"{_flag('options', f)}={getattr(options, f.name)} (the run has {stored[f.name]})")
    if found:
        raise CheckpointError(f"--resume: {'; '.join(found)}: these contradict the run in {out}; drop them to "
                              "continue the run as it was, or choose another --out")


def _check_plausible(config: DistillConfig, dataset: Dataset, device: str) -> None:
    """Refuse what cannot work on this data and machine: more real images per class than the data has
    (``--syn-init real`` or ``herding``), or tensors larger than the free memory (checked cheaply, before
    building them)."""
    info = dataset.info
    counts = torch.bincount(dataset.train.y, minlength=info.num_classes)
    if config.synthetic.init in ("real", "herding") and config.synthetic.ipc > int(counts.min()):
        c = int(counts.argmin())
        raise ConfigError(f"--ipc {config.synthetic.ipc} with --syn-init {config.synthetic.init} needs "
                          f"{config.synthetic.ipc} training images of every class; {info.name} has "
                          f"{int(counts[c])} of class {c} ({info.class_names[c]!r}); use a smaller --ipc or "
                          "--syn-init noise")
    floats = math.prod(info.image_shape) * info.num_classes
    with torch.device("meta"):  # the network's size, without allocating it
        network = build_model(config.model.name, info.image_shape, info.num_classes, mean=info.mean, std=info.std,
                              **config.model.kwargs())
    # the synthetic set with its gradient and two Adam moments, the real batch with its augmented copies, and
    # the network's parameters and gradient plus one set of parameters per unrolled inner step
    copies = 2 + config.inner.steps * config.inner.epochs
    needed = 4 * (floats * (4 * config.synthetic.ipc + (1 + config.policy.copies) * config.outer.real_per_class)
                  + copies * sum(p.numel() for p in network.parameters()))
    on_gpu = torch.device(device).type == "cuda"
    free = torch.cuda.mem_get_info(torch.device(device))[0] if on_gpu else available_memory()
    if free is not None and needed > free:
        raise ConfigError(f"--ipc {config.synthetic.ipc}, --real-per-class {config.outer.real_per_class} and the "
                          f"{config.model.name} network ({config.model.kwargs()}) on {info.name} need at least "
                          f"{needed / 2**30:.1f} GiB; {device} has {free / 2**30:.1f} GiB available")


def _save_policy(distiller: Distiller, path: Path, metrics: dict[str, Any]) -> None:
    cfg = distiller.config
    provenance = {"dataset": cfg.data.name,
                  "method": (f"augdistill distill --method {cfg.method.name} --policy {cfg.policy.mode} "
                             f"(ipc {cfg.synthetic.ipc}, the state of iteration {metrics['selected_iteration']} "
                             f"of {distiller.iteration}, "
                             f"width weight {cfg.policy.width_weight}"
                             + (f", adversarial weight {cfg.policy.adversarial}" if cfg.policy.adversarial else "")
                             + ")"),
                  "seed": cfg.outer.seed, "date": datetime.date.today().isoformat(), "metrics": metrics}
    save_json(distiller.policy.to_dict(provenance=provenance), path)


def _model_for(config: DistillConfig, dataset: Dataset, device: str) -> nn.Module:
    info, config = dataset.info, with_method_defaults(config)
    return build_model(config.model.name, info.image_shape, info.num_classes, mean=info.mean, std=info.std,
                       **config.model.kwargs()).to(device)


def replay_result(s: DistilledSet, config: DistillConfig, dataset: Dataset, nets: int, device: str,
                  policy: nn.Module | None = None, seed: int = 0) -> EvalResult:
    """Replay protocol on the test split with networks ``seed … seed + nets − 1``; a run's policy is part of its
    learned steps and is replayed too (its draws start from ``seed``)."""
    if s.lrs is None or s.schedule is None:
        raise ConfigError(f"--protocol replay needs learned inner steps; method '{s.method}' learns none "
                          "(use --protocol standard)")
    model = _model_for(config, dataset, device)
    augment = None
    if policy is not None:
        augment = replay_augment(policy.to(device).train(), torch.Generator().manual_seed(seed), s.targets.to(device),
                                 s.schedule)
    accs = replay_accuracies(model, s.images.to(device), s.targets.to(device), s.lrs.to(device), s.schedule,
                             dataset.test.to(device), list(range(seed, seed + nets)), momentum=s.momentum,
                             augment=augment)
    return summarize("replay", accs)


@dataclass(frozen=True)
class Evaluation:
    """An evaluation and exactly how it was obtained (what ``evaluate --json`` prints)."""

    result: EvalResult
    protocol: str
    epochs: int | None
    augmentation: str
    model: str
    batch_size: int | None = None
    cutmix: float = 0.0
    seed: int = 0

    def record(self) -> dict[str, Any]:
        r = self.result
        return {"protocol": self.protocol, "mean": r.mean, "std": r.std, "accs": list(r.accs), "nets": len(r.accs),
                "seed": self.seed, "epochs": self.epochs, "augmentation": self.augmentation, "model": self.model,
                "batch_size": self.batch_size, "cutmix": self.cutmix}


def evaluation_policy(augment: str, run_dir: Path, info: Any) -> nn.Module | None:
    """The policy the evaluation networks train with: ``none``, ``run`` (the run's ``policy.json``),
    ``dsa`` (DSA's fixed policy; without flips on digit datasets) or a policy JSON path."""
    from augdistill.augment import ClassRangesPolicy, dsa_policy, load_policy
    if augment == "none":
        return None
    if augment == "dsa":
        return dsa_policy(info.image_shape[1:], flip=info.name not in ("digits", "digits-rot", "mnist"))
    if augment == "run":
        policy, source = _load_run_policy(run_dir), str(run_dir / POLICY_FILE)
    elif Path(augment).is_file():
        policy, source = load_policy(augment), augment
    else:
        raise ConfigError(f"--aug must be none, run, dsa or a policy JSON file; {augment!r} is none of these")
    if isinstance(policy, ClassRangesPolicy):
        policy.check_classes(info.num_classes, source)
    return policy


def evaluate_run(run_dir: str | Path, protocol: str = "replay", *, nets: int = 5, device: str = "cpu",
                 epochs: int | None = None, augment: str = "none", batch_size: int | None = None,
                 cutmix: float = 0.0, seed: int = 0, first_padding: int | None = None) -> Evaluation:
    """Evaluate a run directory under ``protocol`` (one of :data:`PROTOCOLS`) with ``nets`` fresh networks, seeded
    ``seed … seed + nets − 1`` (their augmentation draws start from ``seed``), so that processes given different
    ``seed`` evaluate different networks side by side.

    ``replay`` always replays the run's own augmentation policy (it is part of the learned steps).
    The ``standard`` / ``random-subset`` / ``herding`` / ``full-data`` networks (ConvNet-3 width 128, instance
    norm) train for ``epochs`` (default 300; the DSA, DM and MTT papers use 1000) with the augmentation
    ``augment`` (see :func:`evaluation_policy`), in minibatches of ``batch_size`` (default 256), a ``cutmix``
    share of them mixed by CutMix (IDC's evaluation: 1000 epochs, batch 64, cutmix 0.5). Their ConvNet pads its
    first convolution by ``first_padding`` (default: as the run's network did, ``--first-padding``; 3 is the field's
    code on 28x28 grey-scale images). Arguments and files are checked before any training.
    """
    options = EvalOptions(protocol, nets, epochs, augment, device, batch_size, cutmix, seed, first_padding)
    if options.protocol == "replay" and (options.epochs is not None or options.augment not in ("none", "run")
                                         or options.batch_size is not None or options.cutmix
                                         or options.first_padding is not None):
        raise ConfigError("--protocol replay replays the learned steps with the run's own policy; --epochs, --aug, "
                          "--batch-size, --cutmix and --first-padding apply to the standard, random-subset, herding "
                          "and full-data protocols")
    run_dir = _run_folder(run_dir)
    config = with_method_defaults(load_config(run_dir))
    s = load_distilled(run_dir / SYNTHETIC_FILE)
    dataset = load_run_dataset(config)
    check_fits(s, run_dir / SYNTHETIC_FILE, config, dataset.info.image_shape, dataset.info.num_classes)
    dataset = dataset.to(options.device)
    if options.protocol == "replay":
        policy = _load_run_policy(run_dir) if config.policy.mode != "none" else None
        return Evaluation(replay_result(s, config, dataset, options.nets, options.device, policy, options.seed),
                          options.protocol, None, "run" if policy is not None else "none", config.model.name,
                          seed=options.seed)
    defaults = StandardProtocol()
    padding = options.first_padding if options.first_padding is not None else config.model.first_padding
    standard = StandardProtocol.padded(padding, epochs=options.epochs or defaults.epochs,
                                       batch_size=options.batch_size or defaults.batch_size, cutmix=options.cutmix)
    policy = evaluation_policy(options.augment, run_dir, dataset.info)
    augment_std = None
    if policy is not None:
        policy = policy.to(options.device).train().requires_grad_(False)
        augment_std = policy_augment(policy, torch.Generator().manual_seed(options.seed))
    seeds = list(range(options.seed, options.seed + options.nets))
    if options.protocol == "standard":
        x, targets = s.images.to(options.device), s.targets.to(options.device)
    elif options.protocol == "random-subset":
        x, targets = take_per_class(dataset.train.x, dataset.train.y, dataset.info.num_classes, s.ipc, seed=0)
    elif options.protocol == "herding":
        x, targets = herd_per_class(dataset.train.x, dataset.train.y, dataset.info.num_classes, s.ipc)
    else:
        x, targets = dataset.train.x, dataset.train.y
    accs = standard_accuracies(x, targets, dataset.info, dataset.test, seeds, standard, augment_std)
    return Evaluation(summarize(options.protocol, accs), options.protocol, standard.epochs, options.augment,
                      f"{standard.model.name}-{standard.model.depth}, width {standard.model.width}, "
                      f"{standard.model.norm} norm, first padding {1 if padding is None else padding}",
                      standard.batch_size, standard.cutmix, options.seed)


def _load_run_policy(run_dir: Path) -> nn.Module:
    from augdistill.augment import load_policy
    path = run_dir / POLICY_FILE
    if not path.is_file():
        raise CheckpointError(f"--aug run: {path} does not exist (distill with --policy learn or fixed)")
    return load_policy(path)
