"""Every configuration field is checked by one mechanism (``setting`` + ``check_fields``): a wrong type, a
non-finite number or a value out of its declared range is refused, naming the flag. These tests walk the
dataclasses, so a field added later is covered without touching them."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from augdistill.config import DistillConfig, check_fields, config_from_dict
from augdistill.errors import ConfigError
from augdistill.runs.options import DistillOptions, EvalOptions

SECTIONS = [typing.get_type_hints(DistillConfig)[f.name] for f in dataclasses.fields(DistillConfig)]
CLASSES = SECTIONS + [DistillOptions, EvalOptions]
FIELDS = [(cls, f) for cls in CLASSES for f in dataclasses.fields(cls)]


def _numeric(cls: type, f: dataclasses.Field) -> type | None:
    hint = typing.get_type_hints(cls)[f.name]
    kinds = [a for a in (typing.get_args(hint) or (hint,)) if a in (int, float)]
    return kinds[0] if kinds else None


def _id(item: tuple[type, dataclasses.Field]) -> str:
    return f"{item[0].__name__}.{item[1].name}"


@pytest.mark.parametrize("item", [i for i in FIELDS if _numeric(*i)], ids=_id)
def test_every_number_declares_its_flag_and_both_bounds(item):
    cls, f = item
    assert f.metadata.get("flag"), f"{_id(item)}: declare it with setting(default, '--flag', low=..., high=...)"
    assert f.metadata.get("low") is not None and f.metadata.get("high") is not None, (
        f"{_id(item)}: a number without both bounds lets absurd values through; give setting() low= and high=")


@pytest.mark.parametrize("item", FIELDS, ids=_id)
def test_every_field_refuses_a_wrong_type_naming_its_flag(item):
    cls, f = item
    name = f.metadata.get("flag") or f"{cls.__name__}.{f.name}"
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        cls(**{f.name: object()})


@pytest.mark.parametrize("item", [i for i in FIELDS if _numeric(*i)], ids=_id)
def test_every_number_refuses_nan_inf_and_values_beyond_its_bounds(item):
    cls, f = item
    kind, meta = _numeric(*item), f.metadata
    bad = [meta["high"] * 10 + 1 if meta["high"] > 0 else meta["high"] + 1, meta["low"] - 1, True]
    if kind is float:
        bad += [math.nan, math.inf, -math.inf, 10**400]
    else:
        bad += [1.5, 10**30]
    for value in bad:
        with pytest.raises(ConfigError, match=meta["flag"]):
            cls(**{f.name: value})


def test_bounds_are_inclusive_unless_open():
    from augdistill.config import InnerConfig, OuterConfig
    assert OuterConfig(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ConfigError, match="--seed must be <= 4294967295, got 4294967296"):
        OuterConfig(seed=2**32)
    with pytest.raises(ConfigError, match="--momentum must be < 1, got 1.0"):
        InnerConfig(momentum=1.0)


def test_a_config_round_trips_through_its_dict_and_numbers_are_normalised():
    import numpy as np
    from augdistill.config import MethodConfig, SyntheticConfig
    config = DistillConfig(synthetic=SyntheticConfig(ipc=np.int64(3)), method=MethodConfig(lr_cap=2))
    assert type(config.synthetic.ipc) is int and type(config.method.lr_cap) is float
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict({**config.to_dict(), "policy": {**config.to_dict()["policy"], "ops": ["rotate"]}}) == config


@pytest.mark.parametrize("raw, message", [
    ([], "config must be an object of sections"),
    ({"synthetic": []}, "config.synthetic must be an object of fields"),
    ({"outer": {"seed": "0"}}, "config.outer: --seed must be an integer, got '0'"),
    ({"outer": {"seed": 1.0}}, "--seed must be an integer, got 1.0"),
    ({"learning": {}}, "unknown sections ['learning']"),
    ({"policy": {"mode": "none", "init_file": "p.json"}}, "--policy none contradicts --policy-init p.json"),
    ({"policy": {"ops": ["rotate", ""]}}, "--ops must name ops"),
    ({"data": {"root": "a\x00b"}}, "--data-root must be a string without NUL"),
    ({"model": {"width": None, "depth": 0}}, "--depth must be >= 1"),
])
def test_config_from_dict_names_the_section_field_value_and_expectation(raw, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert message in str(info.value)


def test_check_fields_covers_a_new_dataclass_declared_with_setting():
    from augdistill.config import setting

    @dataclasses.dataclass(frozen=True)
    class Later:
        steps: int = setting(3, "--later-steps", low=1, high=9)
        name: str | None = setting(None, "--later-name", choices=("a", "b"))

        def __post_init__(self) -> None:
            check_fields(self)

    assert Later(steps=9, name="a") == Later(9, "a")
    for kwargs, message in [({"steps": 10}, "--later-steps must be <= 9"), ({"steps": "3"}, "must be an integer"),
                            ({"name": "c"}, "--later-name must be one of a, b")]:
        with pytest.raises(ConfigError, match=message):
            Later(**kwargs)
