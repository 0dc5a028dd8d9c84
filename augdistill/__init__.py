"""augdistill: dataset distillation and differentiable augmentation, learned together.

Example:
    >>> from augdistill import DistillConfig, Distiller, load_dataset
    >>> distiller = Distiller(DistillConfig(), load_dataset("digits"))
    >>> distiller.fit(iterations=5).iteration
    5
"""

__version__ = "0.2.0"

from augdistill.augment import Policy, build_policy, dsa_policy, load_policy
from augdistill.config import (DataConfig, DistillConfig, InnerConfig, MethodConfig, ModelConfig, OuterConfig,
                               PolicyConfig, SyntheticConfig)
from augdistill.data import load_dataset
from augdistill.distill import METHODS, PARAMETERISATIONS, Distiller
from augdistill.errors import AugdistillError
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, sample_params
from augdistill.runs import distill_run, evaluate_run, load_distilled
from augdistill.train import StandardProtocol

__all__ = [
    "Policy", "build_policy", "dsa_policy", "load_policy",
    "DataConfig", "DistillConfig", "InnerConfig", "MethodConfig", "ModelConfig", "OuterConfig", "PolicyConfig",
    "SyntheticConfig", "load_dataset", "AugdistillError", "StandardProtocol", "InnerSchedule", "unroll",
    "build_model", "sample_params", "Distiller", "METHODS", "PARAMETERISATIONS", "load_distilled", "distill_run",
    "evaluate_run",
]
