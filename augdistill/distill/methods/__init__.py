"""Distillation methods: each is one file implementing :class:`Method`; :data:`METHODS` names them."""

from __future__ import annotations

import dataclasses

from augdistill.config import DistillConfig
from augdistill.distill.methods.base import LossPart, Method, MethodEnv, OuterBatch, ReplayRecipe
from augdistill.distill.methods.distribution_matching import DistributionMatching
from augdistill.distill.methods.gradient_matching import GradientMatching
from augdistill.distill.methods.trajectory_matching import TrajectoryMatching
from augdistill.distill.methods.wang import Wang
from augdistill.errors import ConfigError

__all__ = ["METHODS", "Method", "MethodEnv", "OuterBatch", "LossPart", "ReplayRecipe", "method_class",
           "with_method_defaults"]

#: ``--method`` name -> class.
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Wang, GradientMatching, DistributionMatching, TrajectoryMatching)}


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass called ``name``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def with_method_defaults(config: DistillConfig) -> DistillConfig:
    """``config`` with every ``None`` the method decides filled in (network, optimiser, lr, validation)."""
    cls = method_class(config.method.name)
    model = config.model if config.model.name is not None else dataclasses.replace(
        cls.default_model, **{k: v for k, v in dataclasses.asdict(config.model).items() if v is not None})
    outer = dataclasses.replace(config.outer, **{k: v for k, v in cls.defaults.items()
                                                 if getattr(config.outer, k) is None})
    return dataclasses.replace(config, model=model, outer=outer)
