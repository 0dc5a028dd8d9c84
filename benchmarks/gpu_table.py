"""The GPU check scripts' summary: reads the stage log a `gpu_common.sh` run leaves in $LOGS and prints one
markdown table. Imported by the scripts' summary step (``sys.path`` holds ``benchmarks/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class StageLog:
    """The stages of one check: ``LOGS/stages.tsv`` (name, exit status, seconds) and each stage's ``NAME.log``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        lines = (logs / "stages.tsv").read_text().splitlines()
        self.stages = {name: (rc, s) for name, rc, s in (line.split("\t") for line in lines)}

    def __contains__(self, name: str) -> bool:
        return name in self.stages

    def state(self, name: str) -> str:
        """``ok, 12 s``, ``TIMED OUT, 90 s``, ``FAILED (exit 1), 3 s`` or ``not run``."""
        if name not in self.stages:
            return "not run"
        rc, s = self.stages[name]
        return ("ok" if rc == "0" else "TIMED OUT" if rc == "124" else f"FAILED (exit {rc})") + f", {s} s"

    def last_line(self, name: str) -> str:
        p = self.logs / f"{name}.log"
        lines = p.read_text().strip().splitlines() if p.exists() else []
        return lines[-1] if lines else ""

    def tail(self, name: str) -> str:
        return self.last_line(name)[:160]

    def eval_result(self, name: str) -> dict[str, Any] | None:
        """The JSON record an `augdistill evaluate --json` stage printed last, or None if it printed none."""
        try:
            return json.loads(self.last_line(name))
        except ValueError:
            return None


def mean_std(r: dict[str, Any]) -> str:
    return f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}%"


def run_summary(run: Path) -> tuple[str, float | None]:
    """A distillation run's iterations, selected iteration and best validation, and that validation (or None)."""
    metrics = run / "metrics.json"
    if not metrics.exists():
        return "no metrics.json", None
    m = json.loads(metrics.read_text())
    vals = [h["val_acc"] for h in m.get("history", []) if h.get("val_acc") is not None]
    last = max((h["iteration"] for h in m.get("history", [])), default=None)
    its = m.get("time_budget", {}).get("stopped_after", last)
    best = max(vals) if vals else None
    return f"{its} its, selected {m.get('selected_iteration')} (val {100 * (best or 0):.2f}%)", best


def device_rows(log: StageLog) -> list[tuple[str, str, str]]:
    """The device and the CUDA tests' rows, where the check ran them."""
    rows = []
    if (log.logs / "device.txt").exists():
        rows.append(("device", "", (log.logs / "device.txt").read_text().strip()))
    if "tests" in log:
        rows.append(("CUDA tests (tests/test_cuda.py)", log.state("tests"), log.tail("tests")))
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"| {'check'.ljust(width)} | status | result |")
    print(f"|{'-' * (width + 2)}|--------|--------|")
    for name, status, result in rows:
        print(f"| {name.ljust(width)} | {status or 'ok'} | {result} |")
