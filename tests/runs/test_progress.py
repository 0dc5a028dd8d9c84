"""The progress line: rate and ETA from the iterations done, and the ETA of a time budget where it ends sooner."""

from __future__ import annotations

import io

import pytest

from augdistill.runs import progress as progress_module
from augdistill.runs.progress import Progress


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 100.0}
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now["t"])
    return now


@pytest.mark.parametrize("budget, expected", [(None, "ETA 0:08:00\n"), (3600.0, "ETA 0:08:00\n"),
                                              (300.0, "ETA 0:04:00 (time budget)\n")])
def test_eta_is_the_iterations_left_or_the_budget_left_whichever_is_sooner(clock, budget, expected):
    stream = io.StringIO()
    p = Progress(total=100, start=10, stream=stream, every=1, time_budget=budget)
    clock["t"] += 60.0  # 10 iterations in 60 s: 1/6 it/s, 80 left
    p.update(20, loss=0.5)
    assert stream.getvalue() == f"20/100 [ 20%] loss 0.5 0.17 it/s {expected}"
