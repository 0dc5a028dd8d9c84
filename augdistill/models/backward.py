"""A hand-written first-order backward of the ConvNet without normalisation, written in differentiable ops.

The inner trainer needs every step's loss gradient ``g = dL/dθ`` *with its graph*, so that the outer loss can
back-propagate through it. Autograd's ``grad(create_graph=True)`` records its own backward kernels, and the
outer pass then runs their double backward: the graph keeps every conv layer's full-size output gradient,
zero-fills gradients that are known to vanish (the ReLU and average-pool backwards' derivative w.r.t. their
saved input) and computes the weight gradient of each conv layer's input-gradient as a convolution of
transposed tensors, about twice the cost of an ordinary weight gradient on CPU.

:func:`convnet_loss_gradient` runs the forward with ordinary ops (average pooling through :class:`_Pool`,
which stores nothing) and each block's backward as :class:`_BlockBackward`, an autograd function with a
hand-written derivative: it keeps the block's *pooled* output gradient (a quarter of the conv output's),
recomputes the full one in the outer pass, and takes every conv derivative with the ordinary conv kernels.
Same gradient to float rounding; about 0.7x the memory of autograd's double backward per inner step
(ConvNet-3, width 128, 28x28).

:func:`explicit_plan` reads which layers a ``features`` stack holds and returns ``None`` for any layer it
does not cover (normalisation, other pools, strided convs), so a model declares the fast path only where it
applies.

Example:
    >>> import torch
    >>> from augdistill.models import build_model, sample_params
    >>> net = build_model("convnet", (1, 8, 8), 3, width=4, depth=2, norm="none")
    >>> params = sample_params(net, torch.Generator().manual_seed(0))
    >>> x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    >>> ours = net.loss_gradient(params, x, y)
    >>> p = {k: v.requires_grad_() for k, v in params.items()}
    >>> loss = torch.nn.functional.cross_entropy(torch.func.functional_call(net, p, (x,)), y)
    >>> ref = torch.autograd.grad(loss, list(p.values()))
    >>> all(torch.allclose(ours[k], r, atol=1e-6) for k, r in zip(p, ref))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.models.layers import Normalize
from augdistill.typing import Params

__all__ = ["ConvBlock", "ExplicitPlan", "explicit_plan", "convnet_loss_gradient"]


@dataclass(frozen=True)
class ConvBlock:
    """One ``conv (3x3-like, stride 1) -> ReLU -> [2x2 average pool]`` block; ``name`` prefixes its parameters."""

    name: str
    padding: tuple[int, int]
    pool: bool


@dataclass(frozen=True)
class ExplicitPlan:
    """What :func:`convnet_loss_gradient` runs: input normalisation, conv blocks, then the linear ``head``."""

    normalize: Normalize | None
    blocks: tuple[ConvBlock, ...]
    head: str


def explicit_plan(features: nn.Sequential, prefix: str, head: str) -> ExplicitPlan | None:
    """The plan for ``features`` (modules named ``{prefix}.{i}``) followed by the linear layer named ``head``, or
    ``None`` unless the layers are ``[Normalize] (Conv2d [Identity] ReLU [AvgPool2d])+`` with stride-1, biased,
    zero-padded convs and 2x2 floor-mode pools."""
    modules = list(features.named_children())
    normalize = modules.pop(0)[1] if modules and isinstance(modules[0][1], Normalize) else None
    blocks = []
    i, n = 0, len(modules)
    while i < n:
        name, conv = modules[i]
        i += 1
        if not _plain_conv(conv):
            return None
        i += i < n and isinstance(modules[i][1], nn.Identity)
        if i == n or not isinstance(modules[i][1], nn.ReLU):
            return None
        i += 1
        pool = i < n and _half_pool(modules[i][1])
        i += pool
        blocks.append(ConvBlock(f"{prefix}.{name}", _pair(conv.padding), pool))  # type: ignore[arg-type]
    return ExplicitPlan(normalize, tuple(blocks), head) if blocks else None


def _half_pool(module: nn.Module) -> bool:
    return (isinstance(module, nn.AvgPool2d) and _pair(module.kernel_size) == (2, 2)
            and _pair(module.stride or module.kernel_size) == (2, 2) and _pair(module.padding) == (0, 0)
            and not module.ceil_mode and module.divisor_override is None)


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _plain_conv(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.bias is not None and _pair(conv.stride) == (1, 1)
            and _pair(conv.dilation) == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _conv_backward(d_z: Tensor, a: Tensor, weight: Tensor, padding: list[int]) -> tuple[Tensor, Tensor]:
    """Weight and bias gradient of ``conv2d(a, weight, bias, padding)`` for output gradient ``d_z``."""
    _, d_w, d_b = torch.ops.aten.convolution_backward(d_z, a, weight, [weight.shape[0]], [1, 1], padding, [1, 1],
                                                      False, [0, 0], 1, [False, True, True])
    return d_w, d_b


def _unpool(grad: Tensor, size: tuple[int, int]) -> Tensor:
    """The backward of 2x2 floor-mode average pooling onto ``size = (H, W)``: every output spreads a quarter of
    its gradient over its window, an odd last row / column gets zero; ``(B, C, H//2, W//2) -> (B, C, H, W)``."""
    b, c, h, w = grad.shape
    out = (grad * 0.25)[..., None].expand(b, c, h, w, 2).reshape(b, c, h, 1, 2 * w)
    out = out.expand(b, c, h, 2, 2 * w).reshape(b, c, 2 * h, 2 * w)
    if tuple(out.shape[-2:]) != size:
        out = F.pad(out, (0, size[1] - out.shape[-1], 0, size[0] - out.shape[-2]))
    return out


def _pool(x: Tensor) -> Tensor:
    """2x2 floor-mode average pooling ``(B, C, H, W) -> (B, C, H//2, W//2)``; on CPU the window sums of
    ``upsample_nearest2d_backward`` times a quarter (18 vs 32 ms for ``avg_pool2d`` on 100x128x28x28 NCHW)."""
    if x.device.type != "cpu":
        return F.avg_pool2d(x, 2)
    b, c, h, w = x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2
    if (2 * h, 2 * w) != tuple(x.shape[-2:]):
        x = x[..., :2 * h, :2 * w].contiguous()
    return torch.ops.aten.upsample_nearest2d_backward(x, [2 * h, 2 * w], [b, c, h, w], 2.0, 2.0) * 0.25


class _Pool(torch.autograd.Function):
    """2x2 floor-mode average pooling ``(B, C, H, W) -> (B, C, H//2, W//2)`` that stores nothing for its backward
    (``F.avg_pool2d`` stores its input)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.size = tuple(x.shape[-2:])
        return _pool(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _unpool(grad, ctx.size)


def _output_grad(grad: Tensor, relu: Tensor, pool: bool) -> Tensor:
    """``dL/dz`` of a block ``relu(z) [-> pool]`` from ``grad = dL/d(block output)``; ``relu`` is its ReLU output."""
    if pool:
        grad = _unpool(grad, tuple(relu.shape[-2:]))  # type: ignore[arg-type]
    return torch.ops.aten.threshold_backward(grad, relu, 0)


class _BlockBackward(torch.autograd.Function):
    """The backward of one ``conv -> ReLU [-> pool]`` block with its own (first-order) derivative.

    Forward: from ``grad = dL/d(block output)`` the weight and bias gradients and, with ``input_grad``,
    ``dL/d(block input)``. It stores ``grad`` (pooled size) instead of ``dL/dz`` (full size) and recomputes the
    latter in its backward, where it also takes every conv derivative with the ordinary conv kernels (autograd's
    double backward of a conv's input gradient runs a convolution of transposed tensors instead).
    """

    @staticmethod
    def forward(ctx: Any, grad: Tensor, relu: Tensor, a: Tensor, weight: Tensor, pool: bool,  # type: ignore[override]
                padding: list[int], input_grad: bool) -> tuple[Tensor, ...]:
        d_z = _output_grad(grad, relu, pool)
        d_w, d_b = _conv_backward(d_z, a, weight, padding)
        ctx.save_for_backward(grad, relu, a, weight)
        ctx.pool, ctx.padding, ctx.input_grad = pool, padding, input_grad
        if not input_grad:
            return d_w, d_b
        return d_w, d_b, F.conv_transpose2d(d_z, weight, padding=padding)

    @staticmethod
    def backward(ctx: Any, gg_w: Tensor, gg_b: Tensor,  # type: ignore[override]
                 *gg_a: Tensor) -> tuple[Tensor | None, ...]:
        grad, relu, a, weight = ctx.saved_tensors
        d_z = _output_grad(grad, relu, ctx.pool)
        adjoint = F.conv2d(a, gg_w, gg_b, padding=ctx.padding)  # d(d_w, d_b) / d(d_z)
        d_weight = None
        if ctx.input_grad:
            adjoint = adjoint + F.conv2d(gg_a[0], weight, padding=ctx.padding)  # d(conv_transpose2d) / d(d_z)
            if ctx.needs_input_grad[3]:
                d_weight, _ = _conv_backward(d_z, gg_a[0], weight, ctx.padding)
        adjoint = torch.ops.aten.threshold_backward(adjoint, relu, 0)
        d_grad = _pool(adjoint) if ctx.pool else adjoint
        d_a = F.conv_transpose2d(d_z, gg_w, padding=ctx.padding) if ctx.needs_input_grad[2] else None
        return d_grad, None, d_a, d_weight, None, None, None


def convnet_loss_gradient(plan: ExplicitPlan, params: Params, x: Tensor, targets: Tensor) -> Params:
    """``d cross_entropy(net(x), targets) / d params`` for the network ``plan`` describes, as differentiable ops.

    Args:
        plan: the layers (see :func:`explicit_plan`).
        params: ``name -> tensor`` of every conv and head weight and bias.
        x: images ``(B, C, H, W)``.
        targets: class ids ``(B,)`` or class probabilities ``(B, K)`` (the mean cross-entropy's convention).

    Returns:
        ``name -> gradient`` in ``params`` order, differentiable w.r.t. ``params``, ``x`` and ``targets``.
    """
    a = x if plan.normalize is None else plan.normalize(x)
    inputs, relus = [], []
    for block in plan.blocks:
        inputs.append(a)
        z = F.conv2d(a, params[f"{block.name}.weight"], params[f"{block.name}.bias"], padding=block.padding)
        relus.append(torch.relu(z))
        a = _Pool.apply(relus[-1]) if block.pool else relus[-1]
    flat = a.flatten(1)
    head_w = params[f"{plan.head}.weight"]
    logits = F.linear(flat, head_w, params[f"{plan.head}.bias"])
    probs = torch.softmax(logits, 1)
    if targets.dim() == 1:
        d_logits = (probs - torch.zeros_like(probs).scatter_(1, targets[:, None], 1.0)) / x.shape[0]
    else:
        d_logits = (probs * targets.sum(1, keepdim=True) - targets) / x.shape[0]
    grads = {f"{plan.head}.weight": d_logits.t() @ flat, f"{plan.head}.bias": d_logits.sum(0)}
    grad = (d_logits @ head_w).view_as(a)
    for i in range(len(plan.blocks) - 1, -1, -1):
        block = plan.blocks[i]
        out = _BlockBackward.apply(grad, relus[i], inputs[i], params[f"{block.name}.weight"], block.pool,
                                   list(block.padding), i > 0)
        grads[f"{block.name}.weight"], grads[f"{block.name}.bias"] = out[0], out[1]
        grad = out[-1]
    return {name: grads[name] for name in params}
