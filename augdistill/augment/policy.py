"""Learnable augmentation policies: sample noise, then apply it differentiably.

A :class:`Policy` is an ``nn.Module`` holding :class:`~augdistill.augment.ops.AugmentOp` s and a
composition:

* ``sequential`` — every op in order, each gated by its own probability;
* ``choose-one`` — one op per sample, drawn with learnable weights, then gated by its probability;
* ``sub-policies`` — AutoAugment form: one sub-policy (a list of ops applied in order) per sample,
  drawn the same way.

Sampling and applying are separate: :meth:`Policy.sample` returns :class:`AugmentParams`, pure noise
(no magnitudes, no grad), and ``policy(x, params=params)`` turns it into a transform using the
*current* magnitudes and probabilities. The same params replay the bit-identical transform, so a
real and a synthetic batch can share one draw (DSA's siamese augmentation) without the global RNG.

Geometric ops that follow each other are fused: each contributes a sampling matrix, ``A`` where its
gate is on and ``I`` where it is off, the matrices are multiplied and the batch is warped once. A
pixel op is blended as ``lerp(x, op(x), g)``.

Gradients of probabilities and choice weights (hard gates, the default) are those of the *expected*
output (see :mod:`~augdistill.augment.gates`): an op's probability gets, per sample,
``<dL/dy, y(op on) - y(op off)>`` with the other draws held fixed, at every probability 0 and 1
included. For a pixel op that is ``lerp``'s own derivative; for a fused run of ``k >= 2`` geometric
ops the counterfactuals ``y(op flipped)`` take ``k`` more warps (forward only, and only when a
probability needs a gradient); a lone geometric op needs none. With relaxed gates (``hard=False``)
a geometric op is blended as ``g A + (1 - g) I`` (DSA's differentiable form) and every gradient is
the exact derivative of that smooth forward.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from augdistill.augment import functional as AF
from augdistill.augment.gates import NOISE_EPS, clamp_st, gumbel_choice, straight_through
from augdistill.augment.ops import OPS, AugmentOp, Range, real_number
from augdistill.devices import upload
from augdistill.errors import ConfigError

__all__ = ["AugmentParams", "Policy", "build_policy", "COMPOSITIONS", "OpConfig", "INPUT_DTYPES"]

COMPOSITIONS = ("sequential", "choose-one", "sub-policies")

#: Image dtypes a policy accepts (the kernels' matrices and colour maths need at least float32).
INPUT_DTYPES = (torch.float32, torch.float64)

#: How an op is given to :func:`build_policy`: a name, or a dict with ``name`` and optional
#: ``probability``, ``magnitude`` (half-width or ``(low, high)``) and ``symmetric``.
OpConfig = str | Mapping[str, Any]


def _describe(x: Any) -> str:
    """``Tensor (2, 3) torch.int64 on cpu`` or the type name, for error messages."""
    if isinstance(x, Tensor):
        return f"Tensor {tuple(x.shape)} {x.dtype} on {x.device}"
    return type(x).__name__


def _sequence(value: Any, what: str) -> Sequence[Any]:
    """``value`` if it is a list or tuple, else a :class:`ConfigError` naming ``what``."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{what} must be a list, got {_describe(value)} {value!r:.60}")
    return value


class _GateSecants(torch.autograd.Function):
    """``y`` unchanged; backward: the gradient to ``y``, and to gate ``k`` per sample ``<grad, diffs[k]>``.

    ``diffs`` ``(K, B, C, H, W)`` holds ``y(op k on) - y(op k off)``, so gate ``k`` (whose own gradient
    reaches its probability with slope 1) receives the secant of the loss along it.
    """

    @staticmethod
    def forward(ctx, y: Tensor, diffs: Tensor, *gates: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(diffs)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (diffs,) = ctx.saved_tensors
        per_gate = (grad.unsqueeze(0) * diffs).flatten(2).sum(2)  # (K, B)
        return (grad, None, *per_gate)


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
        return AugmentParams(upload(self.u, device), upload(self.gate, device), upload(self.aux, device),
                             None if self.choice is None else upload(self.choice, device))


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
        temperature: temperature of the relaxed gates and Gumbel-softmax (used when ``hard=False``).
        hard: exact 0/1 gates and choices with the gradient of the expected output (default), instead
            of relaxed ones.
        augment_in_eval: also augment in ``eval()`` mode (default: identity in eval).
        provenance: where the policy comes from (dataset, method, seed, versions, date, metrics).

    Shape:
        input ``(B, C, H, W)`` float32/float64 in ``[0, 1]``; output the same shape and dtype.

    Raises:
        ConfigError: an argument of the wrong type or out of range; at call time, an input the ops
            cannot take (see :meth:`forward`).

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
        ops = _sequence(ops, "ops")
        bad = [i for i, op in enumerate(ops) if not isinstance(op, AugmentOp)]
        if bad:
            raise ConfigError(f"ops[{bad[0]}] must be an AugmentOp, got {_describe(ops[bad[0]])}")
        if not isinstance(composition, str) or composition not in COMPOSITIONS:
            raise ConfigError(f"composition {composition!r:.60} unknown; expected one of {', '.join(COMPOSITIONS)}")
        tau = real_number(temperature)
        if tau is None or not tau > 0:
            raise ConfigError(f"temperature must be a finite number > 0, got {temperature!r:.60}")
        if not isinstance(value_range, (list, tuple)) or tuple(value_range) != (0.0, 1.0):
            raise ConfigError(f"value_range {value_range!r:.60} unsupported; policies act on [0, 1] images")
        for flag, value in (("hard", hard), ("augment_in_eval", augment_in_eval)):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be True or False, got {value!r:.60}")
        if provenance is not None and not isinstance(provenance, Mapping):
            raise ConfigError(f"provenance must be a mapping or None, got {_describe(provenance)}")
        self.ops = nn.ModuleList(ops)
        self.composition = composition
        self.groups = self._groups(composition, len(ops), sub_policies)
        if composition == "sequential":
            if weights is not None:
                raise ConfigError("weights are only used by choose-one and sub-policies compositions")
            self.weights = None
        else:
            w = [1.0] * len(self.groups) if weights is None else [real_number(v) for v in _sequence(weights, "weights")]
            if len(w) != len(self.groups) or any(v is None or v < 0 for v in w) or not sum(w) > 0:
                raise ConfigError(f"weights must be {len(self.groups)} finite numbers >= 0, not all 0; "
                                  f"got {weights!r:.80}")
            self.weights = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.image_size = self._image_size(image_size)
        self.value_range = (0.0, 1.0)
        self.temperature = tau
        self.hard = hard
        self.augment_in_eval = augment_in_eval
        self.provenance = dict(provenance) if provenance is not None else None

    def extra_repr(self) -> str:
        groups = f", sub_policies={[list(g) for g in self.groups]}" if self.composition == "sub-policies" else ""
        return (f"composition={self.composition!r}{groups}, temperature={self.temperature}, hard={self.hard}, "
                f"image_size={self.image_size}")

    @staticmethod
    def _image_size(image_size: Any) -> tuple[int, int] | None:
        if image_size is None:
            return None
        size = _sequence(image_size, "image_size")
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ConfigError(f"image_size must be (height, width) positive integers, got {image_size!r:.60}")
        return int(size[0]), int(size[1])

    @staticmethod
    def _groups(composition: str, n: int, sub_policies: Any) -> tuple[tuple[int, ...], ...]:
        if composition == "sub-policies":
            if sub_policies is None or len(_sequence(sub_policies, "sub_policies")) == 0:
                raise ConfigError("composition 'sub-policies' needs sub_policies (lists of op indices)")
            groups = tuple(tuple(_sequence(group, f"sub_policies[{k}]")) for k, group in enumerate(sub_policies))
            flat = [i for group in groups for i in group]
            if any(isinstance(i, bool) or not isinstance(i, int) for i in flat) or flat != list(range(n)):
                raise ConfigError(f"sub_policies must list op indices 0..{n - 1} once each, in order; "
                                  f"got {sub_policies!r:.80}")
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
        w = clamp_st(self.weights, 0.0, math.inf)
        return w / w.sum()

    def width(self, spans: Tensor | None = None) -> Tensor:
        """Differentiable width of the policy (0-d float64), a regulariser for Augerino-style objectives.

        ``sum_k pi_k sum_{i in group k} p_i (high_i - low_i) / (max_i - min_i)``: for every op, its
        probability times the fraction of its allowed physical range in use, weighted by the chance
        ``pi_k`` that its group is selected (1 for sequential). Ops without magnitude count ``p_i``.

        Args:
            spans: optional ``(N,)`` fractions of each op's allowed range in use, replacing the ops' own
                (per-class ranges pass their mean over the classes; 1 for ops without magnitude).
        """
        dev = self.ops[0].probability.device if len(self.ops) else None
        per_op = ([op.width() for op in self.ops] if spans is None
                  else [op.prob() * spans[i] for i, op in enumerate(self.ops)])
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
            batch_size: ``B`` (a positive integer).
            generator: source of randomness; ``None`` uses the global RNG. Noise is drawn on the
                generator's device, then moved to ``device``.
            device: where the returned tensors live (default: the generator's / CPU).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r:.60}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator or None, got {_describe(generator)}")
        try:
            target = None if device is None else torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"device {device!r:.60} is not a torch device ({e})") from None
        gen_device = generator.device if generator is not None else (target or torch.device("cpu"))
        n, k = len(self.ops), len(self.groups)

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=gen_device)

        u = rand(batch_size, n) * 2.0 - 1.0
        gate = rand(batch_size, n).clamp_(NOISE_EPS, 1.0 - NOISE_EPS)
        aux = rand(batch_size, n, 2)
        choice = rand(batch_size, k).clamp_(NOISE_EPS, 1.0 - NOISE_EPS) if self.weights is not None else None
        params = AugmentParams(u, gate, aux, choice)
        return params if target is None else params.to(target)

    def forward(self, x: Tensor, params: AugmentParams | None = None, *, generator: torch.Generator | None = None,
                augment: bool | None = None, ranges: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """Augment ``x`` (B, C, H, W) in ``[0, 1]``.

        Args:
            x: image batch, float32 or float64.
            params: noise from :meth:`sample`; drawn here (with ``generator``) when ``None``.
            generator: used only when ``params`` is ``None``.
            augment: force augmentation on/off; default: on in training mode or if ``augment_in_eval``.
            ranges: optional ``(B, N, 2)`` per-sample ``(low, high)`` overriding the learned ranges
                (input-conditioned policies, see :class:`~augdistill.augment.learn.InstanceRanges`).
            labels: the images' class ids ``(B,)``; unused (this policy treats every class alike), accepted so
                that callers can treat it and a :class:`~augdistill.augment.class_ranges.ClassRangesPolicy` alike.

        Returns:
            The augmented batch, differentiable w.r.t. ``x``, the magnitudes, probabilities and weights
            (and ``ranges``).

        Raises:
            ConfigError: ``x`` is not a non-empty float32/float64 ``(B, C, H, W)`` tensor with data;
                an op cannot take its channel count or size (hue and saturation need 1 or 3 channels,
                sharpness at least 3x3 pixels); ``x`` holds NaN or infinity (checked on CPU, where it
                needs no device synchronisation); ``params`` or ``ranges`` do not fit ``x`` and the policy.
        """
        self._check_input(x)
        if augment is None:
            augment = self.training or self.augment_in_eval
        if not augment or len(self.ops) == 0:
            return x
        self._check_values(x)
        if params is None:
            params = self.sample(x.shape[0], generator=generator, device=x.device)
        self._check_params(params, x)
        if ranges is not None and (not isinstance(ranges, Tensor) or not ranges.is_floating_point()
                                   or tuple(ranges.shape) != (x.shape[0], len(self.ops), 2)):
            raise ConfigError(f"ranges must be a float tensor of shape {(x.shape[0], len(self.ops), 2)}, "
                              f"got {_describe(ranges)}")
        u, gate_noise, aux = params.u.to(x.dtype), params.gate.to(x.dtype), params.aux.to(x.dtype)
        values = [op.values(u[:, i], None if ranges is None else ranges[:, i].to(x.dtype))
                  for i, op in enumerate(self.ops)]
        gates = [op.gate(gate_noise[:, i], self.temperature, self.hard) for i, op in enumerate(self.ops)]
        outs = [self._apply_group(x, group, values, gates, aux) for group in self.groups]
        if len(outs) == 1:
            return outs[0]
        choice = gumbel_choice(self.weights.to(x.dtype), params.choice.to(x.dtype),  # type: ignore[union-attr]
                               self.temperature, self.hard)
        return sum(choice[:, k, None, None, None] * out for k, out in enumerate(outs))

    @staticmethod
    def _check_input(x: Any) -> None:
        """Type, device, shape and dtype of the input (cheap: no data is read)."""
        if not isinstance(x, Tensor):
            raise ConfigError(f"policy input must be a float tensor (B, C, H, W); got {_describe(x)}")
        if x.is_meta:
            raise ConfigError(f"policy input is a meta tensor {tuple(x.shape)} (shape only, no data); "
                              "augment a tensor on a real device")
        if x.dim() != 4 or x.dtype not in INPUT_DTYPES:
            raise ConfigError(f"policy input must be a float tensor (B, C, H, W) of dtype float32 or float64; "
                              f"got {_describe(x)}")
        if x.numel() == 0:
            raise ConfigError(f"policy input {tuple(x.shape)} is empty; expected B, C, H, W >= 1")

    def _check_values(self, x: Tensor) -> None:
        """What the ops need of the input, and (on CPU) finite values."""
        channels, height, width = x.shape[1:]
        for op in self.ops:
            problem = op.spec.input_problem(channels, height, width)
            if problem:
                raise ConfigError(f"policy input {tuple(x.shape)}: {problem}")
        if x.device.type == "cpu" and not bool(torch.isfinite(x).all()):
            raise ConfigError(f"policy input {tuple(x.shape)} holds NaN or infinite values; expected images in [0, 1]")

    def _check_params(self, params: Any, x: Tensor) -> None:
        """``params`` hold float tensors of the shapes this policy and batch need, on ``x``'s device."""
        if not isinstance(params, AugmentParams):
            raise ConfigError(f"params must be AugmentParams from Policy.sample, got {_describe(params)}")
        b, n, k = x.shape[0], len(self.ops), len(self.groups)
        if (not isinstance(params.u, Tensor) or params.u.dim() != 2 or params.batch_size != b
                or params.u.shape[1] != n):
            raise ConfigError(f"params were sampled for (batch, ops) = {tuple(getattr(params.u, 'shape', ()))}; "
                              f"got batch {b} and a policy of {n} ops")
        expected = {"u": (b, n), "gate": (b, n), "aux": (b, n, 2),
                    "choice": (b, k) if self.weights is not None else None}
        for field, shape in expected.items():
            value = getattr(params, field)
            if shape is None:
                continue
            if (not isinstance(value, Tensor) or tuple(value.shape) != shape or not value.is_floating_point()
                    or value.device != x.device):
                raise ConfigError(f"params.{field} must be a float tensor {shape} on {x.device} for this batch and "
                                  f"policy, got {_describe(value)}")

    def _apply_group(self, x: Tensor, group: Sequence[int], values: list[Tensor], gates: list[Tensor],
                     aux: Tensor) -> Tensor:
        """Apply the ops of ``group`` in order, fusing runs of geometric ops into one warp."""
        run: list[int] = []
        for i in group:
            spec = OPS[self.ops[i].name]
            if spec.geometric:
                run.append(i)
                continue
            if run:
                x, run = self._warp_run(x, run, values, gates), []
            x = torch.lerp(x, spec.fn(x, values[i], aux[:, i]), gates[i][:, None, None, None])
        return self._warp_run(x, run, values, gates) if run else x

    def _warp_run(self, x: Tensor, run: list[int], values: list[Tensor], gates: list[Tensor]) -> Tensor:
        """Warp ``x`` once by the product of the run's gated matrices (see the module docstring)."""
        height, width = x.shape[-2:]
        matrices = [OPS[self.ops[i].name].fn(values[i], height, width) for i in run]
        used = [gates[i].detach() if self.hard else gates[i] for i in run]  # hard: the exact 0/1 decision
        flips = [k for k, i in enumerate(run) if self.hard and gates[i].requires_grad]
        if len(run) == 1 and flips:
            # One op: a sample shows warp(x, A) where on and x where off, its counterfactual the other one,
            # so a single warp by A serves both (the same values as `_warp`, without the extra warp).
            warped, on = AF.warp(x, matrices[0]), used[0].bool()[:, None, None, None]
            y = torch.where(on, warped, x)
            on_minus_off = (warped - x).detach().unsqueeze(0)
        else:
            y = self._warp(x, matrices, used)
            if not flips:
                return y
            with torch.no_grad():  # counterfactuals: the run with gate k flipped, all in one warp
                flipped = [torch.cat([1.0 - g if j == k else g for k in flips]) for j, g in enumerate(used)]
                others = self._warp(x.repeat(len(flips), 1, 1, 1), [m.repeat(len(flips), 1, 1) for m in matrices],
                                    flipped)
                on_minus_off = (y.unsqueeze(0) - others.view(len(flips), *y.shape)) \
                    * (2.0 * torch.stack([used[k] for k in flips]) - 1.0)[:, :, None, None, None]
        return _GateSecants.apply(y, on_minus_off, *(gates[run[k]] for k in flips))

    @staticmethod
    def _warp(x: Tensor, matrices: list[Tensor], gates: list[Tensor]) -> Tensor:
        """Warp by ``prod_k lerp(I, M_k, g_k)``; samples whose gates are all exactly 0 keep ``x`` bit-exactly.

        (Resampling at the identity is exact only up to rounding, so those samples take ``x`` as
        their value and the warp's gradient, straight-through.)
        """
        eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(x.shape[0], 3, 3)
        matrix = None
        for m, g in zip(matrices, gates):
            blended = torch.lerp(eye, m, g[:, None, None])
            matrix = blended if matrix is None else matrix @ blended
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
        """Write :meth:`to_json` to ``path`` atomically (a temporary file in the same folder, then renamed).

        Raises:
            ConfigError: ``path`` cannot be written (missing folder, a folder, no permission, disk full).
        """
        path = Path(path)
        text = self.to_json(provenance) + "\n"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as e:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise ConfigError(f"{path}: cannot write policy file ({e.strerror or e})") from None

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
        raise ConfigError(f"an op is a name or a dict with 'name'; got {config!r:.60}")
    unknown = set(config) - {"name", "probability", "magnitude", "symmetric"}
    if unknown:
        raise ConfigError(f"op {config['name']!r:.40}: unknown keys {sorted(map(repr, unknown))}")
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

    ops = _sequence(ops, "ops")
    if composition == "sub-policies":
        nested = [[with_default(c) for c in _sequence(group, f"ops[{k}] (a sub-policy)")]
                  for k, group in enumerate(ops)]
        flat = [_make_op(c) for group in nested for c in group]
        sizes = [len(group) for group in nested]
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        sub_policies = [list(range(s, s + n)) for s, n in zip(starts, sizes)]
        return Policy(flat, composition, sub_policies=sub_policies, weights=weights, image_size=image_size, **kwargs)
    return Policy([_make_op(with_default(c)) for c in ops], composition, weights=weights,  # type: ignore[arg-type]
                  image_size=image_size, **kwargs)
