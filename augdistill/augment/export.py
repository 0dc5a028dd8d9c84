"""Export a :class:`~augdistill.augment.policy.Policy` to torchvision v2 or kornia pipelines.

The exported pipelines apply the same ops with the same ranges and probabilities, *sampled* and
without gradients; each op is resampled on its own (no fused warp), with the library's own
interpolation. Compositions map to ``Compose`` / ``RandomChoice`` (torchvision) and
``AugmentationSequential(random_apply=1)`` (kornia). Caveats, documented rather than hidden:

* torchvision v2 transforms draw one set of parameters per call, so apply them per image (e.g.
  in a ``Dataset``); kornia draws per sample, but chooses one op / sub-policy per *batch*.
* torchvision's ``RandomAffine`` rounds translations to whole pixels.

An op without an exact equivalent raises :class:`~augdistill.errors.ConfigError` naming the op and
the reason; nothing is silently dropped.
"""

from __future__ import annotations

from typing import Any

import torch

from augdistill.augment.policy import Policy
from augdistill.errors import ConfigError

__all__ = ["to_torchvision", "to_kornia"]


@torch.no_grad()
def _op_args(policy: Policy, library: str) -> list[tuple[Any, float, float, float]]:
    """``(factory, low, high, p)`` per op, raising for ops the library cannot express."""
    out = []
    for label, op in zip(policy.op_labels(), policy.ops):
        factory = getattr(op.spec, library)
        if isinstance(factory, str):
            raise ConfigError(f"op {label!r} has no exact {library} equivalent: {factory}; apply the policy "
                              "module itself" + (" or use to_kornia()" if library == "torchvision" else ""))
        bounds = op.range()
        low, high = (0.0, 0.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
        out.append((factory, low, high, float(op.prob())))
    return out


def _choice_weights(policy: Policy) -> list[float]:
    return [float(w) for w in policy.selection_probabilities().detach()]  # type: ignore[union-attr]


def to_torchvision(policy: Policy) -> Any:
    """A ``torchvision.transforms.v2`` transform for ``(C, H, W)`` images in ``[0, 1]``.

    Every op is ``v2.RandomApply([transform], p)``; ``sequential`` is a ``v2.Compose``,
    ``choose-one`` and ``sub-policies`` a ``v2.RandomChoice`` with the normalised weights.

    Raises:
        ConfigError: an op has no exact torchvision equivalent (``brightness`` is additive here but
            multiplicative in torchvision; ``sharpness`` ranges; ``cutout``), or an asymmetric translation.

    Example:
        >>> from augdistill.augment import build_policy
        >>> pipeline = to_torchvision(build_policy([{"name": "rotate", "magnitude": 15.0, "probability": 0.5}]))
        >>> pipeline.transforms[0].p, pipeline.transforms[0].transforms[0].degrees
        (0.5, [-15.0, 15.0])
    """
    from torchvision.transforms import v2

    ops = [v2.RandomApply([factory(low, high)], p=p) for factory, low, high, p in _op_args(policy, "torchvision")]
    if policy.composition == "sequential":
        return v2.Compose(ops)
    groups = [v2.Compose([ops[i] for i in group]) for group in policy.groups]
    return v2.RandomChoice(groups, p=_choice_weights(policy))


def to_kornia(policy: Policy) -> Any:
    """A kornia ``AugmentationSequential`` for ``(B, C, H, W)`` batches in ``[0, 1]``.

    Raises:
        ConfigError: an op has no exact kornia equivalent (``cutout``) or an asymmetric translation.

    Example:
        >>> from augdistill.augment import build_policy
        >>> aug = to_kornia(build_policy(["rotate", "brightness"]))
        >>> aug(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 1, 8, 8])
    """
    import kornia.augmentation as K

    ops = [factory(low, high, p) for factory, low, high, p in _op_args(policy, "kornia")]
    if policy.composition == "sequential":
        return K.AugmentationSequential(*ops)
    groups = [K.ImageSequential(*[ops[i] for i in group]) for group in policy.groups]
    return K.AugmentationSequential(*groups, random_apply=1, random_apply_weights=_choice_weights(policy))
