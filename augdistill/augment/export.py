"""Export a :class:`~augdistill.augment.policy.Policy` to torchvision v2 or kornia, as objects or as code.

Every op exports. The pipelines sample the same distribution as the policy: each op's value is
uniform in its current range and the op applies with its probability; ``choose-one`` /
``sub-policies`` draw one op / sub-policy per image (torchvision) or per sample (kornia) with the
normalised weights. They are sampled without gradients; each op resamples the image on its own
(the policy fuses consecutive geometric ops into one warp), with bilinear interpolation and zero fill.

Where the library has an exact transform it is used (``RandomRotation``, ``RandomAffine`` for scale
and shear, ``RandomHorizontalFlip``, ``ColorJitter`` for contrast, saturation and hue; kornia's
brightness and sharpness); the rest are this package's small classes in
:mod:`~augdistill.augment.torchvision_ops` and :mod:`~augdistill.augment.kornia_ops`. An empty policy
exports to ``v2.Identity()`` / ``nn.Identity()``. A per-class policy
(:class:`~augdistill.augment.class_ranges.ClassRangesPolicy`) exports to a
:class:`~augdistill.augment.class_conditional.ClassConditional` of its classes' pipelines, which takes
``(image, label)``.

:func:`python_snippet` prints the same pipeline as pasteable code. It inlines the source of the
package classes it needs rather than importing them, so the snippet runs where only torch,
torchvision (or kornia) are installed; it is built from the very same description as
:func:`to_torchvision` / :func:`to_kornia`, so the two cannot disagree.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch

from augdistill.augment.codegen import Call, definitions_source, imports_source
from augdistill.augment.policy import Policy
from augdistill.errors import ConfigError

__all__ = ["to_torchvision", "to_kornia", "python_snippet", "pipeline_call"]

Target = Literal["torchvision", "kornia"]
_TARGETS = ("torchvision", "kornia")


def _own_module(to: Target) -> ModuleType:
    """This package's transform classes for ``to`` (imported on first export: only export needs them)."""
    return importlib.import_module(f"augdistill.augment.{to}_ops")


@torch.no_grad()
def pipeline_call(policy: Policy, to: Target) -> Call:
    """The pipeline for ``to`` (``"torchvision"`` or ``"kornia"``) as a :class:`~augdistill.augment.codegen.Call` tree.

    Example:
        >>> from augdistill.augment import build_policy
        >>> policy = build_policy([{"name": "hflip", "probability": 0.25}, "brightness"])
        >>> print(pipeline_call(policy, "torchvision").code())
        v2.Compose([
            v2.RandomApply([v2.RandomHorizontalFlip(p=1.0)], p=0.25),
            v2.RandomApply([RandomBrightnessDelta(low=-0.2, high=0.2)], p=0.5),
        ])
    """
    from augdistill.augment.class_ranges import ClassRangesPolicy
    if to not in _TARGETS:
        raise ConfigError(f"export target {to!r:.40} unknown; expected one of {', '.join(_TARGETS)}")
    if isinstance(policy, ClassRangesPolicy):  # each class's own pipeline, chosen by the label
        return Call("ClassConditional", ([pipeline_call(policy.for_class(k), to) for k in range(policy.num_classes)],))
    if not isinstance(policy, Policy):
        raise ConfigError(f"expected a Policy, got {type(policy).__name__}")
    ops = []
    for op in policy.ops:
        bounds = op.range()
        low, high = (0.0, 0.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
        p = float(op.prob())
        ops.append(Call("v2.RandomApply", ([op.spec.torchvision(low, high)],), {"p": p}) if to == "torchvision"
                   else op.spec.kornia(low, high, p))
    sequence = "v2.Compose" if to == "torchvision" else "K.AugmentationSequential"
    identity = "v2.Identity" if to == "torchvision" else "nn.Identity"

    def chain(items: list[Call]) -> Call:
        return Call(sequence, (items,)) if to == "torchvision" else Call(sequence, tuple(items))

    if policy.composition == "sequential":
        return chain(ops) if ops else Call(identity)
    branches = [chain([ops[i] for i in group]) if group else Call(identity) for group in policy.groups]
    weights = [max(float(w), 0.0) for w in policy.weights]  # type: ignore[union-attr]  # both normalise
    if to == "torchvision":
        return Call("v2.RandomChoice", (branches,), {"p": weights})
    return Call("RandomChoice", (branches,), {"weights": weights})


def _namespace(to: Target) -> dict[str, Any]:
    """What the calls of :func:`pipeline_call` refer to: the library, ``nn`` and the package's classes."""
    own = _own_module(to)
    library = {"v2": "torchvision.transforms.v2"} if to == "torchvision" else {"K": "kornia.augmentation"}
    return {**{alias: importlib.import_module(name) for alias, name in library.items()}, "nn": torch.nn,
            **{name: getattr(own, name) for name in own.__all__}}


def to_torchvision(policy: Policy) -> Any:
    """A ``torchvision.transforms.v2`` transform for single ``(C, H, W)`` images: tensors or PIL.

    Every op is ``v2.RandomApply([transform], p)``; ``sequential`` is a ``v2.Compose``,
    ``choose-one`` and ``sub-policies`` a ``v2.RandomChoice`` with the normalised weights; an empty
    policy is ``v2.Identity()``. Transforms draw one set of parameters per call, so apply the
    pipeline per image (e.g. in a ``Dataset``); it is picklable, for ``DataLoader`` workers.

    Example:
        >>> from augdistill.augment import build_policy
        >>> pipeline = to_torchvision(build_policy([{"name": "rotate", "magnitude": 15.0, "probability": 0.5}]))
        >>> pipeline.transforms[0].p, pipeline.transforms[0].transforms[0].degrees
        (0.5, [-15.0, 15.0])
    """
    return pipeline_call(policy, "torchvision").build(_namespace("torchvision"))


def to_kornia(policy: Policy) -> Any:
    """A kornia module for ``(B, C, H, W)`` float batches in ``[0, 1]``, drawing per sample.

    ``sequential`` is a ``K.AugmentationSequential``; ``choose-one`` and ``sub-policies`` a
    :class:`~augdistill.augment.kornia_ops.RandomChoice` (one branch per sample); an empty policy
    is ``nn.Identity()``.

    Example:
        >>> from augdistill.augment import build_policy
        >>> aug = to_kornia(build_policy(["rotate", "brightness", "cutout"]))
        >>> aug(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 1, 8, 8])
    """
    return pipeline_call(policy, "kornia").build(_namespace("kornia"))


def python_snippet(policy_or_path: Policy | str | Path, to: Target = "torchvision") -> str:
    """Pasteable Python source that builds the exported pipeline as ``pipeline``.

    Args:
        policy_or_path: a :class:`Policy` or the path of a policy JSON file.
        to: ``"torchvision"`` (per-image ``v2`` transform) or ``"kornia"`` (batch module).

    Returns:
        Source importing only torch, torchvision / kornia (and PIL for torchvision), with the
        definitions of the package's small transform classes it uses inlined.

    Raises:
        PolicyFormatError: the file is not a valid policy.
        ConfigError: ``to`` is not ``"torchvision"`` or ``"kornia"``.

    Example:
        >>> from augdistill.augment import build_policy
        >>> code = python_snippet(build_policy(["brightness"]), to="torchvision")
        >>> namespace = {}
        >>> exec(code, namespace)
        >>> namespace["pipeline"](torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """
    from augdistill.augment.serialization import load_policy

    policy = policy_or_path if isinstance(policy_or_path, torch.nn.Module) else load_policy(policy_or_path)
    call = pipeline_call(policy, to)
    module = _own_module(to)
    own = [getattr(module, name) for name in module.__all__ if name in call.names()]
    header = f"# Augmentation pipeline exported from an augdistill policy ({to}).\n"
    parts = [header + imports_source(module)]
    if own:
        parts.append(definitions_source(own))
    parts.append(f"pipeline = {call.code()}")
    return "\n\n\n".join(parts) + "\n"
