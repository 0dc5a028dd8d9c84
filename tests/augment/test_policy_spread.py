"""``policy_spread``: the width with flips counted 4p(1 − p); its value, its gradient by finite differences at
p = 0, 0.5 and 1 (sequential and sub-policies), and a bonus on it settling a flip at p = 0.5."""

from __future__ import annotations

import pytest
import torch

from augdistill.augment import build_policy, dsa_policy, policy_param_groups, policy_spread
from augdistill.errors import ConfigError


def test_spread_equals_width_without_flips_and_counts_a_flip_by_its_gate_variance():
    no_flip = build_policy(["rotate", "translate-x", "cutout"])
    assert torch.equal(policy_spread(no_flip), no_flip.width())
    policy = build_policy([{"name": "hflip", "probability": 0.25}, {"name": "rotate", "probability": 0.5}])
    expected = 4 * 0.25 * 0.75 + float(policy.ops[1].width().detach())
    assert float(policy_spread(policy).detach()) == pytest.approx(expected, abs=1e-12)
    dsa = dsa_policy((8, 8))  # the flip family is chosen 1/6 of the time, its flip at p = 0.5
    assert float((policy_spread(dsa) - dsa.width()).detach()) == pytest.approx((1.0 - 0.5) / 6, abs=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("composition", ["sequential", "sub-policies"])
def test_spread_gradient_matches_finite_differences(p, composition):
    ops = [{"name": "hflip", "probability": p}, {"name": "scale", "probability": 0.6, "magnitude": 0.2}]
    if composition == "sequential":
        policy = build_policy(ops)
    else:
        policy = build_policy([[ops[0]], [ops[1]]], "sub-policies", weights=[1.0, 3.0])
    params = [policy.ops[0].probability, policy.ops[1].probability, policy.ops[1].high]
    if policy.weights is not None:
        params.append(policy.weights)
    grads = torch.autograd.grad(policy_spread(policy), params)
    for param, grad in zip(params, grads):
        for i in range(param.numel()):
            flat = param.data.view(-1)
            value, eps = float(flat[i]), 1e-6
            # one-sided into the valid range at a bound, central inside it
            lo, hi = (value - eps, value + eps)
            if param is params[0] and value == 0.0:
                lo = value
            if param is params[0] and value == 1.0:
                hi = value
            with torch.no_grad():
                flat[i] = hi
                plus = float(policy_spread(policy))
                flat[i] = lo
                minus = float(policy_spread(policy))
                flat[i] = value
            assert float(grad.view(-1)[i]) == pytest.approx((plus - minus) / (hi - lo), rel=1e-4, abs=1e-6)
    assert (float(grads[0]) == 0.0) == (p == 0.5)  # 4 - 8p times the group's share: alive at both ends


def test_a_spread_bonus_settles_a_flip_at_one_half_where_a_width_bonus_turns_it_always_on():
    for measure, target in ((policy_spread, 0.5), (lambda policy: policy.width(), 1.0)):
        policy = build_policy([{"name": "hflip", "probability": 1.0}])
        optimizer = torch.optim.Adam(policy_param_groups(policy, 0.02))
        for _ in range(200):
            optimizer.zero_grad()
            (-measure(policy)).backward()
            optimizer.step()
        assert float(policy.ops[0].prob().detach()) == pytest.approx(target, abs=0.03)


def test_spread_refuses_what_is_not_a_policy():
    with pytest.raises(ConfigError, match="augdistill Policy"):
        policy_spread(torch.nn.Linear(1, 1))
