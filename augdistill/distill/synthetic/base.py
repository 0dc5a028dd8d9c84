"""What the outer loop learns: stored tensors that *decode* into a class-major training batch.

A parameterisation is an ``nn.Module`` whose parameters are the stored tensors (pixels, low-resolution
tiles, latent codes and decoders, ...). :meth:`SyntheticData.decode` turns them into training images;
every method, the inner trainer and the augmentation policy consume only the decoded batch, so a new
parameterisation is one file that does not touch the loop.

Decoding is also a pure function of plain values, :meth:`SyntheticData.decode_stored` (``stored``
tensors + the ``recipe`` dict), which is what ``synthetic.pt`` saves: a user with only torch rebuilds
the decoded images from the stored tensors (the notes print the few lines each kind needs).

The budget is honest: ``ipc`` always means the storage of ``ipc`` full-size images per class, counted
in floats (:meth:`stored_floats` may not exceed :meth:`budget_floats`). Soft labels and learning rates
are not images and are reported apart, as in the papers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.errors import ConfigError

__all__ = ["SyntheticData", "budget_floats"]


def budget_floats(num_classes: int, ipc: int, image_shape: tuple[int, ...]) -> int:
    """Floats of ``ipc`` full-size images ``image_shape`` ``(C, H, W)`` per class: ``K * ipc * C * H * W``."""
    return num_classes * ipc * math.prod(image_shape)


class SyntheticData(nn.Module, ABC):
    """Base class of the parameterisations of a synthetic set.

    Args:
        num_classes: ``K``.
        ipc: the storage budget, in full-size images per class.
        image_shape: ``(C, H, W)`` of one decoded image.
        decoded_per_class: decoded training images per class.
        learn_labels: learn soft labels of the decoded images (logits ``(N, K)`` initialised to the
            one-hot class with ``label_init_confidence``) instead of keeping hard class ids.

    Decoded images are class-major: image ``c * decoded_per_class + i`` belongs to class ``c``.
    """

    #: the name used by ``--param`` and in ``synthetic.pt``.
    kind: ClassVar[str]
    #: the resolution factor (``--factor``) a parameterisation uses when the configuration leaves it ``None``.
    default_factor: ClassVar[int] = 1
    #: the stored tensors that hold pixels in ``[0, 1]`` units, which ``--clip-pixels`` projects (none: refused).
    pixel_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_classes: int, ipc: int, image_shape: tuple[int, int, int], decoded_per_class: int, *,
                 learn_labels: bool = False, label_init_confidence: float = 0.9,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a synthetic set needs at least 2 classes, got {num_classes}")
        self.num_classes, self.ipc = num_classes, ipc
        self.image_shape = tuple(int(v) for v in image_shape)
        self.decoded_per_class = decoded_per_class
        self.register_buffer("labels", torch.arange(num_classes, device=device).repeat_interleave(decoded_per_class))
        if learn_labels:
            off = (1 - label_init_confidence) / (num_classes - 1)
            logit = math.log(label_init_confidence / off)
            self.label_logits: nn.Parameter | None = nn.Parameter(
                F.one_hot(self.labels, num_classes).float() * logit)
        else:
            self.label_logits = None

    # -- what every parameterisation provides ---------------------------------------------------
    @classmethod
    def factor_of(cls, config: Any) -> int:
        """``config.synthetic.factor``, or :attr:`default_factor` when it is ``None``."""
        return config.synthetic.factor or cls.default_factor

    @classmethod
    def real_per_class(cls, config: Any, num_classes: int, image_shape: tuple[int, int, int]) -> int:
        """How many real (or noise) images per class :meth:`from_real` starts from (default: ``ipc``), for a
        run ``config`` on ``num_classes`` classes of ``image_shape`` ``(C, H, W)``."""
        return config.synthetic.ipc

    @classmethod
    @abstractmethod
    def from_real(cls, images: Tensor, num_classes: int, *, learn_labels: bool = False, config: Any = None,
                  generator: torch.Generator | None = None) -> "SyntheticData":
        """Build the set from ``images`` ``(K * real_per_class(...), C, H, W)`` in ``[0, 1]``, class-major.

        ``config`` is the run's :class:`~augdistill.config.DistillConfig`; ``generator`` drives any
        random choice of the initialisation (e.g. decoder weights), so that a seed fixes the result.
        """

    @staticmethod
    @abstractmethod
    def decode_stored(stored: dict[str, Tensor], recipe: dict[str, Any]) -> Tensor:
        """Pure function: the decoded images ``(N, C, H, W)`` from :meth:`stored_tensors` and :meth:`recipe`
        (plain values, as saved in ``synthetic.pt``); differentiable w.r.t. every stored tensor."""

    def decode(self) -> Tensor:
        """The training images ``(K * decoded_per_class, C, H, W)`` in ``[0, 1]`` pixel units, differentiable
        w.r.t. every stored tensor."""
        return self.decode_stored(self.stored_tensors(), self.recipe())

    @abstractmethod
    def stored_tensors(self) -> dict[str, Tensor]:
        """The stored tensors that count against the budget, by name (the parameters themselves, so that
        :meth:`decode_stored` of them is differentiable; :meth:`export` detaches)."""

    def recipe(self) -> dict[str, Any]:
        """Plain values that, with :meth:`stored_tensors`, rebuild the decoder (saved in ``synthetic.pt``)."""
        return {"kind": self.kind, "num_classes": self.num_classes, "ipc": self.ipc,
                "image_shape": list(self.image_shape), "decoded_per_class": self.decoded_per_class}

    def image_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the stored tensors (default: one group at ``lr``)."""
        return [{"params": [p for name, p in self.named_parameters() if name != "label_logits"], "lr": lr}]

    # -- shared ---------------------------------------------------------------------------------
    def clip_pixels_(self) -> None:
        """Project the stored tensors named in :attr:`pixel_tensors` into ``[0, 1]`` in place (``--clip-pixels``:
        after every outer step, so that the decoded images stay images a user can view and train on)."""
        with torch.no_grad():
            for name in self.pixel_tensors:
                getattr(self, name).clamp_(0.0, 1.0)

    @property
    def num_decoded(self) -> int:
        return self.num_classes * self.decoded_per_class

    def targets(self) -> Tensor:
        """Class ids ``(N,)`` or, with learned labels, class probabilities ``(N, K)`` of the decoded images."""
        return self.labels if self.label_logits is None else torch.softmax(self.label_logits, dim=1)

    def stored_floats(self) -> int:
        """Floats of storage the images cost (labels excluded)."""
        return sum(t.numel() for t in self.stored_tensors().values())

    def budget_floats(self) -> int:
        """What ``ipc`` full-size images per class cost: ``K * ipc * C * H * W``."""
        return budget_floats(self.num_classes, self.ipc, self.image_shape)

    def check_budget(self) -> None:
        """Raise :class:`ConfigError` saying by how much the stored tensors exceed the budget."""
        stored, budget = self.stored_floats(), self.budget_floats()
        if stored > budget:
            over_images = (stored - budget) / math.prod(self.image_shape)
            raise ConfigError(f"--param {self.kind} stores {stored} floats but --ipc {self.ipc} allows {budget} "
                              f"({stored - budget} too many = {over_images:.2f} full-size images, "
                              f"{stored / budget:.2f}x the budget)")

    def export(self) -> dict[str, Any]:
        """Plain detached CPU tensors: decoded ``images``, ``labels`` (ids), ``soft_labels`` if learned,
        and the ``stored`` tensors with their ``recipe``."""
        with torch.no_grad():
            out: dict[str, Any] = {"images": self.decode().detach().cpu(), "labels": self.labels.cpu()}
        if self.label_logits is not None:
            out["soft_labels"] = self.targets().detach().cpu()
        out["stored"] = {k: v.detach().cpu() for k, v in self.stored_tensors().items()}
        out["recipe"] = self.recipe()
        return out
