"""Dataset distillation: parameterisations of the synthetic set, methods, the policy objective and the loop."""

from augdistill.distill.loop import Distiller, StepStats
from augdistill.distill.methods import METHODS, LossPart, Method, MethodEnv, OuterBatch, ReplayRecipe
from augdistill.distill.policy_objective import PolicyObjective
from augdistill.distill.synthetic import PARAMETERISATIONS, PixelSet, SyntheticData

__all__ = ["Distiller", "StepStats", "METHODS", "Method", "MethodEnv", "OuterBatch", "LossPart", "ReplayRecipe",
           "PolicyObjective", "PARAMETERISATIONS", "PixelSet", "SyntheticData"]
