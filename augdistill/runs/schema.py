"""Field checks for the run files: each refuses a value with one :class:`CheckpointError` that names the
file, the field, the value found and what was expected.

Example:
    >>> import torch
    >>> integer("run/synthetic.pt", "ipc", 3, low=1, high=10_000)
    3
    >>> tensor("run/synthetic.pt", "images", torch.tensor([0.5, float("nan")]), kind="float")
    Traceback (most recent call last):
    augdistill.errors.CheckpointError: run/synthetic.pt: field 'images': a float32 tensor (2,) holding nan at index 1; expected finite values
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from augdistill.config import MAX_LR, OuterConfig, SyntheticConfig
from augdistill.errors import CheckpointError

__all__ = ["fail", "integer", "number", "string", "mapping", "sequence", "tensor", "finite_tree", "describe",
           "synthetic_fields", "history", "metrics_fields", "checkpoint_fields", "policy_history", "PIXEL_MARGIN"]


def describe(value: Any) -> str:
    """A short description of ``value`` for an error message (tensors by dtype and shape)."""
    if isinstance(value, Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{'an' if dtype[0] in 'aeiou' else 'a'} {dtype} tensor {tuple(value.shape)}"
    return f"{type(value).__name__} {reprlib.repr(value)}"


def fail(path: str | Path, field: str, found: str, expected: str) -> CheckpointError:
    """The error for ``field`` of ``path``: ``found`` (a description) is not ``expected``."""
    return CheckpointError(f"{path}: field '{field}': {found}; expected {expected}")


def integer(path: str | Path, field: str, value: Any, *, low: int, high: int) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (bools and floats are refused)."""
    if isinstance(value, Tensor) and value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise fail(path, field, describe(value), f"an integer in [{low}, {high}]")
    if not low <= value <= high:
        raise fail(path, field, describe(value), f"an integer in [{low}, {high}]")
    return int(value)


def number(path: str | Path, field: str, value: Any, *, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite ``float`` in ``[low, high]``."""
    if isinstance(value, Tensor) and value.dim() == 0:
        value = value.item()
    expected = "a finite number" + ("" if (low, high) == (-math.inf, math.inf) else f" in [{low}, {high}]")
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise fail(path, field, describe(value), expected)
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not (math.isfinite(x) and low <= x <= high):
        raise fail(path, field, describe(value), expected)
    return x


def string(path: str | Path, field: str, value: Any, choices: Sequence[str] | None = None) -> str:
    """``value`` as a non-empty ``str`` (one of ``choices`` when given)."""
    if not isinstance(value, str) or not value or "\x00" in value or (choices is not None and value not in choices):
        raise fail(path, field, describe(value), "a name" if choices is None else f"one of {', '.join(choices)}")
    return value


def mapping(path: str | Path, field: str, value: Any) -> dict:
    """``value`` if it is a ``dict`` with string keys."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise fail(path, field, describe(value), "a mapping of names")
    return value


def sequence(path: str | Path, field: str, value: Any, *, max_len: int) -> list:
    """``value`` as a ``list`` (from a list or tuple) of at most ``max_len`` items."""
    if not isinstance(value, (list, tuple)) or len(value) > max_len:
        raise fail(path, field, describe(value), f"a list of at most {max_len} items")
    return list(value)


def tensor(path: str | Path, field: str, value: Any, *, kind: str, dim: int | None = None,
           shape: Sequence[int | None] | None = None, low: float | None = None, high: float | None = None) -> Tensor:
    """``value`` if it is a tensor of ``kind`` (``float``: finite floating point; ``int``: integer, not bool;
    ``byte``: uint8), with ``dim`` dimensions / ``shape`` (``None`` entries are free) and values in
    ``[low, high]``."""
    if not isinstance(value, Tensor) or value.is_sparse or value.device.type == "meta":
        raise fail(path, field, describe(value), f"a dense {kind} tensor")
    ok_kind = {"float": value.is_floating_point(), "int": not value.is_floating_point() and not value.is_complex()
               and value.dtype != torch.bool, "byte": value.dtype == torch.uint8}[kind]
    if not ok_kind:
        raise fail(path, field, describe(value), f"{'an' if kind == 'int' else 'a'} {kind} tensor")
    if dim is not None and value.dim() != dim:
        raise fail(path, field, describe(value), f"{dim} dimensions")
    if shape is not None and (value.dim() != len(shape) or any(s is not None and s != n for s, n in
                                                               zip(shape, value.shape))):
        wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise fail(path, field, describe(value), f"shape {wanted}")
    if value.numel() == 0:
        return value
    if kind == "float":
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            i = int(torch.nonzero(bad.flatten())[0])
            raise fail(path, field, f"{describe(value)} holding {float(value.flatten()[i])} at index {i}",
                       "finite values")
    if low is not None or high is not None:
        lo, hi = (float(v) for v in torch.aminmax(value.flatten().double()))
        if (low is not None and lo < low) or (high is not None and hi > high):
            raise fail(path, field, f"{describe(value)} with values in [{lo:.6g}, {hi:.6g}]",
                       f"values in [{low}, {high}]")
    return value


def finite_tree(path: str | Path, field: str, value: Any) -> None:
    """Refuse any non-finite float (tensor or number) anywhere in nested dicts / lists / tuples
    (``field``: the name of ``value``; ``""`` for a whole file)."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        name, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{name}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, Tensor) and node.is_complex():
            raise fail(path, name, describe(node), "a real tensor")
        elif isinstance(node, Tensor) and node.is_floating_point():
            tensor(path, name, node, kind="float")
        elif isinstance(node, float) and not math.isfinite(node):
            raise fail(path, name, describe(node), "a finite number")


# -- the run files ------------------------------------------------------------------------------------

#: Learned pixels drift outside [0, 1] (nothing clamps them while distilling: a DM set on Fashion-MNIST reached
#: [-1.8, 6.1], a latent set's decoders about [-1.1, 1.5]); a synthetic set whose values leave
#: [-PIXEL_MARGIN, 1 + PIXEL_MARGIN] is not a set of [0, 1] images (e.g. 0-255 pixels).
PIXEL_MARGIN = 32.0


def _high(cls: type, name: str) -> Any:
    return next(f.metadata["high"] for f in dataclasses.fields(cls) if f.name == name)


#: The configuration's bounds (see :mod:`augdistill.config`), which the files must respect too.
MAX_IPC, MAX_ITERATIONS = _high(SyntheticConfig, "ipc"), _high(OuterConfig, "iterations")


def synthetic_fields(path: str | Path, raw: dict[str, Any], latest_version: int) -> dict[str, Any]:
    """The checked fields of a loaded ``synthetic.pt`` (see :func:`augdistill.runs.layout.save_distilled`).

    Images are finite ``(N, C, H, W)`` floats within the pixel margin, labels ``(N,)`` class ids (below
    ``recipe["num_classes"]`` when recorded), soft labels ``(N, K)`` rows of probabilities, learned lrs
    finite and ``>= 0``, one per scheduled inner step, batches valid image indices.
    """
    integer(path, "format_version", raw["format_version"], low=1, high=latest_version)
    images = tensor(path, "images", raw["images"], kind="float", dim=4, low=-PIXEL_MARGIN, high=1 + PIXEL_MARGIN)
    n = images.shape[0]
    if images.numel() == 0:
        raise fail(path, "images", describe(images), "at least one non-empty image")
    recipe = mapping(path, "recipe", {} if raw.get("recipe") is None else raw["recipe"])
    finite_tree(path, "recipe", recipe)
    num_classes = recipe.get("num_classes")
    top = None
    if num_classes is not None:
        top = integer(path, "recipe.num_classes", num_classes, low=2, high=100_000) - 1
    labels = tensor(path, "labels", raw["labels"], kind="int", shape=(n,), low=0, high=top)
    soft = raw.get("soft_labels")
    if soft is not None:
        soft = tensor(path, "soft_labels", soft, kind="float", shape=(n, None), low=0, high=1)
        if soft.shape[1] < 2 or (top is not None and soft.shape[1] != top + 1):
            classes = "the number of classes" if top is None else top + 1
            raise fail(path, "soft_labels", describe(soft), f"(N, K) with K = {classes}")
        worst = float((soft.double().sum(dim=1) - 1).abs().max())
        if worst > 1e-3:
            raise fail(path, "soft_labels", f"{describe(soft)} whose rows sum to 1 +- {worst:.3g}",
                       "rows of class probabilities summing to 1")
    lrs, batches, epochs = raw["lrs"], raw["batches"], raw["epochs"]
    if (lrs is None) != (batches is None):
        raise fail(path, "lrs" if lrs is None else "batches", "None beside a non-None lrs/batches",
                   "both lrs and batches, or neither")
    if lrs is not None:
        batches = tensor(path, "batches", batches, kind="int", dim=2, low=0, high=n - 1)
        if batches.shape[0] < 1 or batches.shape[1] < 1:
            raise fail(path, "batches", describe(batches), "at least one step of at least one image")
        epochs = integer(path, "epochs", epochs, low=1, high=1000)
        lrs = tensor(path, "lrs", lrs, kind="float", shape=(batches.shape[0] * epochs,), low=0, high=MAX_LR)
    stored = mapping(path, "stored", {"images": images} if raw.get("stored") is None else raw["stored"])
    for name, value in stored.items():
        tensor(path, f"stored.{name}", value, kind="float")
    return {"images": images, "labels": labels, "soft_labels": soft, "lrs": lrs, "batches": batches,
            "epochs": epochs, "momentum": number(path, "momentum", raw["momentum"], low=0, high=1 - 1e-12),
            "dataset": string(path, "dataset", raw["dataset"]),
            "ipc": integer(path, "ipc", raw["ipc"], low=1, high=MAX_IPC),
            "method": string(path, "method", raw.get("method", "wang")),
            "param": string(path, "param", raw.get("param", "pixels")), "stored": dict(stored), "recipe": recipe}


def history(path: str | Path, field: str, value: Any, *, iteration: int | None = None) -> int:
    """Check a run's history; returns its last step.

    Entries with a ``loss`` are exactly steps ``1 .. iteration`` in order (``iteration``: the recorded
    iteration, or ``None`` to take the number of such entries), ``val_acc`` entries lie in ``[0, 1]`` at
    a step already taken, and every number is finite.
    """
    entries = sequence(path, field, value, max_len=4 * MAX_ITERATIONS)
    steps = 0
    for i, entry in enumerate(entries):
        name = f"{field}[{i}]"
        entry = mapping(path, name, entry)
        finite_tree(path, name, entry)
        it = integer(path, f"{name}.iteration", entry.get("iteration"), low=0, high=MAX_ITERATIONS)
        if "loss" in entry:
            number(path, f"{name}.loss", entry["loss"])
            if it != steps + 1:
                raise fail(path, f"{name}.iteration", f"step {it} after step {steps}",
                           f"step {steps + 1} (steps are recorded once each, in order)")
            steps = it
        if "val_acc" in entry:
            number(path, f"{name}.val_acc", entry["val_acc"], low=0, high=1)
            if it > steps:
                raise fail(path, f"{name}.iteration", f"validation at step {it} before step {it} was taken",
                           f"a step <= {steps}")
    if iteration is not None and steps != iteration:
        raise fail(path, field, f"a history of {steps} steps", f"{iteration} steps (the recorded iteration)")
    return steps


def metrics_fields(path: str | Path, raw: Any) -> dict[str, Any]:
    """A checked ``metrics.json``: its history, selected iteration and accuracies."""
    raw = mapping(path, "<top>", raw)
    finite_tree(path, "", raw)
    last = history(path, "history", raw.get("history", []))
    if "selected_iteration" in raw:
        integer(path, "selected_iteration", raw["selected_iteration"], low=0, high=last)
    if raw.get("selected_val_acc") is not None:
        number(path, "selected_val_acc", raw["selected_val_acc"], low=-1, high=1)
    if "ipc" in raw:
        integer(path, "ipc", raw["ipc"], low=1, high=MAX_IPC)
    if "test_replay" in raw:
        replay = mapping(path, "test_replay", raw["test_replay"])
        for key in ("mean", "std"):
            number(path, f"test_replay.{key}", replay.get(key), low=0, high=1)
        for i, acc in enumerate(sequence(path, "test_replay.accs", replay.get("accs"), max_len=1000)):
            number(path, f"test_replay.accs[{i}]", acc, low=0, high=1)
    return raw


def checkpoint_fields(path: str | Path, raw: dict[str, Any], *, budget: int, streams: Sequence[str]) -> int:
    """Check a loaded ``checkpoint.pt`` against the run's iteration ``budget`` and its generator ``streams``;
    returns its iteration. Shapes of the learned tensors are checked when they are loaded into the run."""
    it = raw["iteration"]
    if isinstance(it, int) and not isinstance(it, bool) and it > budget:
        raise fail(path, "iteration", f"int {it}", f"at most the run's budget of {budget} iterations (--iterations); "
                   f"pass --iterations >= {it} to continue it")
    it = integer(path, "iteration", it, low=0, high=budget)
    finite_tree(path, "", raw)
    history(path, "history", raw["history"], iteration=it)
    generators = mapping(path, "generators", raw["generators"])
    for name in streams:
        if name not in generators:
            raise fail(path, "generators", f"streams {sorted(generators)}", f"the streams {list(streams)}")
        tensor(path, f"generators.{name}", generators[name], kind="byte", dim=1)
    for key in ("synthetic", "method", "optimizer"):
        mapping(path, key, raw[key])
    best = mapping(path, "best", raw.get("best", {"val_acc": -1.0, "iteration": 0, "state": None}))
    acc = number(path, "best.val_acc", best.get("val_acc"), low=-1, high=1)
    integer(path, "best.iteration", best.get("iteration"), low=0, high=it)
    if (best.get("state") is None) != (acc < 0):
        raise fail(path, "best.state", describe(best.get("state")),
                   "a saved state exactly when a validation accuracy was recorded")
    if best.get("state") is not None:
        mapping(path, "best.state", best["state"])
    return it


def policy_history(path: str | Path, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of a (checked) history that record the policy, checked: ``policy_probabilities`` maps every
    op to a probability and ``policy_magnitudes`` some of them to a ``[low, high]`` range, the same ops each
    time (a missing ``policy_magnitudes`` is read as none)."""
    entries: list[dict[str, Any]] = []
    for i, entry in enumerate(history):
        if "policy_probabilities" not in entry and "policy_magnitudes" not in entry:
            continue
        name = f"history[{i}]"
        probabilities = mapping(path, f"{name}.policy_probabilities", entry.get("policy_probabilities"))
        magnitudes = mapping(path, f"{name}.policy_magnitudes", entry.get("policy_magnitudes", {}))
        for op, p in probabilities.items():
            number(path, f"{name}.policy_probabilities.{op}", p, low=0, high=1)
        for op, bounds in magnitudes.items():
            bounds = sequence(path, f"{name}.policy_magnitudes.{op}", bounds, max_len=2)
            if len(bounds) != 2 or op not in probabilities:
                raise fail(path, f"{name}.policy_magnitudes.{op}", describe(bounds),
                           "[low, high] of an op that has a probability")
            for b in bounds:
                number(path, f"{name}.policy_magnitudes.{op}", b)
        entry = {**entry, "policy_probabilities": probabilities, "policy_magnitudes": magnitudes}
        if entries and (probabilities.keys(), magnitudes.keys()) != (entries[0]["policy_probabilities"].keys(),
                                                                     entries[0]["policy_magnitudes"].keys()):
            raise fail(path, name, f"ops {sorted(probabilities)}",
                       f"the ops of the first policy entry, {sorted(entries[0]['policy_probabilities'])}")
        entries.append(entry)
    return entries
