"""augdistill: dataset distillation and differentiable augmentation, learned together.

Example:
    >>> from augdistill import DistillConfig, Distiller, load_dataset
    >>> distiller = Distiller(DistillConfig(), load_dataset("digits"))
    >>> distiller.fit(iterations=5).iteration
    5
"""

__version__ = "0.1.0"

from augdistill.augment import Policy, build_policy, dsa_policy, load_policy
from augdistill.config import (DataConfig, DistillConfig, InnerConfig, ModelConfig, OuterConfig, PolicyConfig,
                               SyntheticConfig)
from augdistill.data import load_dataset
from augdistill.errors import AugdistillError
from augdistill.evaluate import StandardProtocol
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, sample_params
from augdistill.outer import Distiller
from augdistill.run import load_distilled
from augdistill.runner import distill_run, evaluate_run

__all__ = [
    "Policy", "build_policy", "dsa_policy", "load_policy",
    "DataConfig", "DistillConfig", "InnerConfig", "ModelConfig", "OuterConfig", "PolicyConfig", "SyntheticConfig",
    "load_dataset", "AugdistillError", "StandardProtocol", "InnerSchedule", "unroll", "build_model",
    "sample_params", "Distiller", "load_distilled", "distill_run", "evaluate_run",
]
