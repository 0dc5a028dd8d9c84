"""How the augmentation policy learns, for every method.

The augmentation objective is the loss of a network θ_T, trained on the augmented synthetic set by the
shared inner trainer, on ``copies`` augmented copies of the real batch, minus ``width_weight`` times the
policy's width (Augerino's bonus that keeps the policy from collapsing to the identity).

* Methods whose loss already unrolls the inner trainer on augmented synthetic data (Wang et al.)
  hand their θ_T over (:attr:`LossPart.theta`) and the objective is evaluated on it, so one backward
  pass reaches both the synthetic set and the policy.
* For the others (gradient and distribution matching), :meth:`PolicyObjective.standalone` unrolls
  its own ``inner_steps`` steps from a fresh θ₀ on the *detached* decoded set, so only the policy
  learns from it; their matching loss sees the policy frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.config import PolicyConfig
from augdistill.distill.synthetic import SyntheticData
from augdistill.inner import InnerSchedule, StepAugment, unroll
from augdistill.models import sample_params
from augdistill.typing import Params

__all__ = ["PolicyObjective"]


class PolicyObjective:
    """The augmented-real loss with the width bonus.

    Args:
        policy: the learnable policy (its ``width()`` is a differentiable scalar).
        config: ``copies`` (J), ``width_weight`` (λ), ``aug_weight`` (scale of the whole term) and,
            for :meth:`standalone`, ``inner_steps`` and ``inner_lr``.

    Example:
        >>> import torch
        >>> from augdistill.augment import build_policy
        >>> from augdistill.models import build_model, sample_params
        >>> from augdistill.inner import AugmentStream
        >>> policy = build_policy(["rotate"], image_size=(4, 4))
        >>> net = build_model("mlp", (1, 4, 4), 2, width=8)
        >>> aug = AugmentStream(policy, torch.Generator(), torch.Generator(), num_classes=2, siamese=False).step()
        >>> loss = PolicyObjective(policy, PolicyConfig(mode="learn"))(
        ...     net, sample_params(net, torch.Generator()), torch.rand(4, 1, 4, 4), torch.tensor([0, 0, 1, 1]), aug)
        >>> loss.backward(); policy.ops[0].high.grad is not None
        True
    """

    def __init__(self, policy: nn.Module, config: PolicyConfig) -> None:
        self.policy, self.config = policy, config

    def __call__(self, model: nn.Module, theta: Params, x_real: Tensor, y_real: Tensor, augment: StepAugment) -> Tensor:
        """``aug_weight * (CE(θ_T; J augmented copies of the real batch) − λ · width)``, a scalar."""
        cfg = self.config
        augmented = torch.cat([augment.real(x_real, y_real) for _ in range(cfg.copies)])
        loss = F.cross_entropy(functional_call(model, theta, (augmented,)), y_real.repeat(cfg.copies))
        return cfg.aug_weight * (loss - cfg.width_weight * self.policy.width())

    def standalone(self, model: nn.Module, synthetic: SyntheticData, x_real: Tensor, y_real: Tensor,
                   augment: StepAugment, generator: torch.Generator) -> Tensor:
        """Unroll ``inner_steps`` full-batch steps at ``inner_lr`` from θ₀ ~ p(θ) (drawn with ``generator``) on
        the augmented, detached decoded set, then evaluate :meth:`__call__` on the result."""
        cfg = self.config
        images, targets, labels = synthetic.decode().detach(), synthetic.targets().detach(), synthetic.labels
        schedule = InnerSchedule.full_batch(images.shape[0], cfg.inner_steps, 1)
        lrs = torch.full((cfg.inner_steps,), cfg.inner_lr, device=images.device)
        theta = unroll(model, sample_params(model, generator), images, targets, lrs, schedule,
                       augment=lambda x, t: augment.synthetic(x, labels))
        return self(model, theta, x_real, y_real, augment)
