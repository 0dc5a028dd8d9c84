"""``augdistill experts``: train and cache the expert trajectories that ``distill --method mtt`` matches."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["add_experts_command"]


def add_experts_command(sub: argparse._SubParsersAction) -> None:
    """Register ``experts`` on the main parser's subcommands."""
    p = sub.add_parser("experts", help="train N expert networks on real data and cache their trajectories (MTT)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Trains expert networks on the training split and saves their parameters after "
                                   "every epoch. Resumable: run the same command again after a kill. Parallel: "
                                   "the same command in several processes (or on several GPUs) shares the "
                                   "experts out, each trained once.")
    p.add_argument("--dataset", default="digits", help="digits | digits-rot | fashion-mnist | mnist | cifar10")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files")
    p.add_argument("--num-experts", type=int, default=10)
    p.add_argument("--epochs", type=int, default=30, help="epochs of every expert (a trajectory holds epochs + 1 sets)")
    p.add_argument("--out", required=True, help="expert directory (pass it to distill --expert-dir)")
    p.add_argument("--model", default="convnet", help="convnet | lenet | mlp (must be the network distill uses)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3,
                   help="convnet blocks; use 2 for 8x8 images (digits): at depth 3 the last instance norm sees "
                        "2x2 maps, its pooled features are nearly constant and the experts barely train")
    p.add_argument("--norm", default="instance", help="convnet norm: instance | group | batch | none")
    p.add_argument("--first-padding", type=int, default=None,
                   help="convnet: zero padding of the first convolution (default 1; 3: the field's network on 28x28 "
                        "grey-scale images, as distill --first-padding 3)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (constant)")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--aug", default="dsa", help="augmentation of the training minibatches: none | dsa | a policy JSON")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of training files held out (as distill)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1,
                   help="processes training experts side by side into --out (a small network leaves a GPU mostly "
                        "idle: 8 processes trained 8 Fashion-MNIST experts of 10 epochs in 88 s on an H200)")
    p.set_defaults(handler=_run_experts)


def _run_experts(a: argparse.Namespace) -> int:
    from augdistill.config import ModelConfig
    from augdistill.data import load_dataset
    from augdistill.distill.experts import EpochReport, ExpertSetup, train_experts
    from augdistill.errors import ConfigError
    from augdistill.runs.jobs import evaluation_policy
    from augdistill.runs.progress import Progress

    if a.aug == "run":
        raise ConfigError("--aug run needs a distillation run; experts take none, dsa or a policy JSON")
    if a.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {a.workers}")
    dataset = load_dataset(a.dataset, a.data_root, val_fraction=a.val_fraction)
    model = ModelConfig(a.model, width=a.width, depth=a.depth, norm=a.norm if a.model == "convnet" else None,
                        first_padding=a.first_padding)
    setup = ExpertSetup.for_dataset(dataset.info, model, epochs=a.epochs, lr=a.lr, momentum=a.momentum,
                                    weight_decay=a.weight_decay, batch_size=a.batch_size, augmentation=a.aug,
                                    seed=a.seed)
    policy = evaluation_policy(a.aug, Path(a.out), dataset.info)
    progress: list[Progress] = []

    def on_epoch(r: EpochReport) -> None:
        done = r.expert * r.epochs + r.epoch
        if not progress:  # the rate counts from the first epoch this run finished (a resumed run skips some)
            progress.append(Progress(a.num_experts * r.epochs, start=done, every=max(1, r.epochs // 5)))
            return
        shown = {"expert": float(r.expert), "loss": r.loss}
        if r.val_acc is not None:
            shown["val_acc"] = r.val_acc
        progress[0].update(done, **shown)

    with _helpers(a.argv, a.workers - 1, Path(a.out)) as helpers:
        accs = train_experts(setup, dataset, a.out, a.num_experts, policy=policy, device=a.device,
                             on_epoch=on_epoch)
    for log, rc in helpers:
        print(f"augdistill experts: warning: helper process exited with status {rc}; its experts were trained "
              f"here instead (see {log})", file=sys.stderr)
    mean = sum(accs) / len(accs)
    print(f"{a.out}: {len(accs)} experts of {a.epochs} epochs on {a.dataset}; validation accuracy "
          f"{100 * mean:.2f}% (mean; min {100 * min(accs):.2f}%, max {100 * max(accs):.2f}%)", file=sys.stdout)
    return 0


@contextlib.contextmanager
def _helpers(argv: list[str], count: int, out: Path) -> Iterator[list[tuple[Path, int]]]:
    """Start ``count`` helper processes running this same command with ``--workers 1`` (each logs to
    ``OUT/.worker-K.log``); on leaving, wait for them and list the ``(log, exit status)`` of those that failed.
    Leaving with an error stops them. The experts' per-expert locks share the work: a helper that dies leaves
    its expert to a process that is still running."""
    out.mkdir(parents=True, exist_ok=True)
    logs = [out / f".worker-{k + 1}.log" for k in range(count)]
    procs = []
    for log in logs:
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([sys.executable, "-m", "augdistill", *argv, "--workers", "1"],
                                          stdout=f, stderr=subprocess.STDOUT))
    failed: list[tuple[Path, int]] = []
    try:
        yield failed
    except BaseException:
        for proc in procs:
            proc.terminate()
        raise
    finally:
        for log, proc in zip(logs, procs):
            if proc.wait() != 0:
                failed.append((log, proc.returncode))
