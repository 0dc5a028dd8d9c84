"""Atomic writes and safe reads of run files (``torch.load(weights_only=True)`` / plain JSON only)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from augdistill.errors import CheckpointError

__all__ = ["atomic_write", "save_tensors", "load_tensors", "save_json", "load_json"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` to ``path``.

    A crash at any point leaves either the previous file or the complete new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tensors(obj: dict[str, Any], path: str | Path) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain Python values."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_tensors(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu",
                 required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a file written by :func:`save_tensors` with ``weights_only=True`` and check its keys.

    Raises:
        CheckpointError: missing, unreadable or corrupted file, or a required key absent.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a torn/corrupted file
        raise CheckpointError(f"{what} {path} is corrupted or not a torch file "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path}: expected a dict, found {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{what} {path}: missing fields {missing}")
    return obj


def save_json(obj: Any, path: str | Path) -> None:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def load_json(path: str | Path, what: str = "file") -> Any:
    """Read JSON, raising :class:`CheckpointError` naming the file on a missing or malformed one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} {path} is not valid JSON ({e})") from None
