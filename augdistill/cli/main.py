"""``augdistill`` command line: the only argument parsing; flags -> config dataclasses -> runner."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from augdistill.config import (DataConfig, DistillConfig, InnerConfig, MethodConfig, ModelConfig, OuterConfig,
                               PolicyConfig, SyntheticConfig)
from augdistill.errors import AugdistillError

__all__ = ["main", "build_parser"]

_DEFAULTS = DistillConfig()


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="learn a synthetic set (and optionally an augmentation policy)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = _DEFAULTS
    p.add_argument("--dataset", default=d.data.name, help="digits | digits-rot | fashion-mnist | mnist | cifar10")
    p.add_argument("--method", default=d.method.name, help="wang (Wang et al. 2018)")
    p.add_argument("--param", default=d.synthetic.param, help="how the synthetic set is stored: pixels")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files")
    p.add_argument("--out", default=None, help="run directory (default: runs/DATASET-ipcK)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--ipc", type=int, default=d.synthetic.ipc, help="synthetic images per class")
    p.add_argument("--syn-init", default=d.synthetic.init, choices=("real", "noise"))
    p.add_argument("--learn-labels", action="store_true", help="learn soft labels")
    p.add_argument("--lr-init", type=float, default=d.method.lr_init, help="wang: initial inner learning rate")
    p.add_argument("--lr-cap", type=float, default=d.method.lr_cap, help="wang: upper bound of learned inner lrs")
    p.add_argument("--model", default=None, help="convnet | lenet | mlp (default: the method's network)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--norm", default=None, help="convnet norm: instance | group | batch | none")
    p.add_argument("--inner-steps", type=int, default=d.inner.steps)
    p.add_argument("--inner-epochs", type=int, default=d.inner.epochs)
    p.add_argument("--batch-per-class", type=int, default=d.inner.batch_per_class,
                   help="synthetic images per class in each inner step (0: all)")
    p.add_argument("--momentum", type=float, default=d.inner.momentum)
    p.add_argument("--iterations", type=int, default=None,
                   help=f"outer steps (default {d.outer.iterations}; with --resume: the saved budget)")
    p.add_argument("--init", default=d.outer.init, choices=("random", "fixed"), help="θ₀ mode")
    p.add_argument("--num-inits", type=int, default=d.outer.num_inits, help="θ₀ draws per outer step")
    p.add_argument("--real-per-class", type=int, default=d.outer.real_per_class)
    p.add_argument("--optimizer", default=None, choices=("adam", "sgd"),
                   help="optimiser of the synthetic set (default: the method's)")
    p.add_argument("--lr-images", type=float, default=None, help="learning rate of the stored tensors "
                   "(default: the method's)")
    p.add_argument("--sgd-momentum", type=float, default=d.outer.sgd_momentum)
    p.add_argument("--lr-lrs", type=float, default=d.outer.lr_lrs)
    p.add_argument("--lr-labels", type=float, default=d.outer.lr_labels)
    p.add_argument("--grad-clip", type=float, default=d.outer.grad_clip)
    p.add_argument("--seed", type=int, default=d.outer.seed)
    p.add_argument("--validation", default=None, choices=("replay", "standard"),
                   help="how the best iteration is selected on the validation split (default: the method's)")
    p.add_argument("--val-epochs", type=int, default=d.outer.val_epochs,
                   help="epochs of the standard-protocol networks trained for validation")
    p.add_argument("--policy", default=d.policy.mode, choices=("none", "fixed", "learn"))
    p.add_argument("--policy-init", default=None, help="policy JSON to start from (or to keep fixed)")
    p.add_argument("--ops", default=",".join(d.policy.ops), help="comma-separated ops of a learned policy")
    p.add_argument("--policy-lr", type=float, default=d.policy.lr)
    p.add_argument("--width-weight", type=float, default=d.policy.width_weight, help="λ of the width bonus")
    p.add_argument("--aug-weight", type=float, default=d.policy.aug_weight)
    p.add_argument("--aug-copies", type=int, default=d.policy.copies, help="J augmented copies of the real batch")
    p.add_argument("--siamese", action="store_true",
                   help="one augmentation draw per class shared by real and synthetic images (DSA)")
    p.add_argument("--policy-inner-steps", type=int, default=d.policy.inner_steps,
                   help="inner steps of the policy objective's own unroll (methods that do not unroll)")
    p.add_argument("--policy-inner-lr", type=float, default=d.policy.inner_lr)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100, help="validate every N iterations (0: off)")
    p.add_argument("--final-nets", type=int, default=5, help="fresh nets for the final test replay (0: skip)")


def _config_from_args(a: argparse.Namespace) -> DistillConfig:
    return DistillConfig(
        data=DataConfig(name=a.dataset, root=a.data_root),
        method=MethodConfig(name=a.method, lr_init=a.lr_init, lr_cap=a.lr_cap),
        model=ModelConfig(name=a.model, width=a.width, depth=a.depth, norm=a.norm),
        synthetic=SyntheticConfig(ipc=a.ipc, init=a.syn_init, learn_labels=a.learn_labels, param=a.param),
        inner=InnerConfig(steps=a.inner_steps, epochs=a.inner_epochs, batch_per_class=a.batch_per_class,
                          momentum=a.momentum),
        outer=OuterConfig(iterations=_DEFAULTS.outer.iterations if a.iterations is None else a.iterations,
                          init=a.init, num_inits=a.num_inits, real_per_class=a.real_per_class,
                          optimizer=a.optimizer, lr_images=a.lr_images, sgd_momentum=a.sgd_momentum,
                          lr_lrs=a.lr_lrs, lr_labels=a.lr_labels, grad_clip=a.grad_clip, seed=a.seed,
                          validation=a.validation, val_epochs=a.val_epochs),
        policy=PolicyConfig(mode=a.policy, ops=tuple(o for o in a.ops.split(",") if o), init_file=a.policy_init,
                            lr=a.policy_lr, width_weight=a.width_weight, aug_weight=a.aug_weight,
                            copies=a.aug_copies, siamese=a.siamese, inner_steps=a.policy_inner_steps,
                            inner_lr=a.policy_inner_lr),
    )


def _run_distill(a: argparse.Namespace) -> int:
    from augdistill.runs.layout import load_config
    from augdistill.runs.jobs import distill_run
    config = _config_from_args(a)
    out = Path(a.out) if a.out else Path("runs") / f"{config.data.name}-ipc{config.synthetic.ipc}"
    if a.resume:  # continue with the saved configuration; only the iteration budget may change
        saved = load_config(out)
        iterations = a.iterations if a.iterations is not None else saved.outer.iterations
        config = replace(saved, outer=replace(saved.outer, iterations=iterations))
    metrics = distill_run(config, out, resume=a.resume, device=a.device, checkpoint_every=a.checkpoint_every,
                          eval_every=a.eval_every, final_nets=a.final_nets)
    summary = {"out": str(out), "dataset": metrics["dataset"], "ipc": metrics["ipc"], "method": metrics["method"],
               "selected_iteration": metrics["selected_iteration"], "selected_val_acc": metrics["selected_val_acc"]}
    if "test_replay" in metrics:
        r = metrics["test_replay"]
        print(f"{out}: replay test accuracy {100 * r['mean']:.2f} ± {100 * r['std']:.2f}% "
              f"({len(r['accs'])} nets; selected iteration {metrics['selected_iteration']} on val)")
    else:
        print(json.dumps(summary))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="train fresh networks on a distilled set and report test accuracy")
    p.add_argument("run_dir")
    p.add_argument("--protocol", default="replay", help="replay | standard | random-subset | full-data")
    p.add_argument("--nets", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the standard-protocol nets (default 300; DSA, DM and MTT report 1000)")
    p.add_argument("--aug", default="none",
                   help="augmentation the standard-protocol nets train with: none | dsa | run (the run's "
                        "policy.json) | a policy JSON file (replay always replays the run's policy)")
    p.add_argument("--with-policy", action="store_true", help="the same as --aug run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object (with protocol, epochs, augmentation)")


def _run_evaluate(a: argparse.Namespace) -> int:
    from augdistill.runs.jobs import evaluate_run
    from augdistill.runs.layout import load_config
    evaluation = evaluate_run(a.run_dir, a.protocol, nets=a.nets, device=a.device, epochs=a.epochs,
                              augment="run" if a.with_policy else a.aug)
    config = load_config(a.run_dir)
    record = {**evaluation.record(), "ipc": config.synthetic.ipc, "dataset": config.data.name,
              "method": config.method.name, "param": config.synthetic.param}
    if a.json:
        print(json.dumps(record))
    else:
        print(f"{'dataset':<14}{'ipc':>4}  {'method':<7}{'protocol':<14}{'epochs':>7}  {'aug':<6}{'nets':>5}  accuracy")
        print(f"{record['dataset']:<14}{record['ipc']:>4}  {record['method']:<7}{record['protocol']:<14}"
              f"{str(record['epochs'] or '-'):>7}  {record['augmentation']:<6}{record['nets']:>5}  {evaluation.result}")
    return 0


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="(re)draw the synthetic image grid and loss curve of a run")
    p.add_argument("run_dir")


def _run_show(a: argparse.Namespace) -> int:
    from augdistill.runs.jobs import draw_run
    for path in draw_run(a.run_dir):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augdistill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_distill(sub)
    _add_evaluate(sub)
    _add_show(sub)
    from augdistill.cli.bench import add_bench_command
    from augdistill.cli.policy import add_policy_commands
    add_policy_commands(sub)
    add_bench_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) if hasattr(args, "handler") else {
            "distill": _run_distill, "evaluate": _run_evaluate, "show": _run_show}[args.command](args)
    except AugdistillError as e:
        print(f"augdistill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"augdistill {args.command}: interrupted; the checkpoint is saved, continue with --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
