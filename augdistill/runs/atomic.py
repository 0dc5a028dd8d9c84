"""Atomic writes and safe reads of run files (``torch.load(weights_only=True)`` / plain JSON only).

Writes go to a temporary file beside the target, are flushed to disk, then renamed over it: a crash or
``kill -9`` at any point leaves the previous file or the complete new one, never a torn file. Reads
refuse, with one :class:`CheckpointError` naming the file and what is wrong, anything that is not a
readable file of the expected kind: missing, a folder, empty, larger than the free memory, corrupted,
nested deeper than a run file ever is, or (tensor files) a pickle that asks to build anything but
tensors and plain values, whose code therefore never runs.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from augdistill.errors import CheckpointError

__all__ = ["atomic_write", "save_tensors", "load_tensors", "save_json", "load_json", "reason", "available_memory",
           "TEMP_SUFFIX", "MAX_DEPTH"]

#: Suffix of the temporary files :func:`atomic_write` renames into place (left behind only by a crash).
TEMP_SUFFIX = ".tmp"
#: No run file nests containers deeper than this.
MAX_DEPTH = 16


def reason(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), also for exceptions without a message.

    Example:
        >>> reason(RuntimeError("Error(s) in loading:\\n\\tsize mismatch for w"))
        'RuntimeError: Error(s) in loading: size mismatch for w'
        >>> reason(KeyError())
        'KeyError'
    """
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "Error(s) in ...:" announces the line that says what
        lines = [f"{lines[0]} {lines[1]}"]
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _disk_full(path: Path, e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        return False


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, flush it to disk, then atomically rename ``tmp_path`` to ``path``.

    A crash at any point leaves either the previous file or the complete new one, never a torn file.

    Raises:
        CheckpointError: the folder cannot be created or written (naming the file and the cause, e.g. a
            full disk); the previous file is left as it was.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError("unexpected pos ...")
        cause = "the disk is full" if _disk_full(path, e) else reason(e)
        raise CheckpointError(f"cannot write {path} ({cause}); the previous version, if any, is unchanged") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``, else free pages), ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes; a run file is never empty)")
    available = available_memory()
    if available is not None and size > available:
        raise CheckpointError(f"{what} {path} is {size / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB "
                              "of free memory; it is not a run file of this machine")


def _depth(obj: Any) -> int:
    """Nesting depth of dicts / lists / tuples (iterative, so any depth is measured safely)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def save_tensors(obj: dict[str, Any], path: str | Path) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain Python values."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_tensors(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu",
                 required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a file written by :func:`save_tensors` with ``weights_only=True`` and check its keys.

    Only tensors and plain values are unpickled: a file asking for any other class or function is
    refused before any of its code runs.

    Raises:
        CheckpointError: missing, empty, unreadable, corrupted or refused file, nesting deeper than
            :data:`MAX_DEPTH`, or a required key absent.
    """
    path = Path(path)
    _check_readable(path, what)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"GLOBAL (\S+)", str(e))  # torch names the class or function it refused to import
        if wanted:
            raise CheckpointError(f"{what} {path} was refused: it asks to run or build {wanted.group(1)}, not only "
                                  "tensors and plain values (a foreign or malicious pickle); nothing in it was run"
                                  ) from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))
        cause = detail.group(1).strip() if detail else reason(e)
        raise CheckpointError(f"{what} {path} is corrupted or not a torch file ({cause[:200]})") from None
    except Exception as e:  # torch raises many types (RuntimeError, EOFError, ...) for a torn/corrupted file
        raise CheckpointError(f"{what} {path} is corrupted or not a torch file ({reason(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path}: expected a dict of fields, found {type(obj).__name__}")
    if _depth(obj) > MAX_DEPTH:
        raise CheckpointError(f"{what} {path}: containers nested deeper than {MAX_DEPTH} levels; not a run file")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{what} {path}: missing fields {missing}")
    return obj


def save_json(obj: Any, path: str | Path) -> None:
    """Atomically write ``obj`` as indented JSON (NaN and infinity are refused: they are not JSON)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError as e:
        raise CheckpointError(f"cannot write {path}: {e}") from None
    atomic_write(path, lambda tmp: tmp.write_text(text))


def load_json(path: str | Path, what: str = "file") -> Any:
    """Read JSON, raising :class:`CheckpointError` naming the file on a missing, empty, malformed or too
    deeply nested one (NaN / Infinity literals are read as floats; the schema of each file refuses them)."""
    path = Path(path)
    _check_readable(path, what)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{what} {path} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise CheckpointError(f"{what} {path}: containers nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OSError) as e:  # undecodable bytes, a 5000-digit number, an I/O error
        raise CheckpointError(f"{what} {path} cannot be read as JSON ({reason(e)})") from None
    if _depth(obj) > MAX_DEPTH:
        raise CheckpointError(f"{what} {path}: containers nested deeper than {MAX_DEPTH} levels")
    return obj
