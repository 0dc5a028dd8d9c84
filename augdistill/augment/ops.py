"""The op table and the learnable op module.

:data:`OPS` is the one place to add an op: its canonical name, kernel, magnitude unit, the
identity value of the magnitude, the allowed physical range, the default range, whether the range
is symmetric about the identity by default, how to express it in torchvision / kornia, and what
images it accepts (channel counts, smallest side).

An :class:`AugmentOp` holds an op's learnable **probability** ``p`` and learnable **magnitude
range** ``[low, high]`` in physical units (degrees, fraction of width, factor, ...), both stored
as ``float64`` so JSON values round-trip exactly. A sample's value is the reparameterised
``v = low + (high - low) (u + 1) / 2`` with ``u ~ U(-1, 1)`` drawn ahead of time, so ``v`` is
differentiable w.r.t. ``low`` and ``high``. A *symmetric* op learns one number ``high`` and uses
``low = 2 identity - high`` (``v = identity + u m`` with half-width ``m = high - identity``).
Values are clamped into their ranges with :func:`~augdistill.augment.gates.clamp_st`, whose gradient
stays alive on the bounds.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from augdistill.augment import functional as AF
from augdistill.augment.codegen import Call, Name
from augdistill.augment.gates import bernoulli_gate, clamp_st
from augdistill.errors import ConfigError

__all__ = ["OpSpec", "OPS", "OP_NAMES", "AugmentOp", "check_op", "clamped_range", "real_number", "Range"]

#: A physical magnitude range ``(low, high)``.
Range = tuple[float, float]


@dataclass(frozen=True)
class OpSpec:
    """One row of the op table.

    Attributes:
        name: canonical name used in code, JSON and logs.
        geometric: ``True`` for ops expressed as a sampling matrix ``fn(v, H, W) -> (B, 3, 3)``
            (consecutive ones are fused into one warp); ``False`` for pixel ops ``fn(x, v, aux)``.
        fn: the differentiable kernel from :mod:`augdistill.augment.functional`.
        unit: physical unit of the magnitude (``None``: the op has no magnitude, e.g. flip).
        identity: magnitude value at which the op does nothing.
        bounds: largest allowed physical range ``(min, max)``; ``None`` without magnitude.
        default: default ``(low, high)`` range.
        symmetric: default for whether the range is centred on ``identity``.
        torchvision: ``(low, high) -> Call`` of a v2 transform applying the op with probability 1.
        kornia: ``(low, high, p) -> Call`` of a kornia augmentation applying it with probability ``p``.
        channels: channel counts the op accepts (``None``: any).
        min_size: smallest height and width (pixels) the op accepts.
    """

    name: str
    geometric: bool
    fn: Callable[..., Tensor]
    unit: str | None
    identity: float
    bounds: Range | None
    default: Range | None
    symmetric: bool
    torchvision: Callable[[float, float], Call]
    kornia: Callable[[float, float, float], Call]
    channels: tuple[int, ...] | None = None
    min_size: int = 1

    @property
    def has_magnitude(self) -> bool:
        return self.unit is not None

    @property
    def symmetric_allowed(self) -> bool:
        """A range may be tied symmetric only if the bounds are centred on the identity."""
        return self.bounds is not None and math.isclose(self.bounds[0] + self.bounds[1], 2 * self.identity)

    def input_problem(self, channels: int, height: int, width: int) -> str | None:
        """Why a ``(channels, height, width)`` image is not a valid input, or ``None``.

        Example:
            >>> OPS["hue"].input_problem(4, 8, 8)
            "op 'hue' needs 1 or 3 channels (grey or RGB); got 4"
        """
        if self.channels is not None and channels not in self.channels:
            allowed = " or ".join(str(c) for c in self.channels)
            return f"op {self.name!r} needs {allowed} channels (grey or RGB); got {channels}"
        if min(height, width) < self.min_size:
            return (f"op {self.name!r} needs images of at least {self.min_size}x{self.min_size} pixels; "
                    f"got {height}x{width}")
        return None


def real_number(value: Any) -> float | None:
    """``float(value)`` if ``value`` is a finite real number (not a bool), else ``None``.

    Integers too large for a float (a 401-digit literal) and one-element tensors of a bool or
    complex dtype are ``None`` too.

    Example:
        >>> real_number(3), real_number(10 ** 401), real_number(float("nan")), real_number(True)
        (3.0, None, None, None)
    """
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex() or value.is_meta:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


class _IgnoreAux:
    """Picklable adapter dropping the ``aux`` noise argument (only cutout uses it)."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor, v: Tensor, aux: Tensor) -> Tensor:
        return self.fn(x, v)


# --- exporters -------------------------------------------------------------------------------------
# Each returns the constructor call (see :mod:`~augdistill.augment.codegen`) of a transform applying
# the op with probability 1 (torchvision; the exporter wraps it in ``v2.RandomApply``) or with
# probability ``p`` (kornia). Names without a library prefix are this package's own small classes
# (:mod:`~augdistill.augment.torchvision_ops`, :mod:`~augdistill.augment.kornia_ops`).

_BILINEAR = Name("v2.InterpolationMode.BILINEAR")


def _tv_rotate(lo: float, hi: float) -> Call:
    return Call("v2.RandomRotation", kwargs={"degrees": [lo, hi], "interpolation": _BILINEAR})


def _tv_affine(key: str, axis: int) -> Callable[[float, float], Call]:
    def build(lo: float, hi: float) -> Call:
        value = [lo, hi] if key == "scale" else [lo, hi, 0.0, 0.0] if axis == 0 else [0.0, 0.0, lo, hi]
        return Call("v2.RandomAffine", kwargs={"degrees": 0.0, key: value, "interpolation": _BILINEAR})
    return build


def _tv_own(cls: str, **fixed: Any) -> Callable[[float, float], Call]:
    return lambda lo, hi: Call(cls, kwargs={**fixed, "low": lo, "high": hi})


def _tv_hflip(lo: float, hi: float) -> Call:
    return Call("v2.RandomHorizontalFlip", kwargs={"p": 1.0})


def _tv_jitter(key: str) -> Callable[[float, float], Call]:
    return lambda lo, hi: Call("v2.ColorJitter", kwargs={key: [lo, hi]})


def _k_rotate(lo: float, hi: float, p: float) -> Call:
    return Call("K.RandomRotation", kwargs={"degrees": (lo, hi), "p": p, "align_corners": False})


def _k_affine(key: str, axis: int) -> Callable[[float, float, float], Call]:
    def build(lo: float, hi: float, p: float) -> Call:
        value = (lo, hi) if key == "scale" else (lo, hi, 0.0, 0.0) if axis == 0 else (0.0, 0.0, lo, hi)
        return Call("K.RandomAffine", kwargs={"degrees": 0.0, key: value, "p": p, "align_corners": False})
    return build


def _k_own(cls: str, **fixed: Any) -> Callable[[float, float, float], Call]:
    return lambda lo, hi, p: Call(cls, kwargs={**fixed, "low": lo, "high": hi, "p": p})


def _k_hflip(lo: float, hi: float, p: float) -> Call:
    return Call("K.RandomHorizontalFlip", kwargs={"p": p})


def _k_brightness(lo: float, hi: float, p: float) -> Call:  # kornia adds (factor - 1)
    return Call("K.RandomBrightness", kwargs={"brightness": (1.0 + lo, 1.0 + hi), "p": p})


def _k_jitter(key: str) -> Callable[[float, float, float], Call]:
    return lambda lo, hi, p: Call("K.ColorJitter", kwargs={key: (lo, hi), "p": p})


def _k_sharpness(lo: float, hi: float, p: float) -> Call:
    return Call("K.RandomSharpness", kwargs={"sharpness": (lo, hi), "p": p})


_RGB = (1, 3)  # ops defined on grey or RGB images, as their torchvision counterparts

OPS: dict[str, OpSpec] = {spec.name: spec for spec in [
    OpSpec("rotate", True, AF.rotate_matrix, "degrees", 0.0, (-180.0, 180.0), (-30.0, 30.0), True,
           _tv_rotate, _k_rotate),
    OpSpec("translate-x", True, AF.translate_x_matrix, "fraction of width", 0.0, (-0.5, 0.5), (-0.125, 0.125), True,
           _tv_own("RandomTranslate", axis="x"), _k_own("RandomTranslate", axis="x")),
    OpSpec("translate-y", True, AF.translate_y_matrix, "fraction of height", 0.0, (-0.5, 0.5), (-0.125, 0.125), True,
           _tv_own("RandomTranslate", axis="y"), _k_own("RandomTranslate", axis="y")),
    OpSpec("scale", True, AF.scale_matrix, "factor", 1.0, (0.5, 1.5), (0.8, 1.2), True,
           _tv_affine("scale", 0), _k_affine("scale", 0)),
    OpSpec("shear-x", True, AF.shear_x_matrix, "degrees", 0.0, (-45.0, 45.0), (-10.0, 10.0), True,
           _tv_affine("shear", 0), _k_affine("shear", 0)),
    OpSpec("shear-y", True, AF.shear_y_matrix, "degrees", 0.0, (-45.0, 45.0), (-10.0, 10.0), True,
           _tv_affine("shear", 1), _k_affine("shear", 1)),
    OpSpec("hflip", True, AF.hflip_matrix, None, 0.0, None, None, False, _tv_hflip, _k_hflip),
    OpSpec("brightness", False, _IgnoreAux(AF.brightness), "delta", 0.0, (-1.0, 1.0), (-0.2, 0.2), True,
           _tv_own("RandomBrightnessDelta"), _k_brightness),
    OpSpec("contrast", False, _IgnoreAux(AF.contrast), "factor", 1.0, (0.0, 2.0), (0.8, 1.2), True,
           _tv_jitter("contrast"), _k_jitter("contrast"), channels=_RGB),
    OpSpec("saturation", False, _IgnoreAux(AF.saturation), "factor", 1.0, (0.0, 2.0), (0.8, 1.2), True,
           _tv_jitter("saturation"), _k_jitter("saturation"), channels=_RGB),
    OpSpec("hue", False, _IgnoreAux(AF.hue), "turns", 0.0, (-0.5, 0.5), (-0.05, 0.05), True,
           _tv_jitter("hue"), _k_jitter("hue"), channels=_RGB),
    OpSpec("sharpness", False, _IgnoreAux(AF.sharpen), "factor", 1.0, (0.0, 2.0), (0.8, 1.2), True,
           _tv_own("RandomSharpness"), _k_sharpness, channels=_RGB, min_size=3),
    OpSpec("cutout", False, AF.cutout, "fraction of side", 0.0, (0.0, 1.0), (0.25, 0.5), False,
           _tv_own("RandomCutout"), _k_own("RandomCutout")),
]}

#: Canonical op names in table order.
OP_NAMES: tuple[str, ...] = tuple(OPS)


def _show(value: Any) -> str:
    """``repr`` of a value for an error message, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_op(name: Any, probability: Any, low: Any, high: Any, symmetric: Any) -> str | None:
    """Validate one op's settings; return ``None`` if valid, else a message ``field: problem``.

    Shared by :class:`AugmentOp` (raises :class:`ConfigError`) and the JSON loader
    (raises :class:`~augdistill.errors.PolicyFormatError` with the file and field).

    Example:
        >>> check_op("rotate", 0.5, -30.0, 30.0, True) is None
        True
        >>> check_op("rotate", 0.5, -300.0, 300.0, True)
        'magnitude: range (-300.0, 300.0) degrees exceeds the allowed (-180.0, 180.0)'
    """
    if not isinstance(name, str) or name not in OPS:
        return f"name: unknown op {_show(name)}; expected one of {', '.join(OP_NAMES)}"
    spec = OPS[name]
    p = real_number(probability)
    if p is None:
        return f"probability: expected a finite number in [0, 1], got {_show(probability)}"
    if not 0.0 <= p <= 1.0:
        return f"probability: {probability!r} is outside [0, 1]"
    if not isinstance(symmetric, bool):
        return f"symmetric: expected true or false, got {_show(symmetric)}"
    if not spec.has_magnitude:
        if low is not None or high is not None or symmetric:
            return f"magnitude: op {name!r} has no magnitude; expected null and symmetric false"
        return None
    if low is None or high is None:
        return f"magnitude: op {name!r} needs a range [low, high] in {spec.unit}"
    lo, hi = real_number(low), real_number(high)
    if lo is None or hi is None:
        return f"magnitude: range ({_show(low)}, {_show(high)}) is not two finite numbers"
    lo_b, hi_b = spec.bounds  # type: ignore[misc]
    if lo > hi:
        return f"magnitude: negative magnitude, low {lo!r} > high {hi!r}"
    if lo < lo_b or hi > hi_b:
        return f"magnitude: range ({lo!r}, {hi!r}) {spec.unit} exceeds the allowed ({lo_b}, {hi_b})"
    if symmetric:
        if not spec.symmetric_allowed:
            return f"symmetric: op {name!r} cannot be symmetric (its range is not centred on {spec.identity})"
        if not math.isclose(lo, 2 * spec.identity - hi, rel_tol=1e-9, abs_tol=1e-12):
            return (f"magnitude: symmetric range must be centred on {spec.identity}: "
                    f"low {lo!r} should be {2 * spec.identity - hi!r}")
    return None


def clamped_range(spec: OpSpec, low: Tensor | None, high: Tensor) -> tuple[Tensor, Tensor]:
    """``(low, high)`` clamped into ``spec``'s bounds with :func:`clamp_st` (gradient alive on them), any shape;
    ``low=None`` is a symmetric range: ``high`` is kept at or above the identity and ``low`` mirrors it."""
    lo_b, hi_b = spec.bounds  # type: ignore[misc]
    if low is None:
        high = clamp_st(high, spec.identity, hi_b)
        return 2 * spec.identity - high, high
    return clamp_st(low, lo_b, hi_b), clamp_st(high, lo_b, hi_b)


class AugmentOp(nn.Module):
    """One learnable op: probability ``p`` and magnitude range ``[low, high]`` in physical units.

    Args:
        name: canonical op name (a key of :data:`OPS`).
        probability: initial probability of applying the op, in ``[0, 1]``.
        magnitude: ``None`` (the op's default range), a half-width ``m`` (range
            ``identity ± m``, symmetric), or a ``(low, high)`` range in the op's unit.
        symmetric: tie ``low = 2 identity - high`` (one learnable number). Defaults to the table's
            choice, or ``True`` when ``magnitude`` is a half-width.

    Raises:
        ConfigError: unknown op, probability outside ``[0, 1]``, range outside the op's bounds, a value
            that is not a finite number, ...

    Example:
        >>> op = AugmentOp("rotate", probability=0.5, magnitude=15.0)
        >>> torch.stack(op.range()).tolist()
        [-15.0, 15.0]
    """

    def __init__(self, name: str, probability: float = 0.5, magnitude: float | Range | None = None,
                 symmetric: bool | None = None) -> None:
        super().__init__()
        if not isinstance(name, str) or name not in OPS:
            raise ConfigError(f"unknown op {_show(name)}; expected one of {', '.join(OP_NAMES)}")
        spec = OPS[name]
        low, high = self._initial_range(spec, magnitude)
        if symmetric is None:
            symmetric = spec.has_magnitude and (real_number(magnitude) is not None or
                                                (magnitude is None and spec.symmetric))
        problem = check_op(name, probability, low, high, symmetric)
        if problem:
            raise ConfigError(f"op {name!r}: {problem}")
        self.name = name
        self.symmetric = bool(symmetric)
        as_param = lambda v: nn.Parameter(torch.tensor(real_number(v), dtype=torch.float64))  # noqa: E731
        self.probability = as_param(probability)
        self.high = as_param(high) if spec.has_magnitude else None
        self.low = as_param(low) if spec.has_magnitude and not self.symmetric else None

    @staticmethod
    def _initial_range(spec: OpSpec, magnitude: Any) -> tuple[float | None, float | None]:
        if not spec.has_magnitude:
            if magnitude is not None:
                raise ConfigError(f"op {spec.name!r} has no magnitude; got {_show(magnitude)}")
            return None, None
        if magnitude is None:
            return spec.default  # type: ignore[return-value]
        half = real_number(magnitude)
        if half is not None:
            if half < 0:
                raise ConfigError(f"op {spec.name!r}: negative magnitude {magnitude!r}")
            return spec.identity - half, spec.identity + half
        if (isinstance(magnitude, (str, bytes, Mapping)) or not hasattr(magnitude, "__len__")
                or len(magnitude) != 2):
            raise ConfigError(f"op {spec.name!r}: magnitude must be a finite number or (low, high); "
                              f"got {_show(magnitude)}")
        return magnitude[0], magnitude[1]

    @property
    def spec(self) -> OpSpec:
        return OPS[self.name]

    def extra_repr(self) -> str:
        return f"{self.name!r}, symmetric={self.symmetric}"

    def prob(self) -> Tensor:
        """Probability clamped to ``[0, 1]`` (0-d, float64; gradient alive at 0 and 1, see ``clamp_st``)."""
        return clamp_st(self.probability, 0.0, 1.0)

    def endpoints(self) -> tuple[Tensor, Tensor] | None:
        """``(low, high)`` clamped into the op's bounds, differentiable (0-d float64 tensors).

        In the order stored: an optimiser may cross an asymmetric range (``low > high``), which then
        samples the same interval. ``None`` for ops without magnitude.
        """
        if self.high is None:
            return None
        return clamped_range(self.spec, self.low, self.high)

    def range(self) -> tuple[Tensor, Tensor] | None:
        """Current ``(low, high)`` in physical units, ordered and inside the op's bounds (0-d float64).

        ``None`` for ops without magnitude.
        """
        ends = self.endpoints()
        return None if ends is None else (torch.minimum(*ends), torch.maximum(*ends))

    def width(self) -> Tensor:
        """``p (high - low) / (max - min)``: probability times the fraction of the allowed range used.

        Ops without magnitude (flip) count as full width: ``p``. 0-d float64, differentiable; at a
        zero-width range the gradient is the one that widens it (``+1`` for ``high``, ``-1`` for ``low``).
        """
        ends = self.endpoints()
        if ends is None:
            return self.prob()
        span = ends[1] - ends[0]
        lo_b, hi_b = self.spec.bounds  # type: ignore[misc]
        return self.prob() * torch.where(span >= 0, span, -span) / (hi_b - lo_b)

    def values(self, u: Tensor, ranges: Tensor | None = None) -> Tensor:
        """Per-sample magnitudes ``low + (high - low) (u + 1) / 2`` of shape (B,) in ``u``'s dtype.

        Args:
            u: ``(B,)`` noise in ``[-1, 1]``.
            ranges: optional ``(B, 2)`` per-sample ``(low, high)`` replacing the learned range
                (input-conditioned policies).
        """
        if ranges is not None:
            low, high = ranges[:, 0], ranges[:, 1]
        else:
            ends = self.endpoints()
            if ends is None:
                return torch.zeros_like(u)
            low, high = ends[0].to(u.dtype), ends[1].to(u.dtype)
        return low + (high - low) * (u + 1.0) * 0.5

    def gate(self, noise: Tensor, tau: float, hard: bool) -> Tensor:
        """Per-sample gate (B,) in ``noise``'s dtype; see :func:`~augdistill.augment.gates.bernoulli_gate`."""
        return bernoulli_gate(self.prob().to(noise.dtype), noise, tau, hard)
