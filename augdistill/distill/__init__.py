"""What dataset distillation learns and the objectives it learns it by."""

from augdistill.distill.objectives import AugmentedRealLoss, Objective, RealLoss
from augdistill.distill.synthetic import SyntheticSet

__all__ = ["SyntheticSet", "Objective", "RealLoss", "AugmentedRealLoss"]
