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
]


class AugdistillError(Exception):
    """Base class of every error augdistill raises on purpose."""


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
