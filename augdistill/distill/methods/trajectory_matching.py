"""Trajectory matching (MTT, Cazenavette et al. 2022, arXiv 2203.11932), with TESLA's constant-memory option.

Each outer step draws an expert trajectory θ*_0, ..., θ*_E (trained on real data by ``augdistill experts``)
and a start epoch ``t < max_start_epoch``, trains ``N = syn_steps`` SGD steps from θ*_t on synthetic
minibatches with a learned step size α, and matches the expert ``M = expert_epochs`` epochs later::

    L = ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²

The steps are the shared inner trainer (:func:`augdistill.inner.unroll`); each minibatch is augmented by
the step's policy draw (siamese: the class's draw). With ``constant_memory`` the unroll is
:class:`~augdistill.inner.constant_memory.ConstantMemoryUnroll` (TESLA's first-order gradient, see there).

How the policy learns (``--policy learn``): every part of the loss is handed over with θ_N, so the
augmentation objective (CE of θ_N on augmented real data − λ·width) is evaluated on the network the
augmented synthetic steps produced. Its gradient, and the matching loss's own, reach the policy through
the augmented minibatches of the unroll (for the constant-memory option: through each step's graph in
the second pass), and the objective reaches it directly through the augmented real batch and the width.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from augdistill.config import ModelConfig
from augdistill.distill.methods.base import LossPart, Method, MethodEnv, OuterBatch
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.inner.constant_memory import ConstantMemoryUnroll
from augdistill.typing import Augment, Params

__all__ = ["TrajectoryMatching", "trajectory_loss", "minibatch_schedule"]


def trajectory_loss(theta: Params, start: Params, target: Params) -> Tensor:
    """MTT's normalised distance ``‖θ − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²`` over all parameters, a scalar."""
    distance = sum(((theta[k] - target[k]) ** 2).sum() for k in target)
    scale = sum(((start[k] - target[k]) ** 2).sum() for k in target)
    return distance / scale  # type: ignore[operator]


def minibatch_schedule(num_images: int, steps: int, batch: int, generator: torch.Generator) -> InnerSchedule:
    """``steps`` minibatches of ``batch`` images as MTT draws them: consecutive chunks of random permutations
    (a new permutation when one is used up; its last chunk may be smaller). ``batch`` 0 or ``>= num_images``:
    every image every step."""
    if batch == 0 or batch >= num_images:
        return InnerSchedule.full_batch(num_images, steps, 1)
    chunks: list[Tensor] = []
    while len(chunks) < steps:
        chunks += list(torch.randperm(num_images, generator=generator).split(batch))
    return InnerSchedule(tuple(chunks[:steps]), 1)


class TrajectoryMatching(Method):
    """Learn the synthetic set and one step size α so that ``N`` steps on it follow ``M`` expert epochs.

    α is ``exp(log_syn_lr)`` (an ``nn.Parameter`` in the method's optimiser group at ``--lr-lrs``; the log
    keeps it positive and puts its gradient on the images' scale). ``num_inits`` (expert, start) pairs are
    drawn per step, each yielded as one part. Validation is ``standard`` by default: MTT learns no replayable
    schedule from a random initialisation (the unroll starts from an expert's checkpoint).
    """

    name = "mtt"
    default_model = ModelConfig(name="convnet", width=128, depth=3, norm="instance")
    #: The paper's SGD at lr 100-1000 is for ZCA-whitened images; on [0, 1] pixels the first gradients reach
    #: norms of 10^4 and SGD destroys the images, so Adam (per-pixel steps of 0.003), unclipped.
    defaults = {"optimizer": "adam", "lr_images": 0.003, "validation": "standard", "grad_clip": 0.0}

    def __init__(self, env: MethodEnv) -> None:
        super().__init__(env)
        cfg = env.config.method
        if cfg.expert_dir is None:
            raise ConfigError("--method mtt needs --expert-dir DIR (train experts with `augdistill experts "
                              f"--dataset {env.info.name} --num-experts N --epochs E --out DIR`)")
        # Imported here: the expert files are written with augdistill.runs.atomic, and augdistill.runs imports
        # the loop, which imports this module.
        from augdistill.distill.experts import ExpertBank
        self.experts = ExpertBank.load(cfg.expert_dir, info=env.info, model=env.model,
                                       min_epochs=cfg.max_start_epoch - 1 + cfg.expert_epochs)
        self.log_syn_lr = nn.Parameter(torch.tensor(math.log(cfg.syn_lr_init), device=env.device))

    def syn_lr(self) -> Tensor:
        """The learned step size α (0-d)."""
        return self.log_syn_lr.exp()

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.log_syn_lr], "lr": self.env.config.outer.lr_lrs}]

    def _draw(self) -> tuple[int, int]:
        """A random (expert, start epoch) pair from the method's stream."""
        g, cfg = self.env.generators["method"], self.env.config.method
        expert = int(torch.randint(len(self.experts), (1,), generator=g))
        start = int(torch.randint(cfg.max_start_epoch, (1,), generator=g))
        return expert, start

    def losses(self, batch: OuterBatch) -> Iterator[LossPart]:
        env, cfg = self.env, self.env.config.method
        synthetic = env.synthetic
        labels = synthetic.labels
        draws = env.config.outer.num_inits
        for _ in range(draws):
            expert, start_epoch = self._draw()
            start = self.experts.params(expert, start_epoch, env.device)
            target = self.experts.params(expert, start_epoch + cfg.expert_epochs, env.device)
            schedule = minibatch_schedule(synthetic.num_decoded, cfg.syn_steps, cfg.syn_batch,
                                          env.generators["method"])
            augment: Augment | None = None
            if batch.augment.active:
                batches = schedule.on(env.device)

                def augment(x: Tensor, t: int) -> Tensor:
                    return batch.augment.synthetic(x, labels[batches[t % schedule.steps]])
            lrs = self.syn_lr().expand(schedule.total_steps)
            if not cfg.constant_memory:
                theta = unroll(env.model, start, synthetic.decode(), synthetic.targets(), lrs, schedule,
                               augment=augment)
                yield LossPart(trajectory_loss(theta, start, target) / draws, theta, 1.0 / draws)
                continue
            run = ConstantMemoryUnroll(env.model, start, synthetic.decode(), synthetic.targets(), lrs, schedule,
                                       augment=augment, generators=(batch.augment.synthetic_generator,))
            theta = {k: v.requires_grad_() for k, v in run.theta.items()}
            yield LossPart(trajectory_loss(theta, start, target) / draws, theta, 1.0 / draws)
            # The loop back-propagated that part (plus the policy objective on θ_N) before resuming us:
            # θ_N.grad is ∂(everything)/∂θ_N; spread it over the steps, one step's graph at a time.
            if any(p.grad is None for p in theta.values()):
                raise ConfigError("constant-memory MTT needs each LossPart back-propagated before the next is "
                                  "requested (as the Distiller loop does)")
            run.backward({k: p.grad for k, p in theta.items()})

    def step_metrics(self) -> dict[str, Tensor]:
        return {"syn_lr": self.syn_lr().detach()}

    def export(self) -> dict[str, Any]:
        return {"syn_lr": float(self.syn_lr().detach())}
