"""Scale and speed of the bilevel loop; every ratio is measured side by side in one run.

    OMP_NUM_THREADS=2 flock /tmp/augdistill-heavy.lock python benchmarks/bench_scale.py [--device cuda] [--quick]
        [--compile] [--rounds 5] [--out benchmarks/results/scale.json] [--only cost_ratio,higher]

Sections (one table each, all written to ``--out``). Where two things are compared, they are timed in
interleaved rounds (each called once per round, the order rotated) and the ratio is the median of the
per-round ratios, printed with its min and max: on a shared machine a slow spell then hits both sides.

1. *cost ratio*: one Wang outer step (``Distiller.step``: real batch, K-step unroll, backward, clipping,
   Adam) over K plain training steps (forward, backward, ``torch.optim.SGD``) of the same network on the
   same synthetic batch. ConvNet-3 width 128 without normalisation, Fashion-MNIST, 10 images per class.
2. *against higher*: the same hypergradient (w.r.t. images and learning rates) through
   ``higher.innerloop_ctx``: time and peak memory, ours plain (the net's hand-written backward), with autograd's
   double backward (``explicit=False``) and checkpointed; hypergradients checked equal.
3. *scaling*: hypergradient time and peak memory against K and against the number of synthetic images,
   without and with checkpointing every inner step (``--checkpoint-inner 1``); hypergradients checked equal.
4. *θ₀ draws*: a Wang outer step with 4 draws unrolled one after another vs batched with ``vmap``.
5. *precision / compile*: bf16 autocast and (with ``--compile``) ``torch.compile`` of the inner gradient,
   against the eager float32 unroll.
6. *distributed* (CPU): sampled networks per second, 1 process with every thread vs 2 gloo processes
   (``torchrun``) with one thread each, same job.

Peak memory. CPU: each measurement runs in a fresh subprocess; after a one-step warm-up the resident-set
high-water mark is reset (``/proc/self/clear_refs``) and the peak is ``VmHWM`` minus the resident set just
before the measured call; glibc's mmap threshold is lowered to 4 KiB so that freed tensors leave the
resident set. CUDA: ``torch.cuda.max_memory_allocated`` around the call, minus the memory allocated before.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from augdistill.config import DataConfig, DistillConfig, InnerConfig, ModelConfig, OuterConfig
from augdistill.data import load_dataset
from augdistill.distill import Distiller, distributed
from augdistill.inner import InnerSchedule, logits, unroll
from augdistill.models import build_model, sample_params
from augdistill.testing import higher_hypergradients

SCRIPT = Path(__file__).resolve()
#: ``--data-root``: the folder with the Fashion-MNIST files (``None``: the dataset's default folder).
FASHION_ROOT: str | None = None


@functools.lru_cache(maxsize=None)
def _dataset(name: str) -> Any:
    return load_dataset(name, FASHION_ROOT if name == "fashion-mnist" else None)


@dataclass(frozen=True)
class Problem:
    """One hypergradient: ConvNet-3 (``width``, no norm) on ``10 * ipc`` synthetic 28x28 images, K = ``steps``
    full-batch inner steps, a real batch of ``real`` images; ``how`` it is computed."""

    ipc: int = 10
    steps: int = 10
    width: int = 128
    real: int = 100
    how: str = "ours"  # ours | higher | ours-autograd | ours-checkpoint | ours-bf16 | ours-compile
    model: str = "convnet"

    def build(self, device: torch.device) -> dict[str, Any]:
        g = torch.Generator().manual_seed(0)
        shape = (1, 8, 8) if self.model == "mlp" else (1, 28, 28)
        kwargs = {"width": self.width} if self.model == "mlp" else {"width": self.width, "norm": "none"}
        net = build_model(self.model, shape, 10, **kwargs).to(device)
        n = 10 * self.ipc
        return {"net": net, "theta0": {k: v.to(device) for k, v in sample_params(net, g).items()},
                "images": torch.rand(n, *shape, generator=g).to(device).requires_grad_(),
                "labels": torch.arange(10).repeat_interleave(self.ipc).to(device),
                "lrs": torch.full((self.steps,), 0.05, device=device, requires_grad=True),
                "x_real": torch.rand(self.real, *shape, generator=g).to(device),
                "y_real": torch.randint(0, 10, (self.real,), generator=g).to(device),
                "schedule": InnerSchedule.full_batch(n, self.steps, 1)}


def hypergradient(problem: Problem, t: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """d(real-batch cross-entropy of θ_K) / d(images, lrs), computed as ``problem.how`` says."""
    if problem.how == "higher":
        return higher_hypergradients(t["net"], t["theta0"], t["images"], t["labels"], t["lrs"], t["schedule"],
                                     t["x_real"], t["y_real"], [t["images"], t["lrs"]])
    options = {"ours": {}, "ours-autograd": {"explicit": False}, "ours-checkpoint": {"checkpoint": 1},
               "ours-bf16": {"precision": "bfloat16"}, "ours-compile": {"compile": True}}[problem.how]
    theta = unroll(t["net"], t["theta0"], t["images"], t["labels"], t["lrs"], t["schedule"], **options)
    out = logits(t["net"], theta, t["x_real"], precision=options.get("precision", "float32"))
    return torch.autograd.grad(F.cross_entropy(out, t["y_real"]), [t["images"], t["lrs"]])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    return statistics.median(interleaved({"fn": fn}, device, repeats)["fn"])


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int) -> dict[str, list[float]]:
    """Seconds of every call of ``fns``, timed in ``rounds`` rounds that call each once (after one warm-up
    call each), the order rotated every round: a slow spell of the machine lands on every function alike,
    so per-round ratios cancel it."""
    names = list(fns)
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median, min and max over rounds of ``numerator[r] / denominator[r]``."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def peak_mib(problem: Problem, device: torch.device) -> float:
    """Peak memory (MiB) of one hypergradient beyond what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        t = problem.build(device)
        hypergradient(replace(problem, steps=1), replace(problem, steps=1).build(device))
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        hypergradient(problem, t)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    out = subprocess.run([sys.executable, str(SCRIPT), "--memory-child", json.dumps(asdict(problem)), *_root_flag()],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.splitlines()[-1])


def _memory_child(spec: str) -> None:
    ctypes.CDLL("libc.so.6").mallopt(-3, 4096)  # M_MMAP_THRESHOLD
    problem = Problem(**json.loads(spec))
    small = replace(problem, steps=1)
    hypergradient(small, small.build(torch.device("cpu")))  # one-time allocations (kernels, pools, caches)
    t = problem.build(torch.device("cpu"))

    def kib(key: str) -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = kib("VmRSS")
    hypergradient(problem, t)
    print(json.dumps((kib("VmHWM") - before) / 1024))


def _max_relative_error(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b))


def _table(title: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


# -- sections ---------------------------------------------------------------------------------------------

def cost_ratio(device: torch.device, repeats: int, steps: int) -> list[dict[str, Any]]:
    dataset = _dataset("fashion-mnist")
    rows = []
    for label, real, checkpoint in (("real batch 100", 10, 0), ("real batch 100, checkpoint 1", 10, 1),
                                    ("real batch 640 (default)", 64, 0)):
        config = DistillConfig(data=DataConfig(name="fashion-mnist"),
                               model=ModelConfig(name="convnet", width=128, depth=3, norm="none"),
                               inner=InnerConfig(steps=steps, checkpoint=checkpoint),
                               outer=OuterConfig(num_inits=1, real_per_class=real, iterations=10**6))
        config = replace(config, synthetic=replace(config.synthetic, ipc=10))
        d = Distiller(config, dataset, device=device)
        net = copy.deepcopy(d.model)
        x, y = d.synthetic.decode().detach(), d.synthetic.labels
        sgd = torch.optim.SGD(net.parameters(), lr=0.01)

        def plain() -> None:
            for _ in range(steps):
                sgd.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                sgd.step()
        times = interleaved({"outer": d.step, "plain": plain}, device, repeats)
        ratio = ratio_summary(times["outer"], times["plain"])
        rows.append({"case": label, "K": steps, "outer_step_s": statistics.median(times["outer"]),
                     "plain_K_steps_s": statistics.median(times["plain"]), "ratio": ratio["median"],
                     "ratio_min": ratio["min"], "ratio_max": ratio["max"]})
    _table("1. cost ratio: Wang outer step / K plain SGD steps (ConvNet-3 w128 no norm, Fashion-MNIST ipc 10; "
           "median of per-round ratios, min and max)",
           ["case", "K", "outer_step_s", "plain_K_steps_s", "ratio", "ratio_min", "ratio_max"], rows)
    return rows


def against_higher(device: torch.device, repeats: int) -> list[dict[str, Any]]:
    base = Problem()
    hows = ("higher", "ours", "ours-autograd", "ours-checkpoint")
    problems = {how: replace(base, how=how) for how in hows}
    tensors = {how: problem.build(device) for how, problem in problems.items()}
    grads = {how: hypergradient(problems[how], tensors[how]) for how in hows}
    times = interleaved({how: functools.partial(hypergradient, problems[how], tensors[how]) for how in hows},
                        device, repeats)
    rows = []
    for how in hows:
        speedup = ratio_summary(times["higher"], times[how])
        rows.append({"how": how, "time_s": statistics.median(times[how]), "speedup_vs_higher": speedup["median"],
                     "speedup_min": speedup["min"], "speedup_max": speedup["max"],
                     "peak_mib": peak_mib(problems[how], device),
                     "max_rel_err": _max_relative_error(grads[how], grads["higher"])})
    for r in rows:
        r["memory_vs_higher"] = r["peak_mib"] / rows[0]["peak_mib"]
    _table("2. against higher: hypergradient w.r.t. images and lrs (ConvNet-3 w128 no norm, ipc 10, K 10, real 100; "
           "speed-up: median of per-round ratios, min and max)",
           ["how", "time_s", "speedup_vs_higher", "speedup_min", "speedup_max", "peak_mib", "memory_vs_higher",
            "max_rel_err"], rows)
    return rows


def scaling(device: torch.device, repeats: int, ks: list[int], ipcs: list[int]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"K": [], "images": []}
    grid = [("K", Problem(ipc=1, steps=k)) for k in ks] + [("images", Problem(ipc=i, steps=10)) for i in ipcs]
    for axis, base in grid:
        row: dict[str, Any] = {"K": base.steps, "images": 10 * base.ipc}
        grads = {}
        for how, tag in (("ours", "plain"), ("ours-checkpoint", "checkpoint")):
            problem = replace(base, how=how)
            t = problem.build(device)
            grads[tag] = hypergradient(problem, t)
            row[f"{tag}_s"] = timed(lambda: hypergradient(problem, t), device, repeats)
            row[f"{tag}_mib"] = peak_mib(problem, device)
        row["time_ratio"] = row["checkpoint_s"] / row["plain_s"]
        row["memory_ratio"] = row["checkpoint_mib"] / row["plain_mib"]
        row["max_rel_err"] = _max_relative_error(grads["checkpoint"], grads["plain"])
        out[axis].append(row)
    cols = ["plain_s", "checkpoint_s", "time_ratio", "plain_mib", "checkpoint_mib", "memory_ratio", "max_rel_err"]
    _table("3a. scaling with K (ConvNet-3 w128, 10 images): plain vs checkpoint every step", ["K", *cols], out["K"])
    _table("3b. scaling with synthetic images (K = 10)", ["images", *cols], out["images"])
    return out


def draws(device: torch.device, repeats: int) -> list[dict[str, Any]]:
    rows = []
    cases = (("mlp-128 digits", DataConfig(name="digits"), ModelConfig(name="mlp", width=128), 1),
             ("convnet-32 no norm fashion-mnist", DataConfig(name="fashion-mnist"),
              ModelConfig(name="convnet", width=32, depth=3, norm="none"), 1))
    for label, data, model, ipc in cases:
        dataset = _dataset(data.name)
        row: dict[str, Any] = {"case": label, "draws": 4}
        for mode in ("loop", "vmap"):
            config = DistillConfig(data=data, model=model, outer=OuterConfig(num_inits=4, batch_draws=mode,
                                                                             real_per_class=10, iterations=10**6))
            config = replace(config, synthetic=replace(config.synthetic, ipc=ipc))
            d = Distiller(config, dataset, device=device)
            row[f"{mode}_s"] = timed(d.step, device, repeats)
        row["vmap_speedup"] = row["loop_s"] / row["vmap_s"]
        rows.append(row)
    _table("4. θ₀ draws of one Wang outer step: Python loop vs vmap (K 10)",
           ["case", "draws", "loop_s", "vmap_s", "vmap_speedup"], rows)
    return rows


def precision_and_compile(device: torch.device, repeats: int, compile: bool) -> list[dict[str, Any]]:
    rows = []
    for label, base in (("convnet-32 ipc 1", Problem(ipc=1, width=32)),
                        ("mlp-128 digits ipc 10", Problem(ipc=10, width=128, model="mlp"))):
        reference = hypergradient(base, base.build(device))
        t_ref = None
        for how in ("ours", "ours-bf16", *(("ours-compile",) if compile else ())):
            problem = replace(base, how=how)
            t = problem.build(device)
            start = time.perf_counter()
            grads = hypergradient(problem, t)  # for compile: tracing and code generation
            first = time.perf_counter() - start
            seconds = timed(lambda: hypergradient(problem, t), device, repeats)
            t_ref = seconds if how == "ours" else t_ref
            flat = [torch.cat([g.flatten() for g in gs]) for gs in (grads, reference)]
            rows.append({"case": label, "how": how, "time_s": seconds, "speedup": t_ref / seconds,
                         "first_call_s": first, "cosine_vs_fp32": float(F.cosine_similarity(*flat, dim=0)),
                         "max_rel_err": _max_relative_error(grads, reference)})
    _table("5. precision and compile of the inner gradient (K 10)",
           ["case", "how", "time_s", "speedup", "first_call_s", "cosine_vs_fp32", "max_rel_err"], rows)
    return rows


def _distributed_child(out: str, steps: int) -> None:
    """One process of section 6 (under torchrun: one rank): time ``steps`` outer steps after a warm-up."""
    dist = distributed.from_environment("cpu")
    config = DistillConfig(data=DataConfig(name="fashion-mnist"),
                           model=ModelConfig(name="convnet", width=32, depth=3, norm="none"),
                           outer=OuterConfig(num_inits=4, real_per_class=10, iterations=10**6))
    d = Distiller(config, _dataset("fashion-mnist"), dist=dist)
    d.step()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        d.step()
    dist.barrier()
    seconds = time.perf_counter() - t0
    if dist.is_main:
        Path(out).write_text(json.dumps({"seconds": seconds, "networks": steps * d.config.outer.num_inits,
                                         "threads": torch.get_num_threads(), "world_size": dist.world_size}))
    distributed.shutdown()


def _root_flag() -> list[str]:
    """``--data-root`` for a child process of this script, if one was given."""
    return [] if FASHION_ROOT is None else ["--data-root", FASHION_ROOT]


def distributed_throughput(steps: int) -> list[dict[str, Any]]:
    rows = []
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, 2):
            out = Path(tmp) / f"{processes}.json"
            child = [str(SCRIPT), "--distributed-child", str(out), "--steps", str(steps), *_root_flag()]
            command = ([sys.executable, *child] if processes == 1 else
                       [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={processes}", *child])
            env = {**os.environ, "OMP_NUM_THREADS": threads if processes == 1 else "1"}
            subprocess.run(command, check=True, env=env, capture_output=True, text=True)
            r = json.loads(out.read_text())
            rows.append({"processes": processes, "threads_each": r["threads"], "networks": r["networks"],
                         "seconds": r["seconds"], "networks_per_s": r["networks"] / r["seconds"]})
    for r in rows:
        r["speedup"] = r["networks_per_s"] / rows[0]["networks_per_s"]
    _table("6. distributed: Wang, ConvNet-3 w32, Fashion-MNIST ipc 1, K 10, 4 θ₀ draws a step (gloo on CPU)",
           ["processes", "threads_each", "networks", "seconds", "networks_per_s", "speedup"], rows)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes (the GPU check)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes of compiling on CPU)")
    p.add_argument("--out", default=str(SCRIPT.parent / "results" / "scale.json"))
    p.add_argument("--only", help="comma-separated sections to run (cost_ratio, higher, scaling, draws, distributed, "
                                  "precision); the others keep their results in --out")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per measurement (each after a warm-up call)")
    p.add_argument("--data-root", help="folder with the Fashion-MNIST files (default: the dataset's own folder)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--distributed-child", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    global FASHION_ROOT
    FASHION_ROOT = a.data_root
    if a.memory_child:
        return _memory_child(a.memory_child)
    if a.distributed_child:
        return _distributed_child(a.distributed_child, a.steps)
    device = torch.device(a.device)
    repeats = 2 if a.quick else a.rounds
    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                 "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                 "threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": repeats,
                 "load_average_at_start": os.getloadavg()}}
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("cost_ratio", lambda: cost_ratio(device, repeats, steps=10)),
        ("higher", lambda: against_higher(device, repeats)),
        ("scaling", lambda: scaling(device, repeats, ks=[10, 40] if a.quick else [5, 10, 20, 40],
                                    ipcs=[1, 10] if a.quick else [1, 5, 10])),
        ("draws", lambda: draws(device, repeats)),
        *([("distributed", lambda: distributed_throughput(steps=3 if a.quick else 5))] if device.type == "cpu"
          else []),
        ("precision", lambda: precision_and_compile(device, repeats, a.compile)),
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.only:
        only = a.only.split(",")
        unknown = sorted(set(only) - {name for name, _ in sections})
        if unknown:
            p.error(f"--only: unknown section(s) {', '.join(unknown)}; expected names from "
                    f"{', '.join(name for name, _ in sections)}")
        sections = [(name, section) for name, section in sections if name in only]
        kept = json.loads(out.read_text()) if out.exists() else {}
        kept_meta = {k: v for k, v in kept.get("meta", {}).items() if k != "meta_of_kept_sections"}
        results = {**kept, "meta": {**results["meta"], "sections": only, "meta_of_kept_sections": kept_meta or None}}
    for name, section in sections:  # written after every section: a time-boxed run keeps what it measured
        results[name] = section()
        results["meta"].update(load_average_at_end=os.getloadavg(), seconds=time.perf_counter() - started)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out} ({results['meta']['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
