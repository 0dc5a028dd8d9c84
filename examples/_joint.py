"""Shared command line of the joint distill+augment examples (one entry point, dataset defaults apart)."""

from __future__ import annotations

import argparse
from typing import Any

from augdistill.runs.compare import compare_policies
from augdistill.config import (DataConfig, DistillConfig, InnerConfig, ModelConfig, OuterConfig, PolicyConfig,
                               SyntheticConfig)


def run(description: str, *, dataset: str, ipc: int, iterations: int, ops: str, model: dict[str, Any],
        num_inits: int = 2, standard_epochs: int = 300, device: str = "cpu", out: str) -> None:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default=None)
    p.add_argument("--ipc", type=int, default=ipc)
    p.add_argument("--iterations", type=int, default=iterations)
    p.add_argument("--ops", default=ops, help="ops of the learned policy")
    p.add_argument("--width-weight", type=float, default=PolicyConfig().width_weight)
    p.add_argument("--nets", type=int, default=5)
    p.add_argument("--standard-epochs", type=int, default=standard_epochs)
    p.add_argument("--modes", default="none,fixed,learn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=device)
    p.add_argument("--out", default=out)
    a = p.parse_args()
    base = DistillConfig(
        data=DataConfig(name=dataset, root=a.data_root),
        model=ModelConfig(**model),
        synthetic=SyntheticConfig(ipc=a.ipc),
        inner=InnerConfig(),
        outer=OuterConfig(iterations=a.iterations, num_inits=num_inits, seed=a.seed),
        policy=PolicyConfig(ops=tuple(a.ops.split(",")), width_weight=a.width_weight),
    )
    compare_policies(base, a.out, modes=a.modes.split(","), nets=a.nets, standard_epochs=a.standard_epochs,
                     device=a.device)
