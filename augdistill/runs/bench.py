"""``augdistill bench``: a grid of distillation runs, each evaluated under the standard protocol and shown
beside the random-subset floor and the published figure.

A grid is method × dataset × images per class × policy mode × seed. Every cell is an ordinary run
directory under ``out/runs/``; finished cells are recorded in ``out/bench.json`` (atomically) as soon as
they end, so a killed bench resumes where it stopped (a half-finished cell resumes from its checkpoint).
The results are summarised per (method, dataset, ipc, policy) over seeds in ``out/bench.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from augdistill.augment import dsa_policy
from augdistill.config import DataConfig, DistillConfig, MethodConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.distill import distributed
from augdistill.errors import ConfigError
from augdistill.runs.atomic import load_json, save_json
from augdistill.runs.jobs import distill_run, evaluate_run
from augdistill.runs.layout import CHECKPOINT_FILE

__all__ = ["BenchCell", "BenchSettings", "PUBLISHED", "QUICK_GRID", "run_bench", "bench_table"]

#: Published ConvNet-3 test accuracies (%) at 1 / 10 / 50 images per class, from each method's paper
#: (Fashion-MNIST MTT: as quoted in issue 7 of this project). ``(method, policy, dataset, ipc) -> %``.
PUBLISHED: dict[tuple[str, str, str, int], float] = {
    ("dc", "none", "fashion-mnist", 1): 70.5, ("dc", "none", "fashion-mnist", 10): 82.3,
    ("dc", "fixed", "fashion-mnist", 1): 70.6, ("dc", "fixed", "fashion-mnist", 10): 84.6,
    ("mtt", "fixed", "fashion-mnist", 1): 75.1, ("mtt", "fixed", "fashion-mnist", 10): 87.2,
    ("dc", "none", "mnist", 1): 91.7, ("dc", "none", "mnist", 10): 97.4, ("dc", "none", "mnist", 50): 98.8,
    ("dc", "fixed", "mnist", 1): 88.7, ("dc", "fixed", "mnist", 10): 97.8, ("dc", "fixed", "mnist", 50): 99.2,
    ("dm", "fixed", "mnist", 1): 89.7, ("dm", "fixed", "mnist", 10): 97.5, ("dm", "fixed", "mnist", 50): 98.6,
    ("dc", "none", "cifar10", 1): 28.3, ("dc", "none", "cifar10", 10): 44.9, ("dc", "none", "cifar10", 50): 53.9,
    ("dc", "fixed", "cifar10", 1): 28.8, ("dc", "fixed", "cifar10", 10): 52.1, ("dc", "fixed", "cifar10", 50): 60.6,
    ("dm", "fixed", "cifar10", 1): 26.0, ("dm", "fixed", "cifar10", 10): 48.9, ("dm", "fixed", "cifar10", 50): 63.0,
    ("mtt", "fixed", "cifar10", 1): 46.3, ("mtt", "fixed", "cifar10", 10): 65.3, ("mtt", "fixed", "cifar10", 50): 71.6,
}
#: Names the papers give the (method, policy) pairs.
PAPER_NAMES = {("dc", "none"): "DC", ("dc", "fixed"): "DSA", ("dm", "fixed"): "DM", ("mtt", "fixed"): "MTT"}


@dataclass(frozen=True)
class BenchCell:
    """One run of the grid."""

    method: str
    dataset: str
    ipc: int
    policy: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{self.dataset}-ipc{self.ipc}-{self.policy}-s{self.seed}"

    @property
    def group(self) -> tuple[str, str, int, str]:
        return self.method, self.dataset, self.ipc, self.policy


@dataclass(frozen=True)
class BenchSettings:
    """How every cell runs: outer ``iterations`` (``None``: the config default), validation cadence and
    networks, evaluation ``epochs`` and ``nets``, the ops a ``learn`` policy starts from, the device."""

    iterations: int | None = None
    eval_every: int = 100
    val_nets: int = 2
    val_epochs: int = 100
    eval_epochs: int = 300
    nets: int = 5
    learn_ops: tuple[str, ...] = ("rotate", "translate-x", "translate-y", "scale", "hflip")
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("eval_every", "val_nets", "val_epochs", "eval_epochs", "nets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bench: {name} must be >= 1, got {getattr(self, name)}")


#: ``augdistill bench --quick``: Wang et al. and DM on the built-in digits, and DSA (gradient matching with
#: DSA's policy; the one cell of the three that a paper reports) on Fashion-MNIST, at 1 image per class, one
#: seed: ~11 minutes on 2 idle CPU cores (measured).
QUICK_GRID: tuple[BenchCell, ...] = (
    BenchCell("wang", "digits", 1, "none", 0),
    BenchCell("dm", "digits", 1, "none", 0),
    BenchCell("dc", "fashion-mnist", 1, "fixed", 0),
)
QUICK_SETTINGS = BenchSettings(iterations=200, eval_every=100, val_nets=1, val_epochs=100, eval_epochs=300, nets=5)


def grid(methods: Sequence[str], datasets: Sequence[str], ipcs: Sequence[int], policies: Sequence[str],
         seeds: Sequence[int]) -> tuple[BenchCell, ...]:
    """The full product of the axes, in a fixed order."""
    return tuple(BenchCell(*values) for values in itertools.product(methods, datasets, ipcs, policies, seeds))


def cell_config(cell: BenchCell, settings: BenchSettings, policy_file: Path) -> DistillConfig:
    """The distillation configuration of ``cell`` (method defaults for everything not named)."""
    policy = {"none": PolicyConfig(mode="none"),
              "fixed": PolicyConfig(mode="fixed", init_file=str(policy_file), siamese=True),
              "learn": PolicyConfig(mode="learn", ops=settings.learn_ops, siamese=True)}
    if cell.policy not in policy:
        raise ConfigError(f"bench: policy mode must be none, fixed or learn, got {cell.policy!r}")
    outer = OuterConfig(seed=cell.seed, val_epochs=settings.val_epochs)
    if settings.iterations is not None:
        outer = dataclasses.replace(outer, iterations=settings.iterations)
    return DistillConfig(data=DataConfig(name=cell.dataset), method=MethodConfig(name=cell.method),
                         synthetic=SyntheticConfig(ipc=cell.ipc), outer=outer, policy=policy[cell.policy])


def _summary(accs: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}


def run_bench(cells: Sequence[BenchCell], settings: BenchSettings, out: str | Path,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Run (or resume) every cell into ``out``; returns the ``bench.json`` content and writes ``bench.md``.

    Under ``torchrun`` the ranks distil each cell together; rank 0 alone evaluates, records and logs."""
    dist = distributed.from_environment(settings.device)
    log = log if dist.is_main else _silent
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "bench.json"
    record: dict[str, Any] = load_json(record_path, "bench record") if record_path.exists() else {}
    record.setdefault("settings", dataclasses.asdict(settings))
    record.setdefault("cells", {})
    record.setdefault("floors", {})
    policy_file = out / "dsa.json"
    if dist.is_main:
        save_json(dsa_policy().to_dict(), policy_file)
    dist.barrier()
    for k, cell in enumerate(cells, 1):
        if cell.name in record["cells"]:
            log(f"[{k}/{len(cells)}] {cell.name}: done before, skipped")
            continue
        log(f"[{k}/{len(cells)}] {cell.name}")
        run_dir = out / "runs" / cell.name
        started = time.perf_counter()
        config = cell_config(cell, settings, policy_file)
        metrics = distill_run(config, run_dir, resume=(run_dir / CHECKPOINT_FILE).exists(), device=settings.device,
                              eval_every=settings.eval_every, eval_nets=settings.val_nets, final_nets=0)
        distill_seconds = time.perf_counter() - started
        if not dist.is_main:
            continue
        aug = "run" if cell.policy != "none" else "dsa"
        evaluation = evaluate_run(run_dir, "standard", nets=settings.nets, device=settings.device,
                                  epochs=settings.eval_epochs, augment=aug)
        floor_key = f"{cell.dataset}/ipc{cell.ipc}"
        if floor_key not in record["floors"]:
            floor = evaluate_run(run_dir, "random-subset", nets=settings.nets, device=settings.device,
                                 epochs=settings.eval_epochs, augment="dsa")
            record["floors"][floor_key] = {**_summary(floor.result.accs), "augmentation": "dsa"}
        record["cells"][cell.name] = {
            **dataclasses.asdict(cell), **evaluation.record(), "distill_seconds": distill_seconds,
            "iterations": metrics["history"][-1]["iteration"] if metrics["history"] else 0,
            "selected_iteration": metrics["selected_iteration"], "run": str(run_dir)}
        save_json(record, record_path)
        log(f"    {100 * evaluation.result.mean:.2f} ± {100 * evaluation.result.std:.2f}% "
            f"({distill_seconds / 60:.1f} min distilling)")
    if dist.is_main:
        (out / "bench.md").write_text(bench_table(record) + "\n")
    return record


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def bench_table(record: dict[str, Any]) -> str:
    """Markdown: one row per (method, dataset, ipc, policy), mean ± std over seeds and networks, beside the
    random-subset floor and the published figure."""
    settings = record["settings"]
    groups: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for cell in record["cells"].values():
        groups.setdefault((cell["method"], cell["dataset"], cell["ipc"], cell["policy"]), []).append(cell)
    lines = [f"Standard protocol: ConvNet-3 width 128, instance norm, {settings['eval_epochs']} epochs, "
             f"{settings['nets']} networks per seed; augmentation at evaluation: DSA for policy `none`, the run's "
             "own policy otherwise. Floor: random real images, same protocol with DSA augmentation.", "",
             "| method | dataset | ipc | policy | seeds | accuracy (%) | floor (%) | published (%) | "
             "distill time (min) | iterations |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, dataset, ipc, policy), cells in groups.items():
        accs = [a for c in cells for a in c["accs"]]
        s = _summary(accs)
        floor = record["floors"].get(f"{dataset}/ipc{ipc}")
        published = PUBLISHED.get((method, policy, dataset, ipc))
        paper = PAPER_NAMES.get((method, policy), "")
        lines.append(
            f"| {method} | {dataset} | {ipc} | {policy} | {len(cells)} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} | "
            + (f"{100 * floor['mean']:.2f} ± {100 * floor['std']:.2f}" if floor else "-") + " | "
            + (f"{published} ({paper})" if published is not None else "-") + " | "
            + f"{statistics.fmean(c['distill_seconds'] for c in cells) / 60:.1f} | "
            + f"{cells[0]['iterations']} |")
    return "\n".join(lines)
