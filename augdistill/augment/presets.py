"""Ready-made policies: DSA's fixed augmentation and the identity."""

from __future__ import annotations

from augdistill.augment.policy import Policy, build_policy

__all__ = ["dsa_policy", "identity_policy"]


def dsa_policy(image_size: tuple[int, int] | None = None, flip: bool = True) -> Policy:
    """Differentiable Siamese Augmentation's fixed set (Zhao & Bilen 2021, ``ParamDiffAug``).

    DSA's default ``'S'`` mode applies one family per call, chosen uniformly from
    ``color_crop_cutout_flip_scale_rotate``; here that is a ``sub-policies`` policy with equal
    weights (chosen per sample) and every op at probability 1:

    ==========  ==============================================  =================================
    family      DSA                                             here
    ==========  ==============================================  =================================
    color       brightness ``+U(-0.5, 0.5)``, saturation        brightness [-0.5, 0.5] delta,
                ``x U(0, 2)``, contrast ``x U(0.5, 1.5)``       saturation [0, 2], contrast [0.5, 1.5]
    crop        shift by up to ``±0.125`` of the side           translate-x, translate-y ±0.125
    cutout      zero a square of side 0.5                       cutout [0.5, 0.5]
    flip        mirror with probability 0.5                     hflip (DSA flips half the time, so
                                                                its p is 0.5)
    scale       per-axis factor ``U(1/1.2, 1.2)``               isotropic scale [0.8, 1.2]
    rotate      ``U(-15°, 15°)``                                rotate ±15°
    ==========  ==============================================  =================================

    Differences: our colour ops clip to ``[0, 1]``; translations are sub-pixel (DSA's are whole
    pixels); scale is isotropic; the family is drawn per sample rather than per batch.

    Args:
        image_size: ``(H, W)`` metadata.
        flip: include the flip family (DSA drops it for digit datasets, where mirroring changes labels).

    Example:
        >>> import torch
        >>> policy = dsa_policy((32, 32)).train()
        >>> len(policy.groups), policy.magnitudes()["rotate"].tolist()
        (6, [-15.0, 15.0])
        >>> policy(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    families = [
        [{"name": "brightness", "probability": 1.0, "magnitude": 0.5},
         {"name": "saturation", "probability": 1.0, "magnitude": 1.0},
         {"name": "contrast", "probability": 1.0, "magnitude": 0.5}],
        [{"name": "translate-x", "probability": 1.0, "magnitude": 0.125},
         {"name": "translate-y", "probability": 1.0, "magnitude": 0.125}],
        [{"name": "cutout", "probability": 1.0, "magnitude": (0.5, 0.5)}],
        [{"name": "hflip", "probability": 0.5}],
        [{"name": "scale", "probability": 1.0, "magnitude": (0.8, 1.2), "symmetric": True}],
        [{"name": "rotate", "probability": 1.0, "magnitude": 15.0}],
    ]
    if not flip:
        families = [f for f in families if f[0]["name"] != "hflip"]
    return build_policy(families, "sub-policies", image_size=image_size)


def identity_policy(image_size: tuple[int, int] | None = None) -> Policy:
    """The policy with no ops: ``policy(x)`` returns ``x``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 8, 8)
        >>> identity_policy().train()(x) is x
        True
    """
    return Policy([], "sequential", image_size=image_size)
