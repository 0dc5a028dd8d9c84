"""The method interface: what one distillation objective tells the method-agnostic loop.

Each outer step the loop samples a class-balanced real batch and the step's augmentation
(:class:`~augdistill.inner.stream.StepAugment`), and asks the method for its loss as a stream of
:class:`LossPart` s. It back-propagates each part as it arrives (so the graph of one θ₀ draw or one
class is freed before the next is built), updates the synthetic set, the method's own parameters
(e.g. learned step sizes) and the policy, then calls :meth:`Method.after_update`.

A new method is one file: a :class:`Method` subclass plus its line in :data:`METHODS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn

from augdistill.config import DistillConfig, ModelConfig
from augdistill.data import DatasetInfo
from augdistill.distill.distributed import Shard, unit_generator
from augdistill.distill.synthetic import SyntheticData
from augdistill.inner import InnerSchedule, StepAugment
from augdistill.typing import Params

__all__ = ["Method", "MethodEnv", "OuterBatch", "LossPart", "ReplayRecipe", "MaybeState"]


@dataclass(frozen=True)
class MethodEnv:
    """What a method is built from.

    Attributes:
        config: the run's configuration.
        model: the method's network (only its structure and buffers are used; parameters travel as dicts).
        synthetic: the learned set (decode it, never cache the decoded batch across steps).
        info: the dataset's metadata.
        generators: the run's seeded streams; a method draws only from ``init`` (network
            initialisations) and ``method`` (anything else it samples). A method that splits its work over
            ``torchrun`` ranks (:attr:`Method.shards`) draws each work unit's randomness from
            :meth:`OuterBatch.unit_generator` instead.
        device: where every tensor lives.
    """

    config: DistillConfig
    model: nn.Module
    synthetic: SyntheticData
    info: DatasetInfo
    generators: dict[str, torch.Generator]
    device: torch.device


@dataclass(frozen=True)
class OuterBatch:
    """The inputs of one outer step.

    Attributes:
        x_real: real images ``(K * per_class, C, H, W)`` in ``[0, 1]``, class-major.
        y_real: their class ids ``(K * per_class,)``.
        augment: this step's augmentation (siamese per-class draws, or fresh draws).
        iteration: the index of the step being taken (0 for the first).
        shard: which work units of the step this process computes (all of them in one process).
        step_seed: the seed the step's per-unit generators derive from (:meth:`unit_generator`).
    """

    x_real: Tensor
    y_real: Tensor
    augment: StepAugment
    iteration: int
    shard: Shard = field(default_factory=Shard)
    step_seed: int = 0

    def unit_generator(self, unit: int, stream: str) -> torch.Generator:
        """The generator of ``stream`` (``init``, ``syn_aug``, ``real_aug``, ``method``) for work unit ``unit``,
        on the device of the real batch: the same whichever rank computes the unit."""
        return unit_generator(self.step_seed, unit, stream, self.x_real.device)

    def unit_augment(self, unit: int) -> StepAugment:
        """This step's augmentation with fresh (non-siamese) draws taken from work unit ``unit``'s own streams;
        the siamese per-class draw is the step's, shared by every unit."""
        if not self.augment.fresh:
            return self.augment
        return dataclasses.replace(self.augment, synthetic_generator=self.unit_generator(unit, "syn_aug"),
                                   real_generator=self.unit_generator(unit, "real_aug"))

    def training_set(self, side: str, synthetic: SyntheticData) -> tuple[Tensor, Tensor, Tensor]:
        """What a method's network trains on: ``side`` ``real`` (this step's real batch) or ``synthetic`` (the decoded
        set, detached: the network's steps are not part of the step's graph).

        Returns:
            ``(images (N, C, H, W), targets (N,) ids or (N, K) probabilities, labels (N,) class ids)``.
        """
        if side == "real":
            return self.x_real, self.y_real, self.y_real
        with torch.no_grad():
            return synthetic.decode().detach(), synthetic.targets().detach(), synthetic.labels


@dataclass(frozen=True)
class LossPart:
    """One piece of a step's loss, back-propagated on its own.

    Attributes:
        loss: a scalar; the parts of one step sum to the step's loss.
        theta: θ_T of an augmentation-aware unroll that the policy objective may be evaluated on
            (``None`` if the method has none).
        weight: the part's share of the step (the policy objective on ``theta`` is scaled by it).
        augment: the augmentation the unroll to ``theta`` used (its fresh real draws feed the policy
            objective); ``None``: the step's.
        stacked: ``0``, or the number of networks stacked along dim 0 of every ``theta`` tensor (draws
            batched with ``vmap``); the policy objective is then evaluated on each, with ``weight`` each.
    """

    loss: Tensor
    theta: Params | None = None
    weight: float = 1.0
    augment: StepAugment | None = None
    stacked: int = 0

    def thetas(self) -> list[Params]:
        """The networks the policy objective is evaluated on (none, ``theta``, or each stacked one)."""
        if self.theta is None:
            return []
        if not self.stacked:
            return [self.theta]
        return [{k: v[i] for k, v in self.theta.items()} for i in range(self.stacked)]


@dataclass(frozen=True)
class ReplayRecipe:
    """The learned inner training a synthetic set is replayed with: per-step ``lrs`` ``(T,)``, the
    ``schedule`` of decoded images each step sees, and heavy-ball ``momentum``."""

    lrs: Tensor
    schedule: InnerSchedule
    momentum: float


class Method(nn.Module):
    """Base class of distillation methods.

    Subclasses set :attr:`name`, :attr:`default_model` and :attr:`defaults`, and implement
    :meth:`losses`. Learnable tensors of the method itself (step sizes) are ``nn.Parameter`` s of the
    module, optimised beside the synthetic set via :meth:`param_groups`; anything else a resumed run
    needs goes through ``get_extra_state`` / ``set_extra_state``.
    """

    #: ``--method`` name.
    name: ClassVar[str]
    #: the network the method distils with when ``--model`` is not given.
    default_model: ClassVar[ModelConfig]
    #: outer-loop defaults (``optimizer``, ``lr_images``, ``validation``) when not given.
    defaults: ClassVar[dict[str, Any]]
    #: whether :meth:`losses` computes only the work units ``batch.shard`` owns, each drawing its randomness
    #: from ``batch.unit_generator`` / ``batch.unit_augment`` (see :mod:`augdistill.distill.distributed`).
    #: ``False``: every rank computes everything from the shared streams and the loop scales by 1 / ranks.
    shards: ClassVar[bool] = False
    #: whether the matching loss augments both its sides through :meth:`StepAugment.matching` with a graph, so that
    #: ``--policy-adversarial`` can make the policy its adversary.
    adversarial_policy: ClassVar[bool] = False

    def __init__(self, env: MethodEnv) -> None:
        super().__init__()
        self.env = env

    def losses(self, batch: OuterBatch) -> Iterator[LossPart]:
        """Yield the parts of this step's loss (each is back-propagated by the loop as it arrives)."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups of the method's own learnable tensors (default: none)."""
        return []

    def step_metrics(self) -> dict[str, Tensor]:
        """0-d tensors to log after each step (read in the step's one host sync)."""
        return {}

    def after_update(self, batch: OuterBatch) -> None:
        """Called after the synthetic set was updated (gradient matching trains its network here)."""

    def replay_recipe(self) -> ReplayRecipe | None:
        """The learned inner training to replay the set with, if the method learns one."""
        return None

    def export(self) -> dict[str, Any]:
        """Plain values to save beside the decoded set in ``synthetic.pt`` (e.g. a learned step size)."""
        return {}

    def checkpoint_template(self) -> dict[str, Any]:
        """What a checkpoint of this method holds: :meth:`state_dict` with the tensors' shapes and dtypes, where
        an entry that may or may not be present (state that exists only at some steps) is a :class:`MaybeState`."""
        return self.state_dict()


@dataclass(frozen=True)
class MaybeState:
    """A checkpoint entry that is either ``None`` or shaped like ``template`` (a tensor or a nested dict)."""

    template: Any
