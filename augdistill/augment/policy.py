"""Learnable augmentation policies: sample noise, then apply it differentiably.

A :class:`Policy` is an ``nn.Module`` holding :class:`~augdistill.augment.ops.AugmentOp` s and a
composition:

* ``sequential`` — every op in order, each gated by its own probability;
* ``choose-one`` — one op per sample, drawn with learnable weights through a (straight-through)
  Gumbel-softmax as in DADA, then gated by its probability;
* ``sub-policies`` — AutoAugment form: one sub-policy (a list of ops applied in order) per sample,
  drawn the same way.

Sampling and applying are separate: :meth:`Policy.sample` returns :class:`AugmentParams`, pure noise
(no magnitudes, no grad), and ``policy(x, params=params)`` turns it into a transform using the
*current* magnitudes and probabilities. The same params replay the bit-identical transform, so a
real and a synthetic batch can share one draw (DSA's siamese augmentation) without the global RNG.

Geometric ops that follow each other are fused: each contributes a sampling matrix blended with the
identity by its gate, ``g A + (1 - g) I`` (DSA's differentiable form; exact for hard gates), the
matrices are multiplied and the batch is warped once. A pixel op is blended as ``lerp(x, op(x), g)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from augdistill.augment import functional as AF
from augdistill.augment.gates import NOISE_EPS, gumbel_choice, straight_through
from augdistill.augment.ops import OPS, AugmentOp, Range
from augdistill.errors import ConfigError

__all__ = ["AugmentParams", "Policy", "build_policy", "COMPOSITIONS", "OpConfig"]

COMPOSITIONS = ("sequential", "choose-one", "sub-policies")

#: How an op is given to :func:`build_policy`: a name, or a dict with ``name`` and optional
#: ``probability``, ``magnitude`` (half-width or ``(low, high)``) and ``symmetric``.
OpConfig = str | Mapping[str, Any]


@dataclass(frozen=True)
class AugmentParams:
    """The noise of one draw for a batch of ``B`` images and a policy of ``N`` ops.

    Attributes:
        u: ``(B, N)`` uniform in ``[-1, 1]``: position of each sample's magnitude in its range.
        gate: ``(B, N)`` uniform in ``(0, 1)``: gate noise (op applies iff ``gate < p`` when hard).
        aux: ``(B, N, 2)`` uniform in ``[0, 1]``: op-specific noise (cutout centre ``(x, y)``).
        choice: ``(B, K)`` uniform in ``(0, 1)``: Gumbel noise choosing one of ``K`` ops or
            sub-policies, or ``None`` for ``sequential``.
    """

    u: Tensor
    gate: Tensor
    aux: Tensor
    choice: Tensor | None

    @property
    def batch_size(self) -> int:
        return int(self.u.shape[0])

    def to(self, device: torch.device | str) -> "AugmentParams":
        """The same noise on ``device``."""
        return AugmentParams(self.u.to(device), self.gate.to(device), self.aux.to(device),
                             None if self.choice is None else self.choice.to(device))


class Policy(nn.Module):
    """A learnable augmentation policy over ``[0, 1]`` image batches ``(B, C, H, W)``.

    Args:
        ops: the ops, in application order (for ``sub-policies``: all sub-policies' ops, flattened).
        composition: ``sequential`` | ``choose-one`` | ``sub-policies``.
        sub_policies: for ``sub-policies``: lists of indices into ``ops``, each op used once, in order.
        weights: relative selection weights (one per op for ``choose-one``, per sub-policy for
            ``sub-policies``; default uniform). Learnable.
        image_size: ``(H, W)`` the policy is meant for (metadata, saved in JSON).
        value_range: pixel value range the magnitudes assume (only ``(0, 1)`` is supported).
        temperature: temperature of the relaxed gates and of the Gumbel-softmax.
        hard: straight-through hard gates/choices (exact 0/1 values) instead of relaxed ones.
        augment_in_eval: also augment in ``eval()`` mode (default: identity in eval).
        provenance: where the policy comes from (dataset, method, seed, versions, date, metrics).

    Shape:
        input ``(B, C, H, W)`` float in ``[0, 1]``; output the same shape and dtype.

    Example:
        >>> policy = build_policy(["rotate", "brightness"], image_size=(8, 8))
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(4, 1, 8, 8)
        >>> params = policy.sample(4, generator=g)
        >>> torch.equal(policy(x, params=params), policy(x, params=params))
        True
    """

    def __init__(self, ops: Sequence[AugmentOp], composition: str = "sequential", *,
                 sub_policies: Sequence[Sequence[int]] | None = None, weights: Sequence[float] | None = None,
                 image_size: tuple[int, int] | None = None, value_range: Range = (0.0, 1.0),
                 temperature: float = 0.5, hard: bool = True, augment_in_eval: bool = False,
                 provenance: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if composition not in COMPOSITIONS:
            raise ConfigError(f"composition {composition!r} unknown; expected one of {', '.join(COMPOSITIONS)}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        if tuple(value_range) != (0.0, 1.0):
            raise ConfigError(f"value_range {value_range!r} unsupported; policies act on [0, 1] images")
        self.ops = nn.ModuleList(ops)
        self.composition = composition
        self.groups = self._groups(composition, len(ops), sub_policies)
        if composition == "sequential":
            if weights is not None:
                raise ConfigError("weights are only used by choose-one and sub-policies compositions")
            self.weights = None
        else:
            w = [1.0] * len(self.groups) if weights is None else [float(v) for v in weights]
            if len(w) != len(self.groups) or any(not v >= 0 for v in w) or not sum(w) > 0:
                raise ConfigError(f"weights must be {len(self.groups)} non-negative numbers, not all 0; got {w}")
            self.weights = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.value_range = (0.0, 1.0)
        self.temperature = float(temperature)
        self.hard = bool(hard)
        self.augment_in_eval = bool(augment_in_eval)
        self.provenance = dict(provenance) if provenance is not None else None

    def extra_repr(self) -> str:
        groups = f", sub_policies={[list(g) for g in self.groups]}" if self.composition == "sub-policies" else ""
        return (f"composition={self.composition!r}{groups}, temperature={self.temperature}, hard={self.hard}, "
                f"image_size={self.image_size}")

    @staticmethod
    def _groups(composition: str, n: int, sub_policies: Sequence[Sequence[int]] | None) -> tuple[tuple[int, ...], ...]:
        if composition == "sub-policies":
            if sub_policies is None or len(sub_policies) == 0:
                raise ConfigError("composition 'sub-policies' needs sub_policies (lists of op indices)")
            groups = tuple(tuple(int(i) for i in group) for group in sub_policies)
            flat = [i for group in groups for i in group]
            if flat != list(range(n)):
                raise ConfigError(f"sub_policies must list op indices 0..{n - 1} once each, in order; got {groups}")
            return groups
        if sub_policies is not None:
            raise ConfigError(f"sub_policies given but composition is {composition!r}")
        if composition == "choose-one":
            if n == 0:
                raise ConfigError("composition 'choose-one' needs at least one op")
            return tuple((i,) for i in range(n))
        return (tuple(range(n)),)

    # --- naming ---------------------------------------------------------------------------------

    def op_labels(self) -> list[str]:
        """Keys of :meth:`magnitudes`: the op name, or ``name.k`` (k-th occurrence) if repeated."""
        names = [op.name for op in self.ops]
        seen: dict[str, int] = {}
        labels = []
        for name in names:
            k = seen.get(name, 0)
            seen[name] = k + 1
            labels.append(name if names.count(name) == 1 else f"{name}.{k}")
        return labels

    def magnitudes(self) -> dict[str, Tensor]:
        """``label -> (2,) tensor [low, high]`` in the op's unit (detached float64; flip omitted)."""
        out = {}
        for label, op in zip(self.op_labels(), self.ops):
            bounds = op.range()
            if bounds is not None:
                out[label] = torch.stack(bounds).detach()
        return out

    def probabilities(self) -> dict[str, Tensor]:
        """``label -> 0-d tensor`` probability of applying the op once it is selected (detached)."""
        return {label: op.prob().detach() for label, op in zip(self.op_labels(), self.ops)}

    def selection_probabilities(self) -> Tensor | None:
        """``(K,)`` normalised choice weights (``None`` for sequential); differentiable."""
        if self.weights is None:
            return None
        w = self.weights.clamp(min=0.0)
        return w / w.sum()

    def width(self) -> Tensor:
        """Differentiable width of the policy (0-d float64), a regulariser for Augerino-style objectives.

        ``sum_k pi_k sum_{i in group k} p_i (high_i - low_i) / (max_i - min_i)``: for every op, its
        probability times the fraction of its allowed physical range in use, weighted by the chance
        ``pi_k`` that its group is selected (1 for sequential). Ops without magnitude count ``p_i``.
        """
        dev = self.ops[0].probability.device if len(self.ops) else None
        per_op = [op.width() for op in self.ops]
        group_w = [sum((per_op[i] for i in g), torch.zeros((), dtype=torch.float64, device=dev)) for g in self.groups]
        pi = self.selection_probabilities()
        if pi is None:
            return group_w[0]
        return (torch.stack(group_w) * pi).sum()

    # --- sampling and applying ----------------------------------------------------------------

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> AugmentParams:
        """Draw the noise for ``batch_size`` images (no gradient, independent of magnitudes).

        Args:
            batch_size: ``B``.
            generator: source of randomness; ``None`` uses the global RNG. Noise is drawn on the
                generator's device, then moved to ``device``.
            device: where the returned tensors live (default: the generator's / CPU).
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        gen_device = generator.device if generator is not None else torch.device(device or "cpu")
        n, k = len(self.ops), len(self.groups)

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=gen_device)

        u = rand(batch_size, n) * 2.0 - 1.0
        gate = rand(batch_size, n).clamp_(NOISE_EPS, 1.0 - NOISE_EPS)
        aux = rand(batch_size, n, 2)
        choice = rand(batch_size, k).clamp_(NOISE_EPS, 1.0 - NOISE_EPS) if self.weights is not None else None
        params = AugmentParams(u, gate, aux, choice)
        return params if device is None else params.to(device)

    def forward(self, x: Tensor, params: AugmentParams | None = None, *, generator: torch.Generator | None = None,
                augment: bool | None = None, ranges: Tensor | None = None) -> Tensor:
        """Augment ``x`` (B, C, H, W) in ``[0, 1]``.

        Args:
            x: image batch.
            params: noise from :meth:`sample`; drawn here (with ``generator``) when ``None``.
            generator: used only when ``params`` is ``None``.
            augment: force augmentation on/off; default: on in training mode or if ``augment_in_eval``.
            ranges: optional ``(B, N, 2)`` per-sample ``(low, high)`` overriding the learned ranges
                (input-conditioned policies, see :class:`~augdistill.augment.learn.InstanceRanges`).

        Returns:
            The augmented batch, differentiable w.r.t. ``x``, the magnitudes, probabilities and weights
            (and ``ranges``).
        """
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ConfigError(f"policy input must be a float tensor (B, C, H, W); got "
                              f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', '')}")
        if augment is None:
            augment = self.training or self.augment_in_eval
        if not augment or len(self.ops) == 0:
            return x
        if params is None:
            params = self.sample(x.shape[0], generator=generator, device=x.device)
        if params.batch_size != x.shape[0] or params.u.shape[1] != len(self.ops):
            raise ConfigError(f"params were sampled for batch {params.batch_size} and {params.u.shape[1]} ops; "
                              f"got batch {x.shape[0]} and a policy of {len(self.ops)} ops")
        if ranges is not None and tuple(ranges.shape) != (x.shape[0], len(self.ops), 2):
            raise ConfigError(f"ranges must have shape {(x.shape[0], len(self.ops), 2)}, got {tuple(ranges.shape)}")
        u, gate_noise, aux = params.u.to(x.dtype), params.gate.to(x.dtype), params.aux.to(x.dtype)
        values = [op.values(u[:, i], None if ranges is None else ranges[:, i].to(x.dtype))
                  for i, op in enumerate(self.ops)]
        gates = [op.gate(gate_noise[:, i], self.temperature, self.hard) for i, op in enumerate(self.ops)]
        outs = [self._apply_group(x, group, values, gates, aux) for group in self.groups]
        if len(outs) == 1:
            return outs[0]
        choice = gumbel_choice(self.weights.to(x.dtype), params.choice.to(x.dtype), self.temperature, self.hard)
        return sum(choice[:, k, None, None, None] * out for k, out in enumerate(outs))

    def _apply_group(self, x: Tensor, group: Sequence[int], values: list[Tensor], gates: list[Tensor],
                     aux: Tensor) -> Tensor:
        """Apply the ops of ``group`` in order, fusing runs of geometric ops into one warp."""
        height, width = x.shape[-2:]
        matrix: Tensor | None = None
        run_gates: list[Tensor] = []
        for i in group:
            spec = OPS[self.ops[i].name]
            g = gates[i]
            if spec.geometric:
                eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(x.shape[0], 3, 3)
                blended = torch.lerp(eye, spec.fn(values[i], height, width), g[:, None, None])
                matrix = blended if matrix is None else matrix @ blended
                run_gates.append(g)
                continue
            if matrix is not None:
                x = self._warp(x, matrix, run_gates)
                matrix, run_gates = None, []
            x = torch.lerp(x, spec.fn(x, values[i], aux[:, i]), g[:, None, None, None])
        if matrix is not None:
            x = self._warp(x, matrix, run_gates)
        return x

    @staticmethod
    def _warp(x: Tensor, matrix: Tensor, gates: list[Tensor]) -> Tensor:
        """Warp once; samples whose gates are all exactly 0 keep ``x`` bit-exactly.

        (Resampling at the identity is exact only up to rounding, so those samples take ``x`` as
        their value and the warp's gradient, straight-through.)
        """
        warped = AF.warp(x, matrix)
        off = torch.stack(gates).eq(0).all(dim=0)[:, None, None, None]
        return straight_through(torch.where(off, x, warped), warped)

    # --- export ---------------------------------------------------------------------------------

    def to_dict(self, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The policy as a JSON-ready dict (schema in ``policies/README.md``).

        Args:
            provenance: fields overriding the stored provenance (``dataset``, ``method``, ``seed``,
                ``metrics``, ...); versions and date are filled in when missing.
        """
        from augdistill.augment.serialization import policy_to_dict
        return policy_to_dict(self, provenance)

    def to_json(self, provenance: Mapping[str, Any] | None = None, indent: int | None = 2) -> str:
        """The policy as a JSON string; floats are written exactly (``repr``)."""
        return json.dumps(self.to_dict(provenance), indent=indent, allow_nan=False)

    def save(self, path: str | Path, provenance: Mapping[str, Any] | None = None) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json(provenance) + "\n")

    def to_torchvision(self) -> Any:
        """A ``torchvision.transforms.v2`` pipeline with the same ops, ranges and probabilities.

        See :func:`augdistill.augment.export.to_torchvision`.
        """
        from augdistill.augment.export import to_torchvision
        return to_torchvision(self)

    def to_kornia(self) -> Any:
        """A kornia ``AugmentationSequential`` with the same ops, ranges and probabilities.

        See :func:`augdistill.augment.export.to_kornia`.
        """
        from augdistill.augment.export import to_kornia
        return to_kornia(self)


def _make_op(config: OpConfig) -> AugmentOp:
    if isinstance(config, str):
        return AugmentOp(config)
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError(f"an op is a name or a dict with 'name'; got {config!r}")
    unknown = set(config) - {"name", "probability", "magnitude", "symmetric"}
    if unknown:
        raise ConfigError(f"op {config['name']!r}: unknown keys {sorted(unknown)}")
    return AugmentOp(config["name"], probability=config.get("probability", 0.5),
                     magnitude=config.get("magnitude"), symmetric=config.get("symmetric"))


def build_policy(ops: Sequence[OpConfig] | Sequence[Sequence[OpConfig]], composition: str = "sequential", *,
                 probability: float | None = None, weights: Sequence[float] | None = None,
                 image_size: tuple[int, int] | None = None, **kwargs: Any) -> Policy:
    """Build a :class:`Policy` from op names or per-op dicts.

    Args:
        ops: op configs (a name, or ``{"name", "probability", "magnitude", "symmetric"}``); for
            ``sub-policies`` a list of such lists.
        composition: ``sequential`` | ``choose-one`` | ``sub-policies``.
        probability: initial probability for ops given by name only (default 0.5).
        weights: initial selection weights (choose-one / sub-policies).
        image_size: ``(H, W)`` metadata.
        **kwargs: :class:`Policy` options (``temperature``, ``hard``, ``augment_in_eval``, ``provenance``).

    Example:
        >>> policy = build_policy(["rotate", {"name": "translate-x", "magnitude": 0.1}], image_size=(8, 8))
        >>> sorted(policy.magnitudes())
        ['rotate', 'translate-x']
    """
    def with_default(config: OpConfig) -> OpConfig:
        if probability is not None and isinstance(config, str):
            return {"name": config, "probability": probability}
        return config

    if composition == "sub-policies":
        nested = [[with_default(c) for c in group] for group in ops]  # type: ignore[union-attr]
        flat = [_make_op(c) for group in nested for c in group]
        sizes = [len(group) for group in nested]
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        sub_policies = [list(range(s, s + n)) for s, n in zip(starts, sizes)]
        return Policy(flat, composition, sub_policies=sub_policies, weights=weights, image_size=image_size, **kwargs)
    return Policy([_make_op(with_default(c)) for c in ops], composition, weights=weights,  # type: ignore[arg-type]
                  image_size=image_size, **kwargs)
