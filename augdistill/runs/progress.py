"""A dependency-free progress line: iteration, rate, ETA and the latest metrics."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Redraws one status line on a terminal; on a pipe or file it prints a line every ``every`` updates.

    The ETA is the time the remaining iterations take at the rate so far or, with ``time_budget`` (seconds from
    construction, as ``--time-budget`` counts), the time left of the budget where that is sooner, marked
    ``(time budget)``.

    Example:
        >>> import io
        >>> p = Progress(total=3, start=0, stream=io.StringIO(), every=1)
        >>> p.update(1, loss=0.5)
    """

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None, every: int = 50,
                 time_budget: float | None = None) -> None:
        self.total, self.start, self.time_budget = total, start, time_budget
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, iteration: int, **metrics: float) -> None:
        done = iteration - self.start
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - iteration) / rate if rate > 0 else 0.0
        budget = ""
        if self.time_budget is not None and self.time_budget - elapsed < eta:
            eta, budget = self.time_budget - elapsed, " (time budget)"
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = (f"{iteration}/{self.total} [{100 * iteration / max(self.total, 1):3.0f}%] {shown} "
                f"{rate:.2f} it/s ETA {_format_seconds(eta)}{budget}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if iteration == self.total:
                self.stream.write("\n")
        elif iteration % self.every == 0 or iteration == self.total:
            self.stream.write(line + "\n")
        self.stream.flush()
