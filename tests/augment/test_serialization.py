"""Policy JSON: exact round trips, shipped files, and one clear error per malformed file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from augdistill.augment import build_policy, dsa_policy, load_policy, policy_from_dict
from augdistill.errors import ConfigError, PolicyFormatError

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _valid() -> dict:
    policy = build_policy([{"name": "rotate", "probability": 0.25, "magnitude": 120.0},
                           {"name": "cutout", "probability": 0.5, "magnitude": (0.1, 0.3)},
                           {"name": "hflip", "probability": 0.5}], image_size=(8, 8))
    return policy.to_dict(provenance={"dataset": "digits-rot", "method": "augerino", "seed": 0,
                                      "metrics": {"test_accuracy": 0.9}})


@pytest.mark.parametrize("composition, ops, weights", [
    ("sequential", ["rotate", "translate-x", "brightness", "cutout", "hflip"], None),
    ("choose-one", ["shear-x", "shear-y", "hue", "saturation"], [0.1, 0.2, 0.3, 0.4]),
    ("sub-policies", [["rotate", "scale"], ["contrast"], ["sharpness", "translate-y", "rotate"]], [1.0, 2.5, 0.5]),
])
def test_round_trip_every_composition(composition, ops, weights, tmp_path):
    policy = build_policy(ops, composition, weights=weights, probability=0.7, image_size=(28, 28),
                          temperature=0.3, hard=False)
    with torch.no_grad():  # non-round numbers everywhere
        for i, p in enumerate(policy.parameters()):
            p.mul_(1 - 0.01 * (i + 1) / 3)
    path = tmp_path / "p.json"
    policy.save(path, provenance={"dataset": "cifar10", "seed": 42, "metrics": {"acc": 1 / 3}})
    loaded = load_policy(path)
    assert loaded.to_dict() == json.loads(path.read_text())
    assert loaded.to_json() == path.read_text().rstrip("\n")
    for (name, a), (_, b) in zip(policy.named_parameters(), loaded.named_parameters()):
        assert torch.equal(a, b), name
    x = torch.rand(5, 3, 28, 28)
    params = policy.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(policy.train()(x, params=params), loaded.train()(x, params=params))


def test_a_learned_weight_pushed_below_zero_saves_as_the_zero_it_acts_as(tmp_path):
    """Adam carried a sub-policy weight to -0.1 in a Fashion-MNIST run and the saved policy.json could not be
    loaded ('weights must be >= 0'); the file now holds the weights in effect, and the loaded policy picks
    the same sub-policies and augments identically."""
    policy = build_policy([["rotate"], ["translate-x"], ["contrast"]], "sub-policies", weights=[1.8, 0.2, 0.5],
                          image_size=(8, 8))
    with torch.no_grad():
        policy.weights[1] = -0.1
    path = tmp_path / "p.json"
    policy.save(path)
    loaded = load_policy(path)
    assert json.loads(path.read_text())["weights"] == [1.8, 0.0, 0.5]
    torch.testing.assert_close(loaded.selection_probabilities(), policy.selection_probabilities())
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    params = policy.sample(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(policy.train()(x, params=params), loaded.train()(x, params=params))


def test_rotate_range_is_in_degrees_in_the_file():
    data = _valid()
    assert data["ops"][0]["magnitude"] == {"low": -120.0, "high": 120.0, "unit": "degrees"}


@pytest.mark.parametrize("file, flip", [("dsa.json", True), ("dsa-noflip.json", False)])
def test_shipped_dsa_policies_load_and_match_python(file, flip):
    shipped = load_policy(POLICIES / file)
    assert {k: v for k, v in shipped.to_dict().items() if k != "provenance"} == \
        {k: v for k, v in dsa_policy(flip=flip).to_dict().items() if k != "provenance"}


def test_shipped_identity_policy():
    identity = load_policy(POLICIES / "identity.json").train()
    x = torch.rand(2, 1, 8, 8)
    assert identity(x) is x


def _set(path: tuple, value):
    def mutate(d: dict) -> dict:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return d
    return mutate


def _drop(path: tuple):
    def mutate(d: dict) -> dict:
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return d
    return mutate


BAD = [  # (id, mutation of the valid dict, field named in the message)
    ("unknown-op", _set(("ops", 0, "name"), "spin"), "ops[0].name"),
    ("op-name-type", _set(("ops", 0, "name"), 3), "ops[0].name"),
    ("prob-above-1", _set(("ops", 1, "probability"), 1.5), "ops[1].probability"),
    ("prob-negative", _set(("ops", 1, "probability"), -0.1), "ops[1].probability"),
    ("prob-string", _set(("ops", 0, "probability"), "0.5"), "ops[0].probability"),
    ("prob-bool", _set(("ops", 0, "probability"), True), "ops[0].probability"),
    ("negative-magnitude", _set(("ops", 1, "magnitude"), {"low": 0.3, "high": 0.1, "unit": "fraction of side"}),
     "ops[1].magnitude"),
    ("magnitude-out-of-bounds", _set(("ops", 0, "magnitude"), {"low": -270.0, "high": 270.0, "unit": "degrees"}),
     "ops[0].magnitude"),
    ("wrong-unit", _set(("ops", 0, "magnitude", "unit"), "radians"), "ops[0].magnitude.unit"),
    ("not-symmetric", _set(("ops", 0, "magnitude", "low"), -100.0), "ops[0].magnitude"),
    ("symmetric-not-allowed", _set(("ops", 1, "symmetric"), True), "ops[1].symmetric"),
    ("flip-with-magnitude", _set(("ops", 2, "magnitude"), {"low": 0.0, "high": 1.0, "unit": "degrees"}),
     "ops[2].magnitude'"),
    ("missing-magnitude", _set(("ops", 0, "magnitude"), None), "ops[0].magnitude"),
    ("missing-op-field", _drop(("ops", 0, "symmetric")), "ops[0]"),
    ("extra-op-field", _set(("ops", 0, "strength"), 3), "ops[0]"),
    ("low-not-number", _set(("ops", 0, "magnitude", "low"), [1]), "ops[0].magnitude.low"),
    ("wrong-version", _set(("version",), 2), "version"),
    ("version-string", _set(("version",), "1"), "version"),
    ("wrong-schema", _set(("schema",), "timm.autoaugment"), "schema"),
    ("unknown-composition", _set(("composition",), "shuffle"), "composition"),
    ("weights-on-sequential", _set(("weights",), [1.0, 1.0, 1.0]), "weights"),
    ("ops-not-list", _set(("ops",), {"name": "rotate"}), "ops"),
    ("missing-top-field", _drop(("gates",)), "<root>"),
    ("unknown-top-field", _set(("comment",), "hi"), "<root>"),
    ("bad-temperature", _set(("gates", "temperature"), 0.0), "gates.temperature"),
    ("hard-not-bool", _set(("gates", "hard"), "yes"), "gates.hard"),
    ("value-range", _set(("image", "value_range"), [0, 255]), "image.value_range"),
    ("image-size", _set(("image", "size"), [8]), "image.size"),
    ("seed-type", _set(("provenance", "seed"), 1.5), "provenance.seed"),
    ("metrics-type", _set(("provenance", "metrics"), [0.9]), "provenance.metrics"),
    ("missing-provenance-field", _drop(("provenance", "date")), "provenance"),
    ("sub-policies-on-sequential", _set(("sub_policies",), [[0, 1, 2]]), "sub_policies"),
]


@pytest.mark.parametrize("mutate, field", [(m, f) for _, m, f in BAD], ids=[b[0] for b in BAD])
def test_malformed_file_gives_one_clear_error(mutate, field, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(mutate(copy.deepcopy(_valid()))))
    with pytest.raises(PolicyFormatError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: field '{field}")
    assert "\n" not in message


@pytest.mark.parametrize("text, needle", [
    ('{"schema": "augdistill.policy", ', "malformed JSON at line 1"),
    ("", "malformed JSON"),
    ('{"version": NaN}', "NaN is not valid JSON"),
    ('{"version": 1, "version": 1}', "duplicate key"),
    ("[1, 2]", "expected an object"),
])
def test_malformed_json_text(text, needle, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(PolicyFormatError, match=needle) as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_missing_file_and_dict_source(tmp_path):
    with pytest.raises(PolicyFormatError, match="cannot read"):
        load_policy(tmp_path / "nope.json")
    with pytest.raises(PolicyFormatError, match="^<dict>: field 'ops\\[0\\].name'"):
        policy_from_dict(_set(("ops", 0, "name"), "spin")(_valid()))


def _write(tmp_path, content: str | bytes) -> Path:
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _text_with(field_path: tuple, raw: str) -> str:
    """The valid policy as JSON text with ``raw`` (JSON source) at ``field_path``."""
    data = _set(field_path, "__RAW__")(_valid())
    return json.dumps(data).replace('"__RAW__"', raw)


HOSTILE_FILES = [  # (id, file content, expected message fragments)
    ("401-digit-probability", _text_with(("ops", 0, "probability"), "1" + "0" * 400),
     ["field 'ops[0].probability'", "expected a finite number", "(401 digits)"]),
    ("401-digit-seed", _text_with(("provenance", "seed"), "9" * 401), ["field 'provenance.seed'", "[0, 2**64)"]),
    ("401-digit-size", _text_with(("image", "size"), "[" + "1" * 401 + ", 8]"), ["field 'image.size'", "65536"]),
    ("overflowing-float", _text_with(("ops", 0, "magnitude", "low"), "1e999"),
     ["field 'ops[0].magnitude.low'", "expected a finite number, got inf"]),
    ("5000-digit-int", _text_with(("weights",), "5" * 5000), ["malformed JSON", "digits"]),
    ("nested-100k", "[" * 100_000 + "]" * 100_000, ["nested 100000 levels deep", "at most 16"]),
    ("nested-metrics", _text_with(("provenance", "metrics"), '{"a": ' + "[" * 20 + "1" + "]" * 20 + "}"),
     ["nested 23 levels deep"]),
    ("infinity-literal", _text_with(("ops", 0, "probability"), "Infinity"), ["Infinity is not valid JSON"]),
    ("minus-infinity", _text_with(("gates", "temperature"), "-Infinity"), ["-Infinity is not valid JSON"]),
    ("nan-in-metrics", _text_with(("provenance", "metrics"), '{"acc": NaN}'), ["NaN is not valid JSON"]),
    ("300-ops", json.dumps(_set(("ops",), _valid()["ops"][:1] * 300)(_valid())), ["field 'ops'", "at most 256"]),
    ("huge-weights", json.dumps(_set(("weights",), [1.0] * 100_000)(_valid())), ["field 'weights'", "at most 256"]),
    ("oversized", '{"pad": "' + "x" * (1 << 20) + '"}', ["larger than 1048576 bytes"]),
    ("not-utf8", b'{"schema": "\xff\xfe"}', ["not UTF-8", "byte 12"]),
    ("string-as-number", _text_with(("ops", 0, "probability"), '"0.5"'), ["expected a finite number, got \"0.5\""]),
    ("list-as-object", _text_with(("ops", 0), "[1, 2]"), ["field 'ops[0]'", "expected an object"]),
    ("bool-weights", _text_with(("ops", 1, "symmetric"), "1"), ["field 'ops[1].symmetric'", "true or false"]),
    ("metrics-key-nesting-ok", _text_with(("provenance", "metrics"), '{"a": {"b": [1, 2.5, "x", null, true]}}'), []),
]


@pytest.mark.parametrize("content, fragments", [h[1:] for h in HOSTILE_FILES], ids=[h[0] for h in HOSTILE_FILES])
def test_hostile_files_give_one_policy_format_error(content, fragments, tmp_path):
    path = _write(tmp_path, content)
    if not fragments:
        assert load_policy(path).provenance["metrics"]["a"]["b"][1] == 2.5
        return
    with pytest.raises(PolicyFormatError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 300, message
    for fragment in fragments:
        assert fragment in message, message


def test_unreadable_paths(tmp_path):
    with pytest.raises(PolicyFormatError, match="cannot read policy file"):
        load_policy(tmp_path)  # a directory
    with pytest.raises(PolicyFormatError, match="must be a string or Path, got NoneType"):
        load_policy(None)


def test_dict_inputs_with_python_only_values():
    """``policy_from_dict`` also refuses what JSON cannot hold: non-string keys, NaN, objects, deep nesting."""
    deep: dict = {}
    inner = deep
    for _ in range(10_000):
        inner["x"] = {}
        inner = inner["x"]
    cases = [(("provenance", "metrics"), {1: 0.5}, "object key 1 is not a string"),
             (("provenance", "metrics"), {"acc": float("nan")},
              "field 'provenance.metrics.acc': expected a finite number"),
             (("provenance", "metrics"), {"when": object()}, "expected a JSON value, got object"),
             (("provenance", "metrics"), deep, "nested deeper than 16 levels"),
             (("provenance", "versions"), {"torch": 2}, "field 'provenance.versions.torch': expected a version string"),
             (("ops", 0, "probability"), deep, "expected a finite number, got {\"x\": {\"x\": {\"x\": {\"x\": ...")]
    for path, value, needle in cases:
        with pytest.raises(PolicyFormatError) as info:
            policy_from_dict(_set(path, value)(_valid()))
        assert needle in str(info.value), str(info.value)
    with pytest.raises(PolicyFormatError, match="unknown field"):
        policy_from_dict({**_valid(), 3: "x"})


def test_loaded_provenance_is_a_copy():
    data = _valid()
    policy = policy_from_dict(data)
    data["provenance"]["metrics"]["test_accuracy"] = 0.1
    assert policy.to_dict()["provenance"]["metrics"] == {"test_accuracy": 0.9}


def test_save_refuses_unwritable_paths(tmp_path):
    policy = build_policy(["rotate"])
    with pytest.raises(ConfigError, match="cannot write policy file"):
        policy.save(tmp_path / "missing" / "p.json")
    with pytest.raises(ConfigError, match="cannot write policy file"):
        policy.save(tmp_path)
    policy.save(tmp_path / "ok.json")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.json"]  # no temporary file left behind
