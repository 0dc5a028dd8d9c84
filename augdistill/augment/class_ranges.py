"""Per-class magnitude ranges: one policy whose ops' ranges depend on the image's class.

A :class:`ClassRangesPolicy` wraps a :class:`~augdistill.augment.policy.Policy`. The gates, the choice among
ops or sub-policies and the noise are the wrapped policy's, shared by every class; each op's magnitude range
``[low, high]`` is one row of a ``(K, N)`` table per class (InstaAug's input-conditioned ranges, with the class
as the input: a rotation range can be wide for a ``0`` and narrow for a ``6``). Images are augmented in one
call, each within its own class's ranges (``Policy.forward(..., ranges=)``), so there is no per-class loop and
no host synchronisation.

The table is stored per op as :class:`~augdistill.augment.ops.AugmentOp` stores one range, in physical units
(so JSON round-trips exactly): a ``(K,)`` ``high`` and, unless the op is symmetric (``low = 2 identity - high``),
a ``(K,)`` ``low``, clamped into the op's bounds with a gradient that stays alive on them.
:func:`~augdistill.augment.learn.policy_param_groups` gives each op's columns a learning rate scaled by its
allowed range, as it does a policy's own. Ops without magnitude (flips) have no range. The wrapped policy's own
op ranges are unused and stay frozen.

Every class's policy is an ordinary :class:`Policy` (:meth:`ClassRangesPolicy.for_class`), which is how it
exports: :meth:`to_torchvision` gives a :class:`~augdistill.augment.class_conditional.ClassConditional`
transform that takes ``(image, label)`` and applies the label's pipeline.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from augdistill.augment.ops import clamped_range
from augdistill.augment.policy import AugmentParams, Policy
from augdistill.errors import ConfigError

__all__ = ["ClassRangesPolicy"]


class ClassRangesPolicy(nn.Module):
    """A policy with one magnitude range per op and class.

    Args:
        policy: the wrapped policy (its gates, choice weights and composition are shared by every class).
        class_names: one name per class; ``K = len(class_names)`` rows of ranges.
        ranges: optional ``(K, N, 2)`` physical ``(low, high)`` per class and op (ops without magnitude: any
            value, unused; a symmetric op's ``low`` is not read, it mirrors ``high``); default: every class starts
            at the wrapped policy's ranges.

    Shape:
        ``forward(x, labels=labels)``: ``x`` ``(B, C, H, W)`` in ``[0, 1]``, ``labels`` ``(B,)`` class ids in
        ``[0, K)``; output the shape and dtype of ``x``.

    Raises:
        ConfigError: a policy that is not a :class:`Policy`, no class, class names that are not distinct
            strings, ``ranges`` of the wrong shape or outside an op's allowed range.

    Example:
        >>> from augdistill.augment import build_policy
        >>> policy = ClassRangesPolicy(build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 30.0}]),
        ...                            ["upright", "any"])
        >>> torch.stack(policy.for_class(1).ops[0].range()).tolist()
        [-30.0, 30.0]
    """

    def __init__(self, policy: Policy, class_names: Sequence[str], ranges: Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(policy, Policy):
            raise ConfigError(f"ClassRangesPolicy wraps an augdistill Policy, got {type(policy).__name__}")
        names = list(class_names) if isinstance(class_names, (list, tuple)) else None
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"class_names must be a non-empty list of distinct non-empty strings, got "
                              f"{class_names!r:.80}")
        self.policy = policy
        self.class_names = tuple(names)
        if ranges is None:
            ranges = self._policy_ranges().expand(len(names), -1, -1)
        self._check_ranges(ranges, len(names))
        ranges = ranges.detach().to(torch.float64)
        # per op, as AugmentOp stores it: a (K,) ``high`` and, unless symmetric, a (K,) ``low``; physical units
        self.high = nn.ParameterDict({str(i): nn.Parameter(ranges[:, i, 1].clone())
                                      for i, op in enumerate(policy.ops) if op.spec.has_magnitude})
        self.low = nn.ParameterDict({str(i): nn.Parameter(ranges[:, i, 0].clone())
                                     for i, op in enumerate(policy.ops) if op.spec.has_magnitude and not op.symmetric})
        self._freeze_policy_ranges()

    def _policy_ranges(self) -> Tensor:
        """``(1, N, 2)`` the wrapped policy's ranges (identity for ops without magnitude)."""
        rows = []
        for op in self.policy.ops:
            r = op.range()
            rows.append(torch.stack(r).detach() if r is not None else torch.full((2,), op.spec.identity,
                                                                                  dtype=torch.float64))
        return torch.stack(rows).reshape(1, len(rows), 2) if rows else torch.zeros(1, 0, 2, dtype=torch.float64)

    def _check_ranges(self, ranges: Any, classes: int) -> None:
        n = len(self.policy.ops)
        if not isinstance(ranges, Tensor) or tuple(ranges.shape) != (classes, n, 2) or not ranges.is_floating_point():
            raise ConfigError(f"ranges must be a float tensor ({classes}, {n}, 2) of (low, high) per class and op, "
                              f"got {type(ranges).__name__} {tuple(getattr(ranges, 'shape', ()))}")
        for i, op in enumerate(self.policy.ops):
            if not op.spec.has_magnitude:
                continue
            lo_b, hi_b = op.spec.bounds  # type: ignore[misc]
            column = ranges[:, i].detach().to(torch.float64)
            if not bool(torch.isfinite(column).all()) or float(column.min()) < lo_b or float(column.max()) > hi_b:
                raise ConfigError(f"ranges of op {i} ({op.name}) must lie in its allowed ({lo_b}, {hi_b}) "
                                  f"{op.spec.unit}, got {column.tolist()!r:.120}")

    def _freeze_policy_ranges(self) -> None:
        for op in self.policy.ops:
            for p in (op.low, op.high):
                if p is not None:
                    p.requires_grad_(False)

    def requires_grad_(self, requires_grad: bool = True) -> "ClassRangesPolicy":
        """As ``nn.Module.requires_grad_``; the wrapped policy's own ranges (unused) stay frozen."""
        super().requires_grad_(requires_grad)
        self._freeze_policy_ranges()
        return self

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_classes(self, num_classes: int, source: str) -> None:
        """Refuse data of another class count than this policy's ranges (``source`` names the policy in the error).

        Raises:
            ConfigError: ``num_classes`` differs from :attr:`num_classes`.
        """
        if num_classes != self.num_classes:
            raise ConfigError(f"{source}: a per-class policy of {self.num_classes} classes "
                              f"({', '.join(self.class_names)[:80]}) cannot augment data of {num_classes} classes")

    @property
    def ops(self) -> nn.ModuleList:
        """The wrapped policy's ops (names, probabilities; their ranges are the table's)."""
        return self.policy.ops

    def op_ranges(self, i: int) -> tuple[Tensor, Tensor] | None:
        """Op ``i``'s ``(low, high)`` per class, each ``(K,)`` float64, clamped into its bounds (differentiable,
        gradient alive on the bounds; a symmetric op's ``low`` mirrors its ``high``); ``None`` without magnitude."""
        spec = self.policy.ops[i].spec
        if not spec.has_magnitude:
            return None
        return clamped_range(spec, self.low[str(i)] if str(i) in self.low else None, self.high[str(i)])

    def table(self) -> Tensor:
        """``(K, N, 2)`` physical ``(low, high)`` per class and op, differentiable (ops without magnitude: their
        identity, a constant)."""
        device = self._device()
        columns = []
        for i, op in enumerate(self.policy.ops):
            ends = self.op_ranges(i)
            if ends is None:
                ends = (torch.full((self.num_classes,), op.spec.identity, dtype=torch.float64, device=device),) * 2
            columns.append(torch.stack(ends, dim=-1))
        if not columns:
            return torch.zeros(self.num_classes, 0, 2, dtype=torch.float64, device=device)
        return torch.stack(columns, dim=1)

    def _device(self) -> torch.device:
        """Where the policy's tensors live (the wrapped policy's gates are always there)."""
        return next(self.parameters(), torch.empty(0)).device

    def ranges(self, labels: Tensor) -> Tensor:
        """``(B, N, 2)`` the ranges of each image's class (``labels`` ``(B,)`` class ids)."""
        return self.table()[labels]

    # --- the Policy interface ---------------------------------------------------------------------

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> AugmentParams:
        """The wrapped policy's noise for ``batch_size`` images (see :meth:`Policy.sample`)."""
        return self.policy.sample(batch_size, generator=generator, device=device)

    def forward(self, x: Tensor, params: AugmentParams | None = None, *, labels: Tensor | None = None,
                generator: torch.Generator | None = None, augment: bool | None = None) -> Tensor:
        """Augment ``x`` ``(B, C, H, W)``, each image within the ranges of its class ``labels`` ``(B,)``.

        Raises:
            ConfigError: no ``labels``, labels that are not ``B`` integer class ids on ``x``'s device, or (checked
                on CPU, where it needs no device synchronisation) outside ``[0, K)``; anything
                :meth:`Policy.forward` refuses.
        """
        if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32) or labels.dim() != 1:
            raise ConfigError("a per-class policy needs labels: integer class ids (B,), "
                              f"got {type(labels).__name__} {getattr(labels, 'dtype', '')} "
                              f"{tuple(getattr(labels, 'shape', ()))}")
        if isinstance(x, Tensor) and (labels.shape[0] != x.shape[0] or labels.device != x.device):
            raise ConfigError(f"labels {tuple(labels.shape)} on {labels.device} do not fit the batch "
                              f"{tuple(x.shape)} on {x.device}")
        if labels.device.type == "cpu" and labels.numel() and not (0 <= int(labels.min()) and
                                                                  int(labels.max()) < self.num_classes):
            raise ConfigError(f"labels must be class ids in [0, {self.num_classes}), got values "
                              f"{int(labels.min())}..{int(labels.max())}")
        return self.policy(x, params, generator=generator, augment=augment, ranges=self.ranges(labels))

    def width(self) -> Tensor:
        """:meth:`Policy.width` of each class's policy, averaged over the classes (0-d float64, differentiable)."""
        spans = []
        for i, op in enumerate(self.policy.ops):
            ends = self.op_ranges(i)
            if ends is None:  # an op without magnitude counts its probability alone
                spans.append(torch.ones((), dtype=torch.float64, device=self._device()))
                continue
            lo_b, hi_b = op.spec.bounds  # type: ignore[misc]
            spans.append(((ends[1] - ends[0]).abs() / (hi_b - lo_b)).mean())
        return self.policy.width(spans=torch.stack(spans) if spans else None)

    def op_labels(self) -> list[str]:
        return self.policy.op_labels()

    def magnitudes(self) -> dict[str, Tensor]:
        """``label -> (2,) tensor [low, high]``, each the mean over the classes (detached float64; flips omitted),
        as :meth:`Policy.magnitudes` (what a run's history and the JSON's ``ops`` record); :meth:`table` has every
        class's."""
        table = self.table().detach().mean(dim=0)
        return {label: table[i] for i, label in enumerate(self.op_labels()) if self.policy.ops[i].spec.has_magnitude}

    def probabilities(self) -> dict[str, Tensor]:
        return self.policy.probabilities()

    # --- one class as an ordinary policy, and export ---------------------------------------------

    def for_class(self, k: int) -> Policy:
        """Class ``k``'s policy: the wrapped policy with class ``k``'s ranges, an ordinary :class:`Policy`."""
        from augdistill.augment.serialization import policy_from_dict
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_classes:
            raise ConfigError(f"class index must be an integer in [0, {self.num_classes}), got {k!r:.40}")
        data = self.policy.to_dict()
        table = self.table().detach()
        for i, op in enumerate(data["ops"]):
            if op["magnitude"] is not None:
                low, high = sorted((float(table[k, i, 0]), float(table[k, i, 1])))
                op["magnitude"].update(low=low, high=high)
        return policy_from_dict(data, source=f"class {self.class_names[k]!r} of a per-class policy")

    def to_dict(self, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The wrapped policy's dict (schema in ``policies/README.md``) plus ``class_ranges``."""
        from augdistill.augment.serialization import class_ranges_to_dict
        return class_ranges_to_dict(self, provenance)

    to_json = Policy.to_json  # both only call ``to_dict``
    save = Policy.save

    def to_torchvision(self) -> Any:
        """A :class:`~augdistill.augment.class_conditional.ClassConditional` of each class's v2 pipeline: call it
        with ``(image, label)``. See :func:`augdistill.augment.export.to_torchvision`."""
        from augdistill.augment.export import to_torchvision
        return to_torchvision(self)

    def to_kornia(self) -> Any:
        """A :class:`~augdistill.augment.class_conditional.ClassConditional` of each class's kornia pipeline: call
        it with a batch and its labels ``(B,)``. See :func:`augdistill.augment.export.to_kornia`."""
        from augdistill.augment.export import to_kornia
        return to_kornia(self)
