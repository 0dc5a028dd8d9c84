"""The ConvNet of the dataset-distillation literature (conv-norm-relu-avgpool blocks + linear)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from augdistill.models.layers import Normalize, make_norm

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

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
