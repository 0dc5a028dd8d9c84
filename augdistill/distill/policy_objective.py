"""How the augmentation policy learns, for every method.

The augmentation objective is the loss of a network θ on ``copies`` augmented copies of the real batch,
minus ``width_weight`` (λ) times the policy's width (Augerino's bonus that keeps the policy from collapsing
to the identity): ``aug_weight · (CE(θ; A(x_real)) − λ · width)``. Which network θ is:

* Methods whose loss already unrolls the inner trainer on augmented synthetic data (Wang et al., MTT)
  hand their θ_T over (:attr:`LossPart.theta`) and the objective is evaluated on it, so one backward
  pass reaches both the synthetic set and the policy.
* For the others (gradient and distribution matching), :meth:`PolicyObjective.standalone` supplies θ,
  as ``config.critic`` says:

  - ``unroll``: ``inner_steps`` differentiable steps at ``inner_lr`` from a fresh θ₀ on the augmented,
    *detached* decoded set. The policy gets gradient both through the unroll and through ``A(x_real)``.
    (A short unroll of a fresh network barely trains it: its loss is near ``log K`` whatever the
    augmentation, so the width bonus decides alone.)
  - ``real``: a :class:`Critic`, a persistent network trained alongside the run on augmented real batches
    (Augerino, Benton et al. 2020): it becomes invariant to what the policy does, so its loss on
    ``A(x_real)`` rises exactly where the policy destroys class information.
  - ``synthetic``: a :class:`Critic` trained on the augmented synthetic set the way evaluation networks
    are (and restarted every ``critic_reset`` steps, as they start from scratch).
  - ``lookahead``: the ``synthetic`` critic, then ``inner_steps`` differentiable SGD steps at ``inner_lr``
    from its parameters on the synthetic set augmented by the *learnable* policy, scored by the cross-entropy
    on the **clean** real batch: ``aug_weight · (CE(θ'(φ); x_real) − λ · width)``. This is the question the
    evaluation networks ask (does training on A_φ(synthetic) generalise to real images?), one step ahead:
    its gradient is ``−η ∇_θ CE(θ; x_real) · ∂_φ ∇_θ CE(θ; A_φ(x_syn))``, the alignment of the augmented
    training gradient with the real one.

  With the ``real`` and ``synthetic`` critics the policy's gradient flows through ``A(x_real)`` (fresh draws
  per image, never the siamese class draw) and the width; the critic's parameters are constants of the
  objective. With ``lookahead`` it flows through the augmented synthetic batches of the unroll.

A method may also make the policy its matching loss's adversary (``config.adversarial`` α > 0, distribution
matching): on the policy's turns the loss's gradient reaches the policy multiplied by ``−α``
(:meth:`~augdistill.inner.StepAugment.adversarial`) and adds to this objective's.

The width is :meth:`Policy.width` (``width_measure="range"``), or :func:`~augdistill.augment.policy_spread`
(``"spread"``), which counts an op without magnitude (a flip) by ``4p(1 − p)`` instead of ``p`` so that the
bonus pushes it toward p = 0.5, its most diverse setting, rather than to an always-on flip.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.augment import policy_spread
from augdistill.config import PolicyConfig
from augdistill.distill.synthetic import SyntheticData
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, StepAugment, unroll
from augdistill.inner.unroll import inner_step_loss
from augdistill.models import sample_params
from augdistill.typing import Params

__all__ = ["PolicyObjective", "Critic", "CRITIC_MOMENTUM", "CRITIC_WEIGHT_DECAY", "subsample_per_class"]

#: The critic trains like an evaluation network of the standard protocol: SGD, momentum 0.9, weight decay 5e-4.
CRITIC_MOMENTUM = 0.9
CRITIC_WEIGHT_DECAY = 5e-4


def subsample_per_class(x: Tensor, y: Tensor, num_classes: int, per_class: int) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` images of every class of a class-major, class-balanced batch.

    Args:
        x: ``(K * n, C, H, W)`` images, class-major (class ``c`` is rows ``c n .. (c + 1) n - 1``).
        y: ``(K * n,)`` their class ids.
        num_classes: ``K``.
        per_class: images kept per class; ``0`` or ``>= n`` keeps the whole batch.

    Example:
        >>> x, y = torch.arange(6.0).view(6, 1, 1, 1), torch.tensor([0, 0, 0, 1, 1, 1])
        >>> subsample_per_class(x, y, 2, 2)[1].tolist()
        [0, 0, 1, 1]
    """
    n = x.shape[0] // num_classes
    if per_class == 0 or per_class >= n:
        return x, y
    return tuple(t.unflatten(0, (num_classes, n))[:, :per_class].flatten(0, 1) for t in (x, y))  # type: ignore[return-value]


class Critic:
    """A network trained alongside the distillation run, on whose loss the policy objective is measured.

    Every :meth:`train` call takes ``steps`` SGD steps (``lr``, momentum :data:`CRITIC_MOMENTUM`, weight
    decay :data:`CRITIC_WEIGHT_DECAY`: the standard protocol's optimiser) on the batch it is given, which the
    caller augments with the policy's current (frozen) parameters. It starts from θ₀ ~ p(θ) drawn with the
    generator of its first call, and again after every ``reset`` calls (``0``: never).

    Args:
        lr: learning rate of its SGD.
        steps: SGD steps per :meth:`train` call.
        reset: restart from a fresh θ₀ after this many calls (``0``: never).

    Example:
        >>> from augdistill.models import build_model
        >>> net = build_model("mlp", (1, 4, 4), 2, width=8)
        >>> critic = Critic(lr=0.5, steps=20, reset=0)
        >>> x, y = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1] * 4)
        >>> theta = critic.train(net, lambda: x, y, torch.Generator().manual_seed(0))
        >>> float(F.cross_entropy(functional_call(net, theta, (x,)), y)) < 0.5
        True
    """

    def __init__(self, lr: float, steps: int, reset: int) -> None:
        self.lr, self.steps, self.reset = lr, steps, reset
        self.params: Params | None = None
        self.velocity: Params | None = None
        self.calls = 0

    def train(self, model: nn.Module, batch: Callable[[], Tensor], targets: Tensor,
              generator: torch.Generator) -> Params:
        """Take ``steps`` SGD steps on ``batch()`` (called once a step: fresh augmentation each) with ``targets``
        (class ids ``(B,)`` or probabilities ``(B, K)``); returns the parameters, detached."""
        if self.params is None or (self.reset and self.calls % self.reset == 0):
            self.params = {k: v.to(model.get_parameter(k).dtype) for k, v in sample_params(model, generator).items()}
            self.velocity = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.calls += 1
        names = list(self.params)
        for _ in range(self.steps):
            leaves = [self.params[k].detach().requires_grad_() for k in names]
            loss = inner_step_loss(model, dict(zip(names, leaves)), batch(), targets)
            grads = torch.autograd.grad(loss, leaves)
            with torch.no_grad():  # new tensors, never in place: a state_dict handed out stays as it was
                for k, p, g in zip(names, leaves, grads):
                    v = CRITIC_MOMENTUM * self.velocity[k] + g + CRITIC_WEIGHT_DECAY * p  # type: ignore[index]
                    self.velocity[k] = v  # type: ignore[index]
                    self.params[k] = p.detach() - self.lr * v
        return self.params

    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params, "velocity": self.velocity, "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict`'s output, its tensors moved to ``device``."""
        def moved(params: Params | None) -> Params | None:
            return None if params is None else {k: v.detach().to(device, copy=True) for k, v in params.items()}
        self.params, self.velocity, self.calls = moved(state["params"]), moved(state["velocity"]), int(state["calls"])


class PolicyObjective:
    """The augmented-real loss with the width bonus.

    Args:
        policy: the learnable policy (its ``width()`` is a differentiable scalar).
        config: ``copies`` (J), ``width_weight`` (λ), ``width_measure``, ``aug_weight`` (scale of the whole
            term); for :meth:`standalone`, ``critic`` and either ``inner_steps`` / ``inner_lr`` (``unroll``)
            or ``critic_lr`` / ``critic_steps`` / ``critic_reset`` / ``critic_per_class``.
        num_classes: classes of the data (the critic subsamples class-balanced real batches).

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

    def __init__(self, policy: nn.Module, config: PolicyConfig, num_classes: int = 1) -> None:
        self.policy, self.config, self.num_classes = policy, config, num_classes
        self.critic = (Critic(config.critic_lr, config.critic_steps, config.critic_reset)
                       if config.critic != "unroll" else None)

    def width(self) -> Tensor:
        """The policy's width as ``config.width_measure`` defines it (0-d, differentiable)."""
        return self.policy.width() if self.config.width_measure == "range" else policy_spread(self.policy)

    def __call__(self, model: nn.Module, theta: Params, x_real: Tensor, y_real: Tensor, augment: StepAugment) -> Tensor:
        """``aug_weight * (CE(θ; J augmented copies of the real batch) − λ · width)``, a scalar."""
        cfg = self.config
        augmented = torch.cat([augment.real(x_real, y_real) for _ in range(cfg.copies)])
        loss = F.cross_entropy(functional_call(model, theta, (augmented,)), y_real.repeat(cfg.copies))
        return cfg.aug_weight * (loss - cfg.width_weight * self.width())

    def standalone(self, model: nn.Module, synthetic: SyntheticData, x_real: Tensor, y_real: Tensor,
                   augment: StepAugment, generator: torch.Generator) -> Tensor:
        """The objective for a method without its own unroll, on the network ``config.critic`` names (see the
        module docstring); ``generator`` draws θ₀ (of the unroll, or of the critic when it starts)."""
        cfg = self.config
        labels = synthetic.labels
        if self.critic is None:
            images, targets = synthetic.decode().detach(), synthetic.targets().detach()
            schedule = InnerSchedule.full_batch(images.shape[0], cfg.inner_steps, 1)
            lrs = torch.full((cfg.inner_steps,), cfg.inner_lr, device=images.device)
            theta = unroll(model, sample_params(model, generator), images, targets, lrs, schedule,
                           augment=lambda x, t: augment.synthetic(x, labels))
            return self(model, theta, x_real, y_real, augment)
        fresh = dataclasses.replace(augment, class_draw=None)  # one draw per image: a lower-variance estimate
        frozen = fresh.frozen()
        x_real, y_real = subsample_per_class(x_real, y_real, self.num_classes, cfg.critic_per_class)
        if cfg.critic == "real":
            theta = self.critic.train(model, lambda: frozen.real(x_real, y_real), y_real, generator)
            return self(model, theta, x_real, y_real, fresh)
        with torch.no_grad():
            images, targets = synthetic.decode(), synthetic.targets()
        theta = self.critic.train(model, lambda: frozen.synthetic(images, labels), targets, generator)
        if cfg.critic == "synthetic":
            return self(model, theta, x_real, y_real, fresh)
        schedule = InnerSchedule.full_batch(images.shape[0], cfg.inner_steps, 1)
        lrs = torch.full((cfg.inner_steps,), cfg.inner_lr, device=images.device)
        ahead = unroll(model, theta, images, targets, lrs, schedule, augment=lambda x, t: fresh.synthetic(x, labels))
        clean = F.cross_entropy(functional_call(model, ahead, (x_real,)), y_real)
        return cfg.aug_weight * (clean - cfg.width_weight * self.width())

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (the critic's network and momentum); empty without a critic."""
        return {} if self.critic is None else {"critic": self.critic.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.critic is None:
            return
        if "critic" not in state:
            raise ConfigError("the checkpoint holds no policy critic, but --policy-critic "
                              f"{self.config.critic} needs one")
        device = next(iter(self.policy.parameters())).device
        self.critic.load_state_dict(state["critic"], device)
