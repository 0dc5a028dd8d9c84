"""One ``torchrun`` worker of ``augdistill`` for tests/distill/test_distributed.py, recording what it writes.

    torchrun --nproc_per_node=2 _torchrun_worker.py LOG_DIR KILL_AT augdistill-arguments...

Every file the worker writes (all run files go through :func:`augdistill.runs.atomic.atomic_write`) is
appended to ``LOG_DIR/writes-RANK.txt``, and its pid is in ``LOG_DIR/pid-RANK``. With ``KILL_AT`` > 0,
rank 0 sends SIGKILL to the torchrun agent right after writing the checkpoint of iteration ``KILL_AT``:
the whole job dies at a known point (the workers with their launcher, see ``_exit_with_launcher``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

import augdistill.runs.atomic as atomic
import augdistill.runs.plots as plots
from augdistill.cli import main


def recording(path: str | Path, fn) -> None:  # noqa: ANN001 - atomic_write's signature
    write(path, fn)
    with open(log_dir / f"writes-{rank}.txt", "a") as f:
        f.write(Path(path).name + "\n")
    if kill_at and Path(path).name == "checkpoint.pt" and torch.load(path, weights_only=True)["iteration"] == kill_at:
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)  # never returns: the kernel kills this worker with its launcher


if __name__ == "__main__":  # torchrun runs this file; pytest's doctest collection only imports it
    log_dir, kill_at, arguments = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    rank = int(os.environ["RANK"])
    (log_dir / f"pid-{rank}").write_text(str(os.getpid()))
    write = atomic.atomic_write
    atomic.atomic_write = plots.atomic_write = recording
    sys.exit(main(arguments))
