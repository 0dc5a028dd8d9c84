"""Wang et al. 2018 (arXiv 1811.10959): unroll a few SGD steps on the synthetic set, minimise the loss of
the resulting network on real data; the per-step learning rates are learned too."""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.config import ModelConfig
from augdistill.distill.methods.base import LossPart, Method, MethodEnv, OuterBatch, ReplayRecipe
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, StepAugment, logits, unroll
from augdistill.models import sample_params
from augdistill.typing import Augment, Params

__all__ = ["Wang", "real_loss", "make_schedule"]


def real_loss(model: nn.Module, theta: Params, x_real: Tensor, y_real: Tensor, *, stacked: int = 0,
              precision: str = "float32") -> Tensor:
    """Wang et al.'s objective: cross-entropy of θ_T on a real batch ``(B, C, H, W)``; for ``stacked`` networks
    (dim 0 of every ``theta`` tensor) the sum of each one's mean cross-entropy."""
    out = logits(model, theta, x_real, stacked=stacked, precision=precision)
    if not stacked:
        return F.cross_entropy(out, y_real)
    return F.cross_entropy(out.flatten(0, 1), y_real.repeat(stacked), reduction="none").view(stacked, -1).mean(1).sum()


def make_schedule(num_classes: int, per_class: int, steps: int, epochs: int, batch_per_class: int) -> InnerSchedule:
    """All decoded images every step (``batch_per_class`` 0 or ``per_class``), else class-balanced chunks."""
    if batch_per_class in (0, per_class):
        return InnerSchedule.full_batch(num_classes * per_class, steps, epochs)
    return InnerSchedule.class_chunks(num_classes, per_class, batch_per_class, steps, epochs)


class Wang(Method):
    """Learn the set and one learning rate per inner step so that ``T`` steps from θ₀ fit real data.

    θ₀ is fixed (``--init fixed``) or drawn afresh ``num_inits`` times a step (``--init random``);
    the synthetic minibatch of every inner step is augmented (siamese: with its class's draw), so
    the policy's gradient flows through the unroll and through the augmentation objective
    evaluated on the same θ_T.

    Each draw is a work unit (:attr:`Method.shards`): under ``torchrun`` the ranks split them, and draw
    ``d`` takes θ₀ and its fresh augmentation from its own generators, so any number of ranks learns
    the same set. The draws a process computes are unrolled one after another (``--batch-draws loop``)
    or together as one ``vmap``-ed unroll (``vmap``), which needs them to see the same batches (no
    policy, or ``--siamese``). ``auto`` takes ``vmap`` where it was measured faster: networks without
    convolutions (on 2 CPU cores the MLP's step is ~1.3x faster; a ConvNet's batched convolution is
    slower, see ``benchmarks/bench_scale.py``).
    """

    name = "wang"
    default_model = ModelConfig(name="mlp")
    defaults = {"optimizer": "adam", "lr_images": 0.002, "validation": "replay", "grad_clip": 10.0}
    shards = True

    def __init__(self, env: MethodEnv) -> None:
        super().__init__(env)
        cfg, inner = env.config.method, env.config.inner
        self.schedule = make_schedule(env.info.num_classes, env.synthetic.decoded_per_class, inner.steps,
                                      inner.epochs, inner.batch_per_class)
        self.lr_cap = float(cfg.lr_cap)
        ratio = cfg.lr_init / cfg.lr_cap
        self.raw_lrs = nn.Parameter(torch.full((self.schedule.total_steps,), math.log(ratio / (1 - ratio)),
                                               device=env.device))
        self.fixed_theta: Params | None = None
        if env.config.outer.init == "fixed":
            self.fixed_theta = sample_params(env.model, env.generators["fixed_theta"])
        self.batched = self._batch_draws(env)

    @staticmethod
    def _batch_draws(env: MethodEnv) -> bool:
        """Whether the draws are unrolled together with ``vmap`` (``--batch-draws``; see the class docstring)."""
        mode, policy = env.config.outer.batch_draws, env.config.policy
        shared = policy.mode == "none" or policy.siamese
        if mode == "vmap" and not shared:
            raise ConfigError(f"--batch-draws vmap unrolls the draws together, so they must see the same batches: "
                              f"use --siamese (or --policy none); got --policy {policy.mode} without --siamese")
        if mode == "auto":
            return shared and not any(isinstance(m, nn.Conv2d) for m in env.model.modules())
        return mode == "vmap"

    def lrs(self) -> Tensor:
        """Per-step learning rates ``(T,)`` in ``(0, lr_cap)``."""
        return self.lr_cap * torch.sigmoid(self.raw_lrs)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.raw_lrs], "lr": self.env.config.outer.lr_lrs}]

    def losses(self, batch: OuterBatch) -> Iterator[LossPart]:
        draws = self.env.config.outer.num_inits
        units = list(batch.shard.units(draws))
        if self.batched and len(units) > 1:
            yield self._part(batch, units, draws)
            return
        for unit in units:
            yield self._part(batch, [unit], draws)

    def _part(self, batch: OuterBatch, units: list[int], draws: int) -> LossPart:
        """The loss of the draws ``units`` (one, or several stacked with ``vmap``), each weighted ``1 / draws``."""
        env, inner = self.env, self.env.config.inner
        synthetic = env.synthetic
        stacked = len(units) if len(units) > 1 else 0
        augment = batch.unit_augment(units[0])  # the step's own when stacked (stacked draws share it)
        thetas = [self.fixed_theta if self.fixed_theta is not None else
                  sample_params(env.model, batch.unit_generator(unit, "init")) for unit in units]
        theta0 = thetas[0] if not stacked else {k: torch.stack([t[k] for t in thetas]) for k in thetas[0]}
        theta = unroll(env.model, theta0, synthetic.decode(), synthetic.targets(), self.lrs(), self.schedule,
                       momentum=inner.momentum, augment=self._augment(augment),
                       generators=(augment.synthetic_generator,) if augment.fresh else (), checkpoint=inner.checkpoint,
                       stacked=stacked, precision=inner.precision, compile=inner.compile)
        loss = real_loss(env.model, theta, batch.x_real, batch.y_real, stacked=stacked, precision=inner.precision)
        return LossPart(loss / draws, theta, 1.0 / draws, augment=augment, stacked=stacked)

    def _augment(self, augment: StepAugment) -> Augment | None:
        """``augment(x, t)`` for the unroll: step ``t``'s synthetic minibatch augmented with its classes' draws."""
        if not augment.active:
            return None
        labels, schedule = self.env.synthetic.labels, self.schedule

        def apply(x: Tensor, t: int) -> Tensor:
            return augment.synthetic(x, labels[schedule.on(x.device)[t % schedule.steps]])
        return apply

    def step_metrics(self) -> dict[str, Tensor]:
        return {"lr_mean": self.lrs().detach().mean()}

    def replay_recipe(self) -> ReplayRecipe:
        return ReplayRecipe(self.lrs().detach(), self.schedule, self.env.config.inner.momentum)

    def get_extra_state(self) -> dict[str, Any]:
        return {"fixed_theta": self.fixed_theta}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        theta = state["fixed_theta"]
        self.fixed_theta = None if theta is None else {k: v.to(self.env.device) for k, v in theta.items()}
