"""``augdistill bench``: run a grid of distillations and tabulate them beside the published figures."""

from __future__ import annotations

import argparse
import dataclasses

from augdistill.runs.bench import QUICK_GRID, QUICK_SETTINGS, BenchSettings, grid, run_bench

__all__ = ["add_bench_command"]


def _csv(kind: type) -> callable:  # type: ignore[valid-type]
    def parse(text: str) -> tuple:
        return tuple(kind(v) for v in text.split(",") if v)
    return parse


def _run(a: argparse.Namespace) -> int:
    if a.quick:
        cells, settings = QUICK_GRID, dataclasses.replace(QUICK_SETTINGS, device=a.device)
    else:
        cells = grid(a.methods, a.datasets, a.ipcs, a.policies, a.seeds)
        settings = BenchSettings(iterations=a.iterations, eval_every=a.eval_every, val_nets=a.val_nets,
                                 val_epochs=a.val_epochs, eval_epochs=a.eval_epochs, nets=a.nets, device=a.device)
    from augdistill.distill import distributed
    with distributed.leaving_group():
        run_bench(cells, settings, a.out)
        reports = distributed.from_environment(a.device).is_main  # under torchrun rank 0 alone reports
    if reports:
        print((a.out.rstrip("/") + "/bench.md"))
        print(open(f"{a.out}/bench.md").read())
    return 0


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="distil a grid (method x dataset x ipc x policy x seed) and tabulate it",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small grid of the README (~11 min on 2 idle CPU cores)")
    p.add_argument("--methods", type=_csv(str), default=("dm",))
    p.add_argument("--datasets", type=_csv(str), default=("fashion-mnist",))
    p.add_argument("--ipcs", type=_csv(int), default=(1,))
    p.add_argument("--policies", type=_csv(str), default=("fixed",), help="none, fixed (DSA), learn")
    p.add_argument("--seeds", type=_csv(int), default=(0,))
    p.add_argument("--iterations", type=int, default=None, help="outer iterations per run (default: the method's)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--val-nets", type=int, default=2)
    p.add_argument("--val-epochs", type=int, default=100)
    p.add_argument("--eval-epochs", type=int, default=300, help="standard-protocol epochs (papers: 1000)")
    p.add_argument("--nets", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench", help="bench folder (a rerun resumes it)")
    p.set_defaults(handler=_run)
