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
the frozen policy, as a network trains), on every rank alike. With ``--dm-pool-train-on synthetic`` it takes them on
the (detached) synthetic set instead, as the evaluation networks will: the embeddings are then those of networks
at every stage of the training the set is distilled for. ``--dm-ce-weight w`` adds IDM's class-aware
regulariser ``w · CE(θ; A_c(S))``, the mean cross-entropy of that network on the augmented synthetic set.
With ``--expert-dir DIR`` the network is one of the expert trajectories ``augdistill experts`` cached, at a
uniformly drawn stage of its training (:class:`~augdistill.distill.methods.expert_networks.ExpertNetworks`,
DANCE's pseudo long-term alignment, arXiv 2406.01063); with ``--dm-ce-weight`` that network's cross-entropy on the
synthetic set then plays the part of DANCE's distribution calibration.
``--dm-layer-weight w`` also matches the class means of every earlier block's output (CAFE's layer-wise feature
alignment, arXiv 2203.01531), each weighted by ``w`` per feature relative to the last layer
(:func:`layer_matching_distance`), and ``--dm-disc-weight w`` adds ``w`` times CAFE's discrimination loss (the real
batch classified by inner products with the synthetic class means, :func:`discrimination_loss`; this term needs
every class, so under ``torchrun`` every rank computes the whole loss). ``--dm-attention-weight w`` adds DataDAM's
spatial attention matching (Sajedi et al. 2023, arXiv 2310.00093): ``w · Σ_l Σ_c ‖mean_{x ∈ R_c} a_l(x) −
mean_{s ∈ S_c} a_l(s)‖²`` over every block ``l`` but the last, where ``a_l`` is the block's attention map
(:func:`attention_map`). ``--dm-style-weight w`` adds the matching of every block's channel correlations, the
second moments of its feature maps that style transfer calls an image's style (the style term of Decomposed DM,
arXiv 2412.04748): ``w · Σ_l (D_L / C_l²) Σ_c ‖mean_{x ∈ R_c} G_l(x) − mean_{s ∈ S_c} G_l(s)‖²``, ``G_l`` the
block's Gram matrix (:func:`gram_matrix`), each block weighted per entry relative to the last layer's features
as ``--dm-layer-weight`` is. A class mean of Gram matrices is not the Gram matrix of the class's mean, so the
term asks a synthetic image for the texture statistics of a typical real image, not of their blurred average.

``--dm-kernel gaussian`` replaces the last layer's mean matching by M3D's (Zhang et al. 2024, arXiv 2312.15927)
maximum mean discrepancy under a Gaussian kernel, which matches every moment of the class's embedding
distribution rather than its mean only (:func:`gaussian_mmd`); ``--dm-bandwidth`` scales the kernel's width
relative to the median squared distance between the class's real embeddings. It is scaled so that a very wide kernel
gives DM's loss back.

``--dm-easy-fraction q`` < 1 matches each class's synthetic images to only the fraction ``q`` of its real batch that
the step's network classifies with the lowest cross-entropy (:func:`easiest_rows`): the sample-difficulty correction
of Wang et al. 2024 (arXiv 2408.12483), whose analysis finds that at few images per class a distilled set should
hold the easy, typical images of a class rather than the mean of all of them. The network's difficulty is only
informative once it has trained, so it is meant for ``--dm-pool`` or ``--expert-dir``.

How the policy learns (``--policy learn``): the matching loss sees the policy through
:meth:`StepAugment.matching`, frozen, and the loop learns the policy from the augmentation objective alone
(:meth:`PolicyObjective.standalone`: a short augmented unroll on the detached synthetic set, then the
augmented-real loss minus the width bonus). With ``--policy-adversarial α`` the policy is also the matching loss's
adversary on its turns: it receives ``−α`` times the loss's gradient through both the real and the synthetic side
(the real side is then embedded with a graph), so it ascends the loss the synthetic set descends.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from augdistill.config import ModelConfig
from augdistill.distill.methods.base import LossPart, Method, MethodEnv, OuterBatch
from augdistill.distill.methods.expert_networks import ExpertNetworks
from augdistill.distill.methods.network_pool import NetworkPool
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import sample_params
from augdistill.typing import Params

__all__ = ["DistributionMatching", "class_means", "mean_embedding_distance", "embed", "block_outputs", "classify",
           "layer_matching_distance", "attention_map", "gram_matrix", "discrimination_loss", "gaussian_mmd",
           "easiest_rows"]


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


def easiest_rows(losses: Tensor, labels: Tensor, num_classes: int, fraction: float) -> Tensor:
    """The rows of lowest loss in every class: ``ceil(fraction · n)`` of each class's ``n``, at least one.

    Args:
        losses: ``(N,)`` each row's loss (its difficulty).
        labels: ``(N,)`` class ids in ``[0, num_classes)``, every class exactly ``n = N / num_classes`` times (a
            class-balanced batch), in any order.
        fraction: in ``(0, 1]``.

    Returns:
        ``(num_classes · k,)`` row indices, class by class, easiest first within a class. No host sync.

    Example:
        >>> losses, labels = torch.tensor([3.0, 1.0, 2.0, 0.0, 5.0, 4.0]), torch.tensor([0, 0, 1, 1, 0, 1])
        >>> easiest_rows(losses, labels, 2, 0.5).tolist()
        [1, 0, 3, 2]
    """
    per_class = labels.shape[0] // num_classes
    keep = max(1, math.ceil(fraction * per_class))
    by_loss = torch.argsort(losses, stable=True)
    rows = by_loss[torch.argsort(labels[by_loss], stable=True)].view(num_classes, per_class)
    return rows[:, :keep].flatten()


def mean_embedding_distance(real_means: Tensor, syn_means: Tensor) -> Tensor:
    """DM's loss ``Σ_c ‖real_c − syn_c‖²`` between per-class mean embeddings ``(K, D)``, a 0-d tensor."""
    return (real_means - syn_means).pow(2).sum()


def layer_matching_distance(real_means: Sequence[Tensor], syn_means: Sequence[Tensor], weight: float) -> Tensor:
    """DM's loss on the last layer plus ``weight`` times every earlier layer's (CAFE's layer-wise alignment).

    Args:
        real_means, syn_means: per-class mean embeddings ``(K, D_l)`` of each layer, the last layer last.
        weight: the earlier layers' weight. Layer ``l``'s term is scaled by ``D_last / D_l`` so that a layer
            counts by its mean squared difference per feature, not by its size (the first block of ConvNet-3 on
            28×28 has 22× the features of the last).

    Returns:
        ``Σ_c ‖Δ_L,c‖² + weight · Σ_{l<L} (D_L / D_l) Σ_c ‖Δ_l,c‖²``, a 0-d tensor.

    Example:
        >>> r = [torch.zeros(2, 4), torch.zeros(2, 2)]
        >>> s = [torch.ones(2, 4), torch.ones(2, 2)]
        >>> float(layer_matching_distance(r, s, 0.5))  # 4 + 0.5 * (2 / 4) * 8
        6.0
    """
    loss = mean_embedding_distance(real_means[-1], syn_means[-1])
    last = real_means[-1].shape[1]
    for real, syn in zip(real_means[:-1], syn_means[:-1], strict=True):
        loss = loss + weight * (last / real.shape[1]) * mean_embedding_distance(real, syn)
    return loss


def _by_class(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The rows of ``features`` ``(N, D)`` grouped by class, ``(K, N / K, D)``; every class in ``labels`` ``(N,)``
    equally often, in any order (a stable sort of the labels: no host sync)."""
    return features[torch.argsort(labels, stable=True)].view(num_classes, -1, features.shape[1])


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``‖a_i − b_j‖²`` of every pair within each group, ``(K, N, M)`` from ``(K, N, D)`` and ``(K, M, D)``;
    smooth everywhere, unlike the square of ``torch.cdist`` at 0 (a row and itself)."""
    d2 = a.pow(2).sum(-1)[:, :, None] + b.pow(2).sum(-1)[:, None, :] - 2 * a @ b.transpose(1, 2)
    return d2.clamp_min(0)


def gaussian_mmd(real: Tensor, real_labels: Tensor, syn: Tensor, syn_labels: Tensor, num_classes: int,
                 bandwidth: float) -> Tensor:
    """M3D's loss: ``Σ_c σ_c² · MMD²_k(R_c, S_c)`` under ``k(a, b) = exp(−‖a − b‖² / (2σ_c²))``.

    ``MMD²`` is the biased (V-statistic) estimate ``mean k(r, r') + mean k(s, s') − 2 mean k(r, s)`` over all
    pairs, so it is defined at one synthetic image per class. Each class's width is ``2σ_c² = bandwidth ·
    median_{i≠j} ‖r_i − r_j‖²`` over its real embeddings (the median heuristic, held constant: no gradient). The
    factor ``σ_c²`` makes the loss tend to DM's ``Σ_c ‖mean R_c − mean S_c‖²`` as ``bandwidth → ∞``
    (``1 − k ≈ ‖a − b‖² / (2σ²)``); at finite width the far real images count less, so the synthetic images
    move towards where their class's real embeddings are dense, not only to their mean.

    Args:
        real, syn: embeddings ``(N, D)`` and ``(M, D)``; the gradient flows into both.
        real_labels, syn_labels: their class ids ``(N,)`` and ``(M,)`` in ``[0, num_classes)``, every class
            equally often on each side and at least 2 real rows a class.
        num_classes: ``K``.
        bandwidth: the width's multiple of the median heuristic, > 0.

    Returns:
        A 0-d tensor.

    Example:
        >>> r, s = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0]])
        >>> labels = torch.tensor([0, 0])
        >>> round(float(gaussian_mmd(r, labels, s, torch.tensor([0]), 1, 1000.0)), 3)  # wide: DM's ‖1 − 1‖²
        0.0
        >>> round(float(gaussian_mmd(r, labels, s + 1, torch.tensor([0]), 1, 1000.0)), 3)  # ≈ ‖1 − 2‖²
        0.999
    """
    r, s = _by_class(real, real_labels, num_classes), _by_class(syn, syn_labels, num_classes)
    rr = _squared_distances(r, r)
    off_diagonal = ~torch.eye(r.shape[1], dtype=torch.bool, device=r.device)
    median = rr.detach()[:, off_diagonal].median(dim=1).values  # (K,)
    two_sigma2 = (bandwidth * median).clamp_min(torch.finfo(median.dtype).tiny)[:, None, None]
    mmd2 = sum(sign * torch.exp(-d2 / two_sigma2).mean(dim=(1, 2))
               for sign, d2 in ((1, rr), (1, _squared_distances(s, s)), (-2, _squared_distances(r, s))))
    return (two_sigma2.flatten() / 2 * mmd2).sum()


def discrimination_loss(real_features: Tensor, real_labels: Tensor, syn_means: Tensor) -> Tensor:
    """CAFE's discrimination loss: the real images classified by their inner products with the synthetic class means.

    Args:
        real_features: embeddings of a real batch ``(N, D)`` (no gradient needed).
        real_labels: their class ids ``(N,)``.
        syn_means: the mean synthetic embedding of every class ``(K, D)``.

    Returns:
        ``mean_i CE(softmax_c ⟨f_i, m_c⟩, y_i)``, a 0-d tensor: small when each class's synthetic mean is the
        prototype its real images are nearest to in inner product.

    Example:
        >>> m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> good = discrimination_loss(10 * m, torch.tensor([0, 1]), m)
        >>> bad = discrimination_loss(10 * m, torch.tensor([1, 0]), m)
        >>> float(good) < 1e-3 < 10 - 1e-3 < float(bad)
        True
    """
    return F.cross_entropy(real_features @ syn_means.T, real_labels)


def _under(params: Params, prefix: str) -> Params:
    """The entries of ``params`` whose names start with ``prefix``, renamed without it (a submodule's parameters)."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def embed(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """ψ_θ(x): ``model.features`` under the ``features.*`` entries of ``params``, flattened to ``(B, D)``."""
    return functional_call(model.features, _under(params, "features."), (x,)).flatten(1)


def block_outputs(model: nn.Module, params: Params, x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Run ``model.features`` under ``params`` once and return, for every block (the modules up to a ReLU and the
    pool right after it, if any), ``(the ReLU's output (B, C, H, W), the block's output (B, C, H', W'))``: the
    block's output is its pool's, or the ReLU's where no pool follows.

    Example:
        >>> from augdistill.models import ConvNet
        >>> net = ConvNet((1, 8, 8), 3, width=4, depth=2)
        >>> [(tuple(a.shape), tuple(o.shape)) for a, o in block_outputs(net, dict(net.named_parameters()),
        ...                                                              torch.rand(5, 1, 8, 8))]
        [((5, 4, 8, 8), (5, 4, 4, 4)), ((5, 4, 4, 4), (5, 4, 2, 2))]
    """
    blocks: list[tuple[Tensor, Tensor]] = []
    for index, module in enumerate(model.features):
        x = functional_call(module, _under(params, f"features.{index}."), (x,))
        if isinstance(module, nn.ReLU):
            blocks.append((x, x))
        elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)) and blocks:
            blocks[-1] = (blocks[-1][0], x)
    return blocks


def attention_map(activation: Tensor) -> Tensor:
    """DataDAM's spatial attention of a block: ``Σ_channels |a|`` at every position, each image's map scaled to
    unit L2 norm.

    Args:
        activation: a block's ReLU output ``(B, C, H, W)``.

    Returns:
        ``(B, H * W)``, every row of norm 1 (or 0 where the activation is 0 everywhere).

    Example:
        >>> a = torch.zeros(1, 2, 2, 2); a[0, :, 0, 0] = 3.0
        >>> attention_map(a).tolist()
        [[1.0, 0.0, 0.0, 0.0]]
    """
    return F.normalize(activation.abs().sum(1).flatten(1), dim=1)


def gram_matrix(activation: Tensor) -> Tensor:
    """The channel correlations of a block's feature maps (their Gram matrix, Gatys et al.'s style), flattened.

    Args:
        activation: a block's ReLU output ``(B, C, H, W)``.

    Returns:
        ``(B, C · C)``: row ``b`` holds ``G[i, j] = mean_{positions} a[b, i] · a[b, j]``.

    Example:
        >>> a = torch.zeros(1, 2, 1, 2); a[0, 0] = torch.tensor([[1.0, 3.0]]); a[0, 1] = torch.tensor([[2.0, 0.0]])
        >>> gram_matrix(a).tolist()  # [[(1 + 9) / 2, (2 + 0) / 2], [1, (4 + 0) / 2]]
        [[5.0, 1.0, 1.0, 2.0]]
    """
    flat = activation.flatten(2)
    return (flat @ flat.transpose(1, 2)).flatten(1) / flat.shape[2]


def classify(model: nn.Module, params: Params, features: Tensor) -> Tensor:
    """Logits ``(B, K)`` of ``model.classifier`` under the ``classifier.*`` entries of ``params`` on ``features``
    ``(B, D)`` from :func:`embed`."""
    return functional_call(model.classifier, _under(params, "classifier."), (features,))


class DistributionMatching(Method):
    """DM: match per-class mean embeddings of real and synthetic images under one random network a step.

    Needs a network with a ``features`` module before its ``classifier`` (``convnet``, ``lenet``). Options
    (:class:`~augdistill.config.MethodConfig`): ``pool``, ``pool_steps``, ``pool_lifetime`` and ``net_lr`` for
    semi-trained networks, ``expert_dir`` for cached experts at random stages of training, ``ce_weight`` for the
    class-aware regulariser, ``layer_weight`` for the layer-wise alignment, ``disc_weight`` for the discrimination
    loss, ``attention_weight`` for DataDAM's attention matching, ``style_weight`` for the Gram matrices'
    matching, and ``kernel`` / ``bandwidth`` for M3D's kernel distance (module docstring).
    """

    name = "dm"
    shards = True
    adversarial_policy = True
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
        self.experts: ExpertNetworks | None = None
        if cfg.expert_dir is not None:
            if cfg.pool:
                raise ConfigError(f"--expert-dir embeds with the experts' networks; it cannot be combined with "
                                  f"--dm-pool {cfg.pool} (use one source of networks)")
            # Imported here: the expert files are written with augdistill.runs.atomic, and augdistill.runs imports
            # the loop, which imports this module.
            from augdistill.distill.experts import ExpertBank
            bank = ExpertBank.load(cfg.expert_dir, info=env.info, model=env.model, min_epochs=None)
            self.experts = ExpertNetworks(bank.trajectories, env.device)
        real_images = env.info.num_classes * env.config.outer.real_per_class
        #: the discrimination term classifies every real image against every class's synthetic mean, so its
        #: classes cannot be split over ranks: every rank then computes the whole loss (Method.shards).
        self.shards = not cfg.disc_weight
        pool_images = real_images if cfg.pool_train_on == "real" else env.synthetic.num_decoded
        self.pool_schedule = InnerSchedule.full_batch(pool_images, 1, cfg.pool_steps)
        if cfg.kernel == "gaussian" and cfg.layer_weight:
            raise ConfigError("--dm-kernel gaussian matches the last layer only; it cannot be combined with "
                              f"--dm-layer-weight {cfg.layer_weight} (use 0)")
        matched = max(1, math.ceil(cfg.easy_fraction * env.config.outer.real_per_class))
        if cfg.kernel == "gaussian" and matched < 2:
            raise ConfigError("--dm-kernel gaussian takes its width from the distances between a class's real "
                              f"images: it needs >= 2 real images matched per class, got {matched} (--real-per-class "
                              f"{env.config.outer.real_per_class} x --dm-easy-fraction {cfg.easy_fraction})")

    def _network(self, batch: OuterBatch) -> Params:
        """The step's embedding network: a fresh random one, an expert at a random stage of its training, or a
        pool member after its SGD steps on the real batch (computed on every rank from the shared streams, so
        every rank embeds with the same network)."""
        env, cfg = self.env, self.env.config
        if self.experts is not None:
            return self.experts.draw(env.generators["method"])
        if self.pool is None:
            return sample_params(env.model, env.generators["init"])
        index, params, fresh = self.pool.draw(env.model, env.generators["method"], env.generators["init"])
        draws, steps = batch.augment.training_draws(), self.pool_schedule.total_steps
        lrs = torch.full((steps,), cfg.method.net_lr, device=env.device)
        side = cfg.method.pool_train_on
        images, targets, labels = batch.training_set(side, env.synthetic)
        params = unroll(env.model, params, images, targets, lrs, self.pool_schedule,
                        momentum=cfg.inner.momentum, create_graph=False,
                        augment=(lambda x, t: getattr(draws, side)(x, labels)) if draws.active else None)
        self.pool.store(index, params, fresh, steps)
        return params

    def losses(self, batch: OuterBatch) -> Iterator[LossPart]:
        env = self.env
        params = self._network(batch)  # on every rank: the same network
        classes = batch.shard.units(env.info.num_classes)
        if not classes:
            return
        synthetic = env.synthetic
        with torch.set_grad_enabled(batch.augment.matching().carries_gradient):  # a graph only for an adversary
            x, real_owned = self._owned(batch, classes, batch.x_real, batch.y_real, "real")
            real_features, real_statistics = self._embed(params, x)
            if env.config.method.easy_fraction < 1:
                real_features, real_statistics, real_owned = self._easiest(params, classes, real_features,
                                                                           real_statistics, real_owned)
            real_means = [class_means(f, real_owned, len(classes)) for f in real_features]
            real_statistic_means = [class_means(v, real_owned, len(classes)) for _, v in real_statistics]
        x, owned = self._owned(batch, classes, synthetic.decode(), synthetic.labels, "synthetic")
        features, statistics = self._embed(params, x)
        syn_means = [class_means(f, owned, len(classes)) for f in features]
        if env.config.method.kernel == "gaussian":  # M3D; real_features holds the last layer only here
            loss = gaussian_mmd(real_features[-1], real_owned, features[-1], owned, len(classes),
                                env.config.method.bandwidth)
        else:
            loss = layer_matching_distance(real_means, syn_means, env.config.method.layer_weight)
        for real, (weight, syn) in zip(real_statistic_means, statistics, strict=True):  # DataDAM's and style terms
            loss = loss + weight * mean_embedding_distance(real, class_means(syn, owned, len(classes)))
        ce_weight = env.config.method.ce_weight
        if ce_weight:  # the mean over the whole set: the ranks' sums add up to it
            class_ids = torch.arange(classes.start, classes.stop, classes.step, device=x.device)[owned]
            ce = F.cross_entropy(classify(env.model, params, features[-1]), class_ids, reduction="sum")
            loss = loss + ce_weight * ce / synthetic.labels.numel()
        disc_weight = env.config.method.disc_weight
        if disc_weight:  # one process holds every class here (self.shards is False)
            loss = loss + disc_weight * discrimination_loss(real_features[-1], real_owned, syn_means[-1])
        yield LossPart(loss)

    def _embed(self, params: Params, x: Tensor) -> tuple[list[Tensor], list[tuple[float, Tensor]]]:
        """From one forward pass: the embeddings the loss matches (every block's output with ``layer_weight``, else
        the last one only, each ``(B, D_l)``) and the per-image statistics whose class means it matches beside them,
        each with its weight in the loss: with ``attention_weight`` the attention maps of every block but the last
        (:func:`attention_map`), with ``style_weight`` the Gram matrices of every block (:func:`gram_matrix`), each
        weighted per entry relative to the last embedding's features."""
        cfg, model = self.env.config.method, self.env.model
        if not (cfg.layer_weight or cfg.attention_weight or cfg.style_weight):
            return [embed(model, params, x)], []
        blocks = block_outputs(model, params, x)
        features = [output.flatten(1) for _, output in (blocks if cfg.layer_weight else blocks[-1:])]
        statistics = [(cfg.attention_weight, attention_map(a)) for a, _ in blocks[:-1]] if cfg.attention_weight else []
        if cfg.style_weight:
            last = features[-1].shape[1]
            statistics += [(cfg.style_weight * last / a.shape[1] ** 2, gram_matrix(a)) for a, _ in blocks]
        return features, statistics

    def _easiest(self, params: Params, classes: range, features: list[Tensor],
                 statistics: list[tuple[float, Tensor]], owned: Tensor
                 ) -> tuple[list[Tensor], list[tuple[float, Tensor]], Tensor]:
        """The rows of the real batch's embeddings (``features``: a list of ``(N, D_l)``), of its weighted
        statistics (:meth:`_embed`) and of ``owned`` (``(N,)``, each row's index among ``classes``) that the step's
        network finds easiest, by its cross-entropy on the last embedding: ``easy_fraction`` of each class
        (:func:`easiest_rows`)."""
        class_ids = classes.start + classes.step * owned
        ce = F.cross_entropy(classify(self.env.model, params, features[-1]), class_ids, reduction="none")
        rows = easiest_rows(ce.detach(), owned, len(classes), self.env.config.method.easy_fraction)
        return [f[rows] for f in features], [(w, v[rows]) for w, v in statistics], owned[rows]

    def _owned(self, batch: OuterBatch, classes: range, x: Tensor, labels: Tensor,
               side: str) -> tuple[Tensor, Tensor]:
        """The augmented rows of ``x`` ``(N, C, H, W)`` whose classes are ``classes``, and each row's index among
        ``classes``. ``labels`` ``(N,)`` must hold every class equally often (in any order); ``side`` is
        ``"real"`` or ``"synthetic"``. No host sync: the rows are found by a stable sort of the labels."""
        num_classes = self.env.info.num_classes
        augment = batch.augment.matching()
        if len(classes) == num_classes and not augment.fresh:
            return getattr(augment, side)(x, labels), labels
        per_class = labels.shape[0] // num_classes
        rows = torch.argsort(labels, stable=True).view(num_classes, per_class)
        owned = torch.arange(len(classes), device=x.device).repeat_interleave(per_class)
        if not augment.fresh:
            mine = rows[classes.start:classes.stop:classes.step].flatten()
            return getattr(augment, side)(x[mine], labels[mine]), owned
        return torch.cat([getattr(batch.unit_augment(c).matching(), side)(x[rows[c]], labels[rows[c]])
                          for c in classes]), owned
