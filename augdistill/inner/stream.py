"""Augmentation draws for one outer step, handed to a method explicitly.

An :class:`AugmentStream` owns the policy and the two generators that augmentation draws from.
Each outer step asks it for a :class:`StepAugment`: with ``siamese`` it holds one draw per class
(DSA's siamese augmentation: every real and every synthetic image of class ``c`` gets the draw of
class ``c``), otherwise every call draws afresh (synthetic batches from one generator, real batches
from the other). Nothing travels through hidden attributes: the draw is a field of the value the
method receives.

Example:
    >>> import torch
    >>> from augdistill.augment import build_policy
    >>> policy = build_policy(["rotate"], image_size=(8, 8), probability=1.0)
    >>> stream = AugmentStream(policy, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1),
    ...                        num_classes=2, siamese=True)
    >>> aug = stream.step()
    >>> x, labels = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    >>> torch.equal(aug.real(x, labels), aug.synthetic(x, labels))
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["AugmentStream", "StepAugment", "scale_gradient", "select_rows"]


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; the backward multiplies the incoming gradient by a constant."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged, but the gradient that reaches ``x`` through the result is multiplied by ``scale``
    (a negative ``scale`` reverses it: what the loss descends, ``x`` ascends).

    Example:
        >>> x = torch.tensor(2.0, requires_grad=True)
        >>> (scale_gradient(x, -0.5) ** 2).backward(); x.grad.item()
        -2.0
    """
    return _ScaleGradient.apply(x, scale)


def select_rows(draw: Any, rows: Tensor) -> Any:
    """The same augmentation draw re-indexed along its batch dimension (``None`` fields stay ``None``)."""
    return type(draw)(**{f.name: None if getattr(draw, f.name) is None else getattr(draw, f.name)[rows]
                         for f in dataclasses.fields(draw)})


@dataclass(frozen=True)
class StepAugment:
    """How one outer step augments its real and synthetic batches.

    Attributes:
        policy: the augmentation policy, or ``None`` (both calls are then the identity).
        class_draw: one draw per class (``num_classes`` rows) when siamese, else ``None``.
        synthetic_generator, real_generator: where fresh (non-siamese) draws come from.
        policy_grad: the factor on the gradient the policy's parameters receive through the augmented
            images: 1 as computed, 0 none (the policy is read detached), negative: reversed.
        matching_grad: the factor a matching loss passes on (:meth:`matching`): 0, so that the matching
            loss cannot move the policy (it learns from the augmentation objective only), unless the step is
            :meth:`adversarial`.
    """

    policy: nn.Module | None
    class_draw: Any
    synthetic_generator: torch.Generator
    real_generator: torch.Generator
    policy_grad: float = 1.0
    matching_grad: float = 0.0

    @property
    def active(self) -> bool:
        return self.policy is not None

    @property
    def fresh(self) -> bool:
        """Whether batches draw afresh from the generators (an active policy without a siamese class draw)."""
        return self.active and self.class_draw is None

    @property
    def carries_gradient(self) -> bool:
        """Whether augmented batches carry gradient to the policy's parameters."""
        return self.active and self.policy_grad != 0

    def frozen(self) -> "StepAugment":
        """The same draws, applied with the policy's parameters detached."""
        return dataclasses.replace(self, policy_grad=0.0)

    def matching(self) -> "StepAugment":
        """The view through which a matching loss that can have the policy as its adversary
        (``Method.adversarial_policy``, e.g. distribution matching) augments: frozen, or with the gradient reversed
        on an :meth:`adversarial` step."""
        return dataclasses.replace(self, policy_grad=self.matching_grad)

    def adversarial(self, weight: float) -> "StepAugment":
        """This step with the policy as the matching loss's adversary: through :meth:`matching` views the policy
        receives ``-weight`` times the loss's gradient, so it ascends the loss the synthetic set descends
        (Adversarial AutoAugment, Zhang et al. 2020, arXiv 1912.11188)."""
        return dataclasses.replace(self, matching_grad=-weight)

    def training_draws(self) -> "StepAugment":
        """The augmentation a network trains with inside a step: a new draw for every call (no class draw),
        the policy frozen (DSA trains its networks with ordinary random augmentation)."""
        return dataclasses.replace(self.frozen(), class_draw=None)

    def synthetic(self, x: Tensor, labels: Tensor) -> Tensor:
        """Augment a synthetic batch ``(B, C, H, W)`` whose class ids are ``labels`` ``(B,)``."""
        return self._apply(x, labels, self.synthetic_generator)

    def real(self, x: Tensor, labels: Tensor) -> Tensor:
        """Augment a real batch ``(B, C, H, W)`` whose class ids are ``labels`` ``(B,)``."""
        return self._apply(x, labels, self.real_generator)

    def _apply(self, x: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        if self.policy is None:
            return x
        if self.class_draw is not None:
            params = select_rows(self.class_draw, labels)
        else:
            params = self.policy.sample(x.shape[0], generator=generator, device=x.device)
        if self.policy_grad == 1:
            return self.policy(x, params=params, labels=labels)
        parameters = {name: p.detach() if self.policy_grad == 0 else scale_gradient(p, self.policy_grad)
                      for name, p in self.policy.named_parameters()}
        return functional_call(self.policy, parameters, (x,), {"params": params, "labels": labels})


class AugmentStream:
    """The source of every training-time augmentation draw of a run.

    Args:
        policy: the policy module (``sample(B, generator=, device=)`` and ``forward(x, params=, labels=)``), or
            ``None`` for no augmentation.
        synthetic_generator: draws for synthetic batches, and the per-class siamese draws.
        real_generator: fresh draws for real batches (non-siamese).
        num_classes: rows of a siamese class draw.
        siamese: one draw per class per outer step, shared by real and synthetic images.
        device: where the draws are moved.
    """

    def __init__(self, policy: nn.Module | None, synthetic_generator: torch.Generator,
                 real_generator: torch.Generator, *, num_classes: int, siamese: bool,
                 device: torch.device | str = "cpu") -> None:
        self.policy = policy
        self.synthetic_generator, self.real_generator = synthetic_generator, real_generator
        self.num_classes, self.siamese, self.device = num_classes, siamese, torch.device(device)

    def step(self) -> StepAugment:
        """The augmentation of one outer step (draws the per-class draw now when siamese)."""
        draw = None
        if self.policy is not None and self.siamese:
            draw = self.policy.sample(self.num_classes, generator=self.synthetic_generator, device=self.device)
        return StepAugment(self.policy, draw, self.synthetic_generator, self.real_generator)
