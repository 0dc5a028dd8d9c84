"""Distribution matching: DM (Zhao & Bilen 2023, arXiv 2110.04181).

Every outer step draws a fresh, untrained network θ ~ p(θ) and makes the mean embedding of the synthetic
images of every class equal the mean embedding of a real batch of that class:

    L = Σ_c ‖ mean_{x ∈ R_c} ψ_θ(A_c(x)) − mean_{s ∈ S_c} ψ_θ(A_c(s)) ‖²,

where ψ_θ is the network's feature extractor (everything before the classifier, flattened) and ``A_c`` is
the augmentation draw of class ``c``, shared by its real and synthetic images (siamese, as in DSA). The
network is never trained, so the real side needs no graph: one batched forward pass of all classes under
``torch.no_grad``, one of the synthetic set, and the per-class means by an index-add (no Python loop over
classes or images).

Under ``torchrun`` the classes are the work units (:attr:`Method.shards`): rank ``r`` of ``W`` embeds the real
and synthetic images of classes ``r, r + W, ...`` only, under the step's one network (every rank draws it from
the shared ``init`` stream), and the all-reduce of the image gradients sums the classes' terms. With fresh
(non-siamese) draws each class augments from its own unit streams, so its draws do not depend on the rank that
computes it; with siamese draws or none, one process computes exactly what it computed before sharding.

With ``--dm-pool N`` the network is not fresh every step but one of ``N`` semi-trained networks
(:class:`~augdistill.distill.methods.network_pool.NetworkPool`, IDM's enriched model sampling): the drawn network
first takes ``--dm-pool-steps`` SGD steps on the step's real batch through the shared inner trainer (fresh draws of
the frozen policy, as a network trains), on every rank alike. ``--dm-ce-weight w`` adds IDM's class-aware
regulariser ``w · CE(θ; A_c(S))``, the mean cross-entropy of that network on the augmented synthetic set.

How the policy learns (``--policy learn``): the matching loss sees the policy frozen
(:meth:`StepAugment.frozen`); the loop learns the policy from the augmentation objective alone
(:meth:`PolicyObjective.standalone`: a short augmented unroll on the detached synthetic set, then the
augmented-real loss minus the width bonus).
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.config import ModelConfig
from augdistill.distill.methods.base import LossPart, Method, MethodEnv, OuterBatch
from augdistill.distill.methods.network_pool import NetworkPool
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import sample_params
from augdistill.typing import Params

__all__ = ["DistributionMatching", "class_means", "mean_embedding_distance", "embed", "classify"]


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class means ``(K, D)`` of ``features`` ``(N, D)`` whose class ids are ``labels`` ``(N,)``.

    Every class must have at least one row (class-balanced batches do). Differentiable w.r.t. ``features``.

    Example:
        >>> class_means(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]), 2).flatten().tolist()
        [2.0, 5.0]
    """
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    counts = features.new_zeros(num_classes).index_add_(0, labels, features.new_ones(labels.shape))
    return sums / counts[:, None]


def mean_embedding_distance(real_means: Tensor, syn_means: Tensor) -> Tensor:
    """DM's loss ``Σ_c ‖real_c − syn_c‖²`` between per-class mean embeddings ``(K, D)``, a 0-d tensor."""
    return (real_means - syn_means).pow(2).sum()


def embed(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """ψ_θ(x): ``model.features`` under the ``features.*`` entries of ``params``, flattened to ``(B, D)``."""
    prefix = "features."
    features = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    return functional_call(model.features, features, (x,)).flatten(1)


def classify(model: nn.Module, params: Params, features: Tensor) -> Tensor:
    """Logits ``(B, K)`` of ``model.classifier`` under the ``classifier.*`` entries of ``params`` on ``features``
    ``(B, D)`` from :func:`embed`."""
    prefix = "classifier."
    head = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    return functional_call(model.classifier, head, (features,))


class DistributionMatching(Method):
    """DM: match per-class mean embeddings of real and synthetic images under one random network a step.

    Needs a network with a ``features`` module before its ``classifier`` (``convnet``, ``lenet``). Options
    (:class:`~augdistill.config.MethodConfig`): ``pool``, ``pool_steps``, ``pool_lifetime`` and ``net_lr`` for
    semi-trained networks, ``ce_weight`` for the class-aware regulariser (module docstring).
    """

    name = "dm"
    shards = True
    default_model = ModelConfig(name="convnet", width=128, depth=3, norm="instance")
    #: SGD with momentum 0.5 as in the paper; its image lr 1.0 is for normalised images, ours are in [0, 1]
    #: pixels: the same step is lr · std², about 1.0 · 0.1 for the grey-scale datasets.
    defaults = {"optimizer": "sgd", "lr_images": 0.1, "validation": "standard", "grad_clip": 0.0}

    def __init__(self, env: MethodEnv) -> None:
        super().__init__(env)
        if not isinstance(getattr(env.model, "features", None), nn.Module):
            raise ConfigError(f"--method dm embeds images with the network's `features` (convnet, lenet); "
                              f"--model {env.config.model.name} has none")
        cfg = env.config.method
        self.pool = NetworkPool(env.model, cfg.pool, cfg.pool_lifetime) if cfg.pool else None
        real_images = env.info.num_classes * env.config.outer.real_per_class
        self.pool_schedule = InnerSchedule.full_batch(real_images, 1, cfg.pool_steps)

    def _network(self, batch: OuterBatch) -> Params:
        """The step's embedding network: a fresh random one, or a pool member after its SGD steps on the real
        batch (computed on every rank from the shared streams, so every rank embeds with the same network)."""
        env, cfg = self.env, self.env.config
        if self.pool is None:
            return sample_params(env.model, env.generators["init"])
        index, params, fresh = self.pool.draw(env.model, env.generators["method"], env.generators["init"])
        draws, steps = batch.augment.training_draws(), self.pool_schedule.total_steps
        lrs = torch.full((steps,), cfg.method.net_lr, device=env.device)
        params = unroll(env.model, params, batch.x_real, batch.y_real, lrs, self.pool_schedule,
                        momentum=cfg.inner.momentum, create_graph=False,
                        augment=(lambda x, t: draws.real(x, batch.y_real)) if draws.active else None)
        self.pool.store(index, params, fresh, steps)
        return params

    def losses(self, batch: OuterBatch) -> Iterator[LossPart]:
        env = self.env
        params = self._network(batch)  # on every rank: the same network
        classes = batch.shard.units(env.info.num_classes)
        if not classes:
            return
        synthetic = env.synthetic
        with torch.no_grad():
            x, owned = self._owned(batch, classes, batch.x_real, batch.y_real, "real")
            real_means = class_means(embed(env.model, params, x), owned, len(classes))
        x, owned = self._owned(batch, classes, synthetic.decode(), synthetic.labels, "synthetic")
        features = embed(env.model, params, x)
        loss = mean_embedding_distance(real_means, class_means(features, owned, len(classes)))
        ce_weight = env.config.method.ce_weight
        if ce_weight:  # the mean over the whole set: the ranks' sums add up to it
            class_ids = torch.arange(classes.start, classes.stop, classes.step, device=x.device)[owned]
            ce = F.cross_entropy(classify(env.model, params, features), class_ids, reduction="sum")
            loss = loss + ce_weight * ce / synthetic.labels.numel()
        yield LossPart(loss)

    def _owned(self, batch: OuterBatch, classes: range, x: Tensor, labels: Tensor,
               side: str) -> tuple[Tensor, Tensor]:
        """The augmented rows of ``x`` ``(N, C, H, W)`` whose classes are ``classes``, and each row's index among
        ``classes``. ``labels`` ``(N,)`` must hold every class equally often (in any order); ``side`` is
        ``"real"`` or ``"synthetic"``. No host sync: the rows are found by a stable sort of the labels."""
        num_classes = self.env.info.num_classes
        augment = batch.augment.frozen()
        if len(classes) == num_classes and not augment.fresh:
            return getattr(augment, side)(x, labels), labels
        per_class = labels.shape[0] // num_classes
        rows = torch.argsort(labels, stable=True).view(num_classes, per_class)
        owned = torch.arange(len(classes), device=x.device).repeat_interleave(per_class)
        if not augment.fresh:
            mine = rows[classes.start:classes.stop:classes.step].flatten()
            return getattr(augment, side)(x[mine], labels[mine]), owned
        return torch.cat([getattr(batch.unit_augment(c).frozen(), side)(x[rows[c]], labels[rows[c]])
                          for c in classes]), owned
