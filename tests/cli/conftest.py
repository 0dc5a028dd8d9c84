"""A finished run made once per session, copies of it to spoil, and the CLI run in-process."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from augdistill.cli import main

#: A short run that still validates, checkpoints and replays (about 1 s on a CPU core).
TINY = ["--iterations", "4", "--eval-every", "2", "--checkpoint-every", "2", "--eval-nets", "1", "--final-nets", "1"]


@dataclass(frozen=True)
class Outcome:
    """Exit code and output of one in-process invocation."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` runs ``augdistill.cli.main`` in this process and captures what it prints."""
    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)
    return run


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A completed run folder (digits, ipc 1, 4 iterations); never modified — copy it with ``run_copy``."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["distill", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A fresh copy of :func:`finished_run` to spoil."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))
