"""Cost of a 4-op learnable policy relative to the same ops as plain kornia augmentation modules.

Ops: rotate ±30°, translate-x ±0.125, brightness ±0.2, contrast [0.8, 1.2], each with p = 0.5.
The baseline is ``policy.to_kornia()`` (RandomRotation, RandomAffine, RandomBrightness,
ColorJitter): the same ops and magnitudes with kornia's own sampling. Both sides draw their random
parameters inside the timed call. "fwd+bwd" back-propagates ``out.sum()`` to the input (and, for
the policy, to its magnitudes and probabilities). Timings alternate between the two so that load
from other processes hits both alike; the median over repeats is reported.

    python benchmarks/bench_augment.py                 # prints a table, writes benchmarks/results/augment.json
    python benchmarks/bench_augment.py --repeats 50 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import kornia
import torch

from augdistill.augment import build_policy

OPS = [{"name": "rotate", "probability": 0.5, "magnitude": 30.0},
       {"name": "translate-x", "probability": 0.5, "magnitude": 0.125},
       {"name": "brightness", "probability": 0.5, "magnitude": 0.2},
       {"name": "contrast", "probability": 0.5, "magnitude": 0.2}]
SHAPES = [(256, 1, 28, 28), (256, 3, 32, 32)]


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def run(fn: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return run


def bench_shape(shape: tuple[int, ...], device: torch.device, repeats: int, warmup: int) -> dict:
    policy = build_policy(OPS, image_size=shape[-2:]).to(device).train()
    baseline = policy.to_kornia().to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(shape, device=device)
    timer = _timer(device)

    def ours_fwd() -> None:
        with torch.no_grad():
            policy(x, generator=g)

    def kornia_fwd() -> None:
        with torch.no_grad():
            baseline(x)

    def ours_bwd() -> None:
        xi = x.detach().requires_grad_(True)
        policy(xi, generator=g).sum().backward()

    def kornia_bwd() -> None:
        xi = x.detach().requires_grad_(True)
        baseline(xi).sum().backward()

    pairs = {"forward": (ours_fwd, kornia_fwd), "fwd+bwd": (ours_bwd, kornia_bwd)}
    out = {}
    for mode, (ours, theirs) in pairs.items():
        for _ in range(warmup):
            ours()
            theirs()
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            t_ours.append(timer(ours))
            t_theirs.append(timer(theirs))
        ours_ms, theirs_ms = statistics.median(t_ours) * 1e3, statistics.median(t_theirs) * 1e3
        out[mode] = {"policy_ms": ours_ms, "kornia_ms": theirs_ms, "ratio": ours_ms / theirs_ms}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "augment.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = {}
    print(f"{'shape':<18}{'mode':<10}{'policy ms':>11}{'kornia ms':>11}{'ratio':>8}")
    for shape in SHAPES:
        key = "x".join(str(s) for s in shape)
        results[key] = bench_shape(shape, device, args.repeats, args.warmup)
        for mode, r in results[key].items():
            print(f"{key:<18}{mode:<10}{r['policy_ms']:>11.2f}{r['kornia_ms']:>11.2f}{r['ratio']:>8.2f}")
    record = {"ops": OPS, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "kornia": kornia.__version__,
              "repeats": args.repeats, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
