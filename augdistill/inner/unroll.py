"""The augmentation-aware functional inner trainer shared by every method and objective.

``unroll`` runs ``T = steps * epochs`` SGD(-momentum) steps on a (synthetic) training set as a
pure function of the starting parameters and keeps the autograd graph, so a loss on the
returned θ_T back-propagates into the images, the targets (when they are soft and learnable),
the per-step learning rates and anything the augmentation depends on. With
``create_graph=False`` the same code trains a network without building any graph (evaluation,
and the network updates between gradient-matching steps).

Options that change the cost, never the hypergradient (beyond float rounding):

* ``checkpoint=n`` recomputes every run of ``n`` inner steps during the backward pass instead of storing
  its activations (``torch.utils.checkpoint``, non-reentrant): the graph then holds θ and the velocity at
  segment boundaries only. Fresh augmentation draws are replayed exactly: pass the generators they come
  from as ``generators``.
* ``stacked=D`` trains ``D`` independent networks at once: every ``params`` tensor carries a leading
  dimension ``D``, the forward pass is ``torch.func.vmap``-ed over it, and each step's loss is the sum
  of the ``D`` networks' losses (so each network gets its own gradient). All ``D`` see the same batch.
* ``precision="bfloat16"`` runs the network's forward (and so its backward) under ``torch.autocast``;
  parameters, their updates, the loss and the learning rates stay float32.
* ``compile=True`` computes each step's gradient with ``torch.compile(torch.func.grad(loss))``
  (``torch.compile`` cannot double-backward through an eagerly differentiated graph; a compiled
  gradient it can differentiate once more).

A model that declares ``explicit_gradient`` (today ``ConvNet`` without normalisation) supplies each step's loss
gradient as differentiable ops (``model.loss_gradient``); the graph-keeping float32 unroll of one network uses
it automatically and the outer pass differentiates it once (:mod:`augdistill.models.backward`: less memory).

Example:
    >>> import torch
    >>> from augdistill.models import build_model, sample_params
    >>> net = build_model("mlp", (1, 4, 4), 3, width=8, depth=1)
    >>> theta0 = sample_params(net, torch.Generator().manual_seed(0))
    >>> x = torch.rand(6, 1, 4, 4, requires_grad=True)
    >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> lrs = torch.full((4,), 0.1, requires_grad=True)
    >>> schedule = InnerSchedule.full_batch(num_images=6, steps=2, epochs=2)
    >>> theta = unroll(net, theta0, x, y, lrs, schedule)
    >>> torch.nn.functional.cross_entropy(torch.func.functional_call(net, theta, (x,)), y).backward()
    >>> x.grad.abs().sum() > 0 and lrs.grad.abs().sum() > 0
    tensor(True)
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as recompute

from augdistill.errors import ConfigError
from augdistill.inner.schedule import InnerSchedule
from augdistill.typing import Augment, Params

__all__ = ["unroll", "inner_step_loss", "logits", "PRECISIONS"]

#: ``precision`` name -> the autocast dtype of the network's forward (``None``: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}

_Grad = Callable[[list[Tensor], Tensor, Tensor], list[Tensor]]
_COMPILED: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, str], Callable]]" = weakref.WeakKeyDictionary()


def inner_step_loss(model: nn.Module, params: Params, x: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of ``model(x)`` under ``params``; ``targets`` are class ids ``(B,)`` or probabilities ``(B, K)``."""
    return F.cross_entropy(functional_call(model, params, (x,)), targets)


def _autocast(device: torch.device, precision: str) -> ContextManager[object]:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def logits(model: nn.Module, params: Params, x: Tensor, *, stacked: int = 0, precision: str = "float32") -> Tensor:
    """``model(x)`` under ``params``: ``(B, K)``, or ``(D, B, K)`` for ``D = stacked`` networks stacked along dim 0
    of every ``params`` tensor (``vmap``); the forward runs under autocast for ``precision`` ``bfloat16``, whose
    logits come back in float32 (the loss is taken in full precision)."""
    with _autocast(x.device, precision):
        if not stacked:
            out = functional_call(model, params, (x,))
        else:
            out = torch.func.vmap(lambda p: functional_call(model, p, (x,)))(params)
    return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out


def _loss(model: nn.Module, params: Params, x: Tensor, targets: Tensor, stacked: int, precision: str) -> Tensor:
    """Mean cross-entropy of one network, or the sum over ``stacked`` networks of each one's mean."""
    if not stacked and precision == "float32":
        return inner_step_loss(model, params, x, targets)
    out = logits(model, params, x, stacked=stacked, precision=precision)
    if not stacked:
        return F.cross_entropy(out, targets)
    repeated = targets.repeat(stacked, *([1] * (targets.dim() - 1)))
    return F.cross_entropy(out.flatten(0, 1), repeated, reduction="sum") / x.shape[0]


def _gradient(model: nn.Module, names: list[str], stacked: int, precision: str, compile: bool,
              create_graph: bool, explicit: bool = True) -> _Grad:
    """``grad(theta, x, targets)``: the gradient of the step loss w.r.t. ``theta`` (a list in ``names`` order).

    A model that declares ``explicit_gradient`` (its ``loss_gradient(params, x, targets)`` writes the gradient as
    differentiable ops) is used for the graph-keeping float32 unroll of one network: the outer backward then
    differentiates those ops once instead of running autograd's double backward."""
    if explicit and create_graph and not stacked and precision == "float32" and not compile and \
            getattr(model, "explicit_gradient", False):
        def explicit(theta: list[Tensor], x: Tensor, targets: Tensor) -> list[Tensor]:
            grads = model.loss_gradient(dict(zip(names, theta)), x, targets)  # type: ignore[operator]
            return [grads[n] for n in names]
        return explicit
    if not compile:
        def eager(theta: list[Tensor], x: Tensor, targets: Tensor) -> list[Tensor]:
            loss = _loss(model, dict(zip(names, theta)), x, targets, stacked, precision)
            return list(torch.autograd.grad(loss, theta, create_graph=create_graph))
        return eager
    cache = _COMPILED.setdefault(model, {})
    key = (stacked, precision)
    if key not in cache:
        def loss(params: Params, x: Tensor, targets: Tensor) -> Tensor:
            return _loss(model, params, x, targets, stacked, precision)
        cache[key] = torch.compile(torch.func.grad(loss))
    compiled = cache[key]

    def traced(theta: list[Tensor], x: Tensor, targets: Tensor) -> list[Tensor]:
        grads = compiled(dict(zip(names, theta)), x, targets)
        return [grads[n] for n in names]
    return traced


def _replaying(run: Callable[..., tuple[Tensor, ...]], generators: Sequence[torch.Generator]
               ) -> Callable[..., tuple[Tensor, ...]]:
    """``run`` for ``torch.utils.checkpoint``: its recomputation during backward draws the same fresh
    augmentation as the first call (``generators`` rewound to where they stood), then leaves them as they were."""
    start = [g.get_state() for g in generators]
    calls = [0]

    def segment(*flat: Tensor) -> tuple[Tensor, ...]:
        calls[0] += 1
        if calls[0] == 1 or not generators:
            return run(*flat)
        now = [g.get_state() for g in generators]
        for g, state in zip(generators, start):
            g.set_state(state)
        try:
            return run(*flat)
        finally:
            for g, state in zip(generators, now):
                g.set_state(state)
    return segment


def unroll(model: nn.Module, params: Params, images: Tensor, targets: Tensor, lrs: Tensor,
           schedule: InnerSchedule, *, momentum: float | Tensor = 0.0, augment: Augment | None = None,
           create_graph: bool = True, checkpoint: int = 0, generators: Sequence[torch.Generator] = (),
           stacked: int = 0, precision: str = "float32", compile: bool = False, explicit: bool = True) -> Params:
    """Train from ``params`` for ``schedule.total_steps`` SGD steps and return the final parameters.

    Args:
        model: the network architecture; only its structure (and buffers) is used.
        params: θ₀ as ``name -> tensor``; leaves that do not require grad are made to.
        images: training images ``(N, C, H, W)`` in ``[0, 1]``.
        targets: class ids ``(N,)`` or class probabilities ``(N, K)``.
        lrs: per-step learning rates ``(T,)`` with ``T = schedule.total_steps``.
        schedule: which images every step sees.
        momentum: heavy-ball momentum μ (``v ← μ v + g``, ``θ ← θ − lr v``); float or 0-d tensor.
        augment: ``augment(batch, t)`` applied to each step's minibatch (``t`` = global step index).
        create_graph: keep the graph of every step (needed for hypergradients). With ``False`` the
            result is detached and no graph is built (evaluation, plain training).
        checkpoint: ``0`` stores every step's activations; ``n >= 1`` recomputes each segment of ``n``
            steps in the backward pass (memory ``~ T / n`` parameter copies ``+ n`` steps of activations).
        generators: the generators ``augment`` draws fresh noise from (replayed exactly when recomputing).
        stacked: ``0``, or the number ``D`` of networks stacked along dim 0 of every ``params`` tensor.
        precision: ``float32``, or ``bfloat16`` (autocast of the network's forward).
        compile: compute each step's gradient with ``torch.compile(torch.func.grad(...))``.
        explicit: use the model's hand-written ``loss_gradient`` where it declares ``explicit_gradient``
            (``False``: autograd's double backward, for comparisons).

    Returns:
        θ_T as a new dict; with ``create_graph`` it is differentiable w.r.t. ``params``,
        ``images``, ``targets``, ``lrs``, ``momentum`` and whatever ``augment`` depends on.
    """
    if lrs.shape != (schedule.total_steps,):
        raise ConfigError(f"expected {schedule.total_steps} learning rates (steps x epochs), got shape "
                          f"{tuple(lrs.shape)}")
    if checkpoint < 0:
        raise ConfigError(f"checkpoint must be >= 0 inner steps per recomputed segment, got {checkpoint}")
    names = list(params)
    theta = [p if p.requires_grad else p.detach().requires_grad_() for p in params.values()]
    batches = schedule.on(images.device)
    step_lrs = lrs.unbind()
    grad = _gradient(model, names, stacked, precision, compile, create_graph, explicit)

    def steps(first: int, last: int, theta: list[Tensor], velocity: list[Tensor] | None
              ) -> tuple[list[Tensor], list[Tensor] | None]:
        for t in range(first, last):
            idx = batches[t % schedule.steps]
            x = images[idx]
            if augment is not None:
                x = augment(x, t)
            grads = grad(theta, x, targets[idx])
            if velocity is None:
                velocity = grads
            else:
                velocity = [momentum * v + g for v, g in zip(velocity, grads)]
            theta = [p - step_lrs[t] * v for p, v in zip(theta, velocity)]
            if not create_graph:
                theta = [p.detach().requires_grad_() for p in theta]
                velocity = [v.detach() for v in velocity]
        return theta, velocity

    with torch.enable_grad():
        if checkpoint and create_graph:
            theta, velocity = _checkpointed(steps, theta, schedule.total_steps, checkpoint, generators)
        else:
            theta, _ = steps(0, schedule.total_steps, theta, None)
    if not create_graph:
        theta = [p.detach() for p in theta]
    return dict(zip(names, theta))


def _checkpointed(steps: Callable[..., tuple[list[Tensor], list[Tensor] | None]], theta: list[Tensor], total: int,
                  every: int, generators: Sequence[torch.Generator]) -> tuple[list[Tensor], list[Tensor] | None]:
    """Run ``steps`` over ``[0, total)`` in segments of ``every`` steps, each recomputed during backward."""
    n = len(theta)
    velocity: list[Tensor] | None = None
    for first in range(0, total, every):
        last = min(first + every, total)

        def run(*flat: Tensor, first: int = first, last: int = last) -> tuple[Tensor, ...]:
            out_theta, out_velocity = steps(first, last, list(flat[:n]), list(flat[n:]) or None)
            return (*out_theta, *(out_velocity or []))
        flat = recompute(_replaying(run, generators), *theta, *(velocity or []), use_reentrant=False)
        theta, velocity = list(flat[:n]), list(flat[n:])
    return theta, velocity
