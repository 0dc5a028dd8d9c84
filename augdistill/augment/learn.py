"""Learning augmentation on its own (no distillation): Augerino and an input-conditioned variant.

* **Augerino** (Benton et al. 2020, arXiv 2010.11882): train a network and a policy together on
  ``CE(f(policy(x)), y) - reg * policy.width()``. The task loss shrinks ranges that hurt; the width
  bonus grows the rest, so the policy converges to the invariances present in the data. At test
  time predictions are averaged over ``J`` augmented copies (:func:`tta_predict`).
* **InstaAug-style** (Miao et al. 2022, arXiv 2206.00051): a small network :class:`InstanceRanges`
  maps each image to its own magnitude ranges; trained on the task loss minus a width bonus, with a
  stiffer penalty keeping the batch's mean normalised width inside ``[min_width, max_width]``
  (InstaAug's entropy bonus and entropy bounds, with width standing in for entropy: for a uniform
  range the entropy is ``log(high - low)``).

Learning rates for magnitudes are given in *fractions of the op's allowed range per step*
(:func:`policy_param_groups`), so one number suits degrees and pixel fractions alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.augment.class_ranges import ClassRangesPolicy
from augdistill.augment.ops import real_number
from augdistill.augment.policy import Policy
from augdistill.data import Split
from augdistill.errors import ConfigError

__all__ = ["POLICY_PARAMETER_KINDS", "learn_only", "policy_param_groups", "policy_spread", "AugerinoConfig", "AugerinoResult", "train_augerino",
           "tta_predict", "InstanceRanges", "InstaAugConfig", "train_instaaug"]


def _check_fields(config: Any, counts: tuple[str, ...], positive: tuple[str, ...], non_negative: tuple[str, ...]
                  ) -> None:
    """``counts`` integers >= 1 (and ``seed`` >= 0), ``positive`` finite numbers > 0, ``non_negative`` >= 0."""
    kind = type(config).__name__
    for name in (*counts, "seed"):
        value, least = getattr(config, name), 0 if name == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{kind}.{name} must be an integer >= {least}, got {value!r:.40}")
    for name in (*positive, *non_negative):
        value = real_number(getattr(config, name))
        if value is None or value < 0 or (name in positive and value == 0):
            raise ConfigError(f"{kind}.{name} must be a finite number {'>' if name in positive else '>='} 0, "
                              f"got {getattr(config, name)!r:.40}")


def _check_training(model: Any, policy: Any, train: Any) -> None:
    """The arguments every trainer here takes: a module, a :class:`Policy`, a :class:`Split` of images."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(policy, Policy):
        raise ConfigError(f"policy must be an augdistill Policy, got {type(policy).__name__}")
    x, y = getattr(train, "x", None), getattr(train, "y", None)
    if not (isinstance(x, Tensor) and isinstance(y, Tensor) and x.dim() == 4 and y.dim() == 1
            and len(x) == len(y) > 0):
        raise ConfigError(f"train must be a Split of images x (N, C, H, W) and labels y (N,), N >= 1; got "
                          f"{type(train).__name__}")


def _base(policy: Any) -> Policy:
    """The :class:`Policy` that holds ``policy``'s probabilities and choice weights (itself, or the policy a
    :class:`~augdistill.augment.class_ranges.ClassRangesPolicy` wraps)."""
    if isinstance(policy, ClassRangesPolicy):
        return policy.policy
    if not isinstance(policy, Policy):
        raise ConfigError(f"policy must be an augdistill Policy, got {type(policy).__name__}")
    return policy


def _magnitude_parameters(policy: Policy | ClassRangesPolicy) -> list[list[nn.Parameter]]:
    """Per op, the tensors that hold its range: the op's ``low`` / ``high``, or a per-class policy's columns."""
    if isinstance(policy, ClassRangesPolicy):
        return [[d[str(i)] for d in (policy.low, policy.high) if str(i) in d] for i in range(len(policy.ops))]
    return [[p for p in (op.low, op.high) if p is not None] for op in policy.ops]


def policy_param_groups(policy: Policy | ClassRangesPolicy, lr: float) -> list[dict[str, Any]]:
    """Optimiser param groups for ``policy``: magnitude lr scaled by each op's allowed range.

    With Adam, ``lr=0.01`` moves a rotation range by about 3.6° per step and a translation by
    0.01 of the image; probabilities and choice weights use ``lr`` as is. Frozen parameters
    (``requires_grad=False``) are left out. A per-class policy's columns of an op take that op's scaled rate.
    """
    base = _base(policy)
    if real_number(lr) is None or not lr > 0:
        raise ConfigError(f"lr must be a finite number > 0, got {lr!r:.40}")
    groups: list[dict[str, Any]] = []
    for op, ranges in zip(base.ops, _magnitude_parameters(policy)):
        if op.probability.requires_grad:
            groups.append({"params": [op.probability], "lr": lr})
        magnitude = [p for p in ranges if p.requires_grad]
        if magnitude:
            lo_b, hi_b = op.spec.bounds  # type: ignore[misc]
            groups.append({"params": magnitude, "lr": lr * (hi_b - lo_b)})
    if base.weights is not None and base.weights.requires_grad:
        groups.append({"params": [base.weights], "lr": lr})
    return groups


#: What ``--policy-learn`` chooses among: every op's probability, every op's magnitude bounds, the choice weights.
POLICY_PARAMETER_KINDS = ("probabilities", "magnitudes", "weights")


def learn_only(policy: Policy | ClassRangesPolicy, kinds: tuple[str, ...]) -> None:
    """Freeze (``requires_grad=False``) every tensor of ``policy`` whose kind is not in ``kinds``.

    Kinds are :data:`POLICY_PARAMETER_KINDS`: e.g. ``("magnitudes",)`` fine-tunes DSA's ranges while its
    choice among sub-policies and its gates stay as loaded. Raises :class:`ConfigError` for an unknown kind or
    when nothing learnable is left (a ``weights``-only request on a policy that has no choice weights).

    Example:
        >>> from augdistill.augment import build_policy
        >>> policy = build_policy(["rotate", "hflip"], composition="choose-one")
        >>> learn_only(policy, ("magnitudes",))
        >>> [name for name, p in policy.named_parameters() if p.requires_grad]
        ['ops.0.high']
    """
    base = _base(policy)
    if not kinds or not set(kinds) <= set(POLICY_PARAMETER_KINDS):
        raise ConfigError(f"--policy-learn must name some of {', '.join(POLICY_PARAMETER_KINDS)}, got "
                          f"{','.join(kinds)!r:.80}")
    by_kind: dict[str, list[nn.Parameter]] = {
        "probabilities": [op.probability for op in base.ops],
        "magnitudes": [p for ranges in _magnitude_parameters(policy) for p in ranges],
        "weights": [base.weights] if base.weights is not None else [],
    }
    for kind, params in by_kind.items():
        if kind not in kinds:
            for p in params:
                p.requires_grad_(False)
    if not any(p.requires_grad for p in policy.parameters()):
        raise ConfigError(f"--policy-learn {','.join(kinds)}: this policy has nothing of that kind to learn "
                          f"(composition {base.composition!r}, ops {', '.join(op.name for op in base.ops)})")


def policy_spread(policy: Policy | ClassRangesPolicy) -> Tensor:
    """:meth:`Policy.width` with every op without magnitude (a flip) counted ``4 p (1 - p)`` instead of ``p``.

    A flip applied with probability ``p`` adds the most variety at ``p = 0.5`` (the variance of its gate,
    ``p (1 - p)``, scaled to 1 there); at ``p = 1`` it only mirrors the data set. A width bonus built on
    ``p`` pushes a flip to always-on wherever the loss does not mind it; built on this, toward ``p = 0.5``.
    Ops with magnitude count as in :meth:`Policy.width`. 0-d float64, differentiable (the flip's term has
    gradient ``4 - 8p``: alive at ``p = 0`` and ``p = 1``).

    Example:
        >>> from augdistill.augment import build_policy
        >>> policy = build_policy([{"name": "hflip", "probability": 1.0}, {"name": "rotate", "magnitude": 36.0,
        ...                        "probability": 1.0}])
        >>> round(float(policy.width().detach()), 6), round(float(policy_spread(policy).detach()), 6)
        (1.2, 0.2)
    """
    base = _base(policy)
    pi = base.selection_probabilities()
    correction = policy.width().new_zeros(())
    for k, group in enumerate(base.groups):
        for i in group:
            op = base.ops[i]
            if op.spec.has_magnitude:
                continue
            p = op.prob()
            term = 4 * p * (1 - p) - p
            correction = correction + (term if pi is None else pi[k] * term)
    return policy.width() + correction


@dataclass(frozen=True)
class AugerinoConfig:
    """Settings of :func:`train_augerino`.

    Attributes:
        steps: optimisation steps.
        batch_size: images per step (drawn with replacement).
        lr: Adam learning rate of the network.
        policy_lr: Adam learning rate of the policy, in fractions of each op's range per step.
        reg: weight of the width bonus ``- reg * policy.width()``.
        seed: seed of the batch and augmentation draws.
        log_every: record the policy's magnitudes every this many steps.
    """

    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    policy_lr: float = 3e-3
    reg: float = 0.25
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        _check_fields(self, ("steps", "batch_size", "log_every"), ("lr", "policy_lr"), ("reg",))


@dataclass(frozen=True)
class AugerinoResult:
    """What :func:`train_augerino` / :func:`train_instaaug` return.

    Attributes:
        history: ``(step, {label: (low, high)})`` snapshots of the policy's ranges.
        final_loss: mean task loss over the last ``log_every`` steps.
    """

    history: tuple[tuple[int, dict[str, tuple[float, float]]], ...]
    final_loss: float


def _batches(split: Split, batch_size: int, generator: torch.Generator) -> Any:
    n = len(split)
    while True:
        idx = torch.randint(n, (batch_size,), generator=generator)
        yield split.x[idx], split.y[idx]


def _snapshot(policy: Policy) -> dict[str, tuple[float, float]]:
    return {k: (float(v[0]), float(v[1])) for k, v in policy.magnitudes().items()}


def train_augerino(model: nn.Module, policy: Policy, train: Split, config: AugerinoConfig = AugerinoConfig()
                   ) -> AugerinoResult:
    """Train ``model`` and ``policy`` jointly on ``CE - reg * width`` (Augerino).

    Args:
        model: classifier taking ``[0, 1]`` images.
        policy: the learnable policy (freeze what should not move with ``requires_grad_(False)``).
        train: training split (on the model's device).
        config: :class:`AugerinoConfig`.

    Returns:
        :class:`AugerinoResult` with the range history; ``policy`` and ``model`` are trained in place.

    Example:
        >>> from augdistill.augment import build_policy
        >>> from augdistill.data import load_dataset
        >>> from augdistill.models import build_model
        >>> ds = load_dataset("digits-rot")
        >>> model = build_model("convnet", (1, 8, 8), 10, width=16, depth=2)
        >>> policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 10.0}])
        >>> _ = policy.ops[0].probability.requires_grad_(False)  # learn the range only
        >>> result = train_augerino(model, policy, ds.train, AugerinoConfig(steps=20, log_every=10))
        >>> [step for step, _ in result.history]
        [10, 20]
    """
    _check_training(model, policy, train)
    if not isinstance(config, AugerinoConfig):
        raise ConfigError(f"config must be an AugerinoConfig, got {type(config).__name__}")
    g = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam([{"params": list(model.parameters()), "lr": config.lr}]
                           + policy_param_groups(policy, config.policy_lr))
    model.train()
    policy.train()
    history, recent = [], []
    batches = _batches(train, config.batch_size, g)
    for step in range(1, config.steps + 1):
        x, y = next(batches)
        params = policy.sample(x.shape[0], generator=g, device=x.device)
        task = F.cross_entropy(model(policy(x, params=params)), y)
        loss = task - config.reg * policy.width()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append(task.detach())
        if step % config.log_every == 0 or step == config.steps:
            history.append((step, _snapshot(policy)))
            final = float(torch.stack(recent).mean())
            recent = []
    return AugerinoResult(tuple(history), final)


@torch.no_grad()
def tta_predict(model: nn.Module, policy: Policy, x: Tensor, copies: int = 8,
                generator: torch.Generator | None = None, ranges: InstanceRanges | None = None) -> Tensor:
    """Class probabilities ``(B, classes)`` averaged over ``copies`` augmented versions of ``x``.

    The model runs in eval mode; the policy is applied even though it is not in training mode.
    ``copies=1`` with an identity policy is plain prediction. With ``ranges`` (input-conditioned
    policies) each image is augmented within its own predicted ranges.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ConfigError(f"copies must be an integer >= 1, got {copies!r:.40}")
    if not isinstance(model, nn.Module) or not isinstance(policy, Policy):
        raise ConfigError(f"tta_predict needs a torch.nn.Module and a Policy, got {type(model).__name__} "
                          f"and {type(policy).__name__}")
    was_training = model.training
    model.eval()
    per_image = None if ranges is None else ranges(x)
    probs = torch.stack([torch.softmax(model(policy(x, generator=generator, augment=True, ranges=per_image)), dim=1)
                         for _ in range(copies)]).mean(0)
    model.train(was_training)
    return probs


class InstanceRanges(nn.Module):
    """Input-conditioned magnitudes: image ``(B, C, H, W)`` -> per-sample ranges ``(B, N, 2)``.

    A small conv net outputs, for every op of ``policy``, a fraction ``f in (0, 1)`` of the op's
    largest symmetric half-width; the sample's range is ``identity ± f * half_max``. Feed the result
    to ``policy(x, ranges=...)``. Only ops whose bounds are centred on their identity (all but
    cutout) are supported; flip's entry is ignored by the policy.

    Args:
        policy: the policy whose op list (and probabilities) is used.
        channels: input channels.
        hidden: width of the conv net.
        init_fraction: initial ``f`` for every op and image.
    """

    def __init__(self, policy: Policy, channels: int, hidden: int = 16, init_fraction: float = 0.1) -> None:
        super().__init__()
        if not isinstance(policy, Policy):
            raise ConfigError(f"policy must be an augdistill Policy, got {type(policy).__name__}")
        for name, value in (("channels", channels), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r:.40}")
        fraction = real_number(init_fraction)
        if fraction is None or not 0 < fraction < 1:
            raise ConfigError(f"init_fraction must be in (0, 1), got {init_fraction!r:.40}")
        centre, half = [], []
        for op in policy.ops:
            spec = op.spec
            if spec.has_magnitude and not spec.symmetric_allowed:
                raise ConfigError(f"InstanceRanges needs symmetric ops; {op.name!r} is not")
            centre.append(spec.identity)
            half.append(0.0 if spec.bounds is None else spec.bounds[1] - spec.identity)
        self.register_buffer("centre", torch.tensor(centre))
        self.register_buffer("half_width", torch.tensor(half))
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, len(centre)))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, float(torch.logit(torch.tensor(fraction))))

    def fractions(self, x: Tensor) -> Tensor:
        """``(B, N)`` fractions of each op's largest half-width, in ``(0, 1)``."""
        return torch.sigmoid(self.net(x))

    def to_ranges(self, fractions: Tensor) -> Tensor:
        """``(B, N)`` fractions -> ``(B, N, 2)`` ranges ``identity ± f * half_max``."""
        spread = fractions * self.half_width
        return torch.stack([self.centre - spread, self.centre + spread], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, 2)`` per-sample ``(low, high)`` in each op's physical unit."""
        return self.to_ranges(self.fractions(x))


@dataclass(frozen=True)
class InstaAugConfig:
    """Settings of :func:`train_instaaug` (see :class:`AugerinoConfig` for the shared fields).

    Attributes:
        reg: weight of the width bonus ``- reg * w`` (``w``: batch mean of the fractions ``f``).
        min_width, max_width: band for ``w``; outside it the penalty
            ``bound_reg * (relu(min_width - w) + relu(w - max_width))`` acts.
        bound_reg: weight of that penalty (larger than ``reg`` so the band holds).
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    ranges_lr: float = 3e-3
    reg: float = 0.25
    min_width: float = 0.05
    max_width: float = 0.9
    bound_reg: float = 10.0
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        _check_fields(self, ("steps", "batch_size", "log_every"), ("lr", "ranges_lr"),
                      ("reg", "bound_reg", "min_width", "max_width"))
        if not self.min_width <= self.max_width <= 1:
            raise ConfigError(f"InstaAugConfig needs 0 <= min_width <= max_width <= 1, got min_width "
                              f"{self.min_width!r} and max_width {self.max_width!r}")


def train_instaaug(model: nn.Module, policy: Policy, ranges: InstanceRanges, train: Split,
                   config: InstaAugConfig = InstaAugConfig()) -> AugerinoResult:
    """Train ``model`` and the input-conditioned ``ranges`` net jointly (policy probabilities too).

    Loss: ``CE(model(policy(x, ranges=ranges(x))), y) - reg * w
    + bound_reg * (relu(min_width - w) + relu(w - max_width))`` with ``w`` the batch-mean normalised
    width (fraction of each op's largest half-width). History snapshots hold each op's *mean* range over
    the last batch.
    """
    _check_training(model, policy, train)
    if not isinstance(ranges, InstanceRanges) or not isinstance(config, InstaAugConfig):
        raise ConfigError(f"train_instaaug needs InstanceRanges and an InstaAugConfig, got {type(ranges).__name__} "
                          f"and {type(config).__name__}")
    g = torch.Generator().manual_seed(config.seed)
    probabilities = [op.probability for op in policy.ops if op.probability.requires_grad]
    opt = torch.optim.Adam([{"params": list(model.parameters()), "lr": config.lr},
                            {"params": list(ranges.parameters()) + probabilities, "lr": config.ranges_lr}])
    model.train()
    policy.train()
    labels = policy.op_labels()
    history, recent = [], []
    batches = _batches(train, config.batch_size, g)
    for step in range(1, config.steps + 1):
        x, y = next(batches)
        f = ranges.fractions(x)
        r = ranges.to_ranges(f)
        params = policy.sample(x.shape[0], generator=g, device=x.device)
        task = F.cross_entropy(model(policy(x, params=params, ranges=r)), y)
        w = f.mean()
        band = F.relu(config.min_width - w) + F.relu(w - config.max_width)
        loss = task - config.reg * w + config.bound_reg * band
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append(task.detach())
        if step % config.log_every == 0 or step == config.steps:
            mean_r = r.detach().mean(0)
            history.append((step, {lab: (float(mean_r[i, 0]), float(mean_r[i, 1])) for i, lab in enumerate(labels)}))
            final = float(torch.stack(recent).mean())
            recent = []
    return AugerinoResult(tuple(history), final)
