"""Table-driven fuzz of the command line: every bad invocation exits 2 with exactly one stderr line that
names what is wrong, never a traceback, and starts no work.

Each case is run in-process through ``augdistill.cli.main``; cases that spoil a run folder get a fresh
copy of one finished run.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch

NEW = "{tmp}/new"  # an --out that does not exist yet
SENTINEL_NAME = "pickle-code-ran"


class _Evil:
    """Unpickling this runs code that creates ``sentinel``; a safe reader never does."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return exec, (f"open({str(self.sentinel)!r}, 'w').write('pwned')",)


def _edit_pt(name: str, edit: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    """Spoil ``run/name`` (a torch file) with ``edit(raw)``, which changes ``raw`` in place."""
    def spoil(run: Path, tmp: Path) -> None:
        raw = torch.load(run / name, weights_only=True)
        edit(raw)
        torch.save(raw, run / name)
    return spoil


def _write(name: str, content: bytes | str) -> Callable[[Path, Path], None]:
    def spoil(run: Path, tmp: Path) -> None:
        target = run / name if not name.startswith("/") else tmp / name[1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return spoil


def _edit_json(name: str, edit: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def spoil(run: Path, tmp: Path) -> None:
        raw = json.loads((run / name).read_text())
        replaced = edit(raw)
        (run / name).write_text(json.dumps(raw if replaced is None else replaced))
    return spoil


def _evil(name: str) -> Callable[[Path, Path], None]:
    def spoil(run: Path, tmp: Path) -> None:
        torch.save({"iteration": _Evil(tmp / SENTINEL_NAME)}, run / name)
    return spoil


def _idx(dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def _mnist_root(files: dict[str, bytes | None]) -> Callable[[Path, Path], None]:
    """``tmp/mnist/MNIST/raw`` holding valid small IDX files, with ``files`` replacing (``None``: removing)
    some of them."""
    def spoil(run: Path, tmp: Path) -> None:
        raw = tmp / "mnist" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        valid = {"train-images-idx3-ubyte": _idx((20, 28, 28), bytes(20 * 784)),
                 "train-labels-idx1-ubyte": _idx((20,), bytes(i % 10 for i in range(20))),
                 "t10k-images-idx3-ubyte": _idx((10, 28, 28), bytes(10 * 784)),
                 "t10k-labels-idx1-ubyte": _idx((10,), bytes(range(10)))}
        for name, content in {**valid, **files}.items():
            if content is not None:
                (raw / name).write_bytes(content)
    return spoil


def _cifar_root(batch: object) -> Callable[[Path, Path], None]:
    def spoil(run: Path, tmp: Path) -> None:
        folder = tmp / "cifar" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / name).write_bytes(pickle.dumps(batch))
    return spoil


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _policy(content: str) -> Callable[[Path, Path], None]:
    return _write("/policy.json", content)


def _deep_config(raw: dict) -> dict:
    raw["synthetic"]["ipc"] = json.loads(_deep_json(10))
    return raw


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str
    spoil: Callable[[Path, Path], None] | None = None


def _distill(*flags: str) -> tuple[str, ...]:
    return ("distill", "--out", NEW, "--iterations", "2", "--final-nets", "0", *flags)


def _history_of(raw: dict, history: list) -> None:
    raw["history"] = history


CASES = [
    # -- arguments: type, range, finiteness, contradictions (distill) --------------------------------
    Case("seed-float", _distill("--seed", "1e20"), "argument --seed: invalid int value: '1e20' (expected an integer)"),
    Case("seed-huge", _distill("--seed", "100000000000000000000"), "--seed must be <= 4294967295"),
    Case("seed-negative", _distill("--seed", "-1"), "--seed must be >= 0, got -1"),
    Case("ipc-huge", _distill("--ipc", "10000000"), "--ipc must be <= 10000"),
    Case("ipc-zero", _distill("--ipc", "0"), "--ipc must be >= 1, got 0"),
    Case("ipc-negative", _distill("--ipc", "-3"), "--ipc must be >= 1, got -3"),
    Case("ipc-more-than-data", _distill("--ipc", "500"), "needs 500 training images of every class"),
    Case("lr-cap-inf", _distill("--lr-cap", "inf"), "--lr-cap must be a finite number, got inf"),
    Case("lr-cap-nan", _distill("--lr-cap", "nan"), "--lr-cap must be a finite number, got nan"),
    Case("lr-init-above-cap", _distill("--lr-init", "2", "--lr-cap", "1"), "need 0 < --lr-init < --lr-cap"),
    Case("width-zero", _distill("--width", "0"), "--width must be >= 1, got 0"),
    Case("width-negative", _distill("--width", "-4"), "--width must be >= 1, got -4"),
    Case("width-huge", _distill("--width", "1000000"), "--width must be <= 4096"),
    Case("network-beyond-memory", _distill("--model", "convnet", "--width", "4096", "--inner-steps", "2000"),
         "need at least"),
    Case("depth-zero", _distill("--model", "convnet", "--depth", "0"), "--depth must be >= 1"),
    Case("device-banana", _distill("--device", "banana"), "--device 'banana' is not a device"),
    Case("device-cpu-index", _distill("--device", "cpu:3"), "one cpu device"),
    Case("ops-empty", _distill("--policy", "learn", "--ops", ""), "--policy learn needs at least one op"),
    Case("ops-unknown", _distill("--policy", "learn", "--ops", "warp"), "warp"),
    Case("policy-learn-unknown", _distill("--policy", "learn", "--policy-learn", "gates"),
         "--policy-learn must name some of probabilities, magnitudes, weights"),
    Case("policy-learn-nothing-there", _distill("--policy", "learn", "--policy-learn", "weights"),
         "--policy-learn weights: this policy has nothing of that kind to learn"),
    Case("policy-every-zero", _distill("--policy", "learn", "--policy-every", "0"), "--policy-every must be >= 1, got 0"),
    Case("per-class-fixed", _distill("--policy", "fixed", "--policy-init", "policies/dsa.json", "--policy-per-class"),
         "--policy-per-class learns one range per op and class; it needs --policy learn, got --policy fixed"),
    Case("adversarial-fixed", _distill("--policy", "fixed", "--policy-init", "policies/dsa.json",
                                       "--policy-adversarial", "0.1"),
         "--policy-adversarial 0.1 trains the policy as an adversary; it needs --policy learn, got --policy fixed"),
    Case("adversarial-wang", _distill("--policy", "learn", "--policy-adversarial", "0.1"),
         "--policy-adversarial makes the policy the adversary of a matching loss; --method wang has none"),
    Case("adversarial-negative", _distill("--policy", "learn", "--method", "dm", "--policy-adversarial", "-1"),
         "--policy-adversarial must be >= 0, got -1.0"),
    Case("lr-images-negative", _distill("--lr-images", "-0.01"), "--lr-images must be > 0, got -0.01"),
    Case("lr-images-huge", _distill("--lr-images", "1e300"), "--lr-images must be <= 1000.0"),
    Case("grad-clip-negative", _distill("--grad-clip", "-1"), "--grad-clip must be >= 0, got -1.0"),
    Case("grad-clip-nan", _distill("--grad-clip", "nan"), "--grad-clip must be a finite number, got nan"),
    Case("eval-every-negative", _distill("--eval-every", "-1"), "--eval-every must be >= 0, got -1"),
    Case("eval-nets-zero", _distill("--eval-nets", "0"), "--eval-nets must be >= 1"),
    Case("final-nets-negative", _distill("--final-nets", "-1"), "--final-nets must be >= 0, got -1"),
    Case("time-budget-negative", _distill("--time-budget", "-1"), "--time-budget must be >= 0, got -1.0"),
    Case("time-budget-nan", _distill("--time-budget", "nan"), "--time-budget must be a finite number, got nan"),
    Case("checkpoint-every-zero", _distill("--checkpoint-every", "0"), "--checkpoint-every must be >= 1"),
    Case("inner-steps-float", _distill("--inner-steps", "1e7"), "argument --inner-steps: invalid int value"),
    Case("inner-steps-huge", _distill("--inner-steps", "10000000"), "--inner-steps must be <= 10000"),
    Case("inner-work-huge", _distill("--inner-steps", "1000", "--inner-epochs", "100"),
         "--inner-steps x --inner-epochs must be <= 10000"),
    Case("momentum-one", _distill("--momentum", "1"), "--momentum must be < 1"),
    Case("momentum-negative", _distill("--momentum", "-0.5"), "--momentum must be >= 0"),
    Case("sgd-momentum-nan", _distill("--sgd-momentum", "nan"), "--sgd-momentum must be a finite number"),
    Case("policy-none-with-init", _distill("--policy", "none", "--policy-init", "policies/dsa.json"),
         "--policy none contradicts --policy-init policies/dsa.json"),
    Case("policy-fixed-without-init", _distill("--policy", "fixed"), "--policy fixed needs --policy-init"),
    Case("policy-init-missing", _distill("--policy", "fixed", "--policy-init", "/no/such/policy.json"),
         "/no/such/policy.json"),
    Case("iterations-negative", _distill("--iterations", "-1"), "--iterations must be >= 0, got -1"),
    Case("iterations-float", ("distill", "--out", NEW, "--iterations", "1e9"), "invalid int value: '1e9'"),
    Case("iterations-huge", ("distill", "--out", NEW, "--iterations", "100000000000"), "--iterations must be <="),
    Case("num-inits-zero", _distill("--num-inits", "0"), "--num-inits must be >= 1"),
    Case("real-per-class-zero", _distill("--real-per-class", "0"), "--real-per-class must be >= 1"),
    Case("dm-easy-fraction-zero", _distill("--method", "dm", "--dm-easy-fraction", "0"),
         "--dm-easy-fraction must be > 0, got 0.0"),
    Case("dm-easy-fraction-above-one", _distill("--method", "dm", "--dm-easy-fraction", "1.5"),
         "--dm-easy-fraction must be <= 1, got 1.5"),
    Case("aug-copies-zero", _distill("--aug-copies", "0"), "--aug-copies must be >= 1"),
    Case("width-weight-negative", _distill("--width-weight", "-1"), "--width-weight must be >= 0"),
    Case("policy-lr-nan", _distill("--policy-lr", "nan"), "--policy-lr must be a finite number"),
    Case("val-epochs-zero", _distill("--val-epochs", "0"), "--val-epochs must be >= 1"),
    Case("batch-per-class-mismatch", _distill("--batch-per-class", "3"), "multiple of the per-step batch"),
    Case("dataset-unknown", _distill("--dataset", "imagenet"), "unknown dataset 'imagenet'"),
    Case("data-root-missing", _distill("--dataset", "mnist", "--data-root", "/no/such/folder"),
         "/no/such/folder does not exist"),
    Case("method-unknown", _distill("--method", "banana"), "unknown method 'banana'"),
    Case("param-unknown", _distill("--param", "banana"), "--param"),
    Case("model-unknown", _distill("--model", "banana"), "unknown model 'banana'"),
    Case("norm-unknown", _distill("--model", "convnet", "--norm", "banana"), "unknown norm 'banana'"),
    Case("first-padding-negative", _distill("--first-padding", "-1"), "--first-padding must be >= 0, got -1"),
    Case("first-padding-mlp", _distill("--model", "mlp", "--first-padding", "3"),
         "--first-padding pads the first convolution of a convnet; model 'mlp' has none"),
    Case("syn-init-choice", _distill("--syn-init", "banana"), "argument --syn-init: invalid choice"),
    Case("optimizer-choice", _distill("--optimizer", "rmsprop"), "argument --optimizer: invalid choice"),
    Case("flag-unknown", _distill("--bogus"), "unrecognized arguments: --bogus"),
    Case("flag-without-value", ("distill", "--out", NEW, "--ipc"), "argument --ipc: expected one argument"),
    Case("no-command", (), "the following arguments are required: command"),
    Case("command-unknown", ("banana",), "argument command: invalid choice: 'banana'"),
    # -- --out and run folders -----------------------------------------------------------------------
    Case("out-is-a-file", ("distill", "--out", "{tmp}/file", "--iterations", "1"), "is a file; expected a run folder",
         _write("/file", "x")),
    Case("out-under-a-file", ("distill", "--out", "{tmp}/file/run", "--iterations", "1"), "lies under",
         _write("/file", "x")),
    Case("out-unrelated-folder", ("distill", "--out", "{tmp}/mine", "--iterations", "1"),
         "is a non-empty folder that is not an augdistill run (it holds notes.txt)", _write("/mine/notes.txt", "keep")),
    Case("out-holds-a-run", ("distill", "--out", "{run}", "--iterations", "1"), "already holds a run; pass --resume"),
    Case("resume-missing", ("distill", "--out", NEW, "--resume"), "does not exist; start the run without --resume"),
    Case("resume-unrelated", ("distill", "--out", "{tmp}/mine", "--resume"), "is not an augdistill run",
         _write("/mine/notes.txt", "keep")),
    Case("resume-other-ipc", ("distill", "--out", "{run}", "--resume", "--ipc", "2"),
         "--ipc=2 (synthetic.ipc is 1 in the run)"),
    Case("resume-other-dataset-and-seed", ("distill", "--out", "{run}", "--resume", "--dataset", "digits-rot",
                                           "--seed", "3"),
         "--dataset=digits-rot (data.name is digits in the run); --seed=3"),
    Case("resume-other-eval-every", ("distill", "--out", "{run}", "--resume", "--eval-every", "7"),
         "--eval-every=7 (the run has 2)"),
    Case("resume-budget-below-checkpoint", ("distill", "--out", "{run}", "--resume", "--iterations", "2"),
         "field 'iteration': int 4; expected at most the run's budget of 2 iterations"),
    Case("resume-results-without-checkpoint", ("distill", "--out", "{run}", "--resume"), "but no checkpoint.pt",
         lambda run, tmp: (run / "checkpoint.pt").unlink()),
    Case("marker-newer-version", ("distill", "--out", "{run}", "--resume"), "written by a newer augdistill",
         _edit_json("augdistill-run.json", lambda m: m.update(format_version=99))),
    Case("marker-garbage", ("evaluate", "{run}"), "augdistill-run.json is not valid JSON",
         _write("augdistill-run.json", "{oops")),
    # -- run files: checkpoint.pt ---------------------------------------------------------------------
    Case("checkpoint-empty", ("distill", "--out", "{run}", "--resume"), "checkpoint.pt is empty (0 bytes",
         _write("checkpoint.pt", b"")),
    Case("checkpoint-garbage", ("distill", "--out", "{run}", "--resume"), "is corrupted or not a torch file",
         _write("checkpoint.pt", b"not a checkpoint")),
    Case("checkpoint-pickle", ("distill", "--out", "{run}", "--resume"), "was refused: it asks to run or build",
         _evil("checkpoint.pt")),
    Case("checkpoint-iteration-negative", ("distill", "--out", "{run}", "--resume"),
         "field 'iteration': int -50; expected an integer in [0, ",
         _edit_pt("checkpoint.pt", lambda r: r.update(iteration=-50))),
    Case("checkpoint-iteration-beyond", ("distill", "--out", "{run}", "--resume"), "at most the run's budget of 4",
         _edit_pt("checkpoint.pt", lambda r: r.update(iteration=10**6))),
    Case("checkpoint-nan", ("distill", "--out", "{run}", "--resume"), "holding nan",
         _edit_pt("checkpoint.pt", lambda r: r["synthetic"]["images"].fill_(float("nan")))),
    Case("checkpoint-history-duplicated", ("distill", "--out", "{run}", "--resume"),
         "steps are recorded once each", _edit_pt("checkpoint.pt", lambda r: r.update(history=r["history"] * 2))),
    Case("checkpoint-missing-field", ("distill", "--out", "{run}", "--resume"), "missing fields ['generators']",
         _edit_pt("checkpoint.pt", lambda r: r.pop("generators"))),
    Case("checkpoint-wrong-shape", ("distill", "--out", "{run}", "--resume"),
         "field 'synthetic.images': a float32 tensor (3, 1, 8, 8); expected a float32 tensor (10, 1, 8, 8)",
         _edit_pt("checkpoint.pt", lambda r: r["synthetic"].update(images=torch.rand(3, 1, 8, 8)))),
    Case("checkpoint-not-a-dict", ("distill", "--out", "{run}", "--resume"), "expected a dict of fields, found list",
         lambda run, tmp: torch.save([1, 2], run / "checkpoint.pt")),
    Case("checkpoint-is-a-folder", ("distill", "--out", "{run}", "--resume"), "checkpoint.pt is not a file",
         lambda run, tmp: ((run / "checkpoint.pt").unlink(), (run / "checkpoint.pt").mkdir())),
    Case("checkpoint-optimizer-lr", ("distill", "--out", "{run}", "--resume"), "optimizer.param_groups[0]",
         _edit_pt("checkpoint.pt", lambda r: r["optimizer"]["param_groups"][0].update(lr=-5.0))),
    # -- run files: config.json, metrics.json -------------------------------------------------------
    Case("config-list", ("evaluate", "{run}"), "config must be an object of sections", _write("config.json", "[]")),
    Case("config-empty", ("evaluate", "{run}"), "config.json is empty", _write("config.json", "")),
    Case("config-wrong-type", ("evaluate", "{run}"), "--ipc must be an integer, got 'two'",
         _edit_json("config.json", lambda c: c["synthetic"].update(ipc="two"))),
    Case("config-huge-number", ("evaluate", "{run}"), "--ipc must be <= 10000",
         _edit_json("config.json", lambda c: c["synthetic"].update(ipc=10**400))),
    Case("config-nan", ("evaluate", "{run}"), "--lr-cap must be a finite number",
         _edit_json("config.json", lambda c: c["method"].update(lr_cap=float("nan")))),
    Case("config-deep", ("evaluate", "{run}"), "must be an integer", _edit_json("config.json", _deep_config)),
    Case("config-deeper-than-python", ("evaluate", "{run}"), "nested deeper than",
         _write("config.json", _deep_json(100_000))),
    Case("config-unknown-field", ("evaluate", "{run}"), "config.outer: unknown fields ['speed']",
         _edit_json("config.json", lambda c: c["outer"].update(speed=3))),
    Case("config-not-utf8", ("evaluate", "{run}"), "cannot be read as JSON", _write("config.json", b"\xff\xfe{")),
    Case("metrics-list", ("show", "{run}"), "metrics.json: field '<top>'", _write("metrics.json", "[]")),
    Case("metrics-history-wrong", ("show", "{run}"), "field 'history[0].iteration'",
         _edit_json("metrics.json", lambda m: m["history"][0].update(iteration="one"))),
    Case("metrics-nan", ("show", "{run}"), "finite number",
         _write("metrics.json", '{"history": [{"iteration": 1, "loss": NaN}]}')),
    # -- run files: synthetic.pt ----------------------------------------------------------------------
    Case("synthetic-empty", ("evaluate", "{run}"), "synthetic.pt is empty (0 bytes", _write("synthetic.pt", b"")),
    Case("synthetic-garbage", ("evaluate", "{run}"), "synthetic set", _write("synthetic.pt", b"\x00garbage")),
    Case("synthetic-pickle", ("evaluate", "{run}"), "was refused", _evil("synthetic.pt")),
    Case("synthetic-nan", ("evaluate", "{run}"), "field 'images': a float32 tensor (10, 1, 8, 8) holding nan",
         _edit_pt("synthetic.pt", lambda r: r["images"].view(-1)[5].fill_(float("nan")))),
    Case("synthetic-0-255", ("evaluate", "{run}"), "expected values in [-32.0, 33.0]",
         _edit_pt("synthetic.pt", lambda r: r["images"].mul_(255))),
    Case("synthetic-label-count", ("evaluate", "{run}"), "field 'labels': an int64 tensor (7,); expected shape (10)",
         _edit_pt("synthetic.pt", lambda r: r.update(labels=r["labels"][:7]))),
    Case("synthetic-label-range", ("evaluate", "{run}"), "field 'labels'",
         _edit_pt("synthetic.pt", lambda r: r["labels"].__setitem__(0, 200))),
    Case("synthetic-lrs-inf", ("evaluate", "{run}"), "field 'lrs'",
         _edit_pt("synthetic.pt", lambda r: r["lrs"].fill_(float("inf")))),
    Case("synthetic-lrs-negative", ("evaluate", "{run}"), "field 'lrs'",
         _edit_pt("synthetic.pt", lambda r: r["lrs"].fill_(-0.5))),
    Case("synthetic-other-run", ("evaluate", "{run}"), "the files are from different runs",
         _edit_pt("synthetic.pt", lambda r: r.update(ipc=2))),
    Case("synthetic-float-labels", ("evaluate", "{run}"), "expected an int tensor",
         _edit_pt("synthetic.pt", lambda r: r.update(labels=r["labels"].float()))),
    # -- evaluate / show / policy arguments ---------------------------------------------------------
    Case("evaluate-nets-float", ("evaluate", "{run}", "--nets", "1e8"), "argument --nets: invalid int value"),
    Case("evaluate-nets-huge", ("evaluate", "{run}", "--nets", "100000000"), "--nets must be <= 1000"),
    Case("evaluate-nets-zero", ("evaluate", "{run}", "--nets", "0"), "--nets must be >= 1, got 0"),
    Case("evaluate-protocol", ("evaluate", "{run}", "--protocol", "banana"), "--protocol must be one of replay"),
    Case("evaluate-epochs-zero", ("evaluate", "{run}", "--protocol", "standard", "--epochs", "0"),
         "--epochs must be >= 1"),
    Case("evaluate-epochs-with-replay", ("evaluate", "{run}", "--epochs", "5"),
         "--epochs, --aug, --batch-size, --cutmix and"),
    Case("evaluate-cutmix-with-replay", ("evaluate", "{run}", "--cutmix", "0.5"),
         "--epochs, --aug, --batch-size, --cutmix and"),
    Case("evaluate-cutmix-above-1", ("evaluate", "{run}", "--protocol", "standard", "--cutmix", "1.5"),
         "--cutmix must be <= 1"),
    Case("evaluate-cutmix-nan", ("evaluate", "{run}", "--protocol", "standard", "--cutmix", "nan"), "--cutmix"),
    Case("evaluate-seed-negative", ("evaluate", "{run}", "--seed", "-1"), "--seed must be >= 0"),
    Case("evaluate-first-padding-with-replay", ("evaluate", "{run}", "--first-padding", "3"),
         "--cutmix and --first-padding apply"),
    Case("evaluate-first-padding-huge", ("evaluate", "{run}", "--protocol", "standard", "--first-padding", "1000"),
         "--first-padding must be <= 64"),
    Case("evaluate-batch-size-zero", ("evaluate", "{run}", "--protocol", "standard", "--batch-size", "0"),
         "--batch-size must be >= 1"),
    Case("evaluate-aug-unknown", ("evaluate", "{run}", "--protocol", "standard", "--aug", "banana"),
         "--aug must be none, run, dsa or a policy JSON file"),
    Case("evaluate-aug-run-without-policy", ("evaluate", "{run}", "--protocol", "standard", "--aug", "run"),
         "policy.json does not exist"),
    Case("evaluate-device", ("evaluate", "{run}", "--device", "banana"), "--device 'banana' is not a device"),
    Case("evaluate-missing", ("evaluate", "/no/such/run"), "run directory /no/such/run does not exist"),
    Case("evaluate-a-file", ("evaluate", "{tmp}/file"), "is not a folder", _write("/file", "x")),
    Case("evaluate-not-a-run", ("evaluate", "{tmp}/mine"), "config.json does not exist",
         _write("/mine/notes.txt", "keep")),
    Case("show-missing", ("show", "/no/such/run"), "does not exist"),
    Case("policy-plot-without-policy", ("policy", "plot", "{run}"), "policy.json"),
    # -- policy files given on the command line (their schema is the augment package's) ------------
    Case("policy-file-list", ("policy", "show", "{tmp}/policy.json"), "policy.json", _policy("[]")),
    Case("policy-file-huge-number", ("policy", "show", "{tmp}/policy.json"), "policy.json",
         _policy('{"version": 1, "ops": [{"name": "rotate", "probability": 1' + "0" * 400 + "}]}")),
    Case("policy-file-deep", ("distill", "--out", NEW, "--policy", "fixed", "--policy-init", "{tmp}/policy.json"),
         "policy.json", _policy(_deep_json(100_000))),
    Case("policy-file-empty", ("evaluate", "{run}", "--protocol", "standard", "--aug", "{tmp}/policy.json"),
         "policy.json", _policy("")),
    # -- data files (their readers are the data package's) ------------------------------------------
    Case("data-idx-empty", _distill("--dataset", "mnist", "--data-root", "{tmp}/mnist"), "train-images",
         _mnist_root({"train-images-idx3-ubyte": b""})),
    Case("data-idx-ndim-1", _distill("--dataset", "mnist", "--data-root", "{tmp}/mnist"), "train-images",
         _mnist_root({"train-images-idx3-ubyte": _idx((20,), bytes(20))})),
    Case("data-idx-zero-images", _distill("--dataset", "mnist", "--data-root", "{tmp}/mnist"), "t10k",
         _mnist_root({"t10k-images-idx3-ubyte": _idx((0, 28, 28), b""), "t10k-labels-idx1-ubyte": _idx((0,), b"")})),
    Case("data-idx-bad-deflate", _distill("--dataset", "mnist", "--data-root", "{tmp}/mnist"), "train-labels",
         _mnist_root({"train-labels-idx1-ubyte": None,
                      "train-labels-idx1-ubyte.gz": gzip.compress(b"x" * 100)[:12] + b"\xff" * 40})),
    Case("data-cifar-wrong-type", _distill("--dataset", "cifar10", "--data-root", "{tmp}/cifar"), "data_batch_1",
         _cifar_root([1, 2, 3])),
    Case("data-cifar-wrong-shape", _distill("--dataset", "cifar10", "--data-root", "{tmp}/cifar"), "data_batch_1",
         _cifar_root({b"data": bytes(10), b"labels": [0] * 10})),
]


def _run_files(run: Path) -> dict[str, int]:
    """Modification times of a run's files (not the lock file, whose holder's pid changes)."""
    return {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_invocation_exits_2_with_one_line(case, cli, run_copy, tmp_path):
    if case.spoil is not None:
        case.spoil(run_copy, tmp_path)
    before = _run_files(run_copy)
    argv = [a.replace("{run}", str(run_copy)).replace("{tmp}", str(tmp_path)) for a in case.argv]
    result = cli(*argv)
    lines = result.err.strip().splitlines()
    assert result.code == 2, result.err
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err and ": error: " in lines[0]
    assert case.expect in lines[0], lines[0]
    assert not (tmp_path / "new").exists()  # refused before any work: not even the folder
    assert not (tmp_path / SENTINEL_NAME).exists()  # no pickled code ran
    assert _run_files(run_copy) == before  # nothing rewritten


def test_the_table_covers_at_least_sixty_invocations():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_unrelated_folder_is_left_untouched(cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own config"}')
    (mine / "metrics.json").write_text("[1, 2, 3]")
    assert cli("distill", "--out", mine, "--iterations", "1").code == 2
    assert sorted(os.listdir(mine)) == ["config.json", "metrics.json"]
    assert (mine / "config.json").read_text() == '{"my": "own config"}'


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(cli, monkeypatch, finished_run):
    import augdistill.runs.jobs as jobs

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero somewhere deep")
    monkeypatch.setattr(jobs, "evaluate_run", broken)
    result = cli("evaluate", finished_run)
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        "augdistill evaluate: internal error: ZeroDivisionError: division by zero somewhere deep; "
        "run with --debug for the traceback"]
    with pytest.raises(ZeroDivisionError):
        cli("evaluate", finished_run, "--debug")


def test_running_out_of_memory_is_one_line(cli, monkeypatch, finished_run):
    import augdistill.runs.jobs as jobs

    def too_big(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 38654705664 bytes.")
    monkeypatch.setattr(jobs, "evaluate_run", too_big)
    result = cli("evaluate", finished_run)
    assert result.code == 2
    line, = result.err.strip().splitlines()
    assert line.startswith("augdistill evaluate: error: out of memory (RuntimeError: [enforce fail")


def test_full_disk_is_one_line_naming_the_file(cli, monkeypatch, tmp_path):
    import augdistill.runs.atomic as atomic

    def no_space(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 64 vs 0")
    monkeypatch.setattr(atomic.torch, "save", no_space)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    result = cli("distill", "--out", tmp_path / "run", "--iterations", "2", "--checkpoint-every", "1",
                 "--final-nets", "0")
    assert result.code == 2
    line, = result.err.strip().splitlines()[-1:]
    assert "cannot write" in line and "checkpoint.pt" in line and "the disk is full" in line


def test_help_exits_0(cli):
    assert cli("distill", "--help").code == 0
