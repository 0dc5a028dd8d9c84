"""Standard-protocol evaluation of a run with DSA's own sampling at evaluation time: one augmentation op
(sub-policy) per *batch*, fresh parameters per image (DSA's ``aug_mode 'S'`` without a seed), where
``augdistill evaluate --aug dsa`` draws one op per image. It answers whether our evaluation is harsher than
the papers' (README, 1 image per class).

    python examples/evaluate_batch_sampling.py runs/fm-dm1 --aug dsa --nets 5    # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from augdistill.augment.policy import AugmentParams
from augdistill.distill.methods import with_method_defaults
from augdistill.runs.jobs import evaluation_policy, load_run_dataset
from augdistill.runs.layout import load_config, load_distilled
from augdistill.train.evaluate import StandardProtocol, standard_accuracies


def one_op_per_batch(policy: torch.nn.Module, generator: torch.Generator):  # noqa: ANN201 - a closure
    """``augment(x, labels=None)``: a fresh draw of ``policy`` for every image of ``x`` ``(B, C, H, W)`` except
    the op (sub-policy) choice, which the first image's draw makes for the whole batch."""
    def augment(x: Tensor, labels: Tensor | None = None) -> Tensor:
        p = policy.sample(x.shape[0], generator=generator, device=x.device)
        if p.choice is not None:
            p = AugmentParams(p.u, p.gate, p.aux, p.choice[:1].expand_as(p.choice).contiguous())
        return policy(x, params=p, labels=labels)
    return augment


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--aug", default="dsa", help="dsa | run | a policy JSON file (as `evaluate --aug`)")
    parser.add_argument("--nets", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=300)
    a = parser.parse_args(argv)
    config = with_method_defaults(load_config(a.run_dir))
    s = load_distilled(a.run_dir / "synthetic.pt")
    data = load_run_dataset(config)
    policy = evaluation_policy(a.aug, a.run_dir, data.info)
    if policy is None:
        parser.error("--aug none has no op to choose per batch; use `augdistill evaluate --aug none`")
    policy = policy.train().requires_grad_(False)
    augment = one_op_per_batch(policy, torch.Generator().manual_seed(0))
    accs = standard_accuracies(s.images, s.targets, data.info, data.test, list(range(a.nets)),
                               StandardProtocol(epochs=a.epochs), augment)
    record = {"run": str(a.run_dir), "augmentation": a.aug, "sampling": "one op per batch", "epochs": a.epochs,
              "mean": float(accs.mean()), "std": float(accs.std()) if a.nets > 1 else 0.0, "accs": accs.tolist()}
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
