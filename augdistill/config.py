"""Frozen configuration dataclasses, built once (CLI or Python) and passed down explicitly."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from augdistill.augment.learn import POLICY_PARAMETER_KINDS
from augdistill.errors import ConfigError

__all__ = ["DataConfig", "ModelConfig", "SyntheticConfig", "MethodConfig", "InnerConfig", "OuterConfig",
           "PolicyConfig", "DistillConfig", "config_from_dict", "setting", "check_fields"]

#: Learning rates above this only diverge; every learning-rate flag is bounded by it.
MAX_LR = 1e3


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def setting(default: Any, flag: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, choices: tuple[Any, ...] | None = None,
            why: str = "") -> Any:
    """A configuration field together with what it means, checked by :func:`check_fields`.

    Args:
        default: the default value.
        flag: the command-line flag (or ``section.field``) that sets it; errors name it.
        low, high: the valid range, inclusive unless ``low_open`` / ``high_open``. Every numeric
            field declares both: a value beyond them is refused before any work starts.
        choices: the valid values of a string field.
        why: why the upper bound exists (work, memory), shown in the error.

    Example:
        >>> @dataclass(frozen=True)
        ... class Toy:
        ...     steps: int = setting(10, "--steps", low=1, high=100)
        ...     def __post_init__(self) -> None:
        ...         check_fields(self)
        >>> Toy(steps=1000)
        Traceback (most recent call last):
        augdistill.errors.ConfigError: --steps must be <= 100, got 1000
    """
    return field(default=default, metadata={"flag": flag, "low": low, "high": high, "low_open": low_open,
                                            "high_open": high_open, "choices": choices, "why": why})


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(value: Any) -> str:
    return reprlib.repr(value)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (ints -> ``int``, reals -> finite ``float``,
    lists -> tuples); raises :class:`ConfigError` naming ``name``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, option)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise ConfigError(f"{name} must be an integer, got {_describe(value)}")
    if hint is float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{name} must be a finite number, got {_describe(value)}")
        return number
    if hint is str:
        if isinstance(value, str) and "\x00" not in value:
            return value
        raise ConfigError(f"{name} must be a string without NUL characters, got {_describe(value)}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, (tuple, list)):
            return tuple(_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        raise ConfigError(f"{name} must be a list, got {_describe(value)}")
    if isinstance(value, origin or hint):
        return value
    raise ConfigError(f"{name} must be a {getattr(hint, '__name__', hint)}, got {_describe(value)}")


def _check_range(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {_describe(value)}")
    why = f" ({meta['why']})" if meta.get("why") else ""
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta["low_open"] else value < low):
        raise ConfigError(f"{name} must be {'>' if meta['low_open'] else '>='} {low}, got {_describe(value)}")
    if high is not None and (value >= high if meta["high_open"] else value > high):
        raise ConfigError(f"{name} must be {'<' if meta['high_open'] else '<='} {high}{why}, got {_describe(value)}")


def check_fields(obj: Any) -> None:
    """Check every field of the frozen config dataclass ``obj`` against its annotation and :func:`setting`.

    Types follow the annotations (``int`` not ``bool``, finite ``float``, ``str`` without NUL,
    ``tuple[str, ...]``, ``X | None``, nested config sections); ints are normalised to ``int``,
    reals to ``float``, lists to tuples. Call it first in every ``__post_init__``: a new field is
    then checked without anything else to remember.

    Raises:
        ConfigError: naming the flag (or ``Class.field``), the value and what was expected.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        name = f.metadata.get("flag") or f"{type(obj).__name__}.{f.name}"
        value = _coerce(name, getattr(obj, f.name), hints[f.name])
        object.__setattr__(obj, f.name, value)
        if value is not None and not isinstance(value, tuple):
            _check_range(name, value, f.metadata)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to distill. ``root`` is ``None`` for the defaults (digits ships with the package)."""

    name: str = setting("digits", "--dataset")
    root: str | None = setting(None, "--data-root")
    val_fraction: float = setting(0.1, "data.val_fraction", low=0, high=1, low_open=True, high_open=True)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ModelConfig:
    """A network family and its options; ``None`` keeps the family's default.

    ``name=None`` takes the method's default network (:attr:`Method.default_model`): a one-hidden-layer
    MLP for Wang et al. (on 2 CPU cores ~100 outer steps/s on digits, and its sets replay better than
    ConvNet-3's at 1-10 images per class), the field's ConvNet-3 (width 128, instance norm) for the
    matching methods. ``first_padding`` (ConvNet only) pads its first convolution: 3 is the field's code
    on 28x28 grey-scale images; it also sets the standard-protocol networks that validate the run and, by
    default, evaluate it.
    """

    name: str | None = setting(None, "--model")
    width: int | None = setting(None, "--width", low=1, high=4096, why="memory")
    depth: int | None = setting(None, "--depth", low=1, high=64)
    norm: str | None = setting(None, "--norm")
    first_padding: int | None = setting(None, "--first-padding", low=0, high=64)

    def __post_init__(self) -> None:
        check_fields(self)

    def kwargs(self) -> dict[str, Any]:
        values = {"width": self.width, "depth": self.depth, "norm": self.norm, "first_padding": self.first_padding}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class SyntheticConfig:
    """The learned set: a budget of ``ipc`` full-size images per class (in floats), stored as ``param``.

    ``param`` names the parameterisation: ``pixels`` (the images themselves), ``multi-formation``
    (IDC: ``factor`` x ``factor`` tiles per stored image, each upsampled to a training image; default 2) or
    ``latent`` (KFS-style: codes of ``latent_dim`` channels at ``1/factor`` of the image side (default 4),
    ``codes`` per class (0: as many as the budget leaves), each through each of ``decoders`` shared
    decoders of ``decoder_width`` hidden channels, fitted to real images by ``fit_steps`` Adam steps
    first). ``init`` starts it from random ``real`` images, the real images that ``herding`` picks (the
    nearest to the class mean first; :func:`~augdistill.data.sampling.herd`) or ``noise``; ``learn_labels``
    learns soft labels of the decoded images. ``clip_pixels`` projects the stored pixels (``pixels``,
    ``multi-formation``) back into ``[0, 1]`` after every outer step, so that the set stays a set of images.
    """

    ipc: int = setting(1, "--ipc", low=1, high=10_000, why="memory")
    init: str = setting("real", "--syn-init", choices=("real", "herding", "noise"))
    learn_labels: bool = setting(False, "--learn-labels")
    param: str = setting("pixels", "--param")
    factor: int | None = setting(None, "--factor", low=1, high=64, why="decoded images grow with its square")
    decoders: int = setting(4, "--decoders", low=1, high=64, why="memory")
    latent_dim: int = setting(4, "--latent-dim", low=1, high=1024, why="memory")
    decoder_width: int = setting(8, "--decoder-width", low=1, high=1024, why="memory")
    codes: int = setting(0, "--codes", low=0, high=10_000, why="memory")
    fit_steps: int = setting(300, "--fit-steps", low=0, high=100_000, why="work")
    clip_pixels: bool = setting(False, "--clip-pixels")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class MethodConfig:
    """The distillation objective ``name`` and its options; ``None`` takes the method's default.

    Wang et al. (``wang``) learns per-step learning rates ``lr_cap * sigmoid(raw)`` initialised at
    ``lr_init``. The other methods' options are documented with each method.

    Trajectory matching (``mtt``) reads experts from ``expert_dir``; each step starts at a random epoch
    ``< max_start_epoch`` of a random expert, takes ``syn_steps`` steps of ``syn_batch`` images (0: all) with
    a learned step size starting at ``syn_lr_init``, and matches the expert ``expert_epochs`` epochs later;
    ``constant_memory`` uses TESLA's first-order gradient whose memory does not grow with ``syn_steps``.

    Gradient matching (``dc``) matches ``outer_loop`` times per network and trains the network for
    ``inner_loop`` epochs on the synthetic set at ``net_lr`` between matching steps (``None``: the paper's
    values for the ``ipc``); with ``train_on`` ``real`` it takes ``inner_loop`` SGD steps on the step's real batch
    instead, and ``distance`` is DC's per-node ``cosine`` or IDC's ``l1`` over the convolution kernels.

    Distribution matching (``dm``) embeds with a fresh random network every step; with ``pool`` > 0 it draws one of
    ``pool`` networks instead, each trained ``pool_steps`` SGD steps at ``net_lr`` on the step's real batch (or, with
    ``pool_train_on`` ``synthetic``, on the synthetic set, as the evaluation networks train) whenever
    it is drawn and replaced by a fresh one once it has taken ``pool_lifetime`` steps (IDM's semi-trained models);
    with ``expert_dir`` it embeds with a cached expert at a uniformly drawn point of its trajectory, interpolated
    between epochs (DANCE's middle encoders); it adds ``ce_weight`` times the cross-entropy of that network on the
    synthetic set (IDM's class-aware regulariser); ``layer_weight`` > 0 also matches every earlier block's class
    means, weighted per feature (CAFE's layer-wise alignment), ``disc_weight`` weighs CAFE's discrimination loss
    (real images classified by the synthetic class means), and ``attention_weight`` DataDAM's matching of the
    class-mean spatial attention maps of every block but the last, ``style_weight`` the matching of every block's
    class-mean Gram matrix (the style term of Decomposed DM), weighted per entry relative to the last layer's
    features; ``kernel`` ``gaussian`` matches the last layer's class distributions by M3D's maximum mean
    discrepancy instead of their means, the kernel's width 2σ²
    ``bandwidth`` times the median squared distance between the class's real embeddings; ``easy_fraction`` < 1
    matches, in every class, only that fraction of the real batch the step's network finds easiest (lowest
    cross-entropy), the sample-difficulty correction of arXiv 2408.12483.
    """

    name: str = setting("wang", "--method")
    lr_init: float = setting(0.1, "--lr-init", low=0, high=MAX_LR, low_open=True)
    lr_cap: float = setting(1.0, "--lr-cap", low=0, high=MAX_LR, low_open=True)
    expert_dir: str | None = setting(None, "--expert-dir")
    expert_epochs: int = setting(2, "--expert-epochs", low=1, high=1000)
    syn_steps: int = setting(20, "--syn-steps", low=1, high=10_000, why="every outer step unrolls them all")
    max_start_epoch: int = setting(10, "--max-start-epoch", low=1, high=100_000)
    syn_lr_init: float = setting(0.01, "--syn-lr-init", low=0, high=MAX_LR, low_open=True)
    syn_batch: int = setting(0, "--syn-batch", low=0, high=100_000, why="memory")
    constant_memory: bool = setting(False, "--constant-memory")
    outer_loop: int | None = setting(None, "--outer-loop", low=1, high=100_000)
    inner_loop: int | None = setting(None, "--inner-loop", low=0, high=10_000, why="work between matching steps")
    net_lr: float = setting(0.01, "--net-lr", low=0, high=MAX_LR, low_open=True)
    train_on: str = setting("synthetic", "--dc-train-on", choices=("synthetic", "real"))
    distance: str = setting("cosine", "--dc-distance", choices=("cosine", "l1"))
    pool: int = setting(0, "--dm-pool", low=0, high=1000, why="each network is kept in memory and checkpoints")
    pool_steps: int = setting(1, "--dm-pool-steps", low=1, high=1000, why="work every outer step")
    pool_lifetime: int = setting(100, "--dm-pool-lifetime", low=1, high=10_000_000)
    pool_train_on: str = setting("real", "--dm-pool-train-on", choices=("real", "synthetic"))
    ce_weight: float = setting(0.0, "--dm-ce-weight", low=0, high=1e6)
    layer_weight: float = setting(0.0, "--dm-layer-weight", low=0, high=1e6)
    disc_weight: float = setting(0.0, "--dm-disc-weight", low=0, high=1e6)
    attention_weight: float = setting(0.0, "--dm-attention-weight", low=0, high=1e6)
    style_weight: float = setting(0.0, "--dm-style-weight", low=0, high=1e6)
    kernel: str = setting("linear", "--dm-kernel", choices=("linear", "gaussian"))
    bandwidth: float = setting(1.0, "--dm-bandwidth", low=0, high=1e12, low_open=True)
    easy_fraction: float = setting(1.0, "--dm-easy-fraction", low=0, high=1, low_open=True)

    def __post_init__(self) -> None:
        check_fields(self)
        _require(0 < self.lr_init < self.lr_cap, f"need 0 < --lr-init < --lr-cap, got {self.lr_init}, {self.lr_cap}")


@dataclass(frozen=True)
class InnerConfig:
    """The unrolled inner training: ``steps`` per epoch, ``epochs``, ``batch_per_class`` images per class a step
    (0 means all images every step), heavy-ball ``momentum``.

    How it is computed (same hypergradients up to float rounding): ``checkpoint`` recomputes every segment of
    that many inner steps in the backward pass instead of storing its activations (0: store all);
    ``precision`` ``bfloat16`` runs the network's forward under autocast; ``compile`` computes each step's
    gradient with ``torch.compile`` (see :func:`augdistill.inner.unroll`)."""

    steps: int = setting(10, "--inner-steps", low=1, high=10_000, why="every outer step unrolls them all")
    epochs: int = setting(1, "--inner-epochs", low=1, high=1000)
    batch_per_class: int = setting(0, "--batch-per-class", low=0, high=10_000)
    momentum: float = setting(0.0, "--momentum", low=0, high=1, high_open=True)
    checkpoint: int = setting(0, "--checkpoint-inner", low=0, high=10_000)
    precision: str = setting("float32", "--inner-precision", choices=("float32", "bfloat16"))
    compile: bool = setting(False, "--compile-inner")

    def __post_init__(self) -> None:
        check_fields(self)
        _require(self.steps * self.epochs <= 10_000, f"--inner-steps x --inner-epochs must be <= 10000 (every outer "
                 f"step unrolls them all), got {self.steps} x {self.epochs}")


@dataclass(frozen=True)
class OuterConfig:
    """The outer loop: θ₀ ``init`` mode (``random``: ``num_inits`` fresh draws a step; ``fixed``: one θ₀),
    the draws of a step unrolled one after another or batched with ``vmap`` (``batch_draws``; ``auto``: the
    method decides, see :class:`~augdistill.distill.methods.wang.Wang`),
    real batch size per class, the optimiser of the synthetic set (``adam`` or ``sgd`` with
    ``sgd_momentum``) and the learning rate of each group, the gradient-norm clip (``grad_clip``; 0: none),
    seed, and how the best
    iteration is selected on the validation split (``validation``: ``replay`` the learned steps, or
    train ``standard`` evaluation networks for ``val_epochs``). ``ema`` β > 0 keeps an exponential moving
    average of the stored synthetic tensors (Polyak averaging; see :class:`~augdistill.distill.averaging.
    SyntheticAverage`), which validation, selection and the exported set then use. ``None`` takes the method's
    default.
    """

    iterations: int = setting(1000, "--iterations", low=0, high=10_000_000)
    init: str = setting("random", "--init", choices=("random", "fixed"))
    num_inits: int = setting(2, "--num-inits", low=1, high=1000)
    batch_draws: str = setting("auto", "--batch-draws", choices=("auto", "loop", "vmap"))
    real_per_class: int = setting(64, "--real-per-class", low=1, high=100_000, why="memory")
    optimizer: str | None = setting(None, "--optimizer", choices=("adam", "sgd"))
    lr_images: float | None = setting(None, "--lr-images", low=0, high=MAX_LR, low_open=True)
    sgd_momentum: float = setting(0.5, "--sgd-momentum", low=0, high=1, high_open=True)
    lr_lrs: float = setting(0.01, "--lr-lrs", low=0, high=MAX_LR)
    lr_labels: float = setting(0.01, "--lr-labels", low=0, high=MAX_LR)
    grad_clip: float | None = setting(None, "--grad-clip", low=0, high=1e12)
    seed: int = setting(0, "--seed", low=0, high=2**32 - 1)
    validation: str | None = setting(None, "--validation", choices=("replay", "standard"))
    val_epochs: int = setting(300, "--val-epochs", low=1, high=10_000)
    ema: float = setting(0.0, "--ema", low=0, high=1, high_open=True)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class PolicyConfig:
    """The augmentation policy: ``none``, ``fixed`` (from ``init_file``, e.g. DSA) or ``learn``.

    ``width_weight`` is λ of the width bonus (Augerino), ``aug_weight`` weighs the augmented-real-data loss,
    ``copies`` is J, the number of augmented copies of the real batch. ``width_measure`` ``range`` is
    ``Policy.width()``; ``spread`` counts a flip by ``4p(1 - p)`` (most bonus at p = 0.5) instead of ``p``.
    Methods that do not unroll the inner trainer themselves measure the objective on the network ``critic``
    names (see :mod:`augdistill.distill.policy_objective`): ``unroll``, ``inner_steps`` full-batch steps at
    ``inner_lr`` from a fresh θ₀; ``real`` / ``synthetic``, a network trained alongside the run on augmented
    real batches (Augerino) / on the augmented synthetic set (like an evaluation network), ``critic_steps``
    SGD steps at ``critic_lr`` per outer step, restarted every ``critic_reset`` steps (0: never), on
    ``critic_per_class`` real images per class of the outer batch (0: all of them). ``learn`` names what a
    learned policy updates (:data:`~augdistill.augment.learn.POLICY_PARAMETER_KINDS`); the rest stays as loaded.
    ``every``: the learned policy (its objective, its critic and its update) takes part in every ``every``-th outer
    step only, so that under a wall budget the synthetic set gets about as many steps as with a fixed policy.
    ``per_class``: learn one magnitude range per op and class (:class:`~augdistill.augment.ClassRangesPolicy`,
    every class starting from the policy's ranges); gates and choice weights stay shared. ``adversarial`` (α): on
    the policy's turns the policy also ascends the matching loss, receiving ``−α`` times its gradient (0: the
    matching loss sees the policy frozen); needs a method whose loss supports it (``dm``).
    """

    mode: str = setting("none", "--policy", choices=("none", "fixed", "learn"))
    ops: tuple[str, ...] = setting(("rotate",), "--ops")
    init_file: str | None = setting(None, "--policy-init")
    lr: float = setting(0.01, "--policy-lr", low=0, high=MAX_LR)
    width_weight: float = setting(0.5, "--width-weight", low=0, high=1e6)
    aug_weight: float = setting(1.0, "--aug-weight", low=0, high=1e6)
    copies: int = setting(1, "--aug-copies", low=1, high=64, why="each copy is a full augmented real batch")
    siamese: bool = setting(False, "--siamese")
    inner_steps: int = setting(10, "--policy-inner-steps", low=1, high=10_000)
    inner_lr: float = setting(0.01, "--policy-inner-lr", low=0, high=MAX_LR, low_open=True)
    width_measure: str = setting("range", "--width-measure", choices=("range", "spread"))
    critic: str = setting("unroll", "--policy-critic", choices=("unroll", "real", "synthetic", "lookahead"))
    critic_lr: float = setting(0.01, "--critic-lr", low=0, high=MAX_LR, low_open=True)
    critic_steps: int = setting(1, "--critic-steps", low=1, high=1000, why="work every outer step")
    critic_reset: int = setting(0, "--critic-reset", low=0, high=10_000_000)
    critic_per_class: int = setting(0, "--critic-per-class", low=0, high=100_000, why="memory")
    learn: tuple[str, ...] = setting(POLICY_PARAMETER_KINDS, "--policy-learn")
    every: int = setting(1, "--policy-every", low=1, high=1_000_000)
    per_class: bool = setting(False, "--policy-per-class")
    adversarial: float = setting(0.0, "--policy-adversarial", low=0, high=1e6)

    def __post_init__(self) -> None:
        check_fields(self)
        _require(all(self.ops), f"--ops must name ops separated by commas, got {','.join(self.ops)!r}")
        _require(bool(self.learn) and set(self.learn) <= set(POLICY_PARAMETER_KINDS),
                 f"--policy-learn must name some of {', '.join(POLICY_PARAMETER_KINDS)} separated by commas, got "
                 f"{','.join(self.learn)!r:.80}")
        _require(not self.per_class or self.mode == "learn",
                 "--policy-per-class learns one range per op and class; it needs --policy learn, got --policy "
                 f"{self.mode}")
        _require(not self.adversarial or self.mode == "learn",
                 f"--policy-adversarial {self.adversarial} trains the policy as an adversary; it needs --policy learn, "
                 f"got --policy {self.mode}")
        _require(self.mode != "none" or self.init_file is None,
                 f"--policy none contradicts --policy-init {self.init_file} (a policy file is used by --policy "
                 "fixed or learn)")


@dataclass(frozen=True)
class DistillConfig:
    """Everything one distillation run needs; saved as ``config.json`` beside its outputs."""

    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    outer: OuterConfig = field(default_factory=OuterConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Facts a run's ``config.json`` records beside the configuration (how it was launched), ignored when read
#: back: ``world_size``, the number of ``torchrun`` processes (a run may resume on any number).
RECORDED = ("world_size",)


def config_from_dict(raw: dict[str, Any]) -> DistillConfig:
    """Rebuild a :class:`DistillConfig` from :meth:`DistillConfig.to_dict` output (e.g. parsed JSON),
    rejecting anything but an object of known sections holding known fields of valid values.

    Raises:
        ConfigError: naming the section, the field (or its flag), the value and what was expected.
    """
    classes = _hints(DistillConfig)
    _require(isinstance(raw, dict), f"config must be an object of sections {', '.join(classes)}, "
             f"got {type(raw).__name__} {_describe(raw)}")
    raw = {k: v for k, v in raw.items() if k not in RECORDED}
    for name, values in raw.items():
        _require(isinstance(values, dict), f"config.{name} must be an object of fields, got {_describe(values)}")
    raw = _migrate(raw)
    unknown = set(raw) - set(classes)
    _require(not unknown, f"config: unknown sections {sorted(unknown)}")
    built = {}
    for name, cls in classes.items():
        values = dict(raw.get(name, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(values) - known
        _require(not extra, f"config.{name}: unknown fields {sorted(extra)}")
        try:
            built[name] = cls(**values)
        except ConfigError as e:
            raise ConfigError(f"config.{name}: {e}") from None
    return DistillConfig(**built)


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Accept configs written before methods existed: the learning-rate fields moved to ``method``."""
    synthetic = dict(raw.get("synthetic", {}))
    if "method" in raw or not ({"lr_init", "lr_cap"} & synthetic.keys()):
        return raw
    method = {k: synthetic.pop(k) for k in ("lr_init", "lr_cap") if k in synthetic}
    return {**raw, "synthetic": synthetic, "method": {"name": "wang", **method}}
