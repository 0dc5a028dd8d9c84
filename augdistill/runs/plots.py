"""PNG pictures of a run: the synthetic images and the loss curve (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from augdistill.runs.atomic import atomic_write  # noqa: E402

__all__ = ["save_image_grid", "save_curves"]


def save_image_grid(images: Tensor, labels: Tensor, class_names: Sequence[str], path: str | Path,
                    max_per_class: int = 10) -> None:
    """Grid of ``images`` ``(N, C, H, W)`` in ``[0, 1]``: one row per class, up to ``max_per_class`` columns."""
    num_classes = len(class_names)
    per_class = [[i for i in range(len(labels)) if int(labels[i]) == c][:max_per_class] for c in range(num_classes)]
    cols = max(1, max(len(p) for p in per_class))
    fig, axes = plt.subplots(num_classes, cols, figsize=(1.1 * cols + 1.2, 1.1 * num_classes), squeeze=False)
    for c, idx in enumerate(per_class):
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(idx):
                img = images[idx[j]].detach().cpu().clamp(0, 1)
                ax.imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(),
                          cmap=None if img.shape[0] == 3 else "gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[c][0].set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def save_curves(series: dict[str, Sequence[tuple[float, float]]], path: str | Path, title: str = "",
                ylabel: str = "") -> None:
    """Line plot of named ``(x, y)`` series against outer iteration."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=name)
    ax.set_xlabel("outer iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
