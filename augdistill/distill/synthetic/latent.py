"""KFS-style latent codes and shared decoders (Lee et al. 2022, arXiv 2208.10494).

The stored tensors are ``M`` small latent codes per class and ``D`` tiny decoders shared by all classes;
the decoded set is every code through every decoder, so ``M * D`` training images per class. The budget
counts both: ``K * M * d * h * w`` code floats plus the decoders' weights and biases.

A code is ``d`` (``latent_dim``) channels at ``1/factor`` of the image side. Decoder ``j`` upsamples the
code bilinearly to full size, then applies ``conv3x3(d -> width)``, leaky ReLU (slope 0.2) and
``conv3x3(width -> C)``. All decoders run at once as one grouped convolution (:func:`decode_latent`).

Initialisation fits the whole set to real images: the pair ``(code m, decoder j)`` of class ``c`` is
fitted (mean squared error, ``fit_steps`` full-batch Adam steps) to the real image ``m * D + j`` of that
class. The fit starts from codes holding the area-downsampled real images (channel ``k`` the image of
decoder ``k mod D``) and decoders that upsample one channel each, plus small weights drawn from the
run's generator (:func:`initial_decoders`). So the set starts as ``M * D`` real images per class, and a
seed fixes it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augdistill.distill.synthetic.base import SyntheticData, budget_floats
from augdistill.errors import ConfigError

__all__ = ["LatentSet", "decode_latent", "decoder_floats", "code_shape", "codes_per_class", "initial_decoders"]

#: negative slope of the decoders' leaky ReLU.
SLOPE = 0.2
#: Adam learning rate of the initial fit to real images.
FIT_LR = 0.01
#: the decoders' learning rate relative to the codes' while distilling: every decoded image moves with a
#: decoder weight, so it gets a tenth of the step (weights are ~5x smaller than code values, too).
DECODER_LR_SCALE = 0.1


def code_shape(image_shape: tuple[int, int, int], latent_dim: int, factor: int) -> tuple[int, int, int]:
    """``(d, ceil(H / factor), ceil(W / factor))``: the shape of one latent code."""
    _, height, width = image_shape
    return latent_dim, math.ceil(height / factor), math.ceil(width / factor)


def decoder_floats(channels: int, latent_dim: int, width: int, decoders: int) -> int:
    """Weights and biases of ``decoders`` decoders: ``D * (9 d w + w + 9 w C + C)``.

    Example:
        >>> decoder_floats(channels=1, latent_dim=4, width=8, decoders=4)
        1476
    """
    return decoders * (9 * latent_dim * width + width + 9 * width * channels + channels)


def codes_per_class(num_classes: int, ipc: int, image_shape: tuple[int, int, int], latent_dim: int, factor: int,
                    width: int, decoders: int) -> int:
    """The most codes per class that fit ``ipc`` full-size images per class beside the decoders (may be 0).

    Example:
        >>> codes_per_class(10, 1, (1, 28, 28), latent_dim=4, factor=4, width=8, decoders=4)
        3
    """
    left = budget_floats(num_classes, ipc, image_shape) - decoder_floats(image_shape[0], latent_dim, width, decoders)
    return max(left, 0) // (num_classes * math.prod(code_shape(image_shape, latent_dim, factor)))


def decode_latent(codes: Tensor, conv1_weight: Tensor, conv1_bias: Tensor, conv2_weight: Tensor,
                  conv2_bias: Tensor, image_size: tuple[int, int], slope: float = SLOPE) -> Tensor:
    """Every code through every decoder.

    Args:
        codes: ``(N, d, h, w)``.
        conv1_weight, conv1_bias: ``(D, width, d, 3, 3)``, ``(D, width)``.
        conv2_weight, conv2_bias: ``(D, C, width, 3, 3)``, ``(D, C)``.
        image_size: ``(H, W)`` of the decoded images.
        slope: negative slope of the leaky ReLU between the two convolutions.

    Returns:
        ``(N * D, C, H, W)``: image ``n * D + j`` is code ``n`` through decoder ``j``.

    Example:
        >>> D, d, w, C = 2, 3, 4, 1
        >>> decode_latent(torch.rand(5, d, 4, 4), torch.rand(D, w, d, 3, 3), torch.rand(D, w),
        ...               torch.rand(D, C, w, 3, 3), torch.rand(D, C), (8, 8)).shape
        torch.Size([10, 1, 8, 8])
    """
    n, decoders = codes.shape[0], conv1_weight.shape[0]
    channels = conv2_weight.shape[1]
    x = F.interpolate(codes, size=image_size, mode="bilinear", align_corners=False).repeat(1, decoders, 1, 1)
    x = F.conv2d(x, conv1_weight.flatten(0, 1), conv1_bias.flatten(), padding=1, groups=decoders)
    x = F.leaky_relu(x, slope)
    x = F.conv2d(x, conv2_weight.flatten(0, 1), conv2_bias.flatten(), padding=1, groups=decoders)
    return x.reshape(n * decoders, channels, *image_size)


_DECODER_TENSORS = ("conv1_weight", "conv1_bias", "conv2_weight", "conv2_bias")


def initial_decoders(decoders: int, latent_dim: int, width: int, channels: int,
                     generator: torch.Generator, noise: float = 0.1) -> dict[str, Tensor]:
    """Decoder tensors (CPU) that start as a bilinear upsampler of one code channel each: decoder ``j``
    copies channel ``j mod d`` through hidden unit 0 to every output channel, plus weights
    ``noise * N(0, 1 / fan_in)`` drawn from ``generator``; zero biases.

    On codes in ``[0, 1]`` (where the leaky ReLU is the identity) decoder ``j`` then returns the
    upsampled channel ``j mod d``, so the initial fit starts from the low-resolution real images.
    """
    def weight(*shape: int) -> Tensor:
        return noise * torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[2:]))
    conv1, conv2 = weight(decoders, width, latent_dim, 3, 3), weight(decoders, channels, width, 3, 3)
    for j in range(decoders):
        conv1[j, 0, j % latent_dim, 1, 1] += 1.0
        conv2[j, :, 0, 1, 1] += 1.0
    return {"conv1_weight": conv1, "conv1_bias": torch.zeros(decoders, width),
            "conv2_weight": conv2, "conv2_bias": torch.zeros(decoders, channels)}


class LatentSet(SyntheticData):
    """Per-class latent codes and ``D`` shared decoders; the decoded set is every code x every decoder.

    Args:
        codes: ``(K * M, d, h, w)``, class-major (code ``c * M + m`` belongs to class ``c``).
        decoder: the decoders' stacked tensors, as :func:`decode_latent` takes them.
        num_classes: ``K``.
        ipc: the budget in full-size images per class.
        image_shape: ``(C, H, W)`` of a decoded image.
        learn_labels: learn soft labels of the ``K * M * D`` decoded images.

    Example:
        >>> D, d, w = 2, 2, 4
        >>> decoder = {"conv1_weight": torch.rand(D, w, d, 3, 3), "conv1_bias": torch.zeros(D, w),
        ...            "conv2_weight": torch.rand(D, 1, w, 3, 3), "conv2_bias": torch.zeros(D, 1)}
        >>> syn = LatentSet(torch.rand(10, d, 4, 4), decoder, num_classes=10, ipc=1, image_shape=(1, 8, 8))
        >>> syn.decode().shape, syn.decoded_per_class, syn.stored_floats(), syn.budget_floats()
        (torch.Size([20, 1, 8, 8]), 2, 546, 640)
    """

    kind = "latent"
    #: the code's downsampling when ``config.synthetic.factor`` is ``None``: at 1/4 of the side, the default
    #: decoders leave 3 codes per class at 28x28x1 and 11 at 32x32x3 for ``ipc`` 1.
    default_factor = 4

    def __init__(self, codes: Tensor, decoder: dict[str, Tensor], num_classes: int, ipc: int,
                 image_shape: tuple[int, int, int], *, learn_labels: bool = False, **kwargs: Any) -> None:
        if codes.dim() != 4 or codes.shape[0] % num_classes or codes.shape[0] == 0:
            raise ConfigError(f"latent codes {tuple(codes.shape)} cannot be split evenly over {num_classes} classes")
        missing = set(_DECODER_TENSORS) - set(decoder)
        if missing:
            raise ConfigError(f"latent decoder: missing tensors {sorted(missing)}")
        decoders = decoder["conv1_weight"].shape[0]
        super().__init__(num_classes, ipc, image_shape, codes.shape[0] // num_classes * decoders,
                         learn_labels=learn_labels, device=codes.device, **kwargs)
        self.codes = nn.Parameter(codes.detach().clone())
        self.conv1_weight, self.conv1_bias, self.conv2_weight, self.conv2_bias = (
            nn.Parameter(decoder[name].detach().clone()) for name in _DECODER_TENSORS)

    @property
    def num_decoders(self) -> int:
        return self.conv1_weight.shape[0]

    @classmethod
    def real_per_class(cls, config: Any, num_classes: int, image_shape: tuple[int, int, int]) -> int:
        """``M * D``: one real image per decoded image, ``M`` the most codes per class the budget leaves
        beside the decoders (at least 1, so that an impossible budget is refused by
        :meth:`check_budget` with its excess), or ``config.synthetic.codes`` when set."""
        cfg = config.synthetic
        fitting = codes_per_class(num_classes, cfg.ipc, image_shape, cfg.latent_dim, cls.factor_of(config),
                                  cfg.decoder_width, cfg.decoders)
        return (cfg.codes or max(1, fitting)) * cfg.decoders

    @classmethod
    def from_real(cls, images: Tensor, num_classes: int, *, learn_labels: bool = False, config: Any = None,
                  generator: torch.Generator | None = None) -> "LatentSet":
        """Fit ``M`` codes per class and ``D`` decoders to ``images`` ``(K * M * D, C, H, W)`` (class-major).

        ``M`` and ``D`` follow from ``images`` and ``config.synthetic.decoders``; the decoder weights
        are drawn from ``generator`` (default: seeded with ``config.outer.seed``).
        """
        cfg = config.synthetic
        total, channels, height, width = images.shape
        decoders, d = cfg.decoders, cfg.latent_dim
        if total % (num_classes * decoders):
            raise ConfigError(f"{total} real images cannot give every one of {num_classes} classes whole codes "
                              f"of {decoders} decoded images each")
        if generator is None:
            generator = torch.Generator().manual_seed(config.outer.seed)
        image_shape = (channels, height, width)
        _, h, w = code_shape(image_shape, d, cls.factor_of(config))
        # codes start as area-downsampled grey images: channel k holds the image of decoder k mod D
        small = F.interpolate(images.mean(1, keepdim=True), size=(h, w), mode="area")
        small = small.reshape(total // decoders, decoders, h, w)
        codes = small[:, [k % decoders for k in range(d)]]
        decoder = initial_decoders(decoders, d, cfg.decoder_width, channels, generator)
        latent = cls(codes, {k: v.to(images.device) for k, v in decoder.items()}, num_classes, cfg.ipc, image_shape,
                     learn_labels=learn_labels)
        latent.fit(images, steps=cfg.fit_steps, lr=FIT_LR)
        return latent

    def fit(self, images: Tensor, *, steps: int, lr: float) -> Tensor:
        """Fit every stored tensor to ``images`` ``(N, C, H, W)`` (decoded order) by ``steps`` full-batch Adam
        steps on the mean squared error; returns the final error (a 0-d tensor)."""
        params = list(self.stored_tensors().values())
        opt = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = F.mse_loss(self.decode(), images)
                loss.backward()
                opt.step()
        for param in params:
            param.grad = None
        with torch.no_grad():
            return F.mse_loss(self.decode(), images)

    @staticmethod
    def decode_stored(stored: dict[str, Tensor], recipe: dict[str, Any]) -> Tensor:
        _, height, width = recipe["image_shape"]
        return decode_latent(stored["codes"], *(stored[name] for name in _DECODER_TENSORS), (height, width),
                             float(recipe["slope"]))

    def stored_tensors(self) -> dict[str, Tensor]:
        return {"codes": self.codes, **{name: getattr(self, name) for name in _DECODER_TENSORS}}

    def image_groups(self, lr: float) -> list[dict[str, Any]]:
        """The codes at ``lr``, the shared decoders at ``lr *`` :data:`DECODER_LR_SCALE`.

        Plain SGD suits latent sets poorly: a decoder weight's gradient sums over every decoded pixel,
        so it is orders of magnitude larger than a code value's and dominates gradient clipping;
        distil them with ``--optimizer adam``, whose steps do not depend on the gradient's scale.
        """
        return [{"params": [self.codes], "lr": lr},
                {"params": [getattr(self, name) for name in _DECODER_TENSORS], "lr": lr * DECODER_LR_SCALE}]

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "decoders": self.num_decoders, "latent_dim": self.codes.shape[1],
                "code_size": list(self.codes.shape[2:]), "decoder_width": self.conv1_weight.shape[1],
                "slope": SLOPE}
