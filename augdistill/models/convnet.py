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

    Shape:
        input ``(B, C, H, W)``, output ``(B, num_classes)``.

    Without normalisation (``norm="none"``) the net declares a hand-written loss gradient
    (:meth:`loss_gradient`, ``explicit_gradient = True``) that the inner trainer differentiates instead of
    autograd's double backward (see :mod:`augdistill.models.backward`).
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, width: int = 128, depth: int = 3,
                 norm: str = "instance", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        channels, height, width_px = in_shape
        layers: list[nn.Module] = [Normalize(mean, std)] if mean is not None and std is not None else []
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), make_norm(norm, width), nn.ReLU()]
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
