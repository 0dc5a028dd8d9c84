"""augdistill: dataset distillation and differentiable augmentation, learned together."""

__version__ = "0.1.0"
