"""Exact resume: a run killed (SIGKILL) or stopped (SIGTERM) at random moments and resumed ends with the same
synthetic set, history and selected iteration as an uninterrupted run, bit for bit on CPU."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from augdistill.cli import main
from augdistill.runs.folder import LOCK_FILE, MARKER_FILE

#: Validation every 7 steps and a checkpoint every 3: kills land between checkpoints, before and after
#: validations, and before the first checkpoint.
ARGS = ["--iterations", "24", "--eval-every", "7", "--eval-nets", "2", "--checkpoint-every", "3", "--final-nets", "0"]


@pytest.fixture
def one_thread():
    """Reductions on 1 thread in this process and in the children, so both compute bit-identically."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(before)


def _start(out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "augdistill", "distill", "--out", str(out), *ARGS, *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """Until ``ready()`` or ``proc`` has ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.005)


def _claimed(proc: subprocess.Popen, out: Path) -> Callable[[], bool]:
    """``proc`` holds the run folder (it is past its imports and about to train)."""
    lock = out / LOCK_FILE
    return lambda: (out / MARKER_FILE).exists() and lock.exists() and lock.read_text().strip() == str(proc.pid)


def _checkpoints(out: Path, count: int) -> Callable[[], bool]:
    """``count`` more checkpoints were written from now on (polled: they are 3 steps, ~0.1 s or more, apart)."""
    path = out / "checkpoint.pt"

    def mtime() -> int | None:
        return path.stat().st_mtime_ns if path.exists() else None

    last, seen = mtime(), 0

    def ready() -> bool:
        nonlocal last, seen
        now = mtime()
        if now != last:
            last, seen = now, seen + 1
        return seen >= count
    return ready


def _final(out: Path) -> tuple[dict, dict]:
    return torch.load(out / "synthetic.pt", weights_only=True), json.loads((out / "metrics.json").read_text())


def test_killed_and_stopped_runs_resume_exactly(tmp_path, one_thread, capsys):
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main(["distill", "--out", str(reference), *ARGS]) == 0
    rng = random.Random(8)
    stops = []
    # first before any checkpoint (the run restarts), then after 1-3 more checkpoints and a random fraction
    # of a checkpoint interval (kills land in steps, validations and checkpoint writes)
    plan = ((signal.SIGKILL, 0), (signal.SIGKILL, rng.randint(1, 3)), (signal.SIGTERM, rng.randint(1, 2)))
    for sig, checkpoints in plan:
        proc = _start(run, one_thread, *(["--resume"] if (run / MARKER_FILE).exists() else []))
        _wait(proc, _checkpoints(run, checkpoints) if checkpoints else _claimed(proc, run))
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        checkpoint = run / "checkpoint.pt"
        at = torch.load(checkpoint, weights_only=True)["iteration"] if checkpoint.exists() else 0
        stops.append((sig.name, proc.returncode, at))
        assert proc.returncode in (-sig, 128 + sig, 0), (stops, err)  # killed, stopped, or already finished
        if proc.returncode == 128 + signal.SIGTERM:  # stopped after a whole step, with a checkpoint of it
            assert err.strip().splitlines()[-1].endswith("continue with --resume"), err
            assert f"after iteration {at};" in err
        assert (run / LOCK_FILE).exists()  # the lock file of a killed writer stays: it must not block
    capsys.readouterr()
    assert main(["distill", "--out", str(run), *ARGS, "--resume"]) == 0, stops
    if stops[-1][2]:
        assert f"resumed {run} at iteration {stops[-1][2]}/24" in capsys.readouterr().err
    (ref_set, ref_metrics), (set_, metrics) = _final(reference), _final(run)
    for key in ("images", "labels", "lrs", "batches"):
        assert torch.equal(ref_set[key], set_[key]), (key, stops)
    assert metrics["history"] == ref_metrics["history"], stops
    assert metrics["selected_iteration"] == ref_metrics["selected_iteration"], stops
    assert metrics["selected_val_acc"] == ref_metrics["selected_val_acc"], stops
    assert [h["iteration"] for h in metrics["history"] if "loss" in h] == list(range(1, 25))


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path, one_thread, capsys):
    run = tmp_path / "run"
    proc = _start(run, one_thread, "--iterations", "100000", "--eval-every", "0")
    try:
        _wait(proc, _claimed(proc, run))
        assert main(["distill", "--out", str(run), "--resume", "--iterations", "100000", "--eval-every", "0"]) == 2
        assert f"is being written by another augdistill process (pid {proc.pid})" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.communicate()
