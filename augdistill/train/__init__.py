"""Training networks on a (distilled) set and measuring them: the replay and standard protocols."""

from augdistill.train.evaluate import (EvalResult, StandardProtocol, accuracy, replay_accuracies,
                                       standard_accuracies, summarize, train_standard)

__all__ = ["EvalResult", "StandardProtocol", "accuracy", "replay_accuracies", "standard_accuracies", "summarize",
           "train_standard"]
