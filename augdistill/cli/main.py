"""``augdistill`` command line: the only argument parsing; flags -> config dataclasses -> runner."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import NoReturn, Sequence

from augdistill.config import (DataConfig, DistillConfig, InnerConfig, MethodConfig, ModelConfig, OuterConfig,
                               PolicyConfig, SyntheticConfig)
from augdistill.errors import AugdistillError, CheckpointError, ConfigError, RunInterrupted
from augdistill.runs.options import DistillOptions, check_device

__all__ = ["main", "build_parser"]

_DEFAULTS = DistillConfig()


class _UsageError(ConfigError):
    """A command line argparse cannot parse; ``prog`` names the (sub)command."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (raised, not printed with the usage)."""

    def error(self, message: str) -> NoReturn:
        expected = {"invalid int value": "expected an integer", "invalid float value": "expected a number"}
        hints = [hint for key, hint in expected.items() if key in message]
        raise _UsageError(self.prog, message + (f" ({hints[0]})" if hints else ""))


def _add_distill(sub: argparse._SubParsersAction, d: DistillConfig = _DEFAULTS,
                 o: DistillOptions = DistillOptions()) -> None:
    """``distill``; every default comes from ``d`` and ``o`` (a resumed run re-parses with its own)."""
    p = sub.add_parser("distill", help="learn a synthetic set (and optionally an augmentation policy)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=d.data.name, help="digits | digits-rot | fashion-mnist | mnist | cifar10")
    p.add_argument("--method", default=d.method.name, help="wang (Wang et al. 2018) | dc (gradient matching; DSA with --policy fixed --policy-init policies/dsa.json --siamese) | dm (distribution matching) | mtt (trajectory matching)")
    p.add_argument("--param", default=d.synthetic.param,
                   help="how the synthetic set is stored within the --ipc budget: pixels | multi-formation (IDC) | "
                        "latent (KFS-style codes + shared decoders)")
    p.add_argument("--factor", type=int, default=d.synthetic.factor, help="multi-formation: tiles per side; latent: the "
                   "code's downsampling of the image side (None: 2 for multi-formation, 4 for latent)")
    p.add_argument("--decoders", type=int, default=d.synthetic.decoders, help="latent: shared decoders")
    p.add_argument("--latent-dim", type=int, default=d.synthetic.latent_dim, help="latent: channels of a code")
    p.add_argument("--decoder-width", type=int, default=d.synthetic.decoder_width,
                   help="latent: hidden channels of a decoder")
    p.add_argument("--codes", type=int, default=d.synthetic.codes,
                   help="latent: codes per class (0: as many as the budget leaves beside the decoders)")
    p.add_argument("--fit-steps", type=int, default=d.synthetic.fit_steps,
                   help="latent: Adam steps fitting codes and decoders to real images before distilling")
    p.add_argument("--data-root", default=d.data.root, help="folder holding the dataset files")
    p.add_argument("--out", default=None, help="run directory (default: runs/DATASET-ipcK)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--ipc", type=int, default=d.synthetic.ipc,
                   help="storage budget: floats of this many full-size images per class (codes and decoders included)")
    p.add_argument("--syn-init", default=d.synthetic.init, choices=("real", "herding", "noise"),
                   help="random real images, the real images herding picks (nearest the class mean first), or noise")
    p.add_argument("--learn-labels", action="store_true", default=d.synthetic.learn_labels, help="learn soft labels")
    p.add_argument("--clip-pixels", action="store_true", default=d.synthetic.clip_pixels,
                   help="pixels, multi-formation: project the stored pixels into [0, 1] after every outer step")
    p.add_argument("--lr-init", type=float, default=d.method.lr_init, help="wang: initial inner learning rate")
    p.add_argument("--lr-cap", type=float, default=d.method.lr_cap, help="wang: upper bound of learned inner lrs")
    p.add_argument("--expert-dir", default=d.method.expert_dir,
                   help="mtt: expert trajectories to match; dm: embed with these experts at random stages of their "
                        "training instead of random networks (made by `augdistill experts`)")
    p.add_argument("--expert-epochs", type=int, default=d.method.expert_epochs, help="mtt: M, expert epochs matched")
    p.add_argument("--syn-steps", type=int, default=d.method.syn_steps, help="mtt: N, steps on synthetic data")
    p.add_argument("--max-start-epoch", type=int, default=d.method.max_start_epoch,
                   help="mtt: start epochs are drawn from 0 .. this - 1")
    p.add_argument("--syn-lr-init", type=float, default=d.method.syn_lr_init,
                   help="mtt: initial learned step size (its lr is --lr-lrs, on log α)")
    p.add_argument("--syn-batch", type=int, default=d.method.syn_batch,
                   help="mtt: synthetic images per step (0: all)")
    p.add_argument("--constant-memory", action="store_true", default=d.method.constant_memory,
                   help="mtt: TESLA's first-order gradient, memory independent of --syn-steps")
    p.add_argument("--outer-loop", type=int, default=d.method.outer_loop,
                   help="dc: matching steps per network (default: the paper's for --ipc)")
    p.add_argument("--inner-loop", type=int, default=d.method.inner_loop,
                   help="dc: epochs the network trains on the synthetic set between matching steps "
                        "(default: the paper's for --ipc)")
    p.add_argument("--net-lr", type=float, default=d.method.net_lr,
                   help="dc: learning rate of the network trained between matching steps; dm: of the pool's")
    p.add_argument("--dc-train-on", choices=("synthetic", "real"), default=d.method.train_on,
                   help="dc: what the network trains on between matching steps: the synthetic set (DC) or the "
                        "step's real batch, --inner-loop SGD steps (IDC)")
    p.add_argument("--dc-distance", choices=("cosine", "l1"), default=d.method.distance,
                   help="dc: per-node cosine distance of the gradients (DC) or their L1 distance over the "
                        "convolution kernels (IDC)")
    p.add_argument("--dm-pool", type=int, default=d.method.pool,
                   help="dm: embed with one of this many networks trained on real batches as the run goes "
                        "(IDM's semi-trained models; 0: a fresh random network every step, as in DM)")
    p.add_argument("--dm-pool-steps", type=int, default=d.method.pool_steps,
                   help="dm: SGD steps on the step's real batch a pool network takes each time it is drawn")
    p.add_argument("--dm-pool-lifetime", type=int, default=d.method.pool_lifetime,
                   help="dm: SGD steps after which a pool network is replaced by a fresh one")
    p.add_argument("--dm-pool-train-on", choices=("real", "synthetic"), default=d.method.pool_train_on,
                   help="dm: what a drawn pool network trains on: the step's real batch (IDM) or the synthetic set "
                        "(as the evaluation networks do)")
    p.add_argument("--dm-ce-weight", type=float, default=d.method.ce_weight,
                   help="dm: weight of the embedding network's cross-entropy on the synthetic set (IDM's "
                        "class-aware regulariser)")
    p.add_argument("--dm-layer-weight", type=float, default=d.method.layer_weight,
                   help="dm: also match the class means of every earlier block's output, this weight per "
                        "feature relative to the last layer (CAFE's layer-wise alignment; 0: the last layer only)")
    p.add_argument("--dm-disc-weight", type=float, default=d.method.disc_weight,
                   help="dm: weight of CAFE's discrimination loss (the real batch classified by inner products "
                        "with the synthetic class means; 0: none)")
    p.add_argument("--dm-attention-weight", type=float, default=d.method.attention_weight,
                   help="dm: weight of DataDAM's attention matching (the class means of every block's spatial "
                        "attention map but the last's, each image's map of unit norm; DataDAM uses 100; 0: none)")
    p.add_argument("--dm-style-weight", type=float, default=d.method.style_weight,
                   help="dm: also match the class means of every block's Gram matrix (channel correlations, the "
                        "style of Decomposed DM), this weight per entry relative to the last layer's features; "
                        "0: none")
    p.add_argument("--dm-kernel", choices=("linear", "gaussian"), default=d.method.kernel,
                   help="dm: match the class means of the embeddings (DM) or their distributions by the maximum "
                        "mean discrepancy under a Gaussian kernel (M3D)")
    p.add_argument("--dm-bandwidth", type=float, default=d.method.bandwidth,
                   help="dm --dm-kernel gaussian: the kernel's width 2σ² as a multiple of the median squared "
                        "distance between a class's real embeddings")
    p.add_argument("--dm-easy-fraction", type=float, default=d.method.easy_fraction,
                   help="dm: match, in every class, only this fraction of the real batch: the images the step's "
                        "network classifies with the lowest cross-entropy (sample-difficulty correction, arXiv "
                        "2408.12483; meant for semi-trained networks, --dm-pool or --expert-dir; 1: every image)")
    p.add_argument("--model", default=d.model.name, help="convnet | lenet | mlp (default: the method's network)")
    p.add_argument("--width", type=int, default=d.model.width)
    p.add_argument("--depth", type=int, default=d.model.depth)
    p.add_argument("--norm", default=d.model.norm, help="convnet norm: instance | group | batch | none")
    p.add_argument("--first-padding", type=int, default=d.model.first_padding,
                   help="convnet: zero padding of the first convolution (default 1; 3 is the field's network on "
                        "28x28 grey-scale images: 32x32 maps); the validation and evaluation networks follow it")
    p.add_argument("--inner-steps", type=int, default=d.inner.steps)
    p.add_argument("--inner-epochs", type=int, default=d.inner.epochs)
    p.add_argument("--batch-per-class", type=int, default=d.inner.batch_per_class,
                   help="synthetic images per class in each inner step (0: all)")
    p.add_argument("--momentum", type=float, default=d.inner.momentum)
    p.add_argument("--checkpoint-inner", type=int, default=d.inner.checkpoint,
                   help="recompute each segment of this many inner steps in the backward pass instead of storing "
                        "its activations (0: store all; 1: least memory, ~1 extra inner pass of time)")
    p.add_argument("--inner-precision", default=d.inner.precision, choices=("float32", "bfloat16"),
                   help="bfloat16: the networks' forward under autocast (parameters and updates stay float32)")
    p.add_argument("--compile-inner", action="store_true", default=d.inner.compile,
                   help="compute each inner step's gradient with torch.compile")
    p.add_argument("--iterations", type=int, default=d.outer.iterations,
                   help="outer steps (with --resume: the run's budget unless given)")
    p.add_argument("--init", default=d.outer.init, choices=("random", "fixed"), help="θ₀ mode")
    p.add_argument("--num-inits", type=int, default=d.outer.num_inits,
                   help="θ₀ draws per outer step (under torchrun split over the processes)")
    p.add_argument("--batch-draws", default=d.outer.batch_draws, choices=("auto", "loop", "vmap"),
                   help="unroll a process's θ₀ draws one by one or together with vmap (auto: the method decides)")
    p.add_argument("--real-per-class", type=int, default=d.outer.real_per_class)
    p.add_argument("--optimizer", default=d.outer.optimizer, choices=("adam", "sgd"),
                   help="optimiser of the synthetic set (default: the method's)")
    p.add_argument("--lr-images", type=float, default=d.outer.lr_images, help="learning rate of the stored tensors "
                   "(default: the method's)")
    p.add_argument("--sgd-momentum", type=float, default=d.outer.sgd_momentum)
    p.add_argument("--lr-lrs", type=float, default=d.outer.lr_lrs)
    p.add_argument("--lr-labels", type=float, default=d.outer.lr_labels)
    p.add_argument("--grad-clip", type=float, default=d.outer.grad_clip,
                   help="clip the outer gradient's norm to this (0: no clipping; default: the method's: wang 10, "
                        "dc/dm/mtt 0 as in their papers)")
    p.add_argument("--seed", type=int, default=d.outer.seed)
    p.add_argument("--validation", default=d.outer.validation, choices=("replay", "standard"),
                   help="how the best iteration is selected on the validation split (default: the method's)")
    p.add_argument("--val-epochs", type=int, default=d.outer.val_epochs,
                   help="epochs of the standard-protocol networks trained for validation")
    p.add_argument("--ema", type=float, default=d.outer.ema, metavar="BETA",
                   help="keep an exponential moving average of the synthetic set with decay BETA (e.g. 0.95: about "
                        "the last 20 steps); validation, selection and the exported set use it (0: off)")
    p.add_argument("--policy", default=d.policy.mode, choices=("none", "fixed", "learn"))
    p.add_argument("--policy-init", default=d.policy.init_file, help="policy JSON to start from (or to keep fixed)")
    p.add_argument("--ops", default=",".join(d.policy.ops), help="comma-separated ops of a learned policy")
    p.add_argument("--policy-lr", type=float, default=d.policy.lr)
    p.add_argument("--policy-learn", default=",".join(d.policy.learn),
                   help="what a learned policy updates, comma-separated: probabilities, magnitudes, weights (the "
                        "choice among sub-policies); the rest stays as --policy-init has it")
    p.add_argument("--policy-every", type=int, default=d.policy.every, metavar="N",
                   help="a learned policy (its objective, critic and update) takes part in every N-th outer step only")
    p.add_argument("--policy-adversarial", type=float, default=d.policy.adversarial, metavar="ALPHA",
                   help="dm: on its turns the learned policy also ascends the matching loss, receiving -ALPHA times "
                        "its gradient (Adversarial AutoAugment); 0: the matching loss sees the policy frozen")
    p.add_argument("--policy-per-class", action="store_true", default=d.policy.per_class,
                   help="learn one magnitude range per op and class (each class starts from the policy's ranges); "
                        "the gates and the choice among sub-policies stay shared")
    p.add_argument("--width-weight", type=float, default=d.policy.width_weight, help="λ of the width bonus")
    p.add_argument("--aug-weight", type=float, default=d.policy.aug_weight)
    p.add_argument("--aug-copies", type=int, default=d.policy.copies, help="J augmented copies of the real batch")
    p.add_argument("--siamese", action="store_true", default=d.policy.siamese,
                   help="one augmentation draw per class shared by real and synthetic images (DSA)")
    p.add_argument("--policy-inner-steps", type=int, default=d.policy.inner_steps,
                   help="inner steps of the policy objective's own unroll (methods that do not unroll)")
    p.add_argument("--policy-inner-lr", type=float, default=d.policy.inner_lr)
    p.add_argument("--width-measure", default=d.policy.width_measure, choices=("range", "spread"),
                   help="width of the bonus: range (p x fraction of the range; a flip counts p) | spread (a flip "
                        "counts 4p(1-p), most at p = 0.5)")
    p.add_argument("--policy-critic", default=d.policy.critic, choices=("unroll", "real", "synthetic", "lookahead"),
                   help="network the policy objective is measured on (methods that do not unroll): unroll (a short "
                        "unroll of a fresh network) | real (a network trained alongside on augmented real batches, "
                        "Augerino) | synthetic (one trained on the augmented synthetic set like an evaluation net) | "
                        "lookahead (the synthetic one, then --policy-inner-steps differentiable steps on the "
                        "augmented synthetic set, scored on clean real images)")
    p.add_argument("--critic-lr", type=float, default=d.policy.critic_lr, help="SGD learning rate of the critic")
    p.add_argument("--critic-steps", type=int, default=d.policy.critic_steps, help="critic SGD steps per outer step")
    p.add_argument("--critic-reset", type=int, default=d.policy.critic_reset,
                   help="restart the critic from a fresh network every N outer steps (0: never)")
    p.add_argument("--critic-per-class", type=int, default=d.policy.critic_per_class,
                   help="real images per class of the outer batch the critic and the policy loss use (0: all)")
    p.add_argument("--device", default=o.device)
    p.add_argument("--checkpoint-every", type=int, default=o.checkpoint_every)
    p.add_argument("--eval-every", type=int, default=o.eval_every, help="validate every N iterations (0: off)")
    p.add_argument("--eval-nets", type=int, default=o.eval_nets, help="fresh nets of each validation")
    p.add_argument("--final-nets", type=int, default=o.final_nets, help="fresh nets for the final test replay (0: skip)")
    p.add_argument("--time-budget", type=float, default=o.time_budget, metavar="SECONDS",
                   help="distil for at most this long per launch: after the step that ends past it, validate that "
                        "step and finish as at the last iteration; --resume continues (0: no budget)")


def _config_from_args(a: argparse.Namespace) -> DistillConfig:
    return DistillConfig(
        data=DataConfig(name=a.dataset, root=a.data_root),
        method=MethodConfig(name=a.method, lr_init=a.lr_init, lr_cap=a.lr_cap, expert_dir=a.expert_dir,
                            expert_epochs=a.expert_epochs, syn_steps=a.syn_steps, max_start_epoch=a.max_start_epoch,
                            syn_lr_init=a.syn_lr_init, syn_batch=a.syn_batch, constant_memory=a.constant_memory,
                            outer_loop=a.outer_loop, inner_loop=a.inner_loop, net_lr=a.net_lr, train_on=a.dc_train_on,
                            distance=a.dc_distance, pool=a.dm_pool,
                            pool_steps=a.dm_pool_steps, pool_lifetime=a.dm_pool_lifetime,
                            pool_train_on=a.dm_pool_train_on,
                            ce_weight=a.dm_ce_weight, layer_weight=a.dm_layer_weight,
                            disc_weight=a.dm_disc_weight, attention_weight=a.dm_attention_weight,
                            style_weight=a.dm_style_weight,
                            kernel=a.dm_kernel, bandwidth=a.dm_bandwidth,
                            easy_fraction=a.dm_easy_fraction),
        model=ModelConfig(name=a.model, width=a.width, depth=a.depth, norm=a.norm, first_padding=a.first_padding),
        synthetic=SyntheticConfig(ipc=a.ipc, init=a.syn_init, learn_labels=a.learn_labels, param=a.param,
                                  factor=a.factor, decoders=a.decoders, latent_dim=a.latent_dim,
                                  decoder_width=a.decoder_width, codes=a.codes, fit_steps=a.fit_steps,
                                  clip_pixels=a.clip_pixels),
        inner=InnerConfig(steps=a.inner_steps, epochs=a.inner_epochs, batch_per_class=a.batch_per_class,
                          momentum=a.momentum, checkpoint=a.checkpoint_inner, precision=a.inner_precision,
                          compile=a.compile_inner),
        outer=OuterConfig(iterations=a.iterations, init=a.init, num_inits=a.num_inits, batch_draws=a.batch_draws,
                          real_per_class=a.real_per_class,
                          optimizer=a.optimizer, lr_images=a.lr_images, sgd_momentum=a.sgd_momentum,
                          lr_lrs=a.lr_lrs, lr_labels=a.lr_labels, grad_clip=a.grad_clip, seed=a.seed,
                          validation=a.validation, val_epochs=a.val_epochs, ema=a.ema),
        policy=PolicyConfig(mode=a.policy, ops=tuple(o for o in a.ops.split(",") if o), init_file=a.policy_init,
                            lr=a.policy_lr, width_weight=a.width_weight, aug_weight=a.aug_weight,
                            copies=a.aug_copies, siamese=a.siamese, inner_steps=a.policy_inner_steps,
                            inner_lr=a.policy_inner_lr, width_measure=a.width_measure, critic=a.policy_critic,
                            critic_lr=a.critic_lr, critic_steps=a.critic_steps, critic_reset=a.critic_reset,
                            critic_per_class=a.critic_per_class, every=a.policy_every,
                            per_class=a.policy_per_class, adversarial=a.policy_adversarial,
                            learn=tuple(k for k in a.policy_learn.split(",") if k)),
    )


def _resumed_args(a: argparse.Namespace, out: Path) -> argparse.Namespace:
    """The command line re-parsed with the run's own configuration and options as defaults: what is not
    given continues as the run was; what is given and differs is refused by ``distill_run``, by name."""
    from augdistill.runs import folder
    from augdistill.runs.layout import CONFIG_FILE, load_config
    if not (out / folder.MARKER_FILE).is_file() and not (out / CONFIG_FILE).is_file():
        return a  # not a run: distill_run says so
    saved = load_config(out) if (out / CONFIG_FILE).is_file() else _DEFAULTS
    stored = folder.read_marker(out).get("options", {}) if (out / folder.MARKER_FILE).is_file() else {}
    known = {f.name for f in dataclasses.fields(DistillOptions)}
    try:
        options = DistillOptions(**{k: v for k, v in stored.items() if k in known})
    except ConfigError as e:
        raise CheckpointError(f"{out / folder.MARKER_FILE}: options: {e}") from None
    parser = build_parser(saved, options)
    return parser.parse_args(a.argv)


def _run_distill(a: argparse.Namespace) -> int:
    from augdistill.distill import distributed
    from augdistill.runs.jobs import distill_run
    out = Path(a.out) if a.out else Path("runs") / f"{a.dataset}-ipc{a.ipc}"
    if a.resume:
        a = _resumed_args(a, out)
    config = _config_from_args(a)
    with distributed.leaving_group():
        metrics = distill_run(config, out, resume=a.resume, device=a.device, checkpoint_every=a.checkpoint_every,
                              eval_every=a.eval_every, eval_nets=a.eval_nets, final_nets=a.final_nets,
                              time_budget=a.time_budget)
        reports = distributed.from_environment(a.device).is_main  # under torchrun rank 0 alone reports
    if not reports:
        return 0
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
    p.add_argument("--protocol", default="replay",
                   help="replay | standard | random-subset | herding (the herding coreset) | full-data")
    p.add_argument("--nets", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the first network (networks SEED .. SEED+NETS-1), to "
                   "split one evaluation across processes")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the standard-protocol nets (default 300; DSA, DM and MTT report 1000)")
    p.add_argument("--aug", default="none",
                   help="augmentation the standard-protocol nets train with: none | dsa | run (the run's "
                        "policy.json) | a policy JSON file (replay always replays the run's policy)")
    p.add_argument("--with-policy", action="store_true", help="the same as --aug run")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch of the standard-protocol nets "
                   "(default 256; IDC evaluates with 64)")
    p.add_argument("--cutmix", type=float, default=0.0, help="share of their minibatches mixed by CutMix after the "
                   "augmentation (IDC: 0.5, with --epochs 1000 --batch-size 64)")
    p.add_argument("--first-padding", type=int, default=None, help="zero padding of the first convolution of the "
                   "standard-protocol ConvNet (default: the run's --first-padding, else 1; 3 is the field's network on "
                   "28x28 grey-scale images)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (with protocol, epochs, augmentation, batch size, cutmix, network)")


def _run_evaluate(a: argparse.Namespace) -> int:
    from augdistill.runs.jobs import evaluate_run
    from augdistill.runs.layout import load_config
    evaluation = evaluate_run(a.run_dir, a.protocol, nets=a.nets, device=a.device, epochs=a.epochs,
                              augment="run" if a.with_policy else a.aug, batch_size=a.batch_size, cutmix=a.cutmix,
                              seed=a.seed, first_padding=a.first_padding)
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
    from augdistill.runs.layout import SYNTHETIC_FILE, load_distilled
    for path in draw_run(a.run_dir):
        print(path)
    print(f"{a.run_dir}: {load_distilled(Path(a.run_dir) / SYNTHETIC_FILE).storage()}")
    return 0


def build_parser(defaults: DistillConfig = _DEFAULTS, options: DistillOptions = DistillOptions()
                 ) -> argparse.ArgumentParser:
    """The parser of every command; ``distill`` takes its defaults from ``defaults`` and ``options``."""
    parser = _Parser(prog="augdistill", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (may be given anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_distill(sub, defaults, options)
    _add_evaluate(sub)
    _add_show(sub)
    from augdistill.cli.bench import add_bench_command
    from augdistill.cli.policy import add_policy_commands
    add_policy_commands(sub)
    from augdistill.cli.experts import add_experts_command
    add_experts_command(sub)
    add_bench_command(sub)
    return parser


def _say(line: str) -> None:
    """Print ``line`` to stderr as exactly one line."""
    line = re.sub(r"\s*\n\s*", " ", line.strip())
    print(line if len(line) <= 2000 else line[:1997] + "...", file=sys.stderr, flush=True)


def _dispatch(args: argparse.Namespace) -> int:
    if isinstance(getattr(args, "device", None), str):  # every command's --device, before any work
        check_device(args.device)
    handler = args.handler if hasattr(args, "handler") else {
        "distill": _run_distill, "evaluate": _run_evaluate, "show": _run_show}[args.command]
    return handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status.

    0: done. 2: a bad argument or file, a refused run folder, a diverged run (one line on stderr, naming
    what is wrong and what was expected). 1: an unexpected internal error (one line; ``--debug`` shows
    the traceback). 128 + N: stopped by signal N after a whole step (the checkpoint holds it).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [token for token in argv if token != "--debug"]
    prog = "augdistill"
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        prog = f"augdistill {args.command}"
        with warnings.catch_warnings():
            if not debug:  # a library's warning is one line too
                warnings.showwarning = lambda message, category, *_: _say(f"{prog}: {category.__name__}: {message}")
            return _dispatch(args)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except RunInterrupted as e:
        _say(f"{prog}: {e}")
        return 128 + e.signum
    except AugdistillError as e:
        if debug:
            traceback.print_exc()
        _say(f"{getattr(e, 'prog', prog)}: error: {e}")
        return 2
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - the one place unexpected errors become one line
        if debug:
            raise
        from augdistill.runs.atomic import reason
        if isinstance(e, MemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            _say(f"{prog}: error: out of memory ({reason(e)}); choose a smaller --ipc, --real-per-class, --width or "
                 "--inner-steps")
            return 2
        _say(f"{prog}: internal error: {reason(e)}; run with --debug for the traceback")
        return 1


if __name__ == "__main__":
    sys.exit(main())
