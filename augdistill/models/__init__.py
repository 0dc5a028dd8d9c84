"""Classifiers used as inner networks and evaluation networks."""

from augdistill.models.convnet import ConvNet
from augdistill.models.layers import NORMS, Normalize
from augdistill.models.lenet import MLP, LeNet
from augdistill.models.registry import MODELS, build_model, reset_parameters_, sample_params

__all__ = ["ConvNet", "LeNet", "MLP", "Normalize", "NORMS", "MODELS", "build_model", "sample_params", "reset_parameters_"]
