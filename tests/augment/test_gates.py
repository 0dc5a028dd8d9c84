"""Gates that stay alive: probability gradients agree with the expected loss at p = 0, 0.5 and 1.

The expected loss over the gate noise is computed exactly and independently of the estimator
(kernels applied directly, every gate configuration enumerated), then differentiated by finite
differences in ``p`` (one-sided at 0 and 1).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from augdistill.augment import OP_NAMES, OPS, AugmentOp, AugmentParams, Policy, build_policy, load_policy
from augdistill.augment import functional as AF
from augdistill.augment.gates import clamp_st, gumbel_choice

POLICIES = Path(__file__).resolve().parents[2] / "policies"
B, C, H, W = 4, 3, 10, 12
EPS = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(B, C, H, W, generator=g, dtype=torch.float64)


def _op(name: str, p: float) -> AugmentOp:
    spec = OPS[name]
    return AugmentOp(name, p) if not spec.has_magnitude else AugmentOp(name, p, spec.default, symmetric=spec.symmetric)


def _applied(name: str, x: torch.Tensor, op: AugmentOp, params: AugmentParams) -> torch.Tensor:
    """The op at probability 1 from its kernel directly (no gate): ``A(x)`` for the drawn magnitudes."""
    bounds = op.range()
    low, high = (0.0, 0.0) if bounds is None else (float(bounds[0].detach()), float(bounds[1].detach()))
    v = low + (high - low) * (params.u[:, 0].double() + 1) / 2
    spec = OPS[name]
    return AF.warp(x, spec.fn(v, H, W)) if spec.geometric else spec.fn(x, v, params.aux[:, 0].double())


def _expected_loss(per_sample_loss, x, applied, p: float) -> torch.Tensor:
    """``E_gate[L] = sum_i p l(A(x_i)) + (1 - p) l(x_i)``, exactly."""
    return (p * per_sample_loss(applied) + (1 - p) * per_sample_loss(x)).sum()


def _fd(f, p: float, low: float = 0.0, high: float = 1.0) -> float:
    """Second-order finite difference of ``f`` at ``p``: central inside, one-sided at ``low`` / ``high``."""
    if p - EPS < low or p + EPS > high:
        h = EPS if p - EPS < low else -EPS
        return float((-3 * f(p) + 4 * f(p + h) - f(p + 2 * h)) / (2 * h))
    return float((f(p + EPS) - f(p - EPS)) / (2 * EPS))


def _linear(seed: int = 7):
    w = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lambda y: (y * w).flatten(1).sum(1)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("name", OP_NAMES)
def test_probability_gradient_is_that_of_the_expected_loss(name, p):
    """Loss linear in the output: the gradient equals d/dp E[L] exactly, for every op and p."""
    x, loss = _images(), _linear()
    policy = Policy([_op(name, p)]).double().train()
    params = policy.sample(B, generator=torch.Generator().manual_seed(1))
    loss(policy(x, params=params)).sum().backward()
    grad = float(policy.ops[0].probability.grad)
    applied = _applied(name, x, policy.ops[0], params)
    expected = _fd(lambda q: _expected_loss(loss, x, applied, q), p)
    assert abs(expected) > 1e-3, f"degenerate check for {name}"
    assert grad == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("name", OP_NAMES)
def test_probability_gradient_sign_and_size_for_a_nonlinear_loss(name, p):
    """Per image, ``softplus`` of a linear read-out: the gradient has the sign of the finite difference
    of the expected loss and is within a factor 2 of it (the estimator is first order in the output)."""
    x = _images(2)
    w = torch.randn(C, H, W, generator=torch.Generator().manual_seed(11), dtype=torch.float64) / 4

    def loss(y: torch.Tensor) -> torch.Tensor:
        return F.softplus((y * w).flatten(1).sum(1))

    for i in range(B):  # one image at a time: each must agree, not only their sum
        xi = x[i:i + 1]
        policy = Policy([_op(name, p)]).double().train()
        params = policy.sample(1, generator=torch.Generator().manual_seed(20 + i))
        loss(policy(xi, params=params)).sum().backward()
        grad = float(policy.ops[0].probability.grad)
        applied = _applied(name, xi, policy.ops[0], params)
        expected = _fd(lambda q: _expected_loss(loss, xi, applied, q), p)
        if abs(expected) < 1e-6:  # this image's draw barely changes it (e.g. a tiny angle)
            assert abs(grad) < 1e-4
            continue
        assert grad * expected > 0 and 0.5 < grad / expected < 2.0, (i, grad, expected)


def _enumerated_expected_loss(policy: Policy, x: torch.Tensor, params: AugmentParams, loss, probs: list[float]):
    """``E[L]`` over all 2^N gate configurations of a sequential policy, magnitudes held at the draw.

    Each configuration is forced through the gate noise (``1e-6`` on, ``1 - 1e-6`` off) of a copy of
    the policy at p = 0.5, and weighted by its probability under ``probs``.
    """
    half = copy.deepcopy(policy)
    with torch.no_grad():
        for op in half.ops:
            op.probability.fill_(0.5)
    total = 0.0
    for config in itertools.product([0, 1], repeat=len(policy.ops)):
        weight = 1.0
        for on, q in zip(config, probs):
            weight *= q if on else 1 - q
        gate = torch.tensor([[1e-6 if on else 1 - 1e-6 for on in config]] * x.shape[0])
        with torch.no_grad():
            total += weight * float(loss(half(x, params=AugmentParams(params.u, gate, params.aux, None))).sum())
    return total


@pytest.mark.parametrize("probs", [[0.0, 1.0, 0.5, 1.0], [1.0, 0.3, 0.0, 0.7]])
def test_fused_geometric_run_gradients_average_to_the_expected_loss(probs):
    """rotate, translate-x, scale (one fused warp) then cutout: averaging the per-draw gradient over every
    gate configuration (weighted by its probability) gives d/dp_i E[L] for each op exactly (the loss and
    cutout are linear in the images, so the first-order estimator has no error to make)."""
    ops = [("rotate", (-30.0, 40.0)), ("translate-x", (-0.2, 0.1)), ("scale", (0.8, 1.3)), ("cutout", (0.2, 0.5))]
    policy = Policy([AugmentOp(n, q, r, symmetric=False) for (n, r), q in zip(ops, probs)]).double().train()
    x, loss = _images(3), _linear(5)
    params = policy.sample(B, generator=torch.Generator().manual_seed(4))
    average = torch.zeros(len(ops), dtype=torch.float64)
    for config in itertools.product([0, 1], repeat=len(ops)):
        weight = 1.0
        for on, q in zip(config, probs):
            weight *= q if on else 1 - q
        if weight == 0:
            continue
        gate = torch.tensor([[1e-6 if on else 1 - 1e-6 for on in config]] * B, dtype=torch.float32)
        policy.zero_grad()
        loss(policy(x, params=AugmentParams(params.u, gate, params.aux, None))).sum().backward()
        average += weight * torch.stack([op.probability.grad for op in policy.ops])
    for i in range(len(ops)):
        def expected(q: float) -> float:
            qs = list(probs)
            qs[i] = q
            return _enumerated_expected_loss(policy, x, params, loss, qs)
        fd = _fd(expected, probs[i])
        assert abs(fd) > 1e-3
        assert float(average[i]) == pytest.approx(fd, rel=1e-5), ops[i][0]


@pytest.mark.parametrize("composition", ["choose-one", "sub-policies"])
@pytest.mark.parametrize("weights", [[1.0, 2.0, 1.0], [0.0, 1.0, 3.0]])
def test_choice_weight_gradients_average_to_the_expected_loss(composition, weights):
    """Hard choices: averaging over the choice (weighted by pi) gives d/dw E[L], a weight of 0 included."""
    ops = [{"name": "rotate", "probability": 1.0, "magnitude": 20.0},
           {"name": "brightness", "probability": 1.0, "magnitude": 0.3},
           {"name": "hflip", "probability": 1.0}]
    groups = ops if composition == "choose-one" else [[op] for op in ops]
    policy = build_policy(groups, composition, weights=weights).double().train()
    x, loss = _images(5), _linear(9)
    params = policy.sample(B, generator=torch.Generator().manual_seed(6))
    pi = torch.tensor(weights, dtype=torch.float64) / sum(weights)
    uniform = copy.deepcopy(policy)
    with torch.no_grad():
        uniform.weights.fill_(1.0)
    outputs, average = [], torch.zeros(3, dtype=torch.float64)
    for k in range(3):
        choice = torch.full((B, 3), 1e-6)
        choice[:, k] = 1 - 1e-6  # Gumbel-max picks k (when its weight is not 0)
        forced = AugmentParams(params.u, params.gate, params.aux, choice)
        with torch.no_grad():
            outputs.append(float(loss(uniform(x, params=forced)).sum()))  # L_k: every image through option k
        if pi[k] > 0:
            policy.zero_grad()
            loss(policy(x, params=forced)).sum().backward()
            average += pi[k] * policy.weights.grad
    for j in range(3):
        def expected(wj: float) -> float:
            w = torch.tensor(weights, dtype=torch.float64)
            w[j] = wj
            return float((w / w.sum() * torch.tensor(outputs)).sum())
        fd = _fd(expected, weights[j], high=float("inf"))
        assert float(average[j]) == pytest.approx(fd, rel=1e-6, abs=1e-9)
    assert float(average.abs().min()) > 1e-3


def test_gumbel_choice_frequencies_and_zero_weight():
    noise = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)).clamp(1e-6, 1 - 1e-6)
    c = gumbel_choice(torch.tensor([0.0, 1.0, 3.0]), noise, tau=0.5, hard=True)
    torch.testing.assert_close(c.mean(0), torch.tensor([0.0, 0.25, 0.75]), atol=0.01, rtol=0)
    assert float(c[:, 0].max()) == 0.0


def _shipped():
    return sorted(POLICIES.glob("*.json"))


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: p.name)
def test_every_shipped_parameter_gets_a_finite_nonzero_gradient(path):
    """Train mode, one draw of 64 images, a random linear loss.

    Exception, by design: an op whose range has zero width at its identity (rotate by [0, 0]) is the
    identity whatever it draws, so its probability cannot change the output and its gradient is ~0
    (resampling rounding only); its range's gradient is alive, so it can grow back.
    """
    policy = load_policy(path).train()
    x = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    if not list(policy.parameters()):
        assert policy(x) is x
        return
    out = policy(x, generator=torch.Generator().manual_seed(1))
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
        op = policy.ops[int(name.split(".")[1])] if name.startswith("ops.") else None
        bounds = None if op is None else op.range()
        degenerate = bounds is not None and float(bounds[0].detach()) == float(bounds[1].detach()) == op.spec.identity
        if degenerate and name.endswith("probability"):
            assert float(param.grad.abs().max()) < 1e-3, name
        else:
            assert float(param.grad.abs().min()) > 1e-3, name


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_at_p1_turns_off_within_200_adam_steps(name):
    """Objective ``||policy(x) - x||^2`` rewards turning the op off; p starts at exactly 1."""
    policy = Policy([_op(name, 1.0)]).train()
    policy.ops[0].requires_grad_(False)
    policy.ops[0].probability.requires_grad_(True)
    opt = torch.optim.Adam([policy.ops[0].probability], lr=0.01)
    x = _images().float()
    g = torch.Generator().manual_seed(0)
    for step in range(200):
        opt.zero_grad()
        (policy(x, generator=g) - x).square().sum().backward()
        if step == 0:  # at exactly p = 1 the gradient already says "turn off" (a saturated gate says 0)
            assert float(policy.ops[0].probability.grad) > 1e-3
        opt.step()
        if float(policy.ops[0].prob().detach()) < 0.9:
            break
    p = float(policy.ops[0].prob().detach())
    assert p < 0.9, f"{name}: p={p} after {step + 1} steps"


def test_pushed_against_a_bound_it_comes_back_at_once():
    """An objective pushes p up (and a range wider) for 100 Adam steps at the bound, then reverses.

    With a plain straight-through clamp the stored values would drift ~1 past the bound and take ~100
    steps to return; ``clamp_st`` stops the drift, so they leave the bound within a few steps."""
    op = AugmentOp("rotate", 1.0, 170.0)
    opt = torch.optim.Adam([{"params": [op.probability], "lr": 0.01}, {"params": [op.high], "lr": 0.01 * 360}])
    for sign in (-1.0, 1.0):  # -width rewards p = 1 and the full range; +width the opposite
        for step in range(100):
            opt.zero_grad()
            (sign * op.width()).backward()
            opt.step()
            if sign > 0 and float(op.prob().detach()) < 0.9 and float(op.range()[1].detach()) < 170.0:
                break
        if sign < 0:
            drift = float(op.probability.detach()) - 1.0, float(op.high.detach()) - 180.0
            assert drift[0] < 0.15 and drift[1] < 0.15 * 360, f"drifted past the bound by {drift}"
            assert float(op.prob().detach()) == 1.0 and float(op.range()[1].detach()) == 180.0
    assert step < 40, f"took {step + 1} steps to leave the bound"


def test_clamp_st_gradient_at_and_beyond_bounds():
    x = torch.tensor([0.0, 1.0, 1.5, 1.5, -0.5, -0.5, 0.5], requires_grad=True)
    y = clamp_st(x, 0.0, 1.0)
    y.backward(torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 2.0]))
    assert y.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.5]
    assert x.grad.tolist() == [1.0, -1.0, 0.0, 1.0, 0.0, -1.0, 2.0]


def test_zero_width_asymmetric_range_can_widen():
    """cutout [0.5, 0.5]: low and high get different gradients, each matching finite differences, and
    the width bonus pushes them apart."""
    policy = Policy([AugmentOp("cutout", 1.0, (0.5, 0.5))]).double().train()
    x, loss = _images(4), _linear(3)
    params = policy.sample(B, generator=torch.Generator().manual_seed(2))
    op = policy.ops[0]
    loss(policy(x, params=params)).sum().backward()
    for param in (op.low, op.high):
        with torch.no_grad():
            param += 1e-6
            plus = loss(policy(x, params=params)).sum()
            param -= 2e-6
            minus = loss(policy(x, params=params)).sum()
            param += 1e-6
        assert float(param.grad) == pytest.approx(float((plus - minus) / 2e-6), rel=1e-4)
    assert abs(float(op.low.grad) - float(op.high.grad)) > 1e-3
    op.zero_grad()
    op.width().backward()
    assert float(op.high.grad) > 0 > float(op.low.grad)


@pytest.mark.parametrize("path", _shipped() + [None], ids=[p.name for p in _shipped()] + ["every-op"])
def test_learning_does_not_change_the_forward(path):
    """The same params give bit-identical images whether probabilities need gradients or not (the
    gradient paths add counterfactuals, never change values)."""
    policy = (load_policy(path) if path else build_policy([{"name": n, "probability": 0.6} for n in OP_NAMES])).train()
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    params = policy.sample(16, generator=torch.Generator().manual_seed(1))
    learning = policy(x, params=params)
    frozen = policy.requires_grad_(False)(x, params=params)
    assert torch.equal(learning, frozen)
