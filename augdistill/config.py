"""Frozen configuration dataclasses, built once (CLI or Python) and passed down explicitly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from augdistill.errors import ConfigError

__all__ = ["DataConfig", "ModelConfig", "SyntheticConfig", "MethodConfig", "InnerConfig", "OuterConfig",
           "PolicyConfig", "DistillConfig", "config_from_dict"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to distill. ``root`` is ``None`` for the defaults (digits ships with the package)."""

    name: str = "digits"
    root: str | None = None
    val_fraction: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """A network family and its options; ``None`` keeps the family's default.

    ``name=None`` takes the method's default network (:attr:`Method.default_model`): a one-hidden-layer
    MLP for Wang et al. (on 2 CPU cores ~100 outer steps/s on digits, and its sets replay better than
    ConvNet-3's at 1-10 images per class), the field's ConvNet-3 (width 128, instance norm) for the
    matching methods.
    """

    name: str | None = None
    width: int | None = None
    depth: int | None = None
    norm: str | None = None

    def kwargs(self) -> dict[str, Any]:
        values = {"width": self.width, "depth": self.depth, "norm": self.norm}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class SyntheticConfig:
    """The learned set: a budget of ``ipc`` full-size images per class, stored as ``param``.

    ``param`` names the parameterisation (``pixels``: the images themselves); ``init`` starts it from
    ``real`` images or ``noise``; ``learn_labels`` learns soft labels of the decoded images.
    """

    ipc: int = 1
    init: str = "real"
    learn_labels: bool = False
    param: str = "pixels"

    def __post_init__(self) -> None:
        _require(self.ipc >= 1, f"--ipc must be >= 1, got {self.ipc}")
        _require(self.init in ("real", "noise"), f"--syn-init must be 'real' or 'noise', got '{self.init}'")


@dataclass(frozen=True)
class MethodConfig:
    """The distillation objective ``name`` and its options; ``None`` takes the method's default.

    Wang et al. (``wang``) learns per-step learning rates ``lr_cap * sigmoid(raw)`` initialised at
    ``lr_init``. The other methods' options are documented with each method.
    """

    name: str = "wang"
    lr_init: float = 0.1
    lr_cap: float = 1.0

    def __post_init__(self) -> None:
        _require(0 < self.lr_init < self.lr_cap, f"need 0 < --lr-init < --lr-cap, got {self.lr_init}, {self.lr_cap}")


@dataclass(frozen=True)
class InnerConfig:
    """The unrolled inner training: ``steps`` per epoch, ``epochs``, ``batch_per_class`` images per class a step
    (0 means all images every step), heavy-ball ``momentum``."""

    steps: int = 10
    epochs: int = 1
    batch_per_class: int = 0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"--inner-steps must be >= 1, got {self.steps}")
        _require(self.epochs >= 1, f"--inner-epochs must be >= 1, got {self.epochs}")
        _require(self.batch_per_class >= 0, f"--batch-per-class must be >= 0, got {self.batch_per_class}")
        _require(0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class OuterConfig:
    """The outer loop: θ₀ ``init`` mode (``random``: ``num_inits`` fresh draws a step; ``fixed``: one θ₀),
    real batch size per class, the optimiser of the synthetic set (``adam`` or ``sgd`` with
    ``sgd_momentum``) and the learning rate of each group, gradient clipping, seed, and how the best
    iteration is selected on the validation split (``validation``: ``replay`` the learned steps, or
    train ``standard`` evaluation networks for ``val_epochs``). ``None`` takes the method's default.
    """

    iterations: int = 1000
    init: str = "random"
    num_inits: int = 2
    real_per_class: int = 64
    optimizer: str | None = None
    lr_images: float | None = None
    sgd_momentum: float = 0.5
    lr_lrs: float = 0.01
    lr_labels: float = 0.01
    grad_clip: float = 10.0
    seed: int = 0
    validation: str | None = None
    val_epochs: int = 300

    def __post_init__(self) -> None:
        _require(self.iterations >= 0, f"--iterations must be >= 0, got {self.iterations}")
        _require(self.init in ("random", "fixed"), f"--init must be 'random' or 'fixed', got '{self.init}'")
        _require(self.num_inits >= 1, f"--num-inits must be >= 1, got {self.num_inits}")
        _require(self.real_per_class >= 1, f"--real-per-class must be >= 1, got {self.real_per_class}")
        _require(self.optimizer in (None, "adam", "sgd"), f"--optimizer must be adam or sgd, got '{self.optimizer}'")
        _require(self.validation in (None, "replay", "standard"),
                 f"--validation must be replay or standard, got '{self.validation}'")
        _require(self.val_epochs >= 1, f"--val-epochs must be >= 1, got {self.val_epochs}")


@dataclass(frozen=True)
class PolicyConfig:
    """The augmentation policy: ``none``, ``fixed`` (from ``init_file``, e.g. DSA) or ``learn``.

    ``width_weight`` is λ of the width bonus (Augerino), ``aug_weight`` weighs the augmented-real-data loss,
    ``copies`` is J, the number of augmented copies of the real batch. Methods that do not unroll the
    inner trainer themselves learn the policy through ``inner_steps`` full-batch steps at ``inner_lr``.
    """

    mode: str = "none"
    ops: tuple[str, ...] = ("rotate",)
    init_file: str | None = None
    lr: float = 0.01
    width_weight: float = 0.5
    aug_weight: float = 1.0
    copies: int = 1
    siamese: bool = False
    inner_steps: int = 10
    inner_lr: float = 0.01

    def __post_init__(self) -> None:
        _require(self.mode in ("none", "fixed", "learn"), f"--policy must be none, fixed or learn, got '{self.mode}'")
        _require(self.copies >= 1, f"--aug-copies must be >= 1, got {self.copies}")
        _require(self.width_weight >= 0, f"--width-weight must be >= 0, got {self.width_weight}")
        _require(self.inner_steps >= 1, f"--policy-inner-steps must be >= 1, got {self.inner_steps}")
        _require(self.inner_lr > 0, f"--policy-inner-lr must be > 0, got {self.inner_lr}")


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(raw: dict[str, Any]) -> DistillConfig:
    """Rebuild a :class:`DistillConfig` from :meth:`DistillConfig.to_dict` output, rejecting unknown fields."""
    classes = {f.name: f.type for f in dataclasses.fields(DistillConfig)}
    classes = {name: globals()[cls] if isinstance(cls, str) else cls for name, cls in classes.items()}
    raw = _migrate(raw)
    unknown = set(raw) - set(classes)
    _require(not unknown, f"config: unknown sections {sorted(unknown)}")
    built = {}
    for name, cls in classes.items():
        values = dict(raw.get(name, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(values) - known
        _require(not extra, f"config.{name}: unknown fields {sorted(extra)}")
        if name == "policy" and "ops" in values:
            values["ops"] = tuple(values["ops"])
        built[name] = cls(**values)
    return DistillConfig(**built)


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Accept configs written before methods existed: the learning-rate fields moved to ``method``."""
    synthetic = dict(raw.get("synthetic", {}))
    if "method" in raw or not ({"lr_init", "lr_cap"} & synthetic.keys()):
        return raw
    method = {k: synthetic.pop(k) for k in ("lr_init", "lr_cap") if k in synthetic}
    return {**raw, "synthetic": synthetic, "method": {"name": "wang", **method}}
