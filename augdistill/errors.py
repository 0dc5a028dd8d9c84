"""Library exception types.

Every error a user can cause (bad file, bad flag, missing data) is raised as an
:class:`AugdistillError` subclass whose message names the thing that is wrong and
what was expected. The CLI prints such errors as one line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "AugdistillError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "PolicyFormatError",
    "TrainingDivergedError",
    "RunInterrupted",
]


class AugdistillError(Exception):
    """Base class of every error augdistill raises on purpose.

    Its message is one line: control characters a value brings in (a newline in a JSON key, say) are
    shown escaped.

    Example:
        >>> str(AugdistillError("field 'a\\nb': bad"))
        "field 'a\\\\nb': bad"
    """

    def __str__(self) -> str:
        text = super().__str__()
        return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(AugdistillError, ValueError):
    """A configuration value (flag, dataclass field, argument) is out of range."""


class DataError(AugdistillError):
    """A dataset is unknown, missing on disk, or its files are malformed."""


class CheckpointError(AugdistillError):
    """A checkpoint or run directory is missing, corrupted or incompatible."""


class PolicyFormatError(AugdistillError, ValueError):
    """A policy JSON file or dict does not follow the schema."""


class TrainingDivergedError(AugdistillError):
    """The outer loss or a learned learning rate became NaN or infinite."""


class RunInterrupted(AugdistillError):
    """SIGTERM or Ctrl-C stopped a run after a whole step; its checkpoint holds that step.

    Attributes:
        signum: the signal that asked the run to stop.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
