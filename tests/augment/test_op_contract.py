"""The contract every op in the registry must honour (one parametrised test per property)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.func import functional_call

from augdistill.augment import OP_NAMES, OPS, AugmentOp, Policy, load_policy, policy_from_dict
from augdistill.augment import functional as AF
from augdistill.errors import ConfigError

B, C, H, W = 4, 3, 10, 12


def _images(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Smooth-ish images in [0.3, 0.7] (no clipping for moderate magnitudes)."""
    g = torch.Generator().manual_seed(seed)
    return (0.3 + 0.4 * torch.rand(B, C, H, W, generator=g)).to(dtype)


def _policy(name: str, p: float, hard: bool = True, temperature: float = 0.5) -> Policy:
    spec = OPS[name]
    if spec.has_magnitude:
        low, high = spec.default
        op = AugmentOp(name, probability=p, magnitude=(low, high), symmetric=spec.symmetric)
    else:
        op = AugmentOp(name, probability=p)
    return Policy([op], hard=hard, temperature=temperature)


def _params(policy: Policy, seed: int = 1):
    return policy.sample(B, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=OP_NAMES)
def name(request) -> str:
    return request.param


def test_p0_is_identity(name):
    policy = _policy(name, 0.0).train()
    x = _images()
    assert torch.equal(policy(x, params=_params(policy)), x)


def test_p1_always_applies_the_kernel(name):
    policy = _policy(name, 1.0).train()
    x = _images()
    params = _params(policy)
    out = policy(x, params=params)
    v = policy.ops[0].values(params.u[:, 0])
    spec = OPS[name]
    expected = (AF.warp(x, spec.fn(v, H, W)) if spec.geometric else spec.fn(x, v, params.aux[:, 0]))
    assert torch.equal(out, expected)
    changed = (out - x).flatten(1).abs().amax(1)
    assert bool((changed > 1e-4).all()), f"{name} at p=1 left some sample unchanged: {changed}"


def test_batch_is_per_sample(name):
    policy = _policy(name, 0.5).train()
    x = _images()
    params = _params(policy)
    out = policy(x, params=params)
    for i in range(B):
        single = type(params)(params.u[i:i + 1], params.gate[i:i + 1], params.aux[i:i + 1], None)
        torch.testing.assert_close(policy(x[i:i + 1], params=single), out[i:i + 1], atol=1e-6, rtol=0)


def test_replay_is_bit_identical_and_leaves_global_rng(name):
    policy = _policy(name, 0.5).train()
    x = _images()
    state = torch.get_rng_state()
    a = policy(x, params=_params(policy, seed=3))
    b = policy(x, params=_params(policy, seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(policy(x, generator=g1), policy(x, generator=g2))


def test_gradients_match_finite_differences(name):
    """d loss / d (input, probability, magnitude) vs central differences, float64, same noise.

    Relaxed gates (``hard=False``) make the output smooth in the probability; with hard gates the
    probability gradient is the straight-through estimate, which finite differences cannot see.
    """
    policy = _policy(name, 0.6, hard=False, temperature=1.0).double().train()
    x = _images(torch.float64).requires_grad_(True)
    params = _params(policy)
    names = [n for n, _ in policy.named_parameters()]
    weights = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def loss(x, *values):
        out = functional_call(policy, dict(zip(names, values)), (x,), {"params": params})
        return (out * weights).sum()

    values = [p.detach().clone().requires_grad_(True) for p in policy.parameters()]
    assert torch.autograd.gradcheck(loss, (x, *values), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)
    grads = torch.autograd.grad(loss(x, *values), (x, *values))
    for n, g in zip(["input"] + names, grads):
        assert g.abs().sum() > 0, f"{name}: zero gradient w.r.t. {n}"


def test_hard_gates_at_p1_match_finite_differences(name):
    """With hard gates at p=1 the output is smooth in the input and the magnitude: check those exactly."""
    policy = _policy(name, 1.0, hard=True).double().train()
    x = _images(torch.float64).requires_grad_(True)
    params = _params(policy)
    names = [n for n, _ in policy.named_parameters() if n != "ops.0.probability"]
    weights = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def loss(x, *values):
        out = functional_call(policy, dict(zip(names, values)), (x,), {"params": params}, strict=False)
        return (out * weights).sum()

    values = [dict(policy.named_parameters())[n].detach().clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(loss, (x, *values), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_hard_gate_gradient_reaches_probability(name):
    policy = _policy(name, 0.5, hard=True).train()
    x = _images().requires_grad_(True)
    out = policy(x, params=_params(policy))
    out.square().sum().backward()
    assert policy.ops[0].probability.grad is not None and policy.ops[0].probability.grad.abs() > 0
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [torch.rand(C, H, W), torch.randint(0, 2, (B, C, H, W)), "image"])
def test_bad_input_raises(name, bad):
    policy = _policy(name, 0.5).train()
    with pytest.raises(ConfigError, match="float tensor"):
        policy(bad)


def test_bad_params_and_settings_raise(name):
    policy = _policy(name, 0.5).train()
    with pytest.raises(ConfigError, match="batch"):
        policy(_images(), params=policy.sample(B + 1))
    with pytest.raises(ConfigError, match="probability"):
        AugmentOp(name, probability=1.5)
    spec = OPS[name]
    if spec.has_magnitude:
        with pytest.raises(ConfigError, match="exceeds"):
            AugmentOp(name, magnitude=(spec.bounds[0] - 1.0, spec.bounds[1]))
        with pytest.raises(ConfigError, match="negative"):
            AugmentOp(name, magnitude=(spec.default[1], spec.default[0]))
    else:
        with pytest.raises(ConfigError, match="no magnitude"):
            AugmentOp(name, magnitude=0.3)


def test_pickle_and_deepcopy(name):
    policy = _policy(name, 0.5).train()
    x, params = _images(), _params(policy)
    out = policy(x, params=params)
    for clone in (pickle.loads(pickle.dumps(policy)), copy.deepcopy(policy)):
        assert torch.equal(clone(x, params=params), out)


def test_json_round_trip_exact(name, tmp_path):
    spec = OPS[name]
    if spec.has_magnitude:
        lo, hi = spec.bounds
        third = (hi - lo) / 3.0
        op = AugmentOp(name, probability=0.123456789012345, magnitude=(lo + third * 0.7, hi - third * 0.3),
                       symmetric=False)
    else:
        op = AugmentOp(name, probability=0.123456789012345)
    policy = Policy([op], image_size=(H, W), temperature=0.37, hard=False)
    data = policy.to_dict(provenance={"dataset": "digits", "seed": 3, "metrics": {"acc": 0.987654321}})
    assert policy_from_dict(data).to_dict() == data
    path = tmp_path / f"{name}.json"
    path.write_text(policy.to_json(provenance=data["provenance"]))
    loaded = load_policy(path)
    assert loaded.to_dict() == data
    for (n, a), (_, b) in zip(policy.named_parameters(), loaded.named_parameters()):
        assert torch.equal(a, b), n


def test_eval_mode_is_identity_unless_asked(name):
    policy = _policy(name, 1.0).eval()
    x = _images()
    assert policy(x) is x
    assert not torch.equal(policy(x, augment=True, generator=torch.Generator().manual_seed(0)), x)
