"""Augerino and the input-conditioned variant on 8x8 digits (kept to a few seconds each)."""

from __future__ import annotations

import pytest
import torch

from augdistill.augment import (AugerinoConfig, InstaAugConfig, InstanceRanges, build_policy,
                                policy_param_groups, train_augerino, train_instaaug, tta_predict)
from augdistill.data import load_dataset
from augdistill.errors import ConfigError
from augdistill.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(dataset: str, seed: int = 0):
    torch.manual_seed(seed)
    ds = load_dataset(dataset)
    model = build_model("convnet", ds.info.image_shape, ds.info.num_classes, width=32, depth=2,
                        mean=ds.info.mean, std=ds.info.std)
    policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 10.0}], image_size=(8, 8))
    policy.ops[0].probability.requires_grad_(False)
    return ds, model, policy


def _augerino_range(dataset: str) -> float:
    ds, model, policy = _setup(dataset)
    result = train_augerino(model, policy, ds.train, AugerinoConfig(steps=400, seed=0))
    low, high = result.history[-1][1]["rotate"]
    assert low == -high
    return high


def test_augerino_learns_wide_rotation_on_rotated_digits():
    assert _augerino_range("digits-rot") > 90.0


def test_augerino_keeps_rotation_small_on_upright_digits():
    assert _augerino_range("digits") < 45.0


def test_policy_param_groups_scale_by_range_and_skip_frozen():
    _, _, policy = _setup("digits")
    groups = policy_param_groups(policy, 0.01)
    assert len(groups) == 1 and groups[0]["params"] == [policy.ops[0].high] and abs(groups[0]["lr"] - 3.6) < 1e-12


def test_tta_averages_copies_and_identity_reduces_to_plain_prediction():
    ds, model, policy = _setup("digits")
    x = ds.val.x[:32]
    model.eval()
    plain = torch.softmax(model(x), 1)
    frozen = build_policy([{"name": "rotate", "probability": 0.0}])
    torch.testing.assert_close(tta_predict(model, frozen, x, copies=3), plain)
    probs = tta_predict(model, policy, x, copies=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(probs.sum(1), torch.ones(32))
    assert not torch.allclose(probs, plain)


def _instaaug_fraction(dataset: str) -> float:
    """Train the input-conditioned ranges briefly; return the mean fraction of 180° on val images."""
    ds, model, policy = _setup(dataset)
    ranges = InstanceRanges(policy, channels=1, init_fraction=0.05)
    r = ranges(ds.train.x[:5])
    assert r.shape == (5, 1, 2) and torch.allclose(r[..., 0], -r[..., 1])
    before = [p.detach().clone() for p in ranges.parameters()]
    result = train_instaaug(model, policy, ranges, ds.train, InstaAugConfig(steps=200, max_width=0.7, log_every=50))
    assert all(not torch.equal(a, b) for a, b in zip(before, ranges.parameters()))
    with torch.no_grad():
        f = ranges.fractions(ds.val.x)[:, 0]
    assert abs(result.history[-1][1]["rotate"][1] / 180.0 - float(f.mean())) < 0.1  # history is in degrees
    return float(f.mean())


def test_instance_ranges_wide_on_rotated_digits_within_band():
    assert 0.5 < _instaaug_fraction("digits-rot") < 0.75  # the band on the batch mean holds near its edge, 0.7


def test_instance_ranges_narrow_on_upright_digits():
    assert _instaaug_fraction("digits") < 0.25


@pytest.mark.parametrize("make, needle", [
    (lambda: AugerinoConfig(steps="10"), "AugerinoConfig.steps must be an integer >= 1, got '10'"),
    (lambda: AugerinoConfig(steps=0), "AugerinoConfig.steps must be an integer >= 1, got 0"),
    (lambda: AugerinoConfig(seed=-1), "AugerinoConfig.seed must be an integer >= 0"),
    (lambda: AugerinoConfig(lr=float("nan")), "AugerinoConfig.lr must be a finite number > 0, got nan"),
    (lambda: AugerinoConfig(reg=-0.1), "AugerinoConfig.reg must be a finite number >= 0"),
    (lambda: InstaAugConfig(min_width=0.8, max_width=0.5), "needs 0 <= min_width <= max_width <= 1"),
    (lambda: InstaAugConfig(bound_reg="x"), "InstaAugConfig.bound_reg must be a finite number >= 0"),
    (lambda: policy_param_groups(build_policy(["rotate"]), float("inf")), "lr must be a finite number > 0"),
    (lambda: policy_param_groups("rotate", 0.1), "policy must be an augdistill Policy, got str"),
    (lambda: InstanceRanges(build_policy(["rotate"]), channels=0), "channels must be an integer >= 1, got 0"),
    (lambda: InstanceRanges(build_policy(["rotate"]), channels=1, init_fraction=1.5),
     "init_fraction must be in (0, 1)"),
    (lambda: tta_predict(torch.nn.Identity(), build_policy(["rotate"]), torch.rand(2, 1, 8, 8), copies=0),
     "copies must be an integer >= 1, got 0"),
    (lambda: train_augerino(torch.nn.Identity(), build_policy(["rotate"]), (torch.rand(2, 1, 8, 8), torch.zeros(2))),
     "train must be a Split of images x (N, C, H, W) and labels y (N,)"),
    (lambda: train_augerino("net", build_policy(["rotate"]), None), "model must be a torch.nn.Module, got str"),
])
def test_bad_arguments_give_one_clear_error(make, needle):
    with pytest.raises(ConfigError) as info:
        make()
    assert needle in str(info.value), str(info.value)
