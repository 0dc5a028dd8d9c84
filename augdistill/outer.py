"""The bilevel outer loop: θ₀ -> augment -> unroll -> objectives -> update synthetic set and policy.

:class:`Distiller` owns everything one run learns (the :class:`SyntheticSet`, optionally a learnable
augmentation policy) and its optimisers, generators and history, so that a checkpoint of
:meth:`Distiller.state_dict` resumes the run exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from augdistill.config import DistillConfig
from augdistill.augment import policy_param_groups
from augdistill.data import ClassBalancedSampler, Dataset, take_per_class
from augdistill.distill.objectives import AugmentedRealLoss, Objective, RealLoss
from augdistill.distill.synthetic import SyntheticSet
from augdistill.errors import ConfigError, TrainingDivergedError
from augdistill.evaluate import replay_accuracies
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, sample_params
from augdistill.typing import Params

__all__ = ["Distiller", "StepStats", "policy_augment"]

# Offsets that give every random stream of a run its own generator seeded from one ``seed``.
_STREAMS = {"data": 0, "init": 1, "syn_aug": 2, "real_aug": 3, "synthetic": 4, "fixed_theta": 5}
#: Validation and evaluation draw their augmentation from their own fixed stream, never a training one.
_VALIDATION_SEED = 10_000


def _select_rows(draw: Any, rows: Tensor) -> Any:
    """The same augmentation draw, re-indexed along its batch dimension (``None`` fields stay ``None``)."""
    return type(draw)(**{f.name: None if getattr(draw, f.name) is None else getattr(draw, f.name)[rows]
                         for f in dataclasses.fields(draw)})


def policy_augment(policy: nn.Module, generator: torch.Generator) -> Callable[..., Tensor]:
    """``augment(x, *_)``: a fresh draw of ``policy`` from ``generator`` for every call, applied to ``x``.

    Fits both the inner trainer's ``augment(x, step)`` and a plain ``augment(x)``.
    """
    def augment(x: Tensor, *_: object) -> Tensor:
        return policy(x, params=policy.sample(x.shape[0], generator=generator, device=x.device))
    return augment


@dataclass(frozen=True)
class StepStats:
    """What one outer step measured (host floats, read once per step)."""

    iteration: int
    loss: float
    lr_mean: float
    policy_width: float | None


class Distiller:
    """Learns a synthetic set (and optionally an augmentation policy) by Wang et al.'s bilevel objective.

    Args:
        config: the whole run's configuration.
        dataset: real data; ``train`` drives the outer loss, ``val`` selects the best iteration.
        policy: an augmentation policy module (``sample``/``forward(x, params=)``/``width``), used when
            ``config.policy.mode`` is ``fixed`` or ``learn``.
        device: where every tensor lives.

    Example:
        >>> from augdistill.data import load_dataset
        >>> d = Distiller(DistillConfig(), load_dataset("digits"))
        >>> stats = d.step()
        >>> stats.iteration
        1
    """

    def __init__(self, config: DistillConfig, dataset: Dataset, *, policy: nn.Module | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.data = dataset.to(self.device)
        info = dataset.info
        self.model = build_model(config.model.name, info.image_shape, info.num_classes, mean=info.mean,
                                 std=info.std, **config.model.kwargs()).to(self.device)
        self.generators = {name: torch.Generator().manual_seed(config.outer.seed * 1000 + offset)
                           for name, offset in _STREAMS.items()}
        self.sampler = ClassBalancedSampler(self.data.train.x, self.data.train.y, info.num_classes)
        self.schedule = self._make_schedule()
        self.synthetic = SyntheticSet(self._initial_images(), info.num_classes, self.schedule.total_steps,
                                      lr_init=config.synthetic.lr_init, lr_cap=config.synthetic.lr_cap,
                                      learn_labels=config.synthetic.learn_labels).to(self.device)
        groups = [{"params": [self.synthetic.images], "lr": config.outer.lr_images},
                  {"params": [self.synthetic.raw_lrs], "lr": config.outer.lr_lrs}]
        if self.synthetic.label_logits is not None:
            groups.append({"params": [self.synthetic.label_logits], "lr": config.outer.lr_labels})
        self.optimizer = torch.optim.Adam(groups)
        self.fixed_theta: Params | None = None
        if config.outer.init == "fixed":
            self.fixed_theta = sample_params(self.model, self.generators["fixed_theta"])
        self.policy = self._setup_policy(policy)
        self.policy_optimizer = (torch.optim.Adam(policy_param_groups(self.policy, config.policy.lr))
                                 if self.policy is not None and config.policy.mode == "learn" else None)
        self._class_draw: Any = None
        self.objectives = self._make_objectives()
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_acc": -1.0, "iteration": 0, "synthetic": None, "policy": None}

    # -- construction -------------------------------------------------------------------------
    def _make_schedule(self) -> InnerSchedule:
        inner, ipc, k = self.config.inner, self.config.synthetic.ipc, self.data.info.num_classes
        if inner.batch_per_class in (0, ipc):
            return InnerSchedule.full_batch(k * ipc, inner.steps, inner.epochs)
        return InnerSchedule.class_chunks(k, ipc, inner.batch_per_class, inner.steps, inner.epochs)

    def _initial_images(self) -> Tensor:
        cfg, info = self.config.synthetic, self.data.info
        if cfg.init == "real":
            x, _ = take_per_class(self.data.train.x, self.data.train.y, info.num_classes, cfg.ipc,
                                  seed=self.config.outer.seed)
            return x
        g = self.generators["synthetic"]
        return torch.rand((info.num_classes * cfg.ipc, *info.image_shape), generator=g).to(self.device)

    def _setup_policy(self, policy: nn.Module | None) -> nn.Module | None:
        mode = self.config.policy.mode
        if mode == "none":
            return None
        if policy is None:
            raise ConfigError(f"policy mode '{mode}' needs a policy module")
        policy = policy.to(self.device).train()
        policy.requires_grad_(mode == "learn")
        return policy

    def _make_objectives(self) -> list[Objective]:
        objectives: list[Objective] = [RealLoss()]
        if self.policy_optimizer is not None:
            cfg = self.config.policy
            objectives.append(AugmentedRealLoss(self._augment_real, self.policy.width, copies=cfg.copies,
                                                width_weight=cfg.width_weight, weight=cfg.aug_weight))
        return objectives

    # -- augmentation ---------------------------------------------------------------------------
    def _augment(self, x: Tensor, stream: str) -> Tensor:
        return policy_augment(self.policy, self.generators[stream])(x)

    def _augment_siamese(self, x: Tensor, labels: Tensor) -> Tensor:
        """DSA's siamese augmentation: every image of class ``c`` gets the draw of class ``c`` of this outer step."""
        return self.policy(x, params=_select_rows(self._class_draw, labels))

    def _augment_synthetic(self, x: Tensor, step: int) -> Tensor:
        if self.config.policy.siamese:
            return self._augment_siamese(x, self._syn_labels_of(x))
        return self._augment(x, "syn_aug")

    def _augment_real(self, x: Tensor) -> Tensor:
        if self.config.policy.siamese:
            return self._augment_siamese(x, self._real_labels)
        return self._augment(x, "real_aug")

    def _syn_labels_of(self, x: Tensor) -> Tensor:
        # every inner minibatch is class-balanced and class-major (see InnerSchedule)
        return torch.arange(self.data.info.num_classes, device=x.device).repeat_interleave(
            x.shape[0] // self.data.info.num_classes)

    def inner_augment(self) -> Callable[[Tensor, int], Tensor] | None:
        """The augmentation applied to every synthetic minibatch of the inner loop (``None`` without a policy)."""
        return self._augment_synthetic if self.policy is not None else None

    # -- one outer step -------------------------------------------------------------------------
    def step(self) -> StepStats:
        """One outer iteration: average the objectives over ``num_inits`` θ₀ draws, then update."""
        cfg = self.config
        x_real, y_real = self.sampler.sample(cfg.outer.real_per_class, self.generators["data"])
        if self.policy is not None and cfg.policy.siamese:
            self._class_draw = self.policy.sample(self.data.info.num_classes, generator=self.generators["syn_aug"],
                                                  device=self.device)
            self._real_labels = y_real
        self.optimizer.zero_grad(set_to_none=True)
        if self.policy_optimizer is not None:
            self.policy_optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for _ in range(cfg.outer.num_inits):
            theta0 = self.fixed_theta if self.fixed_theta is not None else sample_params(
                self.model, self.generators["init"])
            theta = unroll(self.model, theta0, self.synthetic.images, self.synthetic.targets(),
                           self.synthetic.lrs(), self.schedule, momentum=cfg.inner.momentum,
                           augment=self.inner_augment())
            loss = sum(objective(self.model, theta, x_real, y_real) for objective in self.objectives)
            (loss / cfg.outer.num_inits).backward()
            total = total + loss.detach() / cfg.outer.num_inits
        learned = list(self.synthetic.parameters()) + (
            list(self.policy.parameters()) if self.policy_optimizer is not None else [])
        grad_norm = torch.nn.utils.clip_grad_norm_(learned, cfg.outer.grad_clip)
        loss_value, norm_value = float(total), float(grad_norm)  # one host sync per outer step
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            raise TrainingDivergedError(
                f"outer step {self.iteration + 1}: loss={loss_value}, gradient norm={norm_value}; "
                "try a new run with lower --lr-images, --lr-lrs or --lr-cap")
        self.optimizer.step()
        if self.policy_optimizer is not None:
            self.policy_optimizer.step()
        lrs = self.synthetic.lrs().detach()
        if not bool(torch.isfinite(lrs).all()):
            raise TrainingDivergedError(f"outer step {self.iteration + 1}: a learned learning rate is not finite")
        self.iteration += 1
        width = float(self.policy.width().detach()) if self.policy is not None else None
        stats = StepStats(self.iteration, loss_value, float(lrs.mean()), width)
        self.history.append({"iteration": stats.iteration, "loss": stats.loss, "lr_mean": stats.lr_mean,
                             **self._policy_snapshot()})
        return stats

    def _policy_snapshot(self) -> dict[str, Any]:
        if self.policy is None:
            return {}
        return {"policy_magnitudes": {k: [float(b) for b in v] for k, v in self.policy.magnitudes().items()},
                "policy_probabilities": {k: float(v) for k, v in self.policy.probabilities().items()}}

    def fit(self, iterations: int | None = None, *, eval_every: int = 0, eval_nets: int = 3,
            on_step: Callable[[StepStats], None] | None = None,
            on_eval: Callable[[int, float], None] | None = None) -> "Distiller":
        """Run outer steps until ``iterations`` (default ``config.outer.iterations``), continuing from
        the current iteration.

        Every ``eval_every`` steps (and at the end) the validation replay accuracy is measured and the
        best state kept; call :meth:`restore_best` afterwards to use it.
        """
        iterations = self.config.outer.iterations if iterations is None else iterations
        while self.iteration < iterations:
            stats = self.step()
            if on_step is not None:
                on_step(stats)
            if eval_every and (self.iteration % eval_every == 0 or self.iteration == iterations):
                acc = self.validate(eval_nets)
                if on_eval is not None:
                    on_eval(self.iteration, acc)
        return self

    # -- validation and selection ---------------------------------------------------------------
    def validate(self, nets: int = 3) -> float:
        """Replay accuracy on the validation split (mean over ``nets`` fresh nets); keeps the best state."""
        seeds = [_VALIDATION_SEED + i for i in range(nets)]
        with torch.no_grad():
            images, targets, lrs = (self.synthetic.images.detach(), self.synthetic.targets().detach(),
                                    self.synthetic.lrs().detach())
        augment = (policy_augment(self.policy, torch.Generator().manual_seed(_VALIDATION_SEED))
                   if self.policy is not None else None)
        accs = replay_accuracies(self.model, images, targets, lrs, self.schedule, self.data.val, seeds,
                                 momentum=self.config.inner.momentum, augment=augment)
        val_acc = float(accs.mean())
        self.history.append({"iteration": self.iteration, "val_acc": val_acc})
        if val_acc > self.best["val_acc"]:
            self.best = {"val_acc": val_acc, "iteration": self.iteration,
                         "synthetic": copy.deepcopy(self.synthetic.state_dict()),
                         "policy": copy.deepcopy(self.policy.state_dict()) if self.policy is not None else None}
        return val_acc

    def restore_best(self) -> None:
        """Load the state selected on the validation split (no-op if :meth:`validate` never ran)."""
        if self.best["synthetic"] is not None:
            self.synthetic.load_state_dict(self.best["synthetic"])
            if self.policy is not None and self.best["policy"] is not None:
                self.policy.load_state_dict(self.best["policy"])

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: learned tensors, optimisers, RNG streams, history."""
        return {
            "iteration": self.iteration,
            "synthetic": self.synthetic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "policy": self.policy.state_dict() if self.policy is not None else None,
            "policy_optimizer": self.policy_optimizer.state_dict() if self.policy_optimizer is not None else None,
            "fixed_theta": self.fixed_theta,
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "history": self.history,
            "best": self.best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.synthetic.load_state_dict(state["synthetic"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.policy is not None:
            self.policy.load_state_dict(state["policy"])
        if self.policy_optimizer is not None:
            self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        if state["fixed_theta"] is not None:
            self.fixed_theta = {k: v.to(self.device) for k, v in state["fixed_theta"].items()}
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        self.history = list(state["history"])
        self.best = dict(state["best"])

