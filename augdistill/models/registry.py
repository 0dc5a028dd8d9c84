"""``build_model`` and explicit-generator parameter initialisation."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from augdistill.devices import upload
from augdistill.errors import ConfigError
from augdistill.models.convnet import ConvNet
from augdistill.models.lenet import MLP, LeNet
from augdistill.typing import Params

__all__ = ["MODELS", "build_model", "sample_params", "reset_parameters_"]

MODELS: dict[str, Callable[..., nn.Module]] = {"convnet": ConvNet, "lenet": LeNet, "mlp": MLP}


def build_model(name: str, in_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a classifier by name.

    Args:
        name: ``convnet`` | ``lenet`` | ``mlp``.
        in_shape: ``(C, H, W)`` of the input images.
        num_classes: number of logits.
        **kwargs: family options (``width``, ``depth``, ``norm``, ``mean``, ``std``; ``first_padding`` for ``convnet``).

    Example:
        >>> net = build_model("convnet", (1, 8, 8), 10, width=32, norm="group")
        >>> net(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; expected one of {', '.join(MODELS)}")
    if kwargs.get("first_padding") is not None and name != "convnet":
        raise ConfigError(f"--first-padding pads the first convolution of a convnet; model '{name}' has none")
    try:
        return MODELS[name](in_shape, num_classes, **kwargs)
    except TypeError as e:
        raise ConfigError(f"model '{name}': {e}") from None


def sample_params(model: nn.Module, generator: torch.Generator) -> Params:
    """Draw fresh parameters θ₀ ~ p(θ) for ``model`` without touching the global RNG.

    Conv and linear weights and biases follow PyTorch's default init
    (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``); norm layers start at weight 1, bias 0.

    Returns:
        A ``name -> tensor`` dict on the model's device, leaves not requiring grad.
    """
    params: Params = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            for pname in ("weight", "bias"):
                p = getattr(module, pname)
                if p is not None:
                    draw = torch.rand(p.shape, generator=generator, device=generator.device)
                    params[prefix + pname] = upload((draw * 2 - 1) * bound, p.device)
        elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)) and module.weight is not None:
            params[prefix + "weight"] = torch.ones_like(module.weight)
            params[prefix + "bias"] = torch.zeros_like(module.bias)
    missing = {n for n, _ in model.named_parameters()} - params.keys()
    if missing:
        raise ConfigError(f"sample_params does not know how to initialise {sorted(missing)}")
    return params


@torch.no_grad()
def reset_parameters_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise ``model`` in place from :func:`sample_params` (no global RNG); returns ``model``."""
    for name, value in sample_params(model, generator).items():
        model.get_parameter(name).copy_(value)
    return model
