"""Selection on the validation split: how good is the current synthetic set?

Two ways, chosen per method (``OuterConfig.validation``):

* ``replay`` — fresh θ₀, then exactly the learned inner steps (methods that learn them, Wang et al.);
* ``standard`` — train fresh evaluation networks (ConvNet-3, instance norm; the standard protocol
  shortened to ``val_epochs``) on the decoded set, with the run's policy if it has one.

Validation draws its augmentation and its networks from fixed seeds of its own, never from a
training stream, so selecting does not change what is learned.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from augdistill.data import DatasetInfo, Split
from augdistill.distill.methods import ReplayRecipe
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule
from augdistill.train.evaluate import StandardProtocol, replay_accuracies, standard_accuracies

__all__ = ["validation_accuracies", "VALIDATION_SEED", "policy_augment", "replay_augment"]

#: Validation and evaluation draw their augmentation and networks from their own fixed stream.
VALIDATION_SEED = 10_000


def policy_augment(policy: nn.Module, generator: torch.Generator):  # noqa: ANN201 - a closure
    """``augment(x, labels=None)``: a fresh draw of ``policy`` from ``generator`` for every call, applied to ``x``
    ``(B, C, H, W)`` whose class ids are ``labels`` ``(B,)`` (a per-class policy needs them; others ignore them).

    :func:`replay_augment` adapts it to the inner trainer's ``augment(x, step)``.
    """
    def augment(x: Tensor, labels: Tensor | None = None) -> Tensor:
        return policy(x, params=policy.sample(x.shape[0], generator=generator, device=x.device), labels=labels)
    return augment


def replay_augment(policy: nn.Module, generator: torch.Generator, targets: Tensor, schedule: InnerSchedule
                   ):  # noqa: ANN201 - a closure
    """``augment(x, step)`` for the inner trainer's replay of ``schedule`` on a set with ``targets`` (ids ``(N,)`` or
    probabilities ``(N, K)``): :func:`policy_augment` given the class ids of step ``step``'s minibatch."""
    augment = policy_augment(policy, generator)
    labels = targets if targets.dim() == 1 else targets.argmax(1)

    def apply(x: Tensor, step: int) -> Tensor:
        return augment(x, labels[schedule.on(x.device)[step % schedule.steps]])
    return apply


def validation_accuracies(kind: str, *, model: nn.Module, images: Tensor, targets: Tensor,
                          recipe: ReplayRecipe | None, val: Split, info: DatasetInfo, nets: int, epochs: int,
                          policy: nn.Module | None, first_padding: int | None = None) -> Tensor:
    """Accuracies ``(nets,)`` on ``val`` of networks trained on ``images`` / ``targets`` (detached).

    Args:
        kind: ``replay`` (needs ``recipe``) or ``standard``.
        model: the distillation network (replay).
        policy: augmentation applied while training (replay: the learned steps are augmented as in
            training; standard: the evaluation networks train with it).
        epochs: standard-protocol epochs.
        first_padding: the standard-protocol ConvNet's first padding (the run's ``--first-padding``).
    """
    seeds = [VALIDATION_SEED + i for i in range(nets)]
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    if kind == "replay":
        if recipe is None:
            raise ConfigError("--validation replay needs a method that learns its inner steps (wang); "
                              "use --validation standard")
        return replay_accuracies(model, images, targets, recipe.lrs, recipe.schedule, val, seeds,
                                 momentum=recipe.momentum,
                                 augment=(replay_augment(policy, generator, targets, recipe.schedule)
                                          if policy is not None else None))
    augment = policy_augment(policy, generator) if policy is not None else None
    return standard_accuracies(images, targets, info, val, seeds, StandardProtocol.padded(first_padding, epochs=epochs),
                               augment)
