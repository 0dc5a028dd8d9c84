"""The contract every op in the registry must honour (one parametrised test per property)."""

from __future__ import annotations

import copy
import itertools
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


BAD_INPUTS = [  # (id, input, message fragment): every op refuses these the same way
    ("3-d", lambda: torch.rand(C, H, W), "float tensor (B, C, H, W)"),
    ("5-d", lambda: torch.rand(1, B, C, H, W), "float tensor (B, C, H, W)"),
    ("int", lambda: torch.randint(0, 2, (B, C, H, W)), "float32 or float64; got Tensor (4, 3, 10, 12) torch.int64"),
    ("bool", lambda: torch.rand(B, C, H, W) > 0.5, "float32 or float64"),
    ("float16", lambda: _images().half(), "float32 or float64; got Tensor (4, 3, 10, 12) torch.float16"),
    ("bfloat16", lambda: _images().bfloat16(), "float32 or float64"),
    ("complex", lambda: torch.rand(B, C, H, W, dtype=torch.complex64), "float32 or float64"),
    ("string", lambda: "image", "float tensor (B, C, H, W); got str"),
    ("numpy", lambda: _images().numpy(), "float tensor (B, C, H, W); got ndarray"),
    ("meta", lambda: torch.empty(B, C, H, W, device="meta"), "meta tensor (4, 3, 10, 12) (shape only, no data)"),
    ("empty-batch", lambda: torch.rand(0, C, H, W), "is empty"),
    ("zero-width", lambda: torch.rand(B, C, H, 0), "is empty"),
    ("nan", lambda: _images().index_put_((torch.tensor([1]),), torch.tensor(float("nan"))), "NaN or infinite"),
    ("inf", lambda: _images().index_put_((torch.tensor([2]),), torch.tensor(float("-inf"))), "NaN or infinite"),
]


def test_bad_input_raises_one_clear_error(name):
    policy = _policy(name, 0.5).train()
    for case, make, needle in BAD_INPUTS:
        with pytest.raises(ConfigError) as info:
            policy(make(), generator=torch.Generator().manual_seed(0))
        assert needle in str(info.value), (case, str(info.value))


#: What each op accepts (channel counts; smallest side), as torchvision's counterparts do.
ACCEPTS = {"contrast": ((1, 3), 1), "saturation": ((1, 3), 1), "hue": ((1, 3), 1), "sharpness": ((1, 3), 3)}


def test_channel_counts_and_sizes(name):
    """Every op on 1-4 channels and 1x1 to 3x3 images: a finite result, or one ConfigError naming the op."""
    channels, smallest = ACCEPTS.get(name, ((1, 2, 3, 4), 1))
    policy = _policy(name, 1.0).train()
    for c, side in itertools.product((1, 2, 3, 4), (1, 2, 3)):
        x = torch.rand(2, c, side, side, generator=torch.Generator().manual_seed(c))
        if c in channels and side >= smallest:
            out = policy(x, generator=torch.Generator().manual_seed(0))
            assert out.shape == x.shape and bool(torch.isfinite(out).all())
            continue
        with pytest.raises(ConfigError, match=f"op '{name}' needs") as info:
            policy(x)
        assert f"({2}, {c}, {side}, {side})" in str(info.value)
    assert policy.eval()(torch.rand(2, 4, 1, 1)).shape == (2, 4, 1, 1)  # identity in eval: nothing to check


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
