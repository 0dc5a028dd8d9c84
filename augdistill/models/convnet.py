"""The ConvNet of the dataset-distillation literature (conv-norm-relu-avgpool blocks + linear)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from augdistill.errors import ConfigError
from augdistill.models.backward import ExplicitPlan, convnet_loss_gradient, explicit_plan
from augdistill.models.layers import Normalize, make_norm
from augdistill.typing import Params

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """``depth`` blocks of 3x3 conv (``width`` channels) -> norm -> ReLU -> 2x2 avg-pool, then a linear head.

    Pooling stops once the feature map is 1x1, so the same net runs on 8x8 digits and 32x32 CIFAR.

    Args:
        in_shape: ``(C, H, W)`` of the input images.
        num_classes: number of output logits.
        width: channels of every conv layer (128 is the field's standard, 32 a cheap distillation net).
        depth: number of conv blocks.
        norm: ``instance`` | ``group`` | ``batch`` | ``none``.
        mean, std: per-channel input normalisation; inputs are ``[0, 1]`` images.
        first_padding: zero padding of the first conv (the others pad 1, keeping the map's size). The field's
            code (DC, DSA, DM, MTT) pads a 28x28 grey-scale image by 3, so that its maps are 32, 16, 8 and 4
            pixels a side as for CIFAR (2 048 features at width 128); 1 keeps them at 28, 14, 7 and 3 (1 152).

    Shape:
        input ``(B, C, H, W)``, output ``(B, num_classes)``.

    Without normalisation (``norm="none"``) the net declares a hand-written loss gradient
    (:meth:`loss_gradient`, ``explicit_gradient = True``) that the inner trainer differentiates instead of
    autograd's double backward (see :mod:`augdistill.models.backward`).
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, width: int = 128, depth: int = 3,
                 norm: str = "instance", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, first_padding: int = 1) -> None:
        super().__init__()
        channels, height, width_px = in_shape
        if min(height, width_px) + 2 * first_padding < 3:
            raise ConfigError(f"a {height}x{width_px} image padded by {first_padding} is smaller than the first "
                              f"conv's 3x3 kernel; use a larger first padding")
        layers: list[nn.Module] = [Normalize(mean, std)] if mean is not None and std is not None else []
        for block in range(depth):
            padding = first_padding if block == 0 else 1
            height, width_px = height + 2 * padding - 2, width_px + 2 * padding - 2
            layers += [nn.Conv2d(channels, width, 3, padding=padding), make_norm(norm, width), nn.ReLU()]
            if min(height, width_px) >= 2:
                layers.append(nn.AvgPool2d(2))
                height, width_px = height // 2, width_px // 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * height * width_px, num_classes)
        self._plan: ExplicitPlan | None = explicit_plan(self.features, "features", "classifier")

    @property
    def explicit_gradient(self) -> bool:
        """Whether :meth:`loss_gradient` covers this net (every layer is conv, ReLU or 2x2 average pool)."""
        return self._plan is not None

    def loss_gradient(self, params: Params, x: Tensor, targets: Tensor) -> Params:
        """``d cross_entropy(self(x), targets) / d params`` as differentiable ops (``name -> (shape of param)``);
        ``targets`` are class ids ``(B,)`` or probabilities ``(B, K)``. Only where :attr:`explicit_gradient`."""
        if self._plan is None:
            raise ConfigError("ConvNet.loss_gradient covers nets without normalisation layers only")
        return convnet_loss_gradient(self._plan, params, x, targets)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
