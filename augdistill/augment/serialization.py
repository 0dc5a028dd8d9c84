"""Policy JSON: writing, strict validation and loading (schema version 1, see ``policies/README.md``).

Every float is written with Python's shortest round-trip ``repr`` and the learnable values are
``float64`` parameters, so ``load -> save`` reproduces each field exactly. Loading validates every
field and raises one :class:`~augdistill.errors.PolicyFormatError` naming the file, the field path
(e.g. ``ops[2].magnitude.low``), the value found and what was expected — for any input: unreadable
or oversized files, bytes that are not UTF-8, malformed JSON, ``NaN``/``Infinity``, numbers too
large for a float, nesting deeper than the schema allows, arrays longer than the limits below,
wrong types and out-of-range values.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import re
from itertools import accumulate
from pathlib import Path
from typing import Any, Mapping

import torch

from augdistill.augment.ops import OPS, OP_NAMES, AugmentOp, check_op, real_number
from augdistill.augment.class_ranges import ClassRangesPolicy
from augdistill.augment.policy import COMPOSITIONS, Policy
from augdistill.errors import PolicyFormatError

__all__ = ["SCHEMA", "SCHEMA_VERSION", "MAX_FILE_BYTES", "MAX_DEPTH", "MAX_OPS", "policy_to_dict",
           "policy_from_dict", "load_policy", "default_provenance"]

SCHEMA = "augdistill.policy"
SCHEMA_VERSION = 1

#: Largest policy file read (a 256-op policy with long provenance is ~60 KiB).
MAX_FILE_BYTES = 1 << 20
#: Deepest nesting of arrays/objects (the schema itself needs 4; free-form ``metrics`` get the rest).
MAX_DEPTH = 16
#: Most ops, weights and sub-policies a policy may hold.
MAX_OPS = 256
#: Most classes a per-class policy may hold.
MAX_CLASSES = 100_000
#: Largest ``image.size`` side, in pixels.
MAX_IMAGE_SIDE = 1 << 16

_TOP_KEYS = {"schema", "version", "composition", "ops", "weights", "sub_policies", "image", "gates", "provenance"}
_OP_KEYS = {"name", "probability", "magnitude", "symmetric"}
_MAG_KEYS = {"low", "high", "unit"}
_IMAGE_KEYS = {"value_range", "size"}
_GATE_KEYS = {"temperature", "hard"}
_PROV_KEYS = {"dataset", "method", "seed", "versions", "date", "metrics"}


def default_provenance() -> dict[str, Any]:
    """Provenance with library versions and the current UTC date filled in."""
    import kornia
    import augdistill
    return {"dataset": None, "method": None, "seed": None,
            "versions": {"augdistill": augdistill.__version__, "torch": torch.__version__,
                         "kornia": kornia.__version__},
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "metrics": {}}


@torch.no_grad()
def policy_to_dict(policy: Policy, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Serialise ``policy``; ``provenance`` overrides the stored one (missing fields get defaults)."""
    if provenance is None and policy.provenance is not None:
        prov = copy.deepcopy(policy.provenance)
    else:
        prov = default_provenance()
        prov.update(policy.provenance or {})
        prov.update(provenance or {})
    ops = []
    for op in policy.ops:
        bounds = op.range()
        magnitude = None if bounds is None else {
            "low": float(bounds[0]), "high": float(bounds[1]), "unit": op.spec.unit}
        ops.append({"name": op.name, "probability": float(op.prob()), "magnitude": magnitude,
                    "symmetric": op.symmetric})
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "composition": policy.composition,
        "ops": ops,
        # the weights in effect: an optimiser may carry a stored weight below 0, which selects like 0
        "weights": None if policy.weights is None else [max(float(w), 0.0) for w in policy.weights],
        "sub_policies": [list(g) for g in policy.groups] if policy.composition == "sub-policies" else None,
        "image": {"value_range": list(policy.value_range),
                  "size": None if policy.image_size is None else list(policy.image_size)},
        "gates": {"temperature": policy.temperature, "hard": policy.hard},
        "provenance": prov,
    }


@torch.no_grad()
def class_ranges_to_dict(policy: ClassRangesPolicy, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Serialise a per-class policy: the wrapped policy's dict, each op's ``magnitude`` the mean over the classes
    (what ``policy show`` and a class-blind reader see), plus ``class_ranges`` ``{"classes": [K names], "ranges": K
    rows of one ``[low, high]`` per op (``null`` for ops without magnitude)}``."""
    data = policy_to_dict(policy.policy, provenance)
    means = policy.magnitudes()
    for entry, label, op in zip(data["ops"], policy.op_labels(), policy.ops):
        if label in means:
            low, high = sorted(float(v) for v in means[label])
            entry["magnitude"].update(low=2 * op.spec.identity - high if op.symmetric else low, high=high)
    table = policy.table()
    rows = [[sorted((float(table[k, i, 0]), float(table[k, i, 1]))) if op.spec.has_magnitude else None
             for i, op in enumerate(policy.ops)] for k in range(policy.num_classes)]
    data["class_ranges"] = {"classes": list(policy.class_names), "ranges": rows}
    return data


def _check_class_ranges(c: _Checker, raw: Any, ops: list[dict[str, Any]]) -> tuple[list[str], list[list[list[float]]]]:
    """``class_ranges``: distinct class names, and per class one in-bounds ``[low, high]`` per op with magnitude."""
    entry = c.obj(raw, "class_ranges", {"classes", "ranges"})
    names: list[Any] = c.array(entry["classes"], "class_ranges.classes", max_len=MAX_CLASSES) or []
    for k, name in enumerate(names):
        c.typed(name, f"class_ranges.classes[{k}]", str, "a class name (string)")
    if not names or len(set(names)) != len(names):
        raise c.fail("class_ranges.classes", f"expected distinct class names, at least one, got {_show(names)}")
    rows: list[Any] = c.array(entry["ranges"], "class_ranges.ranges", max_len=MAX_CLASSES) or []
    if len(rows) != len(names):
        raise c.fail("class_ranges.ranges", f"expected one row per class ({len(names)}), got {len(rows)}")
    table = []
    for k, raw_row in enumerate(rows):
        field = f"class_ranges.ranges[{k}]"
        row: list[Any] = c.array(raw_row, field) or []
        if len(row) != len(ops):
            raise c.fail(field, f"expected one entry per op ({len(ops)}), got {len(row)}")
        cells = []
        for i, (cell, op) in enumerate(zip(row, ops)):
            spec = OPS[op["name"]]
            if not spec.has_magnitude:
                if cell is not None:
                    raise c.fail(f"{field}[{i}]",
                                 f"op {op['name']!r} has no magnitude; expected null, got {_show(cell)}")
                cells.append([spec.identity, spec.identity])
                continue
            pair: list[Any] = c.array(cell, f"{field}[{i}]") or []
            if len(pair) != 2:
                raise c.fail(f"{field}[{i}]", f"expected [low, high] in {spec.unit}, got {_show(cell)}")
            low, high = (c.number(v, f"{field}[{i}][{j}]") for j, v in enumerate(pair))
            problem = check_op(op["name"], op["probability"], low, high, op["symmetric"])
            if problem:
                raise c.fail(f"{field}[{i}]", problem.partition(": ")[2])
            cells.append([low, high])
        table.append(cells)
    return names, table


def _show(value: Any, limit: int = 60) -> str:
    """A short JSON-like rendering of ``value`` for error messages, bounded in depth and length.

    Example:
        >>> _show(10 ** 400), _show([[[[[1]]]]]), _show("x" * 100)[-6:]
        ('100000000000...(401 digits)', '[[[[...]]]]', 'xxx...')
    """
    def render(v: Any, depth: int) -> str:
        if isinstance(v, (dict, list)):
            if depth >= 4:
                return "..."
            items, size = [], 0
            for item in (v.items() if isinstance(v, dict) else v):
                text = (f"{render(item[0], 5)}: {render(item[1], depth + 1)}" if isinstance(v, dict)
                        else render(item, depth + 1))
                items.append(text)
                size += len(text) + 2
                if size > limit:
                    items.append("...")
                    break
            return ("{%s}" if isinstance(v, dict) else "[%s]") % ", ".join(items)
        if isinstance(v, bool) or v is None:
            return json.dumps(v)
        if isinstance(v, int):
            try:
                digits = str(v)
            except ValueError:  # beyond Python's int-to-str limit
                return f"an integer of about {int(v.bit_length() * math.log10(2)) + 1} digits"
            return digits if len(digits) <= 20 else f"{digits[:12]}...({len(digits.lstrip('-'))} digits)"
        if isinstance(v, str):
            return json.dumps(v[:limit])
        if isinstance(v, float):
            return repr(v)
        return type(v).__name__

    text = render(value, 0)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Checker:
    """Field-by-field validation that raises one error naming the source, field and value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, message: str) -> PolicyFormatError:
        return PolicyFormatError(f"{self.source}: field '{field}': {message}")

    def obj(self, value: Any, field: str, keys: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected an object with keys {sorted(keys)}, got {_show(value)}")
        missing, extra = keys - value.keys(), value.keys() - keys
        if missing:
            raise self.fail(field, f"missing field(s) {sorted(missing)}")
        if extra:
            raise self.fail(field, f"unknown field(s) {sorted(map(_show, extra))}; expected {sorted(keys)}")
        return value

    def number(self, value: Any, field: str) -> float:
        number = real_number(value) if isinstance(value, (int, float)) else None
        if number is None:
            raise self.fail(field, f"expected a finite number, got {_show(value)}")
        return number

    def typed(self, value: Any, field: str, kind: type | tuple[type, ...], what: str, nullable: bool = False) -> Any:
        if value is None and nullable:
            return None
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(field, f"expected {what}, got {_show(value)}")
        if not isinstance(value, kind):
            raise self.fail(field, f"expected {what}{' or null' if nullable else ''}, got {_show(value)}")
        return value

    def array(self, value: Any, field: str, nullable: bool = False, max_len: int = MAX_OPS) -> list[Any] | None:
        value = self.typed(value, field, list, "an array", nullable)
        if value is not None and len(value) > max_len:
            raise self.fail(field, f"array of {len(value)} items; expected at most {max_len}")
        return value

    def json_value(self, value: Any, field: str, depth: int = 0) -> None:
        """Free-form JSON (``metrics``): objects with string keys, arrays, strings, finite numbers, bools, null."""
        if depth > MAX_DEPTH:
            raise self.fail(field, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise self.fail(field, f"object key {_show(key)} is not a string")
                self.json_value(item, f"{field}.{key}", depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.json_value(item, f"{field}[{i}]", depth + 1)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.number(value, field)
        elif not isinstance(value, (str, bool, type(None))):
            raise self.fail(field, f"expected a JSON value, got {_show(value)}")


def _check_op(c: _Checker, raw: Any, field: str) -> dict[str, Any]:
    entry = c.obj(raw, field, _OP_KEYS)
    name = c.typed(entry["name"], f"{field}.name", str, "an op name (string)")
    if name not in OPS:
        raise c.fail(f"{field}.name", f"unknown op {_show(name)}; expected one of {', '.join(OP_NAMES)}")
    spec = OPS[name]
    probability = c.number(entry["probability"], f"{field}.probability")
    symmetric = c.typed(entry["symmetric"], f"{field}.symmetric", bool, "true or false")
    low = high = None
    if not spec.has_magnitude and entry["magnitude"] is not None:
        raise c.fail(f"{field}.magnitude", f"op {name!r} has no magnitude; expected null, got {_show(entry['magnitude'])}")
    if spec.has_magnitude:
        if entry["magnitude"] is None:
            raise c.fail(f"{field}.magnitude", f"op {name!r} needs {{low, high, unit}}, got null")
        mag = c.obj(entry["magnitude"], f"{field}.magnitude", _MAG_KEYS)
        low = c.number(mag["low"], f"{field}.magnitude.low")
        high = c.number(mag["high"], f"{field}.magnitude.high")
        if not isinstance(mag["unit"], str) or mag["unit"] != spec.unit:
            raise c.fail(f"{field}.magnitude.unit", f"op {name!r} is measured in {spec.unit!r}, got {_show(mag['unit'])}")
    problem = check_op(name, probability, low, high, symmetric)
    if problem:
        sub, _, message = problem.partition(": ")
        raise c.fail(f"{field}.{sub}", message)
    return {"name": name, "probability": probability, "low": low, "high": high, "symmetric": symmetric}


def policy_from_dict(data: Any, source: str = "<dict>") -> Policy | ClassRangesPolicy:
    """Validate a policy dict strictly and build the :class:`Policy` (a
    :class:`~augdistill.augment.class_ranges.ClassRangesPolicy` when it holds ``class_ranges``).

    Args:
        data: the parsed JSON.
        source: name used in error messages (the file path when loading a file).

    Raises:
        PolicyFormatError: naming ``source``, the field and the offending value.

    Example:
        >>> from augdistill.augment import build_policy
        >>> data = build_policy(["rotate"]).to_dict(provenance={"dataset": "digits"})
        >>> policy_from_dict(data).to_dict() == data
        True
        >>> data["ops"][0]["probability"] = 2.0
        >>> policy_from_dict(data)
        Traceback (most recent call last):
        ...
        augdistill.errors.PolicyFormatError: <dict>: field 'ops[0].probability': 2.0 is outside [0, 1]
    """
    c = _Checker(source)
    class_ranges = None
    if isinstance(data, dict) and "class_ranges" in data:
        data = dict(data)
        class_ranges = data.pop("class_ranges")
    top = c.obj(data, "<root>", _TOP_KEYS)
    if not isinstance(top["schema"], str) or top["schema"] != SCHEMA:
        raise c.fail("schema", f"expected {SCHEMA!r}, got {_show(top['schema'])}")
    if isinstance(top["version"], bool) or not isinstance(top["version"], int) or top["version"] != SCHEMA_VERSION:
        raise c.fail("version", f"expected schema version {SCHEMA_VERSION} (the one this library reads), "
                                f"got {_show(top['version'])}")
    composition = c.typed(top["composition"], "composition", str, "a string")
    if composition not in COMPOSITIONS:
        raise c.fail("composition", f"unknown composition {_show(composition)}; expected one of {', '.join(COMPOSITIONS)}")
    ops = [_check_op(c, raw, f"ops[{i}]") for i, raw in enumerate(c.array(top["ops"], "ops"))]  # type: ignore[arg-type]

    sub_policies = c.array(top["sub_policies"], "sub_policies", nullable=True)
    if (composition == "sub-policies") != (sub_policies is not None):
        raise c.fail("sub_policies", f"must be {'an array' if composition == 'sub-policies' else 'null'} "
                                     f"for composition {composition!r}, got {_show(sub_policies)}")
    if sub_policies is not None:
        flat = []
        for k, group in enumerate(sub_policies):
            for j, idx in enumerate(c.array(group, f"sub_policies[{k}]")):  # type: ignore[arg-type]
                flat.append(c.typed(idx, f"sub_policies[{k}][{j}]", int, "an op index"))
        if not sub_policies or flat != list(range(len(ops))):
            raise c.fail("sub_policies", f"must list op indices 0..{len(ops) - 1} once each, in order; got {_show(sub_policies)}")
    n_choices = len(sub_policies) if sub_policies is not None else len(ops)

    weights = c.array(top["weights"], "weights", nullable=True)
    if (composition == "sequential") != (weights is None):
        raise c.fail("weights", f"must be {'null' if composition == 'sequential' else 'an array'} "
                                f"for composition {composition!r}, got {_show(weights)}")
    if weights is not None:
        if len(weights) != n_choices:
            raise c.fail("weights", f"expected {n_choices} weights, got {len(weights)}")
        weights = [c.number(w, f"weights[{i}]") for i, w in enumerate(weights)]
        if any(w < 0 for w in weights) or not sum(weights) > 0:
            raise c.fail("weights", f"weights must be >= 0 and not all 0, got {_show(weights)}")
    if composition == "choose-one" and not ops:
        raise c.fail("ops", "composition 'choose-one' needs at least one op")

    image = c.obj(top["image"], "image", _IMAGE_KEYS)
    value_range = c.array(image["value_range"], "image.value_range")
    numbers = [c.number(v, f"image.value_range[{i}]") for i, v in enumerate(value_range)]  # type: ignore[arg-type]
    if numbers != [0.0, 1.0]:
        raise c.fail("image.value_range", f"only [0.0, 1.0] is supported, got {_show(value_range)}")
    size = c.array(image["size"], "image.size", nullable=True)
    if size is not None and (len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int)
                                                   or not 1 <= s <= MAX_IMAGE_SIDE for s in size)):
        raise c.fail("image.size", f"expected [height, width] integers in [1, {MAX_IMAGE_SIDE}] or null, "
                                   f"got {_show(size)}")

    gates = c.obj(top["gates"], "gates", _GATE_KEYS)
    temperature = c.number(gates["temperature"], "gates.temperature")
    if not temperature > 0:
        raise c.fail("gates.temperature", f"must be > 0, got {temperature!r}")
    hard = c.typed(gates["hard"], "gates.hard", bool, "true or false")

    prov = c.obj(top["provenance"], "provenance", _PROV_KEYS)
    for key in ("dataset", "method", "date"):
        c.typed(prov[key], f"provenance.{key}", str, "a string", nullable=True)
    seed = c.typed(prov["seed"], "provenance.seed", int, "an integer", nullable=True)
    if seed is not None and not 0 <= seed < 2 ** 64:
        raise c.fail("provenance.seed", f"expected an integer in [0, 2**64), got {_show(seed)}")
    versions = c.typed(prov["versions"], "provenance.versions", dict, "an object of name -> version string")
    for key, value in versions.items():
        c.typed(key, "provenance.versions", str, "string names")
        c.typed(value, f"provenance.versions.{key}", str, "a version string")
    c.typed(prov["metrics"], "provenance.metrics", dict, "an object")
    c.json_value(prov["metrics"], "provenance.metrics")

    modules = [AugmentOp(op["name"], op["probability"],
                         None if op["high"] is None else (op["low"], op["high"]), op["symmetric"]) for op in ops]
    policy = Policy(modules, composition, sub_policies=sub_policies, weights=weights,
                    image_size=None if size is None else (size[0], size[1]), temperature=temperature, hard=hard,
                    provenance=copy.deepcopy(prov))
    if class_ranges is None:
        return policy
    names, table = _check_class_ranges(c, class_ranges, ops)
    return ClassRangesPolicy(policy, names, torch.tensor(table, dtype=torch.float64).reshape(len(names), len(ops), 2))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate key(s) {_show(dup)}")
    return dict(pairs)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _nesting_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text, brackets inside strings ignored (no recursion)."""
    brackets = re.sub(r"[^\[\]{}]", "", _JSON_STRING.sub("", text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def load_policy(path: str | Path) -> Policy | ClassRangesPolicy:
    """Load and strictly validate a policy JSON file.

    Raises:
        PolicyFormatError: unreadable file, more than :data:`MAX_FILE_BYTES`, not UTF-8, malformed
            JSON, nesting deeper than :data:`MAX_DEPTH`, or any field violating the schema; the
            message names the file, the field and the value.

    Example:
        >>> policy = load_policy("policies/dsa.json")  # doctest: +SKIP
    """
    if not isinstance(path, (str, Path)):
        raise PolicyFormatError(f"policy path must be a string or Path, got {type(path).__name__}")
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise PolicyFormatError(f"{path}: cannot read policy file ({e.strerror or e})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PolicyFormatError(f"{path}: policy file larger than {MAX_FILE_BYTES} bytes; expected a small JSON file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyFormatError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    depth = _nesting_depth(text)
    if depth > MAX_DEPTH:
        raise PolicyFormatError(f"{path}: JSON nested {depth} levels deep; expected at most {MAX_DEPTH}")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise PolicyFormatError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:
        raise PolicyFormatError(f"{path}: malformed JSON: {str(e)[:120]}") from None
    return policy_from_dict(data, source=str(path))
