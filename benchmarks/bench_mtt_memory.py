"""Peak memory and time of one MTT outer step against the number of unrolled steps N, plain vs constant memory.

    python benchmarks/bench_mtt_memory.py [--device cuda] [--steps 10 20 40] [--repeats 2]

One outer step = N inner steps from an expert checkpoint on the synthetic set (ConvNet-3, width 128, instance
norm, 28x28 images, 10 classes, 1 image per class, all images every step), MTT's normalised loss, and the
gradient w.r.t. the images and the learned step size: through the full unroll (``plain``) or with TESLA's
two passes (``constant``, :mod:`augdistill.inner.constant_memory`).

Each (mode, N) runs in a fresh subprocess. Peak memory on CPU: the process's peak resident set (``VmHWM``,
reset through ``/proc/self/clear_refs`` just before the step) minus its resident set before the step, with
glibc's mmap threshold fixed at 64 KiB (``MALLOC``: freed tensors leave the resident set), for the
first step of this size (a later one would reuse memory malloc already holds, hiding the peak; one step on a
tiny network first takes one-time costs such as lazy imports out). On CUDA:
``torch.cuda.max_memory_allocated`` minus the memory allocated before the step. Time: the mean of
``--repeats`` further steps. Also reported: how far the constant-memory image gradient is from the full
unroll's (relative error and cosine), at the same N, on the same random problem.

Prints a table and writes ``benchmarks/results/mtt_memory.json``; the check: the constant-memory peak stays
within 10% from the smallest to the largest N while the plain peak grows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from augdistill.distill.methods.trajectory_matching import trajectory_loss
from augdistill.inner import InnerSchedule, unroll
from augdistill.inner.constant_memory import ConstantMemoryUnroll
from augdistill.models import build_model, sample_params

RESULTS = Path(__file__).parent / "results" / "mtt_memory.json"
MODES = ("plain", "constant")
#: glibc raises its mmap threshold after large frees, so freed tensors then stay in the heap and the peak RSS
#: also counts fragmentation (the same run measured +30% for the constant option from N=2 to 16 with it, flat
#: without). A fixed threshold puts every block over 64 KiB in its own mapping, returned when freed.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _problem(steps: int, device: torch.device, width: int, ipc: int, size: int):
    g = torch.Generator().manual_seed(0)
    net = build_model("convnet", (1, size, size), 10, width=width, depth=3, norm="instance", mean=[0.3],
                      std=[0.35]).to(device)
    start = {k: v.to(device) for k, v in sample_params(net, g).items()}
    target = {k: v + 0.01 * torch.randn(v.shape, generator=g).to(device) for k, v in start.items()}
    images = torch.rand(10 * ipc, 1, size, size, generator=g).to(device).requires_grad_()
    labels = torch.arange(10).repeat_interleave(ipc).to(device)
    log_lr = torch.tensor(0.01, device=device).log().requires_grad_()
    schedule = InnerSchedule.full_batch(10 * ipc, steps, 1)
    return net, start, target, images, labels, log_lr, schedule


def outer_step(mode: str, net, start, target, images, labels, log_lr, schedule) -> None:
    """One MTT outer step's gradient into ``images.grad`` and ``log_lr.grad``."""
    lrs = log_lr.exp().expand(schedule.total_steps)
    if mode == "plain":
        trajectory_loss(unroll(net, start, images, labels, lrs, schedule), start, target).backward()
        return
    run = ConstantMemoryUnroll(net, start, images, labels, lrs, schedule)
    theta = {k: v.requires_grad_() for k, v in run.theta.items()}
    trajectory_loss(theta, start, target).backward()
    run.backward({k: p.grad for k, p in theta.items()})


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def worker(mode: str, steps: int, device: torch.device, repeats: int, width: int, ipc: int, size: int) -> dict:
    """Measure one (mode, N) in this (fresh) process."""
    outer_step(mode, *_problem(1, device, 4, 1, 8))  # one-time costs (lazy imports: ~58 MiB of sympy) on a tiny net
    problem = _problem(steps, device, width, ipc, size)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _status_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    outer_step(mode, *problem)
    _sync(device)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024) - before
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        outer_step(mode, *problem)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "steps": steps, "peak_mib": peak / 2**20, "step_s": sum(times) / len(times)}


def agreement(steps: int, device: torch.device, width: int, ipc: int, size: int) -> dict:
    """Relative error and cosine of the constant-memory image gradient against the full unroll's."""
    grads = {}
    for mode in MODES:
        net, start, target, images, labels, log_lr, schedule = _problem(steps, device, width, ipc, size)
        outer_step(mode, net, start, target, images, labels, log_lr, schedule)
        grads[mode] = (images.grad.flatten(), log_lr.grad)
    (a, la), (b, lb) = grads["constant"], grads["plain"]
    return {"steps": steps, "images_rel_error": float((a - b).norm() / b.norm()),
            "images_cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            "lr_grad_plain": float(lb), "lr_grad_constant": float(la)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--worker", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    a = p.parse_args()
    device = torch.device(a.device)
    shape = (a.width, a.ipc, a.size)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), device, a.repeats, *shape)))
        return
    rows = []
    for steps in a.steps:
        for mode in MODES:
            cmd = [sys.executable, __file__, "--worker", mode, str(steps), "--device", a.device, "--repeats",
                   str(a.repeats), "--width", str(a.width), "--ipc", str(a.ipc), "--size", str(a.size)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **MALLOC})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  measured {mode:<9} N={steps:<3} peak {r['peak_mib']:8.1f} MiB  {r['step_s']:.3f} s/step",
                  file=sys.stderr)
    agree = [agreement(steps, device, *shape) for steps in a.steps]
    by = {(r["mode"], r["steps"]): r for r in rows}
    lo, hi = min(a.steps), max(a.steps)
    growth = {m: by[(m, hi)]["peak_mib"] / by[(m, lo)]["peak_mib"] for m in MODES}
    check = {"constant_within_10pct": abs(growth["constant"] - 1) <= 0.10, "plain_grows": growth["plain"] > 1.5}
    print(f"\nMTT outer step on {device} ({torch.get_num_threads()} threads), ConvNet-3 width {a.width}, "
          f"{10 * a.ipc} images of {a.size}x{a.size}\n")
    print(f"{'N':>4}  {'plain MiB':>10}  {'const MiB':>10}  {'plain s':>8}  {'const s':>8}  {'time x':>6}  "
          f"{'img rel err':>11}  {'cosine':>7}")
    for steps, ag in zip(a.steps, agree):
        pl, co = by[("plain", steps)], by[("constant", steps)]
        print(f"{steps:>4}  {pl['peak_mib']:>10.1f}  {co['peak_mib']:>10.1f}  {pl['step_s']:>8.3f}  "
              f"{co['step_s']:>8.3f}  {co['step_s'] / pl['step_s']:>6.2f}  {ag['images_rel_error']:>11.3f}  "
              f"{ag['images_cosine']:>7.4f}")
    print(f"\npeak at N={hi} / N={lo}: plain {growth['plain']:.2f}x, constant {growth['constant']:.3f}x; "
          f"constant within 10%: {check['constant_within_10pct']}, plain grows: {check['plain_grows']}")
    meta = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "model": f"convnet-3 width {a.width} instance",
            "images": f"{10 * a.ipc} x 1x{a.size}x{a.size}", "repeats": a.repeats,
            "memory": "CUDA max_memory_allocated delta" if device.type == "cuda" else
                      "peak RSS (VmHWM after clear_refs) minus RSS before the first step, fresh process, "
                      f"{MALLOC}"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows, "agreement": agree, "peak_growth": growth,
                                   "check": check}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
