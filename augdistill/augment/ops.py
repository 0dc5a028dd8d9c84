"""The op table and the learnable op module.

:data:`OPS` is the one place to add an op: its canonical name, kernel, magnitude unit, the
identity value of the magnitude, the allowed physical range, the default range, whether the range
is symmetric about the identity by default, and how to express it in torchvision / kornia.

An :class:`AugmentOp` holds an op's learnable **probability** ``p`` and learnable **magnitude
range** ``[low, high]`` in physical units (degrees, fraction of width, factor, ...), both stored
as ``float64`` so JSON values round-trip exactly. A sample's value is the reparameterised
``v = low + (high - low) (u + 1) / 2`` with ``u ~ U(-1, 1)`` drawn ahead of time, so ``v`` is
differentiable w.r.t. ``low`` and ``high``. A *symmetric* op learns one number ``high`` and uses
``low = 2 identity - high`` (``v = identity + u m`` with half-width ``m = high - identity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from augdistill.augment import functional as AF
from augdistill.augment.gates import bernoulli_gate, clamp_st
from augdistill.errors import ConfigError

__all__ = ["OpSpec", "OPS", "OP_NAMES", "AugmentOp", "check_op", "Range"]

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
        torchvision: ``(low, high) -> v2 transform`` applying the op with probability 1, or a string
            saying why torchvision has no exact equivalent.
        kornia: ``(low, high, p) -> kornia augmentation`` or the reason there is none.
    """

    name: str
    geometric: bool
    fn: Callable[..., Tensor]
    unit: str | None
    identity: float
    bounds: Range | None
    default: Range | None
    symmetric: bool
    torchvision: Callable[[float, float], Any] | str
    kornia: Callable[[float, float, float], Any] | str

    @property
    def has_magnitude(self) -> bool:
        return self.unit is not None

    @property
    def symmetric_allowed(self) -> bool:
        """A range may be tied symmetric only if the bounds are centred on the identity."""
        return self.bounds is not None and math.isclose(self.bounds[0] + self.bounds[1], 2 * self.identity)


class _IgnoreAux:
    """Picklable adapter dropping the ``aux`` noise argument (only cutout uses it)."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor, v: Tensor, aux: Tensor) -> Tensor:
        return self.fn(x, v)


# --- exporters -------------------------------------------------------------------------------------
# Imported lazily: torchvision.transforms.v2 and kornia.augmentation are only needed on export.

def _tv_bilinear() -> Any:
    from torchvision.transforms import v2
    return v2, v2.InterpolationMode.BILINEAR


def _tv_rotate(lo: float, hi: float) -> Any:
    v2, bil = _tv_bilinear()
    return v2.RandomRotation(degrees=(lo, hi), interpolation=bil)


def _tv_translate(axis: int) -> Callable[[float, float], Any]:
    def build(lo: float, hi: float) -> Any:
        if lo != -hi:
            raise ConfigError(f"torchvision RandomAffine only translates symmetrically; range ({lo}, {hi}) is not")
        v2, bil = _tv_bilinear()
        return v2.RandomAffine(degrees=0.0, translate=(hi, 0.0) if axis == 0 else (0.0, hi), interpolation=bil)
    return build


def _tv_scale(lo: float, hi: float) -> Any:
    v2, bil = _tv_bilinear()
    return v2.RandomAffine(degrees=0.0, scale=(lo, hi), interpolation=bil)


def _tv_shear(axis: int) -> Callable[[float, float], Any]:
    def build(lo: float, hi: float) -> Any:
        v2, bil = _tv_bilinear()
        return v2.RandomAffine(degrees=0.0, shear=(lo, hi, 0.0, 0.0) if axis == 0 else (0.0, 0.0, lo, hi),
                               interpolation=bil)
    return build


def _tv_hflip(lo: float, hi: float) -> Any:
    from torchvision.transforms import v2
    return v2.RandomHorizontalFlip(p=1.0)


def _tv_jitter(field: str) -> Callable[[float, float], Any]:
    def build(lo: float, hi: float) -> Any:
        from torchvision.transforms import v2
        return v2.ColorJitter(**{field: (lo, hi)})
    return build


def _k_rotate(lo: float, hi: float, p: float) -> Any:
    import kornia.augmentation as K
    return K.RandomRotation(degrees=(lo, hi), p=p, align_corners=False)


def _k_affine(key: str, axis: int) -> Callable[[float, float, float], Any]:
    def build(lo: float, hi: float, p: float) -> Any:
        import kornia.augmentation as K
        if key == "translate":
            if lo != -hi:
                raise ConfigError(f"kornia RandomAffine only translates symmetrically; range ({lo}, {hi}) is not")
            arg: Any = (hi, 0.0) if axis == 0 else (0.0, hi)
        elif key == "shear":
            arg = (lo, hi, 0.0, 0.0) if axis == 0 else (0.0, 0.0, lo, hi)
        else:
            arg = (lo, hi)
        return K.RandomAffine(degrees=0.0, p=p, align_corners=False, **{key: arg})
    return build


def _k_hflip(lo: float, hi: float, p: float) -> Any:
    import kornia.augmentation as K
    return K.RandomHorizontalFlip(p=p)


def _k_brightness(lo: float, hi: float, p: float) -> Any:
    import kornia.augmentation as K
    return K.RandomBrightness(brightness=(1.0 + lo, 1.0 + hi), p=p)  # kornia adds (factor - 1)


def _k_jitter(field: str) -> Callable[[float, float, float], Any]:
    def build(lo: float, hi: float, p: float) -> Any:
        import kornia.augmentation as K
        return K.ColorJitter(**{field: (lo, hi)}, p=p)
    return build


def _k_sharpness(lo: float, hi: float, p: float) -> Any:
    import kornia.augmentation as K
    return K.RandomSharpness(sharpness=(lo, hi), p=p)


_NO_ERASING = ("RandomErasing keeps the patch inside the image and samples its area and aspect, while cutout "
               "centres a square of the given side anywhere (clipped by the border, as in DSA)")

OPS: dict[str, OpSpec] = {spec.name: spec for spec in [
    OpSpec("rotate", True, AF.rotate_matrix, "degrees", 0.0, (-180.0, 180.0), (-30.0, 30.0), True,
           _tv_rotate, _k_rotate),
    OpSpec("translate-x", True, AF.translate_x_matrix, "fraction of width", 0.0, (-0.5, 0.5), (-0.125, 0.125), True,
           _tv_translate(0), _k_affine("translate", 0)),
    OpSpec("translate-y", True, AF.translate_y_matrix, "fraction of height", 0.0, (-0.5, 0.5), (-0.125, 0.125), True,
           _tv_translate(1), _k_affine("translate", 1)),
    OpSpec("scale", True, AF.scale_matrix, "factor", 1.0, (0.5, 1.5), (0.8, 1.2), True,
           _tv_scale, _k_affine("scale", 0)),
    OpSpec("shear-x", True, AF.shear_x_matrix, "degrees", 0.0, (-45.0, 45.0), (-10.0, 10.0), True,
           _tv_shear(0), _k_affine("shear", 0)),
    OpSpec("shear-y", True, AF.shear_y_matrix, "degrees", 0.0, (-45.0, 45.0), (-10.0, 10.0), True,
           _tv_shear(1), _k_affine("shear", 1)),
    OpSpec("hflip", True, AF.hflip_matrix, None, 0.0, None, None, False, _tv_hflip, _k_hflip),
    OpSpec("brightness", False, _IgnoreAux(AF.brightness), "delta", 0.0, (-1.0, 1.0), (-0.2, 0.2), True,
           "torchvision's brightness multiplies pixel values; this op adds a delta (kornia/DSA)", _k_brightness),
    OpSpec("contrast", False, _IgnoreAux(AF.contrast), "factor", 1.0, (0.0, 2.0), (0.8, 1.2), True,
           _tv_jitter("contrast"), _k_jitter("contrast")),
    OpSpec("saturation", False, _IgnoreAux(AF.saturation), "factor", 1.0, (0.0, 2.0), (0.8, 1.2), True,
           _tv_jitter("saturation"), _k_jitter("saturation")),
    OpSpec("hue", False, _IgnoreAux(AF.hue), "turns", 0.0, (-0.5, 0.5), (-0.05, 0.05), True,
           _tv_jitter("hue"), _k_jitter("hue")),
    OpSpec("sharpness", False, _IgnoreAux(AF.sharpen), "factor", 1.0, (0.0, 2.0), (0.8, 1.2), True,
           "v2.RandomAdjustSharpness applies one fixed factor, not a sampled range", _k_sharpness),
    OpSpec("cutout", False, AF.cutout, "fraction of side", 0.0, (0.0, 1.0), (0.25, 0.5), False,
           f"torchvision {_NO_ERASING}", f"kornia {_NO_ERASING}"),
]}

#: Canonical op names in table order.
OP_NAMES: tuple[str, ...] = tuple(OPS)


def check_op(name: Any, probability: Any, low: Any, high: Any, symmetric: Any) -> str | None:
    """Validate one op's settings; return ``None`` if valid, else a message naming field and value.

    Shared by :class:`AugmentOp` (raises :class:`ConfigError`) and the JSON loader
    (raises :class:`~augdistill.errors.PolicyFormatError` with the file and field).
    """
    if name not in OPS:
        return f"name: unknown op {name!r}; expected one of {', '.join(OP_NAMES)}"
    spec = OPS[name]
    if not 0.0 <= probability <= 1.0:
        return f"probability: {probability!r} is outside [0, 1]"
    if not spec.has_magnitude:
        if low is not None or high is not None or symmetric:
            return f"magnitude: op {name!r} has no magnitude; expected null and symmetric false"
        return None
    if low is None or high is None:
        return f"magnitude: op {name!r} needs a range [low, high] in {spec.unit}"
    lo_b, hi_b = spec.bounds  # type: ignore[misc]
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"magnitude: range ({low!r}, {high!r}) is not finite"
    if low > high:
        return f"magnitude: negative magnitude, low {low!r} > high {high!r}"
    if low < lo_b or high > hi_b:
        return f"magnitude: range ({low!r}, {high!r}) {spec.unit} exceeds the allowed ({lo_b}, {hi_b})"
    if symmetric:
        if not spec.symmetric_allowed:
            return f"symmetric: op {name!r} cannot be symmetric (its range is not centred on {spec.identity})"
        if not math.isclose(low, 2 * spec.identity - high, rel_tol=1e-9, abs_tol=1e-12):
            return (f"magnitude: symmetric range must be centred on {spec.identity}: "
                    f"low {low!r} should be {2 * spec.identity - high!r}")
    return None


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
        ConfigError: unknown op, probability outside ``[0, 1]``, range outside the op's bounds, ...

    Example:
        >>> op = AugmentOp("rotate", probability=0.5, magnitude=15.0)
        >>> torch.stack(op.range()).tolist()
        [-15.0, 15.0]
    """

    def __init__(self, name: str, probability: float = 0.5, magnitude: float | Range | None = None,
                 symmetric: bool | None = None) -> None:
        super().__init__()
        spec = OPS.get(name)
        if spec is None:
            raise ConfigError(f"unknown op {name!r}; expected one of {', '.join(OP_NAMES)}")
        low, high = self._initial_range(spec, magnitude)
        if symmetric is None:
            symmetric = spec.has_magnitude and (isinstance(magnitude, (int, float)) or
                                                (magnitude is None and spec.symmetric))
        problem = check_op(name, probability, low, high, symmetric)
        if problem:
            raise ConfigError(f"op {name!r}: {problem}")
        self.name = name
        self.symmetric = bool(symmetric)
        self.probability = nn.Parameter(torch.tensor(float(probability), dtype=torch.float64))
        as_param = lambda v: nn.Parameter(torch.tensor(float(v), dtype=torch.float64))  # noqa: E731
        self.high = as_param(high) if spec.has_magnitude else None
        self.low = as_param(low) if spec.has_magnitude and not self.symmetric else None

    @staticmethod
    def _initial_range(spec: OpSpec, magnitude: float | Range | None) -> tuple[float | None, float | None]:
        if not spec.has_magnitude:
            if magnitude is not None:
                raise ConfigError(f"op {spec.name!r} has no magnitude; got {magnitude!r}")
            return None, None
        if magnitude is None:
            return spec.default  # type: ignore[return-value]
        if isinstance(magnitude, (int, float)):
            if magnitude < 0:
                raise ConfigError(f"op {spec.name!r}: negative magnitude {magnitude!r}")
            return spec.identity - magnitude, spec.identity + magnitude
        try:
            low, high = (float(v) for v in magnitude)
        except (TypeError, ValueError):
            raise ConfigError(f"op {spec.name!r}: magnitude must be a number or (low, high); got {magnitude!r}") from None
        return low, high

    @property
    def spec(self) -> OpSpec:
        return OPS[self.name]

    def extra_repr(self) -> str:
        return f"{self.name!r}, symmetric={self.symmetric}"

    def prob(self) -> Tensor:
        """Probability clamped to ``[0, 1]`` (0-d, float64; gradient passes the clamp)."""
        return clamp_st(self.probability, 0.0, 1.0)

    def range(self) -> tuple[Tensor, Tensor] | None:
        """Current ``(low, high)`` in physical units, clamped to the op's bounds (0-d float64 tensors).

        ``None`` for ops without magnitude.
        """
        if self.high is None:
            return None
        spec = self.spec
        lo_b, hi_b = spec.bounds  # type: ignore[misc]
        if self.symmetric:
            high = clamp_st(self.high, spec.identity, hi_b)
            return 2 * spec.identity - high, high
        low, high = clamp_st(self.low, lo_b, hi_b), clamp_st(self.high, lo_b, hi_b)  # type: ignore[arg-type]
        return torch.minimum(low, high), torch.maximum(low, high)

    def width(self) -> Tensor:
        """``p (high - low) / (max - min)``: probability times the fraction of the allowed range used.

        Ops without magnitude (flip) count as full width: ``p``. 0-d float64, differentiable.
        """
        bounds = self.range()
        if bounds is None:
            return self.prob()
        lo_b, hi_b = self.spec.bounds  # type: ignore[misc]
        return self.prob() * (bounds[1] - bounds[0]) / (hi_b - lo_b)

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
            bounds = self.range()
            if bounds is None:
                return torch.zeros_like(u)
            low, high = bounds[0].to(u.dtype), bounds[1].to(u.dtype)
        return low + (high - low) * (u + 1.0) * 0.5

    def gate(self, noise: Tensor, tau: float, hard: bool) -> Tensor:
        """Per-sample gate (B,) in ``noise``'s dtype; see :func:`~augdistill.augment.gates.bernoulli_gate`."""
        return bernoulli_gate(self.prob().to(noise.dtype), noise, tau, hard)
