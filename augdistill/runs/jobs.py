"""Whole jobs on a run directory: distill (with checkpoints and resume) and evaluate.

These are what the CLI calls; they are equally usable from Python.
"""

from __future__ import annotations

import datetime
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from augdistill.config import DistillConfig
from augdistill.data import Dataset, load_dataset, take_per_class
from augdistill.distill import Distiller, StepStats
from augdistill.distill.methods import with_method_defaults
from augdistill.distill.validation import policy_augment
from augdistill.errors import CheckpointError, ConfigError, TrainingDivergedError
from augdistill.models import build_model
from augdistill.runs.atomic import load_json, load_tensors, save_json, save_tensors
from augdistill.runs.layout import (CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, POLICY_FILE, SYNTHETIC_FILE,
                                    DistilledSet, load_config, load_distilled, save_distilled)
from augdistill.runs.plots import save_curves, save_image_grid
from augdistill.runs.progress import Progress
from augdistill.train.evaluate import (EvalResult, StandardProtocol, replay_accuracies, standard_accuracies,
                                       summarize)

__all__ = ["distill_run", "evaluate_run", "Evaluation", "evaluation_policy", "draw_run", "PROTOCOLS", "load_run_dataset", "build_run_policy"]

PROTOCOLS = ("replay", "standard", "random-subset", "full-data")


def load_run_dataset(config: DistillConfig) -> Dataset:
    return load_dataset(config.data.name, config.data.root, val_fraction=config.data.val_fraction)


def build_run_policy(config: DistillConfig, info: Any) -> nn.Module | None:
    """The policy a configuration asks for: ``None``, the ``init_file`` JSON, or fresh ``ops``."""
    cfg = config.policy
    if cfg.mode == "none":
        return None
    from augdistill.augment import build_policy, load_policy
    if cfg.init_file is not None:
        return load_policy(cfg.init_file)
    if cfg.mode == "fixed":
        raise ConfigError("--policy fixed needs --policy-init FILE.json (e.g. policies/dsa.json)")
    return build_policy(list(cfg.ops), composition="sequential", image_size=info.image_shape[1:])


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
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    s = load_distilled(run_dir / SYNTHETIC_FILE)
    names = load_run_dataset(config).info.class_names
    save_image_grid(s.images, s.labels, names, run_dir / "synthetic.png")
    written = [run_dir / "synthetic.png"]
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.is_file():
        history = load_json(metrics_path, "metrics").get("history", [])
        save_curves(_loss_series(history), run_dir / "loss.png", title=f"{config.data.name}, ipc {s.ipc}")
        written.append(run_dir / "loss.png")
    return written


class _StopRequest:
    """SIGTERM / Ctrl-C ask the loop to stop after the current step; the checkpoint then holds a whole step.

    A second request stops at once (the last checkpoint is kept).
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopRequest":
        self.previous = {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def distill_run(config: DistillConfig, out: str | Path, *, resume: bool = False, device: str = "cpu",
                checkpoint_every: int = 100, eval_every: int = 100, eval_nets: int = 5,
                final_nets: int = 5, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)
                ) -> dict[str, Any]:
    """Distill into ``out``: checkpoints atomically, resumes, selects on val, exports and evaluates.

    Returns the metrics dict also written to ``out/metrics.json``.
    """
    out = Path(out)
    config = with_method_defaults(config)
    if resume:
        _check_same_run(load_config(out), config, out)
    elif (out / CHECKPOINT_FILE).exists():
        raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    dataset = load_run_dataset(config)
    distiller = Distiller(config, dataset, policy=build_run_policy(config, dataset.info), device=device)
    if resume:
        state = load_tensors(out / CHECKPOINT_FILE, "checkpoint", map_location=device,
                             required=("iteration", "synthetic", "method", "optimizer", "generators", "history"))
        try:
            distiller.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{out / CHECKPOINT_FILE} does not fit this configuration ({e})") from None
        log(f"resumed {out} at iteration {distiller.iteration}/{config.outer.iterations}")
    out.mkdir(parents=True, exist_ok=True)
    save_json(config.to_dict(), out / CONFIG_FILE)

    def checkpoint() -> None:
        save_tensors(distiller.state_dict(), out / CHECKPOINT_FILE)

    progress = Progress(config.outer.iterations, start=distiller.iteration)
    last_val: dict[str, float] = {}

    with _StopRequest() as stop:
        def on_step(stats: StepStats, val_acc: float | None) -> None:
            if val_acc is not None:
                last_val["val"] = val_acc
            shown = {"loss": stats.loss, **stats.metrics}
            if stats.policy_width is not None:
                shown["width"] = stats.policy_width
            progress.update(stats.iteration, **shown, **last_val)
            if stop.requested or (checkpoint_every and stats.iteration % checkpoint_every == 0):
                checkpoint()
            if stop.requested:
                raise KeyboardInterrupt

        try:
            distiller.fit(eval_every=eval_every, eval_nets=eval_nets, on_step=on_step)
        except TrainingDivergedError as e:
            raise TrainingDivergedError(f"{e}; the last good state is in {out / CHECKPOINT_FILE}") from None
    checkpoint()
    distiller.restore_best()
    distilled = _distilled(distiller)
    save_distilled(distilled, out / SYNTHETIC_FILE)
    metrics: dict[str, Any] = {"dataset": config.data.name, "ipc": config.synthetic.ipc, "method": config.method.name,
                               "param": config.synthetic.param, "stored_floats": distiller.synthetic.stored_floats(),
                               "decoded_images": distiller.synthetic.num_decoded,
                               "validation": config.outer.validation,
                               "selected_iteration": distiller.best["iteration"] if eval_every else distiller.iteration,
                               "selected_val_acc": distiller.best["val_acc"], "history": distiller.history}
    if final_nets and distilled.lrs is not None:
        result = replay_result(distilled, config, dataset, final_nets, device, distiller.policy)
        metrics["test_replay"] = {"mean": result.mean, "std": result.std, "accs": list(result.accs)}
        log(f"replay accuracy on the test split ({final_nets} fresh nets): {result}")
    save_json(metrics, out / METRICS_FILE)
    if distiller.policy is not None:
        measured = {"selected_val_acc": metrics["selected_val_acc"]}
        if "test_replay" in metrics:
            measured["test_replay_mean"] = metrics["test_replay"]["mean"]
        _save_policy(distiller, out / POLICY_FILE, measured)
    save_image_grid(distilled.images, distilled.labels, dataset.info.class_names, out / "synthetic.png")
    save_curves(_loss_series(distiller.history), out / "loss.png", title=f"{config.data.name}, ipc {config.synthetic.ipc}")
    return metrics


def _check_same_run(saved: DistillConfig, config: DistillConfig, out: Path) -> None:
    """A resumed run may change its iteration budget, nothing else."""
    a, b = with_method_defaults(saved).to_dict(), config.to_dict()
    a["outer"].pop("iterations"), b["outer"].pop("iterations")
    differing = [f"{section}.{k}" for section in a for k in a[section] if a[section][k] != b[section].get(k)]
    if differing:
        raise CheckpointError(f"--resume: the configuration differs from {out / CONFIG_FILE} in {differing}")


def _save_policy(distiller: Distiller, path: Path, metrics: dict[str, Any]) -> None:
    cfg = distiller.config
    provenance = {"dataset": cfg.data.name,
                  "method": (f"augdistill distill --method {cfg.method.name} --policy {cfg.policy.mode} "
                             f"(ipc {cfg.synthetic.ipc}, {distiller.iteration} outer iterations, "
                             f"width weight {cfg.policy.width_weight})"),
                  "seed": cfg.outer.seed, "date": datetime.date.today().isoformat(), "metrics": metrics}
    save_json(distiller.policy.to_dict(provenance=provenance), path)


def _model_for(config: DistillConfig, dataset: Dataset, device: str) -> nn.Module:
    info, config = dataset.info, with_method_defaults(config)
    return build_model(config.model.name, info.image_shape, info.num_classes, mean=info.mean, std=info.std,
                       **config.model.kwargs()).to(device)


def replay_result(s: DistilledSet, config: DistillConfig, dataset: Dataset, nets: int, device: str,
                  policy: nn.Module | None = None) -> EvalResult:
    """Replay protocol on the test split; a run's policy is part of its learned steps and is replayed too."""
    if s.lrs is None or s.schedule is None:
        raise ConfigError(f"--protocol replay needs learned inner steps; method '{s.method}' learns none "
                          "(use --protocol standard)")
    model = _model_for(config, dataset, device)
    augment = None
    if policy is not None:
        augment = policy_augment(policy.to(device).train(), torch.Generator().manual_seed(0))
    accs = replay_accuracies(model, s.images.to(device), s.targets.to(device), s.lrs.to(device), s.schedule,
                             dataset.test.to(device), list(range(nets)), momentum=s.momentum, augment=augment)
    return summarize("replay", accs)


@dataclass(frozen=True)
class Evaluation:
    """An evaluation and exactly how it was obtained (what ``evaluate --json`` prints)."""

    result: EvalResult
    protocol: str
    epochs: int | None
    augmentation: str
    model: str

    def record(self) -> dict[str, Any]:
        r = self.result
        return {"protocol": self.protocol, "mean": r.mean, "std": r.std, "accs": list(r.accs), "nets": len(r.accs),
                "epochs": self.epochs, "augmentation": self.augmentation, "model": self.model}


def evaluation_policy(augment: str, run_dir: Path, info: Any) -> nn.Module | None:
    """The policy the evaluation networks train with: ``none``, ``run`` (the run's ``policy.json``),
    ``dsa`` (DSA's fixed policy; without flips on digit datasets) or a policy JSON path."""
    from augdistill.augment import dsa_policy, load_policy
    if augment == "none":
        return None
    if augment == "run":
        return _load_run_policy(run_dir)
    if augment == "dsa":
        return dsa_policy(info.image_shape[1:], flip=info.name not in ("digits", "digits-rot", "mnist"))
    if not Path(augment).is_file():
        raise ConfigError(f"--aug must be none, run, dsa or a policy JSON file; {augment!r} is none of these")
    return load_policy(augment)


def evaluate_run(run_dir: str | Path, protocol: str = "replay", *, nets: int = 5, device: str = "cpu",
                 epochs: int | None = None, augment: str = "none") -> Evaluation:
    """Evaluate a run directory under ``protocol`` (one of :data:`PROTOCOLS`) with ``nets`` fresh networks.

    ``replay`` always replays the run's own augmentation policy (it is part of the learned steps).
    The ``standard`` / ``random-subset`` / ``full-data`` networks (ConvNet-3 width 128, instance norm)
    train for ``epochs`` (default 300; the DSA, DM and MTT papers use 1000) with the augmentation
    ``augment`` (see :func:`evaluation_policy`).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{protocol}'; expected one of {', '.join(PROTOCOLS)}")
    if nets < 1:
        raise ConfigError(f"--nets must be >= 1, got {nets}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    config = with_method_defaults(load_config(run_dir))
    s = load_distilled(run_dir / SYNTHETIC_FILE)
    dataset = load_run_dataset(config).to(device)
    if protocol == "replay":
        policy = _load_run_policy(run_dir) if config.policy.mode != "none" else None
        return Evaluation(replay_result(s, config, dataset, nets, device, policy), protocol, None,
                          "run" if policy is not None else "none", config.model.name)
    standard = StandardProtocol() if epochs is None else StandardProtocol(epochs=epochs)
    policy = evaluation_policy(augment, run_dir, dataset.info)
    augment_std = None
    if policy is not None:
        policy = policy.to(device).train().requires_grad_(False)
        augment_std = policy_augment(policy, torch.Generator().manual_seed(0))
    seeds = list(range(nets))
    if protocol == "standard":
        x, targets = s.images.to(device), s.targets.to(device)
    elif protocol == "random-subset":
        x, targets = take_per_class(dataset.train.x, dataset.train.y, dataset.info.num_classes, s.ipc, seed=0)
    else:
        x, targets = dataset.train.x, dataset.train.y
    accs = standard_accuracies(x, targets, dataset.info, dataset.test, seeds, standard, augment_std)
    return Evaluation(summarize(protocol, accs), protocol, standard.epochs, augment,
                      f"{standard.model.name}-{standard.model.depth}, width {standard.model.width}, "
                      f"{standard.model.norm} norm")


def _load_run_policy(run_dir: Path) -> nn.Module:
    from augdistill.augment import load_policy
    path = run_dir / POLICY_FILE
    if not path.is_file():
        raise CheckpointError(f"--aug run: {path} does not exist (distill with --policy learn or fixed)")
    return load_policy(path)
