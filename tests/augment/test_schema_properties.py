"""Property-based tests of the policy JSON schema (hypothesis).

* every valid policy dict, with or without per-class ranges, loads and round-trips, every field kept exactly
  (also through a file);
* a valid dict with one random mutation (a value replaced by any JSON value — huge integers, NaN,
  nested arrays, ... —, a field deleted, a field added) loads to a valid policy or raises
  ``PolicyFormatError`` — never any other exception;
* random bytes, and valid JSON text with random edits, likewise through ``load_policy``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from augdistill.augment import OP_NAMES, OPS, ClassRangesPolicy, Policy, load_policy, policy_from_dict
from augdistill.augment.policy import COMPOSITIONS
from augdistill.augment.serialization import MAX_IMAGE_SIDE, SCHEMA, SCHEMA_VERSION
from augdistill.errors import PolicyFormatError

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

texts = st.text(max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_values = st.recursive(
    st.none() | st.booleans() | finite | st.floats() | st.integers() | st.integers(min_value=10 ** 300) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12)
#: Values that broke loaders before: huge integers, non-finite floats, deep nesting, wrong types.
hostile = st.sampled_from([10 ** 400, -(10 ** 400), 2 ** 64, 2 ** 63 - 1, -1, 0, 1, 1e308, -0.0, 5e-324, math.inf,
                           math.nan, "", "rotate", "1", [], {}, [0.0, 1.0], [[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]],
                           {"low": 0.0, "high": 1.0, "unit": "degrees"}, True, False, None])
metrics = st.recursive(st.none() | st.booleans() | finite | st.integers(-2 ** 53, 2 ** 53) | texts,
                       lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
                       max_leaves=8)


@st.composite
def op_dicts(draw: Any) -> dict[str, Any]:
    name = draw(st.sampled_from(OP_NAMES))
    spec = OPS[name]
    op: dict[str, Any] = {"name": name, "probability": draw(st.floats(0.0, 1.0)), "magnitude": None,
                          "symmetric": False}
    if spec.has_magnitude:
        lo_b, hi_b = spec.bounds
        if spec.symmetric_allowed and draw(st.booleans()):
            high = draw(st.floats(spec.identity, hi_b))
            low = 2 * spec.identity - high
            op["symmetric"] = True
        else:
            low, high = sorted(draw(st.lists(st.floats(lo_b, hi_b), min_size=2, max_size=2)))
        op["magnitude"] = {"low": low, "high": high, "unit": spec.unit}
    return op


@st.composite
def class_ranges_for(draw: Any, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``class_ranges`` entry for ``ops`` (1-3 classes); each op's ``magnitude`` becomes the mean of its rows, as
    the writer puts it."""
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3, unique=True))
    rows = [[draw(st.builds(lambda op: op["magnitude"] and _range_of(draw, op), st.just(op))) for op in ops]
            for _ in names]
    for i, op in enumerate(ops):
        if op["magnitude"] is not None:
            low, high = sorted(float(v) for v in torch.tensor([row[i] for row in rows], dtype=torch.float64).mean(0))
            if op["symmetric"]:
                low = 2 * OPS[op["name"]].identity - high
            op["magnitude"].update(low=low, high=high)
    return {"classes": names, "ranges": rows}


def _range_of(draw: Any, op: dict[str, Any]) -> list[float]:
    spec = OPS[op["name"]]
    if op["symmetric"]:
        high = draw(st.floats(spec.identity, spec.bounds[1]))
        return [2 * spec.identity - high, high]
    return sorted(draw(st.lists(st.floats(*spec.bounds), min_size=2, max_size=2)))


@st.composite
def policy_dicts(draw: Any) -> dict[str, Any]:
    composition = draw(st.sampled_from(COMPOSITIONS))
    ops = draw(st.lists(op_dicts(), min_size=1 if composition == "choose-one" else 0, max_size=5))
    sub_policies = None
    if composition == "sub-policies":
        cuts = sorted(draw(st.lists(st.integers(0, len(ops)), max_size=3)))
        bounds = [0, *cuts, len(ops)]
        sub_policies = [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]
    n_choices = len(sub_policies) if sub_policies is not None else len(ops)
    weights = None
    if composition != "sequential":
        weights = draw(st.lists(st.floats(0.0, 1e6), min_size=n_choices, max_size=n_choices)
                       .filter(lambda w: sum(w) > 0))
    size = draw(st.none() | st.lists(st.integers(1, MAX_IMAGE_SIDE), min_size=2, max_size=2))
    class_ranges = draw(st.none() | class_ranges_for(ops))
    return {**({} if class_ranges is None else {"class_ranges": class_ranges}),
        "schema": SCHEMA, "version": SCHEMA_VERSION, "composition": composition, "ops": ops, "weights": weights,
        "sub_policies": sub_policies, "image": {"value_range": [0.0, 1.0], "size": size},
        "gates": {"temperature": draw(st.floats(0.0, 1e6, exclude_min=True)), "hard": draw(st.booleans())},
        "provenance": {"dataset": draw(st.none() | texts), "method": draw(st.none() | texts),
                       "seed": draw(st.none() | st.integers(0, 2 ** 64 - 1)),
                       "versions": draw(st.dictionaries(texts, texts, max_size=3)),
                       "date": draw(st.none() | texts), "metrics": draw(st.dictionaries(texts, metrics, max_size=3))},
    }


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into ``value`` (the root included), but not inside the free-form ``versions`` and
    ``metrics`` objects, so that the schema's own fields are what mutations mostly hit."""
    out = [prefix]
    if prefix[-1:] in (("versions",), ("metrics",)):
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _mutate(data: dict, path: tuple, action: str, value: Any, key: str) -> Any:
    if not path:
        return value
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if action == "replace":
        parent[path[-1]] = value
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        parent.insert(path[-1], value)
    return data


def _check_loads_or_refuses(load) -> None:
    """``load()`` returns a valid policy (which round-trips) or raises one-line ``PolicyFormatError``."""
    try:
        policy = load()
    except PolicyFormatError as e:
        assert "\n" not in str(e) and len(str(e)) < 600, str(e)
        return
    assert isinstance(policy, (Policy, ClassRangesPolicy))
    canonical = policy.to_dict()
    assert policy_from_dict(json.loads(json.dumps(canonical, allow_nan=False))).to_dict() == canonical


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("policies")


def _through_file(folder: Path, text: str | bytes):
    path = folder / "p.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return load_policy(path)


@PROPERTY
@given(policy_dicts())
def test_valid_dicts_round_trip_every_field(folder, data):
    assert policy_from_dict(json.loads(json.dumps(data))).to_dict() == data
    assert _through_file(folder, json.dumps(data, indent=1)).to_dict() == data


@PROPERTY
@given(st.data())
def test_one_mutation_loads_or_raises_policy_format_error(folder, data):
    valid = data.draw(policy_dicts())
    rnd = data.draw(st.randoms(use_true_random=False))  # uniform choices (hypothesis favours the first option)
    path = rnd.choice(_paths(valid))
    action = rnd.choice(["replace", "delete", "insert"]) if path else "replace"
    value = data.draw(hostile if rnd.random() < 0.5 else json_values)
    mutated = _mutate(valid, path, action, value, data.draw(texts))
    _check_loads_or_refuses(lambda: policy_from_dict(mutated))
    _check_loads_or_refuses(lambda: _through_file(folder, json.dumps(mutated)))


@settings(PROPERTY, max_examples=150)
@given(st.binary(max_size=600))
def test_random_bytes_load_or_raise(folder, raw):
    _check_loads_or_refuses(lambda: _through_file(folder, raw))


@PROPERTY
@given(st.data())
def test_edited_json_text_loads_or_raises(folder, data):
    text = json.dumps(data.draw(policy_dicts()))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            insert = data.draw(st.text(alphabet='{}[]",:-+.eE0123456789 NaInfitytruesl\\', max_size=8))
            text = text[:at] + insert + text[at:]
        else:
            text = text[:at] + text[at + data.draw(st.integers(1, 8)):]
    _check_loads_or_refuses(lambda: _through_file(folder, text))


NUMBER_FIELDS = [  # (path into the dict, field named in the message)
    (("ops", 0, "probability"), "ops[0].probability"), (("ops", 0, "magnitude", "low"), "ops[0].magnitude.low"),
    (("ops", 0, "magnitude", "high"), "ops[0].magnitude.high"), (("weights", 2), "weights[2]"),
    (("gates", "temperature"), "gates.temperature"), (("image", "value_range", 0), "image.value_range[0]"),
    (("version",), "version"), (("provenance", "seed"), "provenance.seed"),
    (("sub_policies", 0, 0), "sub_policies"), (("image", "size"), "image.size")]


@pytest.mark.parametrize("value, shown", [(10 ** 400, "(401 digits)"), (-(10 ** 400), "(401 digits)"),
                                          (math.inf, "inf"), (math.nan, "nan"), ([[[[[[]]]]]], "[[[[...]]]]"),
                                          ("1e400", '"1e400"'), (True, "true")],
                         ids=["401-digits", "-401-digits", "inf", "nan", "nested", "string", "bool"])
def test_every_number_field_refuses_non_numbers(value, shown):
    """Deterministic companion: each numeric field of a real policy, given each hostile value; the
    message names the file, the field, the value and what was expected."""
    base = json.loads((Path(__file__).resolve().parents[2] / "policies" / "dsa.json").read_text())
    base["image"]["size"] = [32, 32]
    for path, field in NUMBER_FIELDS:
        mutated = _mutate(json.loads(json.dumps(base)), path, "replace", value, "")
        with pytest.raises(PolicyFormatError) as info:
            policy_from_dict(mutated, source="dsa.json")
        message = str(info.value)
        assert message.startswith(f"dsa.json: field '{field}"), message
        assert "expected" in message or "outside" in message or "must" in message, message
        assert shown in message or field in ("sub_policies", "image.size"), message
