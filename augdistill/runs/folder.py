"""Run folders that know themselves: the marker file, the writer's lock, and what a folder holds.

A run folder carries ``augdistill-run.json`` (the marker: format name, format version and the job
options the run was made with). :func:`claim` decides, before anything is written, whether ``distill``
may write into a folder:

* a new or empty folder becomes a run;
* a non-empty folder that is not a run is refused (nothing is written into it);
* a run with results (``checkpoint.pt``, ``synthetic.pt`` or ``metrics.json``) is refused without
  ``--resume``; a run stopped before its first checkpoint may be restarted, or resumed from iteration 0;
* ``--resume`` of anything but a run is refused.

One process at a time writes a run: :func:`claim` holds an exclusive ``flock`` on ``.augdistill.lock``
for as long as the job runs. The kernel releases it when the process ends in any way (``kill -9``
included), so a stale lock file never blocks the next run; a second live writer is refused and
told the pid of the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from augdistill.errors import CheckpointError, ConfigError
from augdistill.runs import schema
from augdistill.runs.atomic import TEMP_SUFFIX, load_json, reason, save_json

__all__ = ["MARKER_FILE", "LOCK_FILE", "RUN_FORMAT", "RUN_FORMAT_VERSION", "FolderState", "inspect", "claim",
           "read_marker", "write_marker"]

MARKER_FILE, LOCK_FILE = "augdistill-run.json", ".augdistill.lock"
RUN_FORMAT, RUN_FORMAT_VERSION = "augdistill-run", 1
#: Files that mean a run has learned something (restarting it would throw that away).
RESULT_FILES = ("checkpoint.pt", "synthetic.pt", "metrics.json")
_CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class FolderState:
    """What a folder holds, as far as :func:`claim` cares.

    Attributes:
        path: the folder.
        exists: it exists (as a folder).
        marked: it holds the marker file.
        legacy: a run written before markers existed (``config.json`` beside a checkpoint or synthetic set).
        others: entries that are neither run files nor the lock / temporary files (a few are named).
        results: which of :data:`RESULT_FILES` it holds.
    """

    path: Path
    exists: bool
    marked: bool
    legacy: bool
    others: tuple[str, ...]
    results: tuple[str, ...]

    @property
    def is_run(self) -> bool:
        return self.marked or self.legacy

    @property
    def empty(self) -> bool:
        return not self.marked and not self.others and not self.results


def _is_scratch(name: str) -> bool:
    """The lock file and the temporary files an interrupted atomic write leaves behind."""
    return name == LOCK_FILE or (name.startswith(".") and name.endswith(TEMP_SUFFIX))


def inspect(path: str | Path) -> FolderState:
    """What ``path`` holds (refusing a path that is a file, or lies under one)."""
    path = Path(path)
    try:
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                where = "is a file" if parent == path else f"lies under {parent}, which is a file"
                raise ConfigError(f"--out {path} {where}; expected a run folder")
        if not path.exists():
            return FolderState(path, False, False, False, (), ())
        names = sorted(os.listdir(path))
    except OSError as e:
        raise ConfigError(f"--out {path} cannot be read ({reason(e)})") from None
    results = tuple(n for n in RESULT_FILES if n in names)
    marked = MARKER_FILE in names
    legacy = not marked and _CONFIG_FILE in names and any(n in names for n in ("checkpoint.pt", "synthetic.pt"))
    # a run's own pictures, policy and anything put beside them are the run's business
    others = () if marked or legacy else tuple(n for n in names if not _is_scratch(n))
    return FolderState(path, True, marked, legacy, others, results)


def read_marker(path: str | Path) -> dict[str, Any]:
    """The validated marker of run folder ``path`` (``format``, ``format_version``, ``options``)."""
    file = Path(path) / MARKER_FILE
    marker = schema.mapping(file, "<top>", load_json(file, "run marker"))
    schema.string(file, "format", marker.get("format"), choices=(RUN_FORMAT,))
    version = schema.integer(file, "format_version", marker.get("format_version"), low=1, high=10**6)
    if version > RUN_FORMAT_VERSION:
        raise CheckpointError(f"{file}: format_version {version} was written by a newer augdistill "
                              f"(this one reads up to {RUN_FORMAT_VERSION}); upgrade to continue this run")
    schema.mapping(file, "options", marker.get("options", {}))
    return marker


def write_marker(path: str | Path, options: dict[str, Any]) -> None:
    """Atomically (re)write the marker of run folder ``path`` recording the job ``options``."""
    save_json({"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "options": options},
              Path(path) / MARKER_FILE)


def _refusal(state: FolderState, resume: bool) -> str | None:
    """Why ``distill`` (``--resume`` or not) may not write into ``state.path``, or ``None``."""
    path = state.path
    if resume:
        if not state.exists:
            return f"--resume: {path} does not exist; start the run without --resume"
        if not state.is_run:
            return (f"--resume: {path} is not an augdistill run (no {MARKER_FILE}); "
                    "start a new run there without --resume" if state.empty else
                    f"--resume: {path} is not an augdistill run (no {MARKER_FILE})")
        if "checkpoint.pt" not in state.results and state.results:
            return (f"--resume: {path} holds {', '.join(state.results)} but no checkpoint.pt to continue from; "
                    "evaluate it as it is, or choose another --out")
        return None
    if state.others:
        shown = ", ".join(state.others[:3]) + (", ..." if len(state.others) > 3 else "")
        return (f"--out {path} is a non-empty folder that is not an augdistill run (it holds {shown}); "
                "choose a new or empty folder")
    if state.results:
        return f"{path} already holds a run; pass --resume to continue it or choose another --out"
    return None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"--out {path} cannot be created or written ({reason(e)})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise CheckpointError(f"{path} is being written by another augdistill process (pid {holder}); wait for "
                                  "it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the kernel does the same if the process dies


@contextlib.contextmanager
def claim(path: str | Path, *, resume: bool, options: dict[str, Any],
          log: Callable[[str], None] = lambda m: None) -> Iterator[FolderState]:
    """Hold ``path`` as the one writer of a run for the ``with`` block; yields its :class:`FolderState`.

    Checks before creating anything (a refused folder is left untouched), takes the lock, checks
    again under it, removes temporary files a crash left behind, and marks a new folder as a run
    (with the job ``options``) at once, so that a run killed at any later moment can be resumed.
    A folder this call created is removed again if the block fails before the run wrote a result.

    Raises:
        ConfigError: ``path`` is a file, lies under a file, or cannot be created or written.
        CheckpointError: the folder may not be written (see the module docstring), or another process
            writes it.
    """
    path = Path(path)
    before = inspect(path)
    refusal = _refusal(before, resume)
    if refusal:
        raise CheckpointError(refusal)
    try:
        with _lock(path):
            state = inspect(path)
            refusal = _refusal(state, resume)
            if refusal:
                raise CheckpointError(refusal)
            if state.marked:
                read_marker(path)
            if not resume:  # a new run, or a restart of one stopped before its first checkpoint
                write_marker(path, options)
            for name in os.listdir(path):
                if _is_scratch(name) and name != LOCK_FILE:
                    (path / name).unlink(missing_ok=True)
            if state.is_run and "checkpoint.pt" not in state.results:
                log(f"{path} holds a run stopped before its first checkpoint; starting it from iteration 0")
            yield state
    except BaseException:
        if not before.exists:  # a job that failed before its first checkpoint leaves no folder behind
            _remove_if_unused(path)
        raise


def _remove_if_unused(path: Path) -> None:
    try:
        names = os.listdir(path)
        if all(_is_scratch(n) or n in (MARKER_FILE, _CONFIG_FILE) for n in names):
            for n in names:
                (path / n).unlink()
            path.rmdir()
    except OSError:
        pass  # best effort: what is left is an empty folder or a lock file, both harmless
