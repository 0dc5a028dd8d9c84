"""LeNet and MLP baselines."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from augdistill.models.layers import Normalize

__all__ = ["LeNet", "MLP"]


def _input_layers(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[nn.Module]:
    return [Normalize(mean, std)] if mean is not None and std is not None else []


class LeNet(nn.Module):
    """LeNet-5 style: two 5x5 convs (6 and 16 channels, padded to keep size) with max-pool, then 120-84-classes.

    Shape:
        input ``(B, C, H, W)`` with ``H, W >= 4``, output ``(B, num_classes)``.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.features = nn.Sequential(
            *_input_layers(mean, std),
            nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * (height // 4) * (width // 4), 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Flatten -> ``depth`` hidden layers of ``width`` units with ReLU -> linear head.

    Shape:
        input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, width: int = 128, depth: int = 1,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        features = in_shape[0] * in_shape[1] * in_shape[2]
        layers: list[nn.Module] = [*_input_layers(mean, std), nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
