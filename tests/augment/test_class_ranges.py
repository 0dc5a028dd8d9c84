"""Per-class ranges: each image is augmented within its class's ranges, the table learns by the right gradient,
and the policy round-trips through JSON and exports to per-class torchvision / kornia pipelines."""

from __future__ import annotations

import json
import re

import pytest
import torch

from augdistill.augment import (ClassRangesPolicy, build_policy, dsa_policy, learn_only, load_policy,
                                policy_from_dict, policy_param_groups, policy_spread, python_snippet)
from augdistill.errors import ConfigError, PolicyFormatError

SHIPPED = ["policies/dsa.json", "policies/dsa-noflip.json", "policies/digits-ipc10.json",
           "policies/digits-rot-ipc10.json", "policies/fashion-mnist-ipc10.json"]


def _brightness(low_high: list[tuple[float, float]]) -> ClassRangesPolicy:
    """One brightness op applied always, class ``k`` shifting by U(low_high[k])."""
    base = build_policy([{"name": "brightness", "probability": 1.0, "magnitude": (-0.5, 0.5)}])
    table = torch.tensor([[list(r)] for r in low_high], dtype=torch.float64)
    return ClassRangesPolicy(base, [f"class {k}" for k in range(len(low_high))], table).train()


@pytest.mark.parametrize("path", SHIPPED)
def test_a_fresh_per_class_policy_is_its_policy_bit_for_bit(path):
    base = load_policy(path).train()
    per_class = ClassRangesPolicy(base, ["a", "b", "c"]).train()
    x = torch.rand(9, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    params = base.sample(9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(per_class(x, params, labels=torch.arange(3).repeat(3)), base(x, params))
    torch.testing.assert_close(per_class.width(), base.width())
    torch.testing.assert_close(policy_spread(per_class), policy_spread(base))


def test_each_image_takes_its_classes_ranges():
    policy = _brightness([(-0.3, -0.1), (0.1, 0.4)])
    x = torch.full((400, 1, 4, 4), 0.5, dtype=torch.float64)
    labels = torch.arange(2).repeat(200)
    shift = policy(x, labels=labels, generator=torch.Generator().manual_seed(0)).detach().mean((1, 2, 3)) - 0.5
    for k, (low, high) in enumerate([(-0.3, -0.1), (0.1, 0.4)]):
        s = shift[labels == k]
        assert low - 1e-9 <= float(s.min()) <= float(s.max()) <= high + 1e-9
        assert abs(float(s.mean()) - (low + high) / 2) < 0.02
    # class k's rows are what class k's own ordinary policy gives with the same draw
    params = policy.sample(400, generator=torch.Generator().manual_seed(1))
    y = policy(x, params, labels=labels)
    for k in range(2):
        rows = labels == k
        torch.testing.assert_close(y[rows], policy.for_class(k)(x[rows], params=_rows(params, rows)))


def _rows(params, rows):
    from augdistill.inner.stream import select_rows
    return select_rows(params, rows.nonzero().squeeze(1))


def test_table_gradient_matches_finite_differences_and_reaches_only_present_classes():
    base = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 30.0},
                         {"name": "translate-x", "probability": 0.7, "magnitude": (-0.1, 0.2), "symmetric": False},
                         {"name": "contrast", "probability": 1.0, "magnitude": (0.6, 1.5), "symmetric": False}],
                        image_size=(8, 8))
    policy = ClassRangesPolicy(base, ["a", "b", "c"]).double().train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])  # class 2 absent
    weights = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64)
    params = policy.sample(8, generator=g)

    def loss() -> torch.Tensor:
        return (policy(x, params, labels=labels) * weights).sum() - 0.3 * policy.width()

    columns = [policy.high["0"], policy.low["1"], policy.high["1"], policy.low["2"], policy.high["2"]]
    assert "0" not in policy.low  # rotate is symmetric: its low mirrors its high
    grads = torch.autograd.grad(loss(), columns)
    for column, grad in zip(columns, grads):
        for k in (0, 1):
            eps = 1e-6
            with torch.no_grad():
                column[k] += eps
                plus = loss()
                column[k] -= 2 * eps
                minus = loss()
                column[k] += eps
            numeric = (plus - minus) / (2 * eps)
            assert float(grad[k].abs()) > 1e-6, k
            torch.testing.assert_close(grad[k], numeric, rtol=1e-4, atol=1e-8)
        # class 2 has no image: only the width bonus reaches it
        torch.testing.assert_close(grad[2], torch.autograd.grad(-0.3 * policy.width(), column)[0][2])


def test_json_round_trip_keeps_every_field(tmp_path):
    policy = ClassRangesPolicy(dsa_policy((28, 28)), ["T-shirt", "Trouser"])
    with torch.no_grad():
        for i, column in enumerate(policy.high.values()):
            column[1] = column[1] * (1.1 + 0.01 * i) if column[1] > 0 else 0.3
        for column in policy.low.values():
            column[1] = column[1] / 3
    path = tmp_path / "per-class.json"
    policy.save(path, provenance={"dataset": "fashion-mnist"})
    data = json.loads(path.read_text())
    loaded = load_policy(path)
    assert isinstance(loaded, ClassRangesPolicy) and loaded.class_names == ("T-shirt", "Trouser")
    assert loaded.to_dict() == data
    torch.testing.assert_close(loaded.table(), policy.table())
    assert data["class_ranges"]["ranges"][0][data["ops"].index(next(o for o in data["ops"] if o["name"] == "hflip"))] \
        is None


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["class_ranges"]["ranges"].pop(), "class_ranges.ranges"),
    (lambda d: d["class_ranges"]["classes"].__setitem__(1, "T-shirt"), "class_ranges.classes"),
    (lambda d: d["class_ranges"]["ranges"][0][0].__setitem__(1, 9.0), "class_ranges.ranges[0][0]"),
    (lambda d: d["class_ranges"]["ranges"][1].append([0.0, 1.0]), "class_ranges.ranges[1]"),
    (lambda d: d["class_ranges"].update(extra=1), "class_ranges"),
])
def test_bad_class_ranges_name_the_field(mutate, field):
    data = ClassRangesPolicy(build_policy(["brightness", "hflip"]), ["T-shirt", "Trouser"]).to_dict()
    mutate(data)
    with pytest.raises(PolicyFormatError, match=re.escape(f"field '{field}'")):
        policy_from_dict(data)


def test_a_flip_has_no_range_and_a_symmetric_op_stays_symmetric():
    data = ClassRangesPolicy(build_policy(["rotate", "hflip"]), ["a"]).to_dict()
    data["class_ranges"]["ranges"][0][1] = [0.0, 1.0]
    with pytest.raises(PolicyFormatError, match="has no magnitude; expected null"):
        policy_from_dict(data)
    data["class_ranges"]["ranges"][0][1] = None
    data["class_ranges"]["ranges"][0][0] = [-5.0, 10.0]
    with pytest.raises(PolicyFormatError, match="symmetric range must be centred"):
        policy_from_dict(data)


def test_labels_are_required_and_checked():
    policy = _brightness([(0.0, 0.1), (0.1, 0.2)])
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ConfigError, match="needs labels"):
        policy(x)
    with pytest.raises(ConfigError, match=r"class ids in \[0, 2\)"):
        policy(x, labels=torch.tensor([0, 2]))
    with pytest.raises(ConfigError, match="do not fit the batch"):
        policy(x, labels=torch.tensor([0]))


def test_magnitudes_learn_in_their_own_group_and_the_rest_can_be_frozen():
    policy = ClassRangesPolicy(dsa_policy((8, 8)), ["a", "b"])
    policy.requires_grad_(True)
    learn_only(policy, ("magnitudes",))
    learned = {name for name, p in policy.named_parameters() if p.requires_grad}
    ranged = [i for i, op in enumerate(policy.ops) if op.spec.has_magnitude]
    asymmetric = [i for i in ranged if not policy.ops[i].symmetric]
    assert asymmetric and len(ranged) < len(policy.ops)  # cutout's range is not centred; the flip has none
    assert learned == {f"high.{i}" for i in ranged} | {f"low.{i}" for i in asymmetric}
    groups = policy_param_groups(policy, 0.01)
    assert [g["params"] for g in groups] == [[policy.low[str(i)], policy.high[str(i)]] if i in asymmetric
                                            else [policy.high[str(i)]] for i in ranged]
    rotate = ranged.index([op.name for op in policy.ops].index("rotate"))
    assert groups[rotate]["lr"] == pytest.approx(0.01 * 360)  # per op, scaled by its allowed range as a policy's
    policy.requires_grad_(True)  # the wrapped policy's own ranges are unused: never learned
    assert not any(p.requires_grad for op in policy.ops for p in (op.low, op.high) if p is not None)


def test_exports_apply_each_classes_pipeline():
    policy = _brightness([(-0.3, -0.1), (0.1, 0.4)])
    flat = torch.full((1, 4, 4), 0.5)
    pipeline = policy.to_torchvision()
    namespace: dict = {}
    exec(python_snippet(policy), namespace)
    for transform in (pipeline, namespace["pipeline"]):
        for k, (low, high) in enumerate([(-0.3, -0.1), (0.1, 0.4)]):
            shifts = torch.tensor([float(transform(flat, k)[0].mean()) - 0.5 for _ in range(200)])
            assert low - 1e-6 <= float(shifts.min()) and float(shifts.max()) <= high + 1e-6
            assert abs(float(shifts.mean()) - (low + high) / 2) < 0.03
            image, label = transform(flat, torch.tensor(k))
            assert label == k
    batch, labels = torch.full((200, 1, 4, 4), 0.5), torch.arange(2).repeat(100)
    out, _ = policy.to_kornia()(batch, labels)
    shift = out.mean((1, 2, 3)) - 0.5
    assert float(shift[labels == 0].max()) <= -0.1 + 1e-6 and float(shift[labels == 1].min()) >= 0.1 - 1e-6


def test_bad_construction_is_refused():
    with pytest.raises(ConfigError, match="distinct non-empty strings"):
        ClassRangesPolicy(build_policy(["rotate"]), ["a", "a"])
    with pytest.raises(ConfigError, match=r"ranges must be a float tensor \(2, 1, 2\)"):
        ClassRangesPolicy(build_policy(["rotate"]), ["a", "b"], torch.zeros(1, 1, 2))
    with pytest.raises(ConfigError, match="must lie in its allowed"):
        ClassRangesPolicy(build_policy(["rotate"]), ["a"], torch.tensor([[[-200.0, 200.0]]]))


def test_a_policy_without_ops_has_an_empty_table_and_is_the_identity():
    policy = ClassRangesPolicy(build_policy([]), ["a", "b"]).train()
    x = torch.rand(2, 1, 4, 4)
    assert policy.table().shape == (2, 0, 2) and torch.equal(policy(x, labels=torch.tensor([0, 1])), x)
    assert policy_from_dict(policy.to_dict()).to_dict() == policy.to_dict()


def test_a_per_class_policy_refuses_data_of_another_class_count(digits, tmp_path):
    from augdistill.config import DistillConfig, PolicyConfig
    from augdistill.distill import Distiller
    from augdistill.runs.jobs import evaluation_policy
    path = tmp_path / "three.json"
    ClassRangesPolicy(dsa_policy((8, 8)), ["a", "b", "c"]).save(path)
    with pytest.raises(ConfigError, match=r"three.json: a per-class policy of 3 classes \(a, b, c\) cannot augment "
                                          r"data of 10 classes"):
        evaluation_policy(str(path), tmp_path, digits.info)
    with pytest.raises(ConfigError, match="a per-class policy of 3 classes"):
        Distiller(DistillConfig(policy=PolicyConfig(mode="fixed", init_file=str(path))), digits)
