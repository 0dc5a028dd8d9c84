"""Ablation of the augmentation policy at one budget: ``--policy none | fixed (DSA) | learn``.

The joint examples call :func:`compare_policies`; it distills once per mode with the same seed,
iterations and everything else, then evaluates every run under the same protocols, applying each
run's own policy when training the evaluation networks (as DSA evaluates).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from augdistill.augment import dsa_policy
from augdistill.runs.atomic import save_json
from augdistill.config import DistillConfig
from augdistill.runs.jobs import distill_run, evaluate_run

__all__ = ["compare_policies", "format_table"]

def compare_policies(base: DistillConfig, out_root: str | Path, *, modes: Sequence[str] = ("none", "fixed", "learn"),
                     dsa_file: str | Path | None = None, nets: int = 5, standard_epochs: int | None = None,
                     device: str = "cpu", protocols: Sequence[str] = ("replay", "standard")) -> list[dict[str, Any]]:
    """Distill ``base`` once per policy mode into ``out_root/MODE`` and evaluate each.

    Returns one row per mode: ``{"policy", "run", "replay": {mean, std}, "standard": {mean, std}}``;
    also written to ``out_root/comparison.json``.
    """
    out_root = Path(out_root)
    if dsa_file is None:  # the built-in DSA policy (policies/dsa.json holds the same)
        dsa_file = out_root / "dsa.json"
        save_json(dsa_policy().to_dict(), dsa_file)
    rows = []
    for mode in modes:
        init_file = {"none": None, "fixed": str(dsa_file)}.get(mode, base.policy.init_file)
        policy = dataclasses.replace(base.policy, mode=mode, init_file=init_file)
        config = dataclasses.replace(base, policy=policy)
        run_dir = out_root / mode
        resume = (run_dir / "checkpoint.pt").exists()
        distill_run(config, run_dir, resume=resume, device=device, final_nets=0)
        row: dict[str, Any] = {"policy": mode, "run": str(run_dir)}
        for protocol in protocols:
            result = evaluate_run(run_dir, protocol, nets=nets, device=device, epochs=standard_epochs,
                                  augment="run" if mode != "none" and protocol == "standard" else "none").result
            row[protocol] = {"mean": result.mean, "std": result.std, "accs": list(result.accs)}
        rows.append(row)
        print(format_table(rows), flush=True)
    save_json(rows, out_root / "comparison.json")
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (accuracy mean ± std in %)."""
    protocols = [k for k in rows[0] if k not in ("policy", "run")]
    lines = ["| policy | " + " | ".join(protocols) + " |", "|---" * (len(protocols) + 1) + "|"]
    for row in rows:
        cells = [f"{100 * row[p]['mean']:.2f} ± {100 * row[p]['std']:.2f}" for p in protocols]
        lines.append(f"| {row['policy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
