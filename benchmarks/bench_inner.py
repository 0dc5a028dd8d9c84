"""Cost of one outer step of the functional inner trainer against `higher`, measured in one run.

    python benchmarks/bench_inner.py [--device cuda] [--repeats 5]

For each inner network: the time of unroll (K steps on the synthetic set) + real-batch loss + backward
to images and learning rates, with our `torch.func` trainer and with `higher.innerloop_ctx`; the
ratio ours / higher (target <= 1.0), and on CUDA the peak memory of each. Prints a table and writes
`benchmarks/results/inner.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, sample_params
from augdistill.testing import higher_hypergradients

CASES = [  # name, model kwargs, image shape, ipc
    ("mlp-128 digits ipc10", {"name": "mlp", "width": 128}, (1, 8, 8), 10),
    ("convnet-32 group 28x28 ipc1", {"name": "convnet", "width": 32, "norm": "group"}, (1, 28, 28), 1),
    ("convnet-32 instance 28x28 ipc1", {"name": "convnet", "width": 32, "norm": "instance"}, (1, 28, 28), 1),
]


def _problem(model_kwargs, shape, ipc, device, steps):
    kwargs = dict(model_kwargs)
    net = build_model(kwargs.pop("name"), shape, 10, **kwargs).to(device)
    g = torch.Generator().manual_seed(0)
    theta0 = {k: v.to(device) for k, v in sample_params(net, g).items()}
    images = torch.rand(10 * ipc, *shape, generator=g).to(device).requires_grad_()
    labels = torch.arange(10).repeat_interleave(ipc).to(device)
    lrs = torch.full((steps,), 0.1, device=device, requires_grad=True)
    x_real = torch.rand(256, *shape, generator=g).to(device)
    y_real = torch.randint(0, 10, (256,), generator=g).to(device)
    return net, theta0, images, labels, lrs, x_real, y_real


def step_ours(net, theta0, images, labels, lrs, x_real, y_real, schedule):
    theta = unroll(net, theta0, images, labels, lrs, schedule)
    loss = F.cross_entropy(torch.func.functional_call(net, theta, (x_real,)), y_real)
    return torch.autograd.grad(loss, [images, lrs])


def step_higher(net, theta0, images, labels, lrs, x_real, y_real, schedule):
    return higher_hypergradients(net, theta0, images, labels, lrs, schedule, x_real, y_real, [images, lrs])


def _time(fn, args, device, repeats):
    times, peak = [], None
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "inner.json"))
    a = p.parse_args()
    device = torch.device(a.device)
    rows = []
    print(f"{'case':<34}{'ours ms':>10}{'higher ms':>11}{'ratio':>8}{'ours MiB':>10}{'higher MiB':>11}")
    for name, kwargs, shape, ipc in CASES:
        net, *tensors = _problem(kwargs, shape, ipc, device, a.steps)
        schedule = InnerSchedule.full_batch(10 * ipc, a.steps, 1)
        args = (net, *tensors, schedule)
        ours, ours_mem = _time(step_ours, args, device, a.repeats)
        ref, ref_mem = _time(step_higher, args, device, a.repeats)
        row = {"case": name, "ours_s": ours, "higher_s": ref, "ratio": ours / ref,
               "ours_peak_mib": ours_mem, "higher_peak_mib": ref_mem}
        rows.append(row)
        mem = (f"{ours_mem:>10.1f}{ref_mem:>11.1f}" if ours_mem is not None else f"{'-':>10}{'-':>11}")
        print(f"{name:<34}{1000 * ours:>10.1f}{1000 * ref:>11.1f}{ours / ref:>8.2f}{mem}")
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "steps": a.steps, "real_batch": 256, "repeats": a.repeats,
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
