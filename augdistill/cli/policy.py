"""``augdistill policy show|plot|export``: inspect augmentation policies, how they were learned, and export them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_policy_commands", "policy_table", "plot_policy_run"]


def policy_table(policy_dict: dict[str, Any]) -> str:
    """A fixed-width table of a policy dict's ops: name, probability, range, unit (and each class's ranges for a
    per-class policy)."""
    rows = [f"composition: {policy_dict['composition']}",
            f"{'#':>2}  {'op':<14}{'probability':>12}  {'low':>10}  {'high':>10}  unit"]
    for i, op in enumerate(policy_dict["ops"]):
        mag = op["magnitude"]
        low, high, unit = (f"{mag['low']:.4g}", f"{mag['high']:.4g}", mag["unit"]) if mag else ("-", "-", "")
        rows.append(f"{i:>2}  {op['name']:<14}{op['probability']:>12.4f}  {low:>10}  {high:>10}  {unit}")
    if policy_dict.get("weights") is not None:
        rows.append(f"weights: {[round(w, 4) for w in policy_dict['weights']]}")
    per_class = policy_dict.get("class_ranges")
    if per_class:
        ops = [(i, op["name"]) for i, op in enumerate(policy_dict["ops"]) if op["magnitude"]]
        rows.append("per-class ranges (low..high; the table above shows the shared probabilities):")
        rows.append(f"    {'class':<16}" + "".join(f"{f'{i} {name}':>22}" for i, name in ops))
        for name, ranges in zip(per_class["classes"], per_class["ranges"]):
            cells = "".join(f"{f'{ranges[i][0]:.4g}..{ranges[i][1]:.4g}':>22}" for i, _ in ops)
            rows.append(f"    {name[:16]:<16}{cells}")
    provenance = policy_dict.get("provenance") or {}
    shown = {k: v for k, v in provenance.items() if k in ("dataset", "method", "seed", "date", "metrics") and v}
    if shown:
        rows.append(f"provenance: {shown}")
    return "\n".join(rows)


def plot_policy_run(run_dir: str | Path, samples: int = 8) -> list[Path]:
    """Draw ``policy_evolution.png`` (range and probability per op against iteration, from ``metrics.json``)
    and ``policy_samples.png`` (real training images under draws of ``policy.json``)."""
    import matplotlib.pyplot as plt

    from augdistill.augment import load_policy
    from augdistill.errors import CheckpointError
    from augdistill.runs import schema
    from augdistill.runs.atomic import atomic_write
    from augdistill.runs.jobs import load_run_dataset
    from augdistill.runs.layout import METRICS_FILE, POLICY_FILE, load_config, load_metrics

    run_dir = Path(run_dir)
    policy = load_policy(run_dir / POLICY_FILE)
    config = load_config(run_dir)
    history = schema.policy_history(run_dir / METRICS_FILE, load_metrics(run_dir).get("history", []))
    if not history:
        raise CheckpointError(f"{run_dir / METRICS_FILE} holds no policy history (was the run made with --policy?)")
    labels = list(history[0]["policy_probabilities"])
    fig, (ax_mag, ax_p) = plt.subplots(1, 2, figsize=(11, 3.8))
    its = [h["iteration"] for h in history]
    for label in labels:
        if label in history[0]["policy_magnitudes"]:
            lows, highs = zip(*(h["policy_magnitudes"][label] for h in history))
            span = [hi - lo for lo, hi in zip(lows, highs)]
            ax_mag.plot(its, span, label=label)
        ax_p.plot(its, [h["policy_probabilities"][label] for h in history], label=label)
    ax_mag.set(xlabel="outer iteration", ylabel="range width (high - low, op units)", title="magnitude")
    ax_p.set(xlabel="outer iteration", ylabel="probability", title="probability", ylim=(-0.02, 1.02))
    for ax in (ax_mag, ax_p):
        ax.grid(alpha=0.3), ax.legend(fontsize=8)
    fig.tight_layout()
    evolution = run_dir / "policy_evolution.png"
    atomic_write(evolution, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)

    data = load_run_dataset(config)
    x = data.train.x[:samples]
    g = torch.Generator().manual_seed(0)
    policy.train()
    y = data.train.y[:samples]
    rows = [x] + [policy(x, params=policy.sample(x.shape[0], generator=g), labels=y).detach().clamp(0, 1)
                  for _ in range(4)]
    fig, axes = plt.subplots(len(rows), samples, figsize=(1.1 * samples, 1.1 * len(rows)), squeeze=False)
    for r, batch in enumerate(rows):
        for c in range(samples):
            img = batch[c]
            axes[r][c].imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(),
                              cmap=None if img.shape[0] == 3 else "gray", vmin=0, vmax=1)
            axes[r][c].set_xticks([]), axes[r][c].set_yticks([])
        axes[r][0].set_ylabel("real" if r == 0 else f"draw {r}", fontsize=8)
    fig.tight_layout()
    sample_path = run_dir / "policy_samples.png"
    atomic_write(sample_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return [evolution, sample_path]


def _show(a: argparse.Namespace) -> int:
    from augdistill.augment import load_policy
    print(policy_table(load_policy(a.file).to_dict()))
    return 0


def _export(a: argparse.Namespace) -> int:
    from augdistill.augment.export import python_snippet
    print(python_snippet(a.file, to=a.to))
    return 0


def _plot(a: argparse.Namespace) -> int:
    for path in plot_policy_run(a.run_dir):
        print(path)
    return 0


def add_policy_commands(sub: argparse._SubParsersAction) -> None:
    policy = sub.add_parser("policy", help="inspect augmentation policies")
    verbs = policy.add_subparsers(dest="policy_command", required=True)
    show = verbs.add_parser("show", help="print a policy JSON's ops, probabilities and ranges")
    show.add_argument("file")
    show.set_defaults(handler=_show)
    plot = verbs.add_parser("plot", help="draw how a run's policy evolved, and real images under it")
    plot.add_argument("run_dir")
    plot.set_defaults(handler=_plot)
    export = verbs.add_parser("export", help="print a Python snippet that builds the policy as a torchvision v2 "
                                             "or kornia pipeline (needs only torch and that library)")
    export.add_argument("file")
    export.add_argument("--to", default="torchvision", choices=("torchvision", "kornia"))
    export.set_defaults(handler=_export)
