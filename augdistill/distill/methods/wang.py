"""Wang et al. 2018 (arXiv 1811.10959): unroll a few SGD steps on the synthetic set, minimise the loss of
the resulting network on real data; the per-step learning rates are learned too."""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.config import ModelConfig
from augdistill.distill.methods.base import LossPart, Method, MethodEnv, OuterBatch, ReplayRecipe
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import sample_params
from augdistill.typing import Params

__all__ = ["Wang", "real_loss", "make_schedule"]


def real_loss(model: nn.Module, theta: Params, x_real: Tensor, y_real: Tensor) -> Tensor:
    """Wang et al.'s objective: cross-entropy of θ_T on a real batch ``(B, C, H, W)``."""
    return F.cross_entropy(functional_call(model, theta, (x_real,)), y_real)


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
    """

    name = "wang"
    default_model = ModelConfig(name="mlp")
    defaults = {"optimizer": "adam", "lr_images": 0.002, "validation": "replay"}

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

    def lrs(self) -> Tensor:
        """Per-step learning rates ``(T,)`` in ``(0, lr_cap)``."""
        return self.lr_cap * torch.sigmoid(self.raw_lrs)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.raw_lrs], "lr": self.env.config.outer.lr_lrs}]

    def losses(self, batch: OuterBatch) -> Iterator[LossPart]:
        env, cfg = self.env, self.env.config
        synthetic = env.synthetic
        labels = synthetic.labels
        augment = None
        if batch.augment.active:
            def augment(x: Tensor, t: int) -> Tensor:
                return batch.augment.synthetic(x, labels[self.schedule.on(x.device)[t % self.schedule.steps]])
        draws = cfg.outer.num_inits
        for _ in range(draws):
            theta0 = self.fixed_theta if self.fixed_theta is not None else sample_params(
                env.model, env.generators["init"])
            theta = unroll(env.model, theta0, synthetic.decode(), synthetic.targets(), self.lrs(), self.schedule,
                           momentum=cfg.inner.momentum, augment=augment)
            yield LossPart(real_loss(env.model, theta, batch.x_real, batch.y_real) / draws, theta, 1.0 / draws)

    def step_metrics(self) -> dict[str, Tensor]:
        return {"lr_mean": self.lrs().detach().mean()}

    def replay_recipe(self) -> ReplayRecipe:
        return ReplayRecipe(self.lrs().detach(), self.schedule, self.env.config.inner.momentum)

    def get_extra_state(self) -> dict[str, Any]:
        return {"fixed_theta": self.fixed_theta}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        theta = state["fixed_theta"]
        self.fixed_theta = None if theta is None else {k: v.to(self.env.device) for k, v in theta.items()}
