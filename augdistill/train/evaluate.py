"""Evaluation: train fresh networks on a (distilled) training set and measure test accuracy.

Two protocols:

* ``replay`` — the DD protocol: fresh θ₀ ~ p(θ), then exactly the learned inner steps and
  learning rates on the synthetic set (no extra training), in the distillation architecture.
* ``standard`` — the field's protocol: ConvNet-3 width 128 with instance norm, SGD lr 0.01,
  momentum 0.9, weight decay 5e-4, batch 256, 300 epochs, lr x0.1 at half. IDC evaluates with 1000 epochs,
  batch 64 and CutMix on half of the minibatches (``StandardProtocol(epochs=1000, batch_size=64, cutmix=0.5)``).

Plus the reference points every number is shown beside: ``random-subset`` (the standard
protocol on ``ipc`` random real images per class), ``herding`` (on the ``ipc`` real images per class
that herding picks from the pixels, the coreset baseline of the DC paper) and ``full-data`` (the same
network on all the training data).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.config import ModelConfig
from augdistill.data import DatasetInfo, Split
from augdistill.devices import upload
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, reset_parameters_, sample_params
from augdistill.train.cutmix import cutmix
from augdistill.typing import Params

__all__ = ["StandardProtocol", "EvalResult", "accuracy", "replay_accuracies", "train_standard",
           "standard_accuracies", "summarize"]


@dataclass(frozen=True)
class StandardProtocol:
    """Hyperparameters of the standard evaluation protocol (defaults: the field's); ``cutmix``: the probability
    that a minibatch is mixed by :func:`~augdistill.train.cutmix.cutmix` after its augmentation."""

    model: ModelConfig = ModelConfig(name="convnet", width=128, depth=3, norm="instance")
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    cutmix: float = 0.0

    @classmethod
    def padded(cls, first_padding: int | None, **fields: Any) -> "StandardProtocol":
        """The protocol whose ConvNet pads its first convolution by ``first_padding`` (``None``: ConvNet's
        default, 1), with the other ``fields`` given."""
        model = dataclasses.replace(cls().model, first_padding=first_padding)
        return cls(model=model, **fields)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.cutmix <= 1:
            raise ConfigError(f"standard protocol needs epochs >= 1, batch_size >= 1, lr > 0, 0 <= cutmix <= 1; "
                              f"got {self}")


@dataclass(frozen=True)
class EvalResult:
    """Test accuracies (fractions in [0, 1]) of ``len(accs)`` networks under one protocol."""

    protocol: str
    accs: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.accs) / len(self.accs)

    @property
    def std(self) -> float:
        if len(self.accs) < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((a - m) ** 2 for a in self.accs) / (len(self.accs) - 1))

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}%"


def summarize(protocol: str, accs: Tensor) -> EvalResult:
    """One host sync: turn a tensor of accuracies into an :class:`EvalResult`."""
    return EvalResult(protocol, tuple(float(a) for a in accs.cpu()))


@torch.no_grad()
def accuracy(net: nn.Module | Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int = 1024,
             params: Params | None = None) -> Tensor:
    """Fraction of ``x`` ``(N, C, H, W)`` classified as ``y`` ``(N,)``; a 0-d tensor (no host sync)."""
    correct = torch.zeros((), device=y.device)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        logits = functional_call(net, params, (xb,)) if params is not None else net(xb)
        correct += (logits.argmax(1) == y[start:start + batch_size]).sum()
    return correct / x.shape[0]


def replay_accuracies(model: nn.Module, images: Tensor, targets: Tensor, lrs: Tensor, schedule: InnerSchedule,
                      test: Split, seeds: Sequence[int], *, momentum: float = 0.0,
                      augment: Callable[[Tensor, int], Tensor] | None = None) -> Tensor:
    """Replay protocol: accuracy on ``test`` of one fresh net per seed after the learned steps, shape ``(len(seeds),)``."""
    accs = []
    for seed in seeds:
        theta0 = sample_params(model, torch.Generator().manual_seed(seed))
        theta = unroll(model, theta0, images, targets, lrs, schedule, momentum=momentum, augment=augment,
                       create_graph=False)
        model.eval()
        accs.append(accuracy(model, test.x, test.y, params=theta))
        model.train()
    return torch.stack(accs)


def train_standard(net: nn.Module, x: Tensor, targets: Tensor, protocol: StandardProtocol,
                   generator: torch.Generator, augment: Callable[[Tensor, Tensor], Tensor] | None = None) -> nn.Module:
    """Train ``net`` in place on ``x`` ``(N, C, H, W)`` with ``targets`` (ids ``(N,)`` or probabilities ``(N, K)``).

    SGD with momentum and weight decay, shuffled minibatches drawn with ``generator``, learning rate
    x0.1 after half of the epochs; ``augment(images, labels)`` (if given) is applied to every minibatch with its
    class ids (the targets, or their most probable class), then CutMix to a ``protocol.cutmix`` share of them
    (no draws are taken for it when that is 0).
    """
    opt = torch.optim.SGD(net.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                          weight_decay=protocol.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[protocol.epochs // 2], gamma=0.1)
    net.train()
    n = x.shape[0]
    labels = targets if targets.dim() == 1 else targets.argmax(1)
    for _ in range(protocol.epochs):
        order = upload(torch.randperm(n, generator=generator), x.device)
        for start in range(0, n, protocol.batch_size):
            idx = order[start:start + protocol.batch_size]
            xb = x[idx] if augment is None else augment(x[idx], labels[idx])
            if protocol.cutmix and float(torch.rand((), generator=generator)) < protocol.cutmix:
                mix = cutmix(xb, generator)
                loss = mix.loss(net(mix.images), targets[idx])
            else:
                loss = F.cross_entropy(net(xb), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    return net


def standard_accuracies(x: Tensor, targets: Tensor, info: DatasetInfo, test: Split, seeds: Sequence[int],
                        protocol: StandardProtocol = StandardProtocol(),
                        augment: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """Standard protocol: one fresh ``protocol.model`` per seed trained on ``(x, targets)``; accuracies ``(len(seeds),)``."""
    accs = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        net = build_model(protocol.model.name, info.image_shape, info.num_classes, mean=info.mean, std=info.std,
                          **protocol.model.kwargs()).to(x.device)
        train_standard(reset_parameters_(net, generator), x, targets, protocol, generator, augment)
        accs.append(accuracy(net, test.x, test.y))
    return torch.stack(accs)
