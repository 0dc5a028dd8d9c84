"""The method-agnostic outer loop: sample a real batch and the step's augmentation, ask the method for
its loss, update the synthetic set, the method's own tensors and the policy; validate, select, resume.

:class:`Distiller` owns everything one run learns (the synthetic set, the method's tensors, optionally a
learnable augmentation policy), their optimisers, the seeded random streams and the history, so that a
checkpoint of :meth:`Distiller.state_dict` resumes the run exactly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from augdistill.augment import ClassRangesPolicy, build_policy, learn_only, load_policy, policy_param_groups
from augdistill.config import DistillConfig, PolicyConfig
from augdistill.data import ClassBalancedSampler, Dataset, herd_per_class, take_per_class
from augdistill.distill.averaging import SyntheticAverage
from augdistill.distill.distributed import SINGLE, DistContext, Shard, step_seed
from augdistill.distill.methods import Method, MethodEnv, OuterBatch, method_class, with_method_defaults
from augdistill.distill.policy_objective import PolicyObjective
from augdistill.distill.synthetic import PARAMETERISATIONS, SyntheticData
from augdistill.distill.validation import validation_accuracies
from augdistill.errors import ConfigError, TrainingDivergedError
from augdistill.inner import AugmentStream
from augdistill.models import build_model

__all__ = ["Distiller", "StepStats", "STREAMS", "policy_from_config"]

#: Offsets that give every random stream of a run its own generator seeded from one ``seed``.
STREAMS = {"data": 0, "init": 1, "syn_aug": 2, "real_aug": 3, "synthetic": 4, "fixed_theta": 5, "method": 6,
           "policy": 7}


@dataclass(frozen=True)
class StepStats:
    """What one outer step measured (host floats, read once per step)."""

    iteration: int
    loss: float
    metrics: dict[str, float]
    policy_width: float | None



def policy_from_config(cfg: PolicyConfig, image_size: tuple[int, int]) -> nn.Module:
    """The policy ``cfg`` asks for when none is handed over: the ``init_file`` JSON, or fresh ``ops``.

    Args:
        cfg: a policy configuration whose mode is ``fixed`` or ``learn``.
        image_size: ``(H, W)`` of the images (scales the learnable ranges).
    """
    if cfg.init_file is not None:
        return load_policy(cfg.init_file)
    if cfg.mode == "fixed":
        raise ConfigError("--policy fixed needs --policy-init FILE.json (e.g. policies/dsa.json)")
    if not cfg.ops:
        raise ConfigError("--policy learn needs at least one op in --ops (e.g. --ops rotate,scale) or "
                          "--policy-init FILE.json; got none")
    return build_policy(list(cfg.ops), composition="sequential", image_size=image_size)

class Distiller:
    """Learns a synthetic set (and optionally an augmentation policy) with any :class:`Method`.

    Args:
        config: the whole run's configuration (``None`` fields take the method's defaults).
        dataset: real data; ``train`` drives the outer loss, ``val`` selects the best iteration.
        policy: an augmentation policy module (``sample``/``forward(x, params=)``/``width``), used when
            ``config.policy.mode`` is ``fixed`` or ``learn``; ``None`` builds it from ``config.policy``
            (:func:`policy_from_config`).
        device: where every tensor lives (a bare ``cuda`` is this rank's device under ``torchrun``).
        dist: this process's place in a ``torchrun`` job (see :mod:`augdistill.distill.distributed`): the
            method's work units are split over the ranks and the gradients summed before clipping;
            rank 0 alone validates. Default: one process.

    Example:
        >>> from augdistill.data import load_dataset
        >>> d = Distiller(DistillConfig(), load_dataset("digits"))
        >>> stats = d.step()
        >>> stats.iteration
        1
    """

    def __init__(self, config: DistillConfig, dataset: Dataset, *, policy: nn.Module | None = None,
                 device: str | torch.device = "cpu", dist: DistContext = SINGLE) -> None:
        config = with_method_defaults(config)
        self.config = config
        self.dist = dist
        self.device = dist.device(device)
        self.data = dataset.to(self.device)
        info = dataset.info
        self.model = build_model(config.model.name, info.image_shape, info.num_classes, mean=info.mean,
                                 std=info.std, **config.model.kwargs()).to(self.device)
        self.generators = {name: torch.Generator().manual_seed(config.outer.seed * 1000 + offset)
                           for name, offset in STREAMS.items()}
        self.sampler = ClassBalancedSampler(self.data.train.x, self.data.train.y, info.num_classes)
        self.synthetic = self._build_synthetic()
        #: ``--ema``: the moving average of the set, which validation, selection and export use (None: off).
        self.average = SyntheticAverage(self.synthetic, config.outer.ema) if config.outer.ema else None
        kind = method_class(config.method.name)
        if config.policy.adversarial and not kind.adversarial_policy:  # refused before the method is built
            raise ConfigError(f"--policy-adversarial makes the policy the adversary of a matching loss; --method "
                              f"{config.method.name} has none it can read (use --method dm)")
        self.method: Method = kind(
            MethodEnv(config, self.model, self.synthetic, info, self.generators, self.device))
        self.optimizer = self._build_optimizer()
        self.policy = self._setup_policy(policy)
        learn = self.policy is not None and config.policy.mode == "learn"
        self.policy_optimizer = (torch.optim.Adam(policy_param_groups(self.policy, config.policy.lr))
                                 if learn else None)
        self.policy_objective = PolicyObjective(self.policy, config.policy, info.num_classes) if learn else None
        self.stream = AugmentStream(self.policy, self.generators["syn_aug"], self.generators["real_aug"],
                                    num_classes=info.num_classes, siamese=config.policy.siamese, device=self.device)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_acc": -1.0, "iteration": 0, "state": None}

    # -- construction -------------------------------------------------------------------------
    def _build_synthetic(self) -> SyntheticData:
        cfg, info = self.config.synthetic, self.data.info
        if cfg.param not in PARAMETERISATIONS:
            raise ConfigError(f"unknown --param '{cfg.param}'; expected one of {', '.join(PARAMETERISATIONS)}")
        kind = PARAMETERISATIONS[cfg.param]
        if cfg.clip_pixels and not kind.pixel_tensors:
            raise ConfigError(f"--clip-pixels projects stored pixels into [0, 1]; --param {cfg.param} stores none "
                              f"(use --param pixels or multi-formation)")
        per_class = kind.real_per_class(self.config, info.num_classes, info.image_shape)
        if cfg.init == "real":
            images, _ = take_per_class(self.data.train.x, self.data.train.y, info.num_classes, per_class,
                                       seed=self.config.outer.seed)
        elif cfg.init == "herding":
            images, _ = herd_per_class(self.data.train.x, self.data.train.y, info.num_classes, per_class)
        else:
            images = torch.rand((info.num_classes * per_class, *info.image_shape),
                                generator=self.generators["synthetic"]).to(self.device)
        synthetic = kind.from_real(images, info.num_classes, learn_labels=cfg.learn_labels, config=self.config,
                                   generator=self.generators["synthetic"])
        synthetic.check_budget()
        return synthetic.to(self.device)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        outer = self.config.outer
        groups = self.synthetic.image_groups(outer.lr_images) + self.method.param_groups()
        if self.synthetic.label_logits is not None:
            groups.append({"params": [self.synthetic.label_logits], "lr": outer.lr_labels})
        if outer.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=outer.lr_images, momentum=outer.sgd_momentum)
        return torch.optim.Adam(groups)

    def _setup_policy(self, policy: nn.Module | None) -> nn.Module | None:
        mode = self.config.policy.mode
        if mode == "none":
            return None
        if policy is None:
            policy = policy_from_config(self.config.policy, self.data.info.image_shape[1:])
        if self.config.policy.per_class and not isinstance(policy, ClassRangesPolicy):
            policy = ClassRangesPolicy(policy, self.data.info.class_names)
        if isinstance(policy, ClassRangesPolicy):
            policy.check_classes(self.data.info.num_classes, self.config.policy.init_file or "the policy")
        policy = policy.to(self.device).train()
        policy.requires_grad_(mode == "learn")
        if mode == "learn":
            learn_only(policy, self.config.policy.learn)
        return policy

    def learned_parameters(self, *, policy: bool = True) -> list[Tensor]:
        """Every tensor the outer loop updates (synthetic set, method, and the policy when it is learned and
        ``policy`` is true), in a fixed order."""
        learned = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.policy_optimizer is not None and policy:
            learned += list(self.policy.parameters())
        return learned

    def policy_turn(self) -> bool:
        """Whether the learned policy takes part in the next outer step (every ``--policy-every``-th step)."""
        return self.policy_objective is not None and self.iteration % self.config.policy.every == 0

    # -- one outer step -------------------------------------------------------------------------
    def step(self) -> StepStats:
        """One outer iteration: back-propagate the method's loss parts (plus the policy objective on the policy's
        turns, :meth:`policy_turn`), then update."""
        cfg, dist = self.config, self.dist
        policy_turn = self.policy_turn()
        x_real, y_real = self.sampler.sample(cfg.outer.real_per_class, self.generators["data"])
        shard = dist.shard if self.method.shards else Shard()
        augment = self.stream.step()
        if policy_turn and cfg.policy.adversarial:
            augment = augment.adversarial(cfg.policy.adversarial)
        batch = OuterBatch(x_real, y_real, augment, self.iteration, shard, step_seed(cfg.outer.seed, self.iteration))
        self.optimizer.zero_grad(set_to_none=True)
        if self.policy_optimizer is not None:
            self.policy_optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        policy_learned = False
        learned = self.learned_parameters(policy=policy_turn)
        inputs = [p for p in learned if p.requires_grad]
        for part in self.method.losses(batch):
            loss = part.loss
            if policy_turn and part.theta is not None:
                for theta in part.thetas():
                    loss = loss + part.weight * self.policy_objective(self.model, theta, x_real, y_real,
                                                                      part.augment or batch.augment)
                policy_learned = True
            if dist.world_size > 1 and not self.method.shards:  # every rank computed it: sum to one copy
                loss = loss / dist.world_size
            # only into what is learned (and θ leaves a method reads back): no gradient for θ₀ (~10% of a step)
            loss.backward(inputs=inputs + [v for v in (part.theta or {}).values() if v.is_leaf and v.requires_grad])
            total = total + loss.detach()
        if policy_turn and self.method.shards:  # a rank may have had no unit
            policy_learned = dist.any(policy_learned, self.device)
        if policy_turn and not policy_learned:
            loss = self.policy_objective.standalone(self.model, self.synthetic, x_real, y_real, batch.augment,
                                                    self.generators["policy"])
            if dist.world_size > 1:
                loss = loss / dist.world_size
            loss.backward(inputs=inputs)
            total = total + loss.detach()
        total = dist.all_reduce_gradients(learned, total.reshape(1)).reshape(())
        grad_norm = torch.nn.utils.clip_grad_norm_(learned, cfg.outer.grad_clip or math.inf)  # 0: measure only
        loss_value, norm_value = float(total), float(grad_norm)  # one host sync per outer step
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            raise TrainingDivergedError(
                f"outer step {self.iteration + 1}: loss={loss_value}, gradient norm={norm_value}; "
                "try a new run with lower --lr-images, --lr-lrs or --lr-cap")
        self.optimizer.step()
        if cfg.synthetic.clip_pixels:
            self.synthetic.clip_pixels_()
        if policy_turn:
            self.policy_optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.method.parameters()):
            raise TrainingDivergedError(f"outer step {self.iteration + 1}: a learned step size is not finite")
        self.method.after_update(batch)
        self.iteration += 1
        if self.average is not None:
            self.average.update(self.synthetic, self.iteration)
        metrics = {k: float(v) for k, v in self.method.step_metrics().items()}
        width = float(self.policy.width().detach()) if self.policy is not None else None
        stats = StepStats(self.iteration, loss_value, metrics, width)
        self.history.append({"iteration": stats.iteration, "loss": stats.loss, **metrics, **self._policy_snapshot()})
        return stats

    def _policy_snapshot(self) -> dict[str, Any]:
        if self.policy is None:
            return {}
        return {"policy_magnitudes": {k: [float(b) for b in v] for k, v in self.policy.magnitudes().items()},
                "policy_probabilities": {k: float(v) for k, v in self.policy.probabilities().items()}}

    def fit(self, iterations: int | None = None, *, eval_every: int = 0, eval_nets: int = 3,
            on_step: Callable[[StepStats, float | None], None] | None = None) -> "Distiller":
        """Run outer steps until ``iterations`` (default ``config.outer.iterations``), continuing from
        the current iteration.

        Every ``eval_every`` steps (and at the end) the validation accuracy is measured and the best
        state kept; call :meth:`restore_best` afterwards to use it. ``on_step(stats, val_acc)`` runs
        after each step *and* its validation (``val_acc`` is ``None`` when it did not run), so a
        checkpoint written there holds a complete iteration.
        """
        iterations = self.config.outer.iterations if iterations is None else iterations
        while self.iteration < iterations:
            stats = self.step()
            val_acc = None
            if eval_every and (self.iteration % eval_every == 0 or self.iteration == iterations):
                val_acc = self.validate(eval_nets)
            if on_step is not None:
                on_step(stats, val_acc)
        return self

    # -- validation and selection ---------------------------------------------------------------
    def validate(self, nets: int = 3) -> float:
        """Mean validation accuracy of ``nets`` fresh networks (``config.outer.validation``); keeps the best state.

        Under ``torchrun`` rank 0 measures it and hands it to the others, which select the same state."""
        val_acc = self.dist.broadcast_float(self._validation_accuracy(nets) if self.dist.is_main else None,
                                            self.device)
        self.history.append({"iteration": self.iteration, "val_acc": val_acc})
        if val_acc > self.best["val_acc"]:
            self.best = {"val_acc": val_acc, "iteration": self.iteration,
                         "state": copy.deepcopy(self._learned_state(self.selectable))}
        return val_acc

    @property
    def selectable(self) -> SyntheticData:
        """The set that validation measures and selection keeps: the moving average with ``--ema``, else the set
        being trained."""
        return self.synthetic if self.average is None else self.average.set

    def _validation_accuracy(self, nets: int) -> float:
        with torch.no_grad():
            images, targets = self.selectable.decode().detach(), self.selectable.targets().detach()
        policy = self.policy
        if policy is not None and self.config.outer.validation == "standard":
            policy = copy.deepcopy(policy).requires_grad_(False)
        accs = validation_accuracies(self.config.outer.validation, model=self.model, images=images, targets=targets,
                                     recipe=self.method.replay_recipe(), val=self.data.val, info=self.data.info,
                                     nets=nets, epochs=self.config.outer.val_epochs, policy=policy,
                                     first_padding=self.config.model.first_padding)
        return float(accs.mean())

    def check_in_sync(self, what: str) -> None:
        """Under ``torchrun``: raise :class:`~augdistill.distill.distributed.DistributedError` if any learned
        tensor differs between the ranks (cheap: two small all-reduces)."""
        state = {f"synthetic.{k}": v for k, v in self.synthetic.named_parameters()}
        state.update({f"method.{k}": v for k, v in self.method.named_parameters()})
        if self.policy is not None:
            state.update({f"policy.{k}": v for k, v in self.policy.named_parameters()})
        self.dist.check_in_sync(state, what)

    def _learned_state(self, synthetic: SyntheticData | None = None) -> dict[str, Any]:
        return {"synthetic": (synthetic or self.synthetic).state_dict(), "method": self.method.state_dict(),
                "policy": self.policy.state_dict() if self.policy is not None else None}

    def _load_learned_state(self, state: dict[str, Any]) -> None:
        self.synthetic.load_state_dict(state["synthetic"])
        self.method.load_state_dict(state["method"])
        if self.policy is not None and state["policy"] is not None:
            self.policy.load_state_dict(state["policy"])

    def restore_best(self) -> None:
        """Load the state selected on the validation split; if :meth:`validate` never ran, the moving average with
        ``--ema`` (else nothing changes)."""
        if self.best["state"] is not None:
            self._load_learned_state(self.best["state"])
        elif self.average is not None:
            self.synthetic.load_state_dict(self.average.set.state_dict())

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: learned tensors, optimisers, RNG streams, history."""
        return {
            "iteration": self.iteration,
            **self._learned_state(),
            "optimizer": self.optimizer.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict() if self.policy_optimizer is not None else None,
            "policy_objective": self.policy_objective.state_dict() if self.policy_objective is not None else None,
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "history": self.history,
            "best": self.best,
            "average": self.average.set.state_dict() if self.average is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self._load_learned_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.policy_optimizer is not None:
            self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        if self.policy_objective is not None:
            self.policy_objective.load_state_dict(state.get("policy_objective") or {})
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        if self.average is not None:
            self.average.set.load_state_dict(state["average"])
