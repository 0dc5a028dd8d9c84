"""A constant-memory variant of the unroll for losses on θ_T alone (TESLA, arXiv 2211.10586).

The inner trainer's SGD(-momentum) steps make θ_T a *linear* function of the step gradients
``g_t = ∇_θ ℓ(θ_t; x_t)``::

    θ_T = θ_0 − Σ_t α_t u_t,   u_t = μ u_{t-1} + g_t   ⇒   θ_T = θ_0 − Σ_t c_t g_t,
    c_t = Σ_{s ≥ t} α_s μ^{s-t}.

For a loss ``L(θ_T)`` with ``v = ∂L/∂θ_T`` TESLA accumulates, step by step,

* ``∂L/∂x_t ≈ −c_t · vᵀ ∂g_t/∂x_t`` (``x_t``: the step's minibatch, hence the images, soft targets and
  augmentation parameters it was made from), and
* ``∂L/∂α_t ≈ −vᵀ u_t``,

each from one step's graph, so the peak memory does not depend on ``T``. Two passes:

1. :class:`ConstantMemoryUnroll` (constructor) trains ``T`` steps without any graph and keeps only θ_T.
2. :meth:`ConstantMemoryUnroll.backward` takes ``v`` and replays the steps from θ_0. At step ``t`` it
   rebuilds ``g_t`` with a graph at the (detached) θ_t and back-propagates the step's share of the
   gradient; the graph is freed before step ``t + 1``. Nothing of length ``T`` is stored (TESLA's own code
   keeps every θ_t; recomputing them here costs one more forward/backward per step and keeps the memory flat).

**This is not the full unroll's gradient.** It treats every θ_t as a constant, so it drops the terms in
which a step's batch changes the *later* steps' gradients through their Hessians
(``∂g_s/∂θ_s · ∂θ_s/∂x_t`` for ``s > t``), and likewise the dependence of ``g_s`` on ``α_t`` (``t < s``).
TESLA's paper calls its gradient exact; its code (``w_i = student_params[i]`` built from *detached*
gradients) computes this first-order gradient. It equals the full unroll's exactly for ``T = 1``, and the
relative difference shrinks with the step size (it is ``O(α · ‖H‖ · T)``: on a ConvNet-3 at α = 0.01 the
image gradient's relative error measured 0.03 at T = 2 and 0.4 at T = 16, ``benchmarks/bench_mtt_memory.py``).
``tests/distill/methods/test_trajectory_matching.py`` checks both, and checks that it equals an independent
autograd computation of the same first-order formula.

Example:
    >>> import torch
    >>> from augdistill.models import build_model, sample_params
    >>> net = build_model("mlp", (1, 4, 4), 3, width=8, depth=1)
    >>> theta0 = sample_params(net, torch.Generator().manual_seed(0))
    >>> x = torch.rand(6, 1, 4, 4, requires_grad=True)
    >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> lrs = torch.full((3,), 0.1, requires_grad=True)
    >>> run = ConstantMemoryUnroll(net, theta0, x, y, lrs, InnerSchedule.full_batch(6, 3, 1))
    >>> theta = {k: v.requires_grad_() for k, v in run.theta.items()}
    >>> sum((p ** 2).sum() for p in theta.values()).backward()   # any loss of θ_T alone
    >>> run.backward({k: p.grad for k, p in theta.items()})
    >>> bool(x.grad.abs().sum() > 0 and lrs.grad.abs().sum() > 0)
    True
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from augdistill.errors import ConfigError
from augdistill.inner.schedule import InnerSchedule
from augdistill.inner.unroll import inner_step_loss, unroll
from augdistill.typing import Augment, Params

__all__ = ["ConstantMemoryUnroll", "step_coefficients"]


def step_coefficients(lrs: Tensor, momentum: float) -> Tensor:
    """``c_t = Σ_{s ≥ t} α_s μ^{s-t}``, shape ``(T,)``: how much of ``g_t`` heavy-ball SGD subtracts from θ_T."""
    out = [lrs[-1]]
    for t in range(lrs.shape[0] - 2, -1, -1):
        out.append(lrs[t] + momentum * out[-1])
    return torch.stack(out[::-1])


class ConstantMemoryUnroll:
    """θ_T of :func:`~augdistill.inner.unroll.unroll` now, its first-order hypergradient later; memory O(1) in ``T``.

    Args:
        model: the network architecture (structure and buffers only).
        params: θ₀ as ``name -> tensor``; treated as a constant (no gradient is returned for it).
        images: training images ``(N, C, H, W)``, may carry a graph (e.g. a decoder's).
        targets: class ids ``(N,)`` or probabilities ``(N, K)``, may carry a graph (learned soft labels).
        lrs: per-step learning rates ``(T,)``, may carry a graph (e.g. one learned step size expanded).
        schedule: which images every step sees.
        momentum: heavy-ball momentum μ (a constant float here).
        augment: ``augment(batch, t)``; it is called twice per step (once per pass) and must give the
            same draw both times: deterministic given ``t``, or drawing only from ``generators``.
        generators: the generators ``augment`` draws from; their state is rewound before the second pass
            (and is back where the first pass left it afterwards).

    Attributes:
        theta: θ_T, detached (make its tensors leaves and compute the loss on them).
    """

    def __init__(self, model: nn.Module, params: Params, images: Tensor, targets: Tensor, lrs: Tensor,
                 schedule: InnerSchedule, *, momentum: float = 0.0, augment: Augment | None = None,
                 generators: Sequence[torch.Generator] = ()) -> None:
        if isinstance(momentum, Tensor):
            raise ConfigError("ConstantMemoryUnroll takes a float momentum (it is not learned here)")
        self.model, self.schedule, self.momentum = model, schedule, float(momentum)
        self.params = {k: v.detach() for k, v in params.items()}
        self.images, self.targets, self.lrs = images, targets, lrs
        self.augment, self.generators = augment, tuple(generators)
        self._rewind = [g.get_state() for g in self.generators]
        self._used = False
        plain = None
        if augment is not None:
            def plain(x: Tensor, t: int) -> Tensor:
                with torch.no_grad():
                    return augment(x, t)
        self.theta: Params = unroll(model, self.params, images.detach(), targets.detach(), lrs.detach(), schedule,
                                    momentum=self.momentum, augment=plain, create_graph=False)

    def backward(self, grad_theta: Mapping[str, Tensor | None]) -> None:
        """Accumulate the first-order gradient of a loss with ``∂L/∂θ_T = grad_theta`` into every leaf that
        ``images``, ``targets``, ``lrs`` and ``augment`` depend on (``.grad``, as ``Tensor.backward`` does).

        Args:
            grad_theta: ``name -> ∂L/∂θ_T`` (``None`` for a parameter the loss does not reach).

        Raises:
            ConfigError: called twice, or ``grad_theta`` names other parameters than θ.
        """
        if self._used:
            raise ConfigError("ConstantMemoryUnroll.backward was already called; build a new unroll per loss")
        if set(grad_theta) != set(self.theta):
            raise ConfigError(f"grad_theta must name the parameters {sorted(self.theta)}, got {sorted(grad_theta)}")
        self._used = True
        for g, state in zip(self.generators, self._rewind):
            g.set_state(state)
        names = list(self.theta)
        v = [torch.zeros_like(self.theta[k]) if grad_theta[k] is None else grad_theta[k].detach() for k in names]
        # Leaves standing in for the three inputs that may carry a graph: their gradients are collected over
        # all steps and pushed through the graph behind them once at the end (no retain_graph per step).
        inputs = {"images": self.images, "targets": self.targets, "lrs": self.lrs}
        leaves = {k: t.detach().requires_grad_(t.requires_grad) for k, t in inputs.items()}
        coefficients = step_coefficients(self.lrs.detach(), self.momentum)
        batches = self.schedule.on(self.images.device)
        theta = [self.params[k] for k in names]
        velocity: list[Tensor] | None = None
        with torch.enable_grad():
            for t in range(self.schedule.total_steps):
                idx = batches[t % self.schedule.steps]
                x = leaves["images"][idx]
                if self.augment is not None:
                    x = self.augment(x, t)
                current = [p.detach().requires_grad_() for p in theta]
                loss = inner_step_loss(self.model, dict(zip(names, current)), x, leaves["targets"][idx])
                grads = torch.autograd.grad(loss, current, create_graph=True)
                steps = [g.detach() for g in grads]
                velocity = steps if velocity is None else [self.momentum * u + g for u, g in zip(velocity, steps)]
                # θ_T = θ_0 − Σ c_t g_t = θ_0 − Σ α_t u_t: the first sum carries g_t's graph, the second α_t's.
                surrogate = -(coefficients[t] * _dot(v, grads) + leaves["lrs"][t] * _dot(v, velocity))
                if surrogate.requires_grad:
                    surrogate.backward()
                theta = [p - self.lrs[t].detach() * u for p, u in zip(theta, velocity)]
        pending = [(inputs[k], leaves[k].grad) for k in inputs if leaves[k].grad is not None]
        if pending:
            torch.autograd.backward([t for t, _ in pending], [g for _, g in pending])


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]
