"""The shared inner trainer: schedules, the functional unroll and the augmentation stream."""

from augdistill.inner.schedule import InnerSchedule
from augdistill.inner.stream import AugmentStream, StepAugment, select_rows
from augdistill.inner.unroll import PRECISIONS, inner_step_loss, logits, unroll

__all__ = ["InnerSchedule", "unroll", "inner_step_loss", "logits", "PRECISIONS", "AugmentStream", "StepAugment",
           "select_rows"]
