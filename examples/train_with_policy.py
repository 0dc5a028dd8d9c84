"""Train a classifier on the real training set with a policy JSON, in a plain PyTorch loop.

The policy is an ``nn.Module`` applied to each batch (on whatever device the batch lives on);
its parameters are frozen here. Model selection (best epoch) uses the validation split only; the
test split is touched once per seed, for the final number.

    python examples/train_with_policy.py policies/dsa.json                  # digits, 3 seeds, ~1 min on CPU
    python examples/train_with_policy.py --no-policy                        # the same without augmentation
    python examples/train_with_policy.py policies/dsa.json --dataset fashion-mnist --epochs 5 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from augdistill.augment import Policy, identity_policy, load_policy
from augdistill.data import DATASET_NAMES, Split, load_dataset
from augdistill.models import build_model


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``split``."""
    model.eval()
    correct = sum(int((model(split.x[i:i + batch_size]).argmax(1) == split.y[i:i + batch_size]).sum())
                  for i in range(0, len(split), batch_size))
    return correct / len(split)


def train_one(ds, policy: Policy, seed: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Train one network; return its best validation accuracy and the test accuracy at that epoch."""
    torch.manual_seed(seed)
    g = torch.Generator(device=device).manual_seed(seed)
    model = build_model(args.model, ds.info.image_shape, ds.info.num_classes, width=args.width,
                        mean=ds.info.mean, std=ds.info.std).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = -(-len(ds.train) // args.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * steps_per_epoch)
    best_val, best_state = -1.0, None
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(ds.train), generator=g, device=device)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            y = ds.train.y[idx]
            x = policy(ds.train.x[idx], generator=g, labels=y)  # where it lives; a per-class policy reads y
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val = accuracy(model, ds.val)
        if val >= best_val:  # ties: prefer the later (longer-trained) epoch
            best_val, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return {"seed": seed, "val_accuracy": best_val, "test_accuracy": accuracy(model, ds.test)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", nargs="?", help="policy JSON file (e.g. policies/dsa.json)")
    parser.add_argument("--no-policy", action="store_true", help="train without augmentation")
    parser.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--model", default="convnet", choices=["convnet", "lenet", "mlp"])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write results as JSON to this path ('-' for stdout)")
    args = parser.parse_args(argv)
    if (args.policy is None) == (not args.no_policy):
        parser.error("give a policy JSON path or --no-policy (not both)")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # small convs: one thread is fastest and polite on shared machines
    policy = identity_policy() if args.no_policy else load_policy(args.policy)
    policy = policy.to(device).requires_grad_(False).train()
    ds = load_dataset(args.dataset, args.data_root).to(device)

    start = time.perf_counter()
    runs = [train_one(ds, policy, seed, args, device) for seed in args.seeds]
    tests = [r["test_accuracy"] for r in runs]
    mean, std = statistics.mean(tests), statistics.stdev(tests) if len(tests) > 1 else 0.0
    label = "no policy" if args.no_policy else args.policy
    print(f"{args.dataset} | {label} | {args.model} | {args.epochs} epochs | seeds {args.seeds}")
    for r in runs:
        print(f"  seed {r['seed']}: best val {r['val_accuracy']:.4f}  test {r['test_accuracy']:.4f}")
    print(f"test accuracy {100 * mean:.2f} ± {100 * std:.2f} %  ({time.perf_counter() - start:.0f} s)")
    if args.json:
        record = {"dataset": args.dataset, "policy": label, "model": args.model, "epochs": args.epochs,
                  "runs": runs, "test_accuracy_mean": mean, "test_accuracy_std": std}
        text = json.dumps(record, indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")


if __name__ == "__main__":
    main()
