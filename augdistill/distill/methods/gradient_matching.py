"""Gradient matching: DC (Zhao, Mopuri & Bilen 2021, arXiv 2006.05929); with a siamese policy it is DSA
(Zhao & Bilen 2021, arXiv 2102.08259).

A network θ is drawn from p(θ) and, for ``outer_loop`` matching steps, the gradient of its loss on the
synthetic images of every class ``c`` is made to point where the gradient on real images of ``c`` points:

    L = Σ_c D(∇_θ CE(θ; A_c(S_c)), ∇_θ CE(θ; A_c(R_c))),
    D(G_s, G_r) = Σ_layers Σ_i (1 − ⟨G_s[i], G_r[i]⟩ / (‖G_s[i]‖ ‖G_r[i]‖ + ε)),

where ``G[i]`` is the gradient of the ``i``-th output node of a layer (the row of a linear weight, the
``in × kh × kw`` kernel of one output channel of a convolution) and ``A_c`` is the augmentation draw of
class ``c``, shared by the real and the synthetic batch (siamese, DSA). As in the authors' code, parameters
with one dimension (biases, normalisation scales and shifts) are left out of ``D``. Between two matching
steps the network is trained on the (augmented) synthetic set for ``inner_loop`` SGD steps by the shared
inner trainer, without a graph; after ``outer_loop`` matching steps a fresh network is drawn.

IDC's choices (Kim et al. 2022, arXiv 2205.14959), as options: ``--dc-train-on real`` trains the network between
matching steps on the step's (augmented) real batch instead (``inner_loop`` full-batch SGD steps), so it is
matched at the states a network trained on real data goes through; ``--dc-distance l1`` replaces the cosine
distance by ``Σ |G_s − G_r|`` over the convolution kernels (IDC's default: the classifier and one-dimensional
parameters left out, :func:`l1_distance`).

One outer step of the loop is one matching step (one update of the images), so ``--iterations`` counts
matching steps: the paper's 1000 iterations at 10 images per class are 10 000 of ours.

How the policy learns (``--policy learn``): the matching loss sees the policy frozen
(:meth:`StepAugment.frozen`), so it cannot widen or shrink the augmentation to make matching easier; the
loop learns the policy from the augmentation objective alone (:meth:`PolicyObjective.standalone`: a short
augmented unroll on the detached synthetic set, then the augmented-real loss minus the width bonus).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from augdistill.config import ModelConfig
from augdistill.distill.methods.base import LossPart, MaybeState, Method, MethodEnv, OuterBatch
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import sample_params
from augdistill.typing import Augment, Params

__all__ = ["GradientMatching", "layer_distance", "l1_distance", "matching_distance", "paper_loops", "PAPER_LOOPS"]

#: The authors' matching steps per network (``outer_loop``) and network training steps between two matching
#: steps (``inner_loop``), by images per class (DC's ``get_loops``).
PAPER_LOOPS: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15),
                                           50: (50, 10)}

#: Added to the product of the norms in :func:`layer_distance` (the authors' value).
COSINE_EPS = 1e-6


def paper_loops(ipc: int, outer_loop: int | None = None, inner_loop: int | None = None) -> tuple[int, int]:
    """``(outer_loop, inner_loop)``: the given values, the paper's for ``ipc`` where one is ``None``.

    Raises:
        ConfigError: if a value is ``None`` and the paper gives none for ``ipc``.
    """
    if outer_loop is not None and inner_loop is not None:
        return outer_loop, inner_loop
    if ipc not in PAPER_LOOPS:
        raise ConfigError(f"--method dc: the paper gives --outer-loop/--inner-loop only for --ipc in "
                          f"{sorted(PAPER_LOOPS)}; got --ipc {ipc}, so pass both --outer-loop and --inner-loop")
    paper_outer, paper_inner = PAPER_LOOPS[ipc]
    return (paper_outer if outer_loop is None else outer_loop, paper_inner if inner_loop is None else inner_loop)


def layer_distance(g_syn: Tensor, g_real: Tensor) -> Tensor:
    """DC's distance between two gradients of one parameter tensor, a 0-d tensor.

    Args:
        g_syn, g_real: gradients of the same parameter, shape ``(out, ...)``: each row (output node) is
            flattened, and the distance is ``Σ_rows (1 − cos(row_syn, row_real))``. One-dimensional
            parameters (biases, norm scales and shifts) count 0, as in the authors' code.

    Example:
        >>> g = torch.randn(4, 3, 3, 3)
        >>> float(layer_distance(g, 2 * g)) < 1e-5, float(layer_distance(g, -g)) > 7.99
        (True, True)
    """
    if g_syn.shape != g_real.shape:
        raise ConfigError(f"gradient shapes differ: {tuple(g_syn.shape)} vs {tuple(g_real.shape)}")
    if g_syn.dim() < 2:
        return g_syn.new_zeros(())
    a, b = g_syn.flatten(1), g_real.flatten(1)
    cosine = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + COSINE_EPS)
    return (1 - cosine).sum()


def l1_distance(g_syn: Tensor, g_real: Tensor) -> Tensor:
    """IDC's distance between two gradients of one parameter tensor, a 0-d tensor: ``Σ |g_syn − g_real|`` for a
    convolution kernel (four dimensions), 0 for every other parameter (IDC matches neither the classifier nor
    biases and norm parameters by default).

    Example:
        >>> g = torch.ones(2, 1, 3, 3)
        >>> float(l1_distance(g, 0.5 * g)), float(l1_distance(torch.ones(3, 4), torch.zeros(3, 4)))
        (9.0, 0.0)
    """
    if g_syn.shape != g_real.shape:
        raise ConfigError(f"gradient shapes differ: {tuple(g_syn.shape)} vs {tuple(g_real.shape)}")
    if g_syn.dim() != 4:
        return g_syn.new_zeros(())
    return (g_syn - g_real).abs().sum()


#: ``--dc-distance``: the distance of one parameter's two gradients.
DISTANCES = {"cosine": layer_distance, "l1": l1_distance}


def matching_distance(grads_syn: Sequence[Tensor], grads_real: Sequence[Tensor], distance: str = "cosine") -> Tensor:
    """``D``: the sum over the parameters of a network of one of :data:`DISTANCES`, a 0-d tensor."""
    layer = DISTANCES[distance]
    return torch.stack([layer(s, r) for s, r in zip(grads_syn, grads_real, strict=True)]).sum()


class GradientMatching(Method):
    """DC / DSA: match per-class gradients of a network that is trained on the synthetic set as it goes.

    Options (:class:`~augdistill.config.MethodConfig`): ``outer_loop`` matching steps per network and
    ``inner_loop`` training epochs over the synthetic set between them (``None``: the paper's for the
    ``ipc``, :data:`PAPER_LOOPS`), at learning rate ``net_lr``, heavy-ball ``--momentum`` and ``--batch-per-class``
    images of each class a step (0: all, as in the paper at up to 25 images per class); with ``train_on``
    ``real``, ``inner_loop`` SGD steps on the step's real batch instead. ``distance``: :data:`DISTANCES`.

    The current network θ and nothing else is the method's state; it is saved with the checkpoint
    (``get_extra_state``), so a run stopped in the middle of an ``outer_loop`` episode resumes bit-exactly.
    """

    name = "dc"
    default_model = ModelConfig(name="convnet", width=128, depth=3, norm="instance")
    #: SGD with momentum 0.5 as in the paper; its image lr 0.1 is for normalised images, ours are in [0, 1]
    #: pixels: the same step is lr · std², about 0.1 · 0.1 for the grey-scale datasets.
    defaults = {"optimizer": "sgd", "lr_images": 0.01, "validation": "standard", "grad_clip": 0.0}

    def __init__(self, env: MethodEnv) -> None:
        super().__init__(env)
        cfg, inner, syn = env.config.method, env.config.inner, env.synthetic
        self.outer_loop, self.inner_loop = paper_loops(env.config.synthetic.ipc, cfg.outer_loop, cfg.inner_loop)
        if cfg.train_on == "real" and (self.outer_loop == 1 or not self.inner_loop):
            raise ConfigError(f"--dc-train-on real trains the network between the matching steps of an episode, and "
                              f"with --outer-loop {self.outer_loop} --inner-loop {self.inner_loop} there is no "
                              f"training: pass --outer-loop > 1 and --inner-loop > 0 (e.g. 50 and 1)")
        per_class, bpc = syn.decoded_per_class, inner.batch_per_class
        self.schedule: InnerSchedule | None = None  # no training between matching steps when inner_loop is 0
        if cfg.train_on == "real":
            self.schedule = InnerSchedule.full_batch(env.info.num_classes * env.config.outer.real_per_class, 1,
                                                     self.inner_loop)
        elif self.inner_loop and bpc in (0, per_class):
            self.schedule = InnerSchedule.full_batch(syn.num_decoded, 1, self.inner_loop)
        elif self.inner_loop:
            self.schedule = InnerSchedule.class_chunks(env.info.num_classes, per_class, bpc, per_class // bpc,
                                                       self.inner_loop)
        self.theta: Params | None = None

    # -- the matching step ----------------------------------------------------------------------
    def losses(self, batch: OuterBatch) -> Iterator[LossPart]:
        env = self.env
        if batch.iteration % self.outer_loop == 0 or self.theta is None:
            self.theta = sample_params(env.model, env.generators["init"])
        names = list(self.theta)
        leaves = [self.theta[k].detach().requires_grad_() for k in names]
        params = dict(zip(names, leaves))
        augment = batch.augment.frozen()
        synthetic = env.synthetic
        labels, targets = synthetic.labels, synthetic.targets()
        # Both batches are class-major with the same count per class: class c is row c of the unflattened batch.
        per_class = (env.info.num_classes, -1)
        x_syn = augment.synthetic(synthetic.decode(), labels).unflatten(0, per_class)
        x_real = augment.real(batch.x_real, batch.y_real).unflatten(0, per_class)
        y_real, targets = batch.y_real.unflatten(0, per_class), targets.unflatten(0, per_class)
        distances = []
        for c in range(env.info.num_classes):
            real_loss = F.cross_entropy(functional_call(env.model, params, (x_real[c],)), y_real[c])
            g_real = torch.autograd.grad(real_loss, leaves)
            syn_loss = F.cross_entropy(functional_call(env.model, params, (x_syn[c],)), targets[c])
            g_syn = torch.autograd.grad(syn_loss, leaves, create_graph=True)
            distances.append(matching_distance(g_syn, g_real, env.config.method.distance))
        # One part (the paper's single backward): the classes share the decoded, augmented batch's graph.
        yield LossPart(torch.stack(distances).sum())

    # -- the network trains on the updated synthetic set (or on the step's real batch) -------------
    def after_update(self, batch: OuterBatch) -> None:
        last_of_episode = (batch.iteration + 1) % self.outer_loop == 0
        if last_of_episode or self.schedule is None:
            return
        env, cfg, schedule = self.env, self.env.config, self.schedule
        side = cfg.method.train_on
        images, targets, labels = batch.training_set(side, env.synthetic)
        augment: Augment | None = None
        if batch.augment.active:
            draws, batches = batch.augment.training_draws(), schedule.on(env.device)

            def augment(x: Tensor, t: int) -> Tensor:
                return getattr(draws, side)(x, labels[batches[t % schedule.steps]])
        lrs = torch.full((schedule.total_steps,), cfg.method.net_lr, device=env.device)
        self.theta = unroll(env.model, self.theta, images, targets, lrs, schedule,
                            momentum=cfg.inner.momentum, augment=augment, create_graph=False)

    # -- resume ---------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"theta": self.theta}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        theta = state["theta"]
        self.theta = None if theta is None else {k: v.detach().clone().to(self.env.device) for k, v in theta.items()}

    def checkpoint_template(self) -> dict[str, Any]:
        """θ is absent between two episodes and shaped like the network's parameters within one."""
        params = {k: v.detach() for k, v in self.env.model.named_parameters()}
        return {**self.state_dict(), "_extra_state": {"theta": MaybeState(params)}}

    def export(self) -> dict[str, Any]:
        return {"outer_loop": self.outer_loop, "inner_loop": self.inner_loop,
                "train_on": self.env.config.method.train_on, "distance": self.env.config.method.distance}
