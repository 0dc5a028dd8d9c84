"""Compositions, fused warps, reference implementations, width, sampling statistics."""

from __future__ import annotations

import math

import kornia.augmentation as K
import kornia.geometry.transform as KT
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from augdistill.augment import AugmentOp, AugmentParams, Policy, build_policy, dsa_policy, identity_policy
from augdistill.augment import functional as AF
from augdistill.errors import ConfigError


def _smooth(b: int = 6, c: int = 3, h: int = 12, w: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.rand(b, c, 2 * h, 2 * w, generator=g), 2)


def _fixed(name: str, value: float) -> Policy:
    """A p=1 policy applying ``name`` with the constant magnitude ``value``."""
    return Policy([AugmentOp(name, 1.0, (value, value), symmetric=False)]).train()


GEOMETRIC_REFERENCES = [
    ("rotate", 25.0, lambda x, v: KT.rotate(x, torch.full((x.shape[0],), v), align_corners=False)),
    ("translate-x", 0.2, lambda x, v: KT.translate(x, torch.tensor([[v * x.shape[3], 0.0]]).expand(x.shape[0], 2),
                                                   align_corners=False)),
    ("translate-y", -0.15, lambda x, v: KT.translate(x, torch.tensor([[0.0, v * x.shape[2]]]).expand(x.shape[0], 2),
                                                     align_corners=False)),
    ("scale", 1.3, lambda x, v: KT.scale(x, torch.full((x.shape[0], 2), v), align_corners=False)),
    ("shear-x", 20.0, lambda x, v: K.RandomAffine(0.0, shear=(v, v, 0.0, 0.0), p=1.0, align_corners=False)(x)),
    ("shear-y", -20.0, lambda x, v: K.RandomAffine(0.0, shear=(0.0, 0.0, v, v), p=1.0, align_corners=False)(x)),
]


@pytest.mark.parametrize("name, value, reference", GEOMETRIC_REFERENCES, ids=[r[0] for r in GEOMETRIC_REFERENCES])
def test_geometric_ops_match_kornia(name, value, reference):
    x = _smooth()
    torch.testing.assert_close(_fixed(name, value)(x), reference(x, value), atol=2e-5, rtol=0)


def test_hflip_is_exact_mirror():
    x = _smooth()
    out = Policy([AugmentOp("hflip", 1.0)]).train()(x)
    torch.testing.assert_close(out, x.flip(3), atol=1e-6, rtol=0)


PIXEL_REFERENCES = [  # torchvision functional API (grey weights differ from kornia in the 4th digit)
    ("brightness", 0.2, lambda x, v: (x + v).clamp(0, 1), 1e-6),
    ("contrast", 1.4, lambda x, v: TF.adjust_contrast(x, v), 1e-4),
    ("saturation", 0.3, lambda x, v: TF.adjust_saturation(x, v), 1e-4),
    ("hue", 0.1, lambda x, v: TF.adjust_hue(x, v), 1e-4),
    ("sharpness", 1.7, lambda x, v: TF.adjust_sharpness(x, v), 1e-5),
]


@pytest.mark.parametrize("name, value, reference, atol", PIXEL_REFERENCES, ids=[r[0] for r in PIXEL_REFERENCES])
def test_pixel_ops_match_torchvision(name, value, reference, atol):
    x = _smooth()
    torch.testing.assert_close(_fixed(name, value)(x), reference(x, value), atol=atol, rtol=0)


def test_cutout_zeroes_the_square_and_only_it():
    x = torch.ones(1, 1, 8, 8)
    out = AF.cutout(x, torch.tensor([0.5]), torch.tensor([[0.5, 0.5]]))
    expected = torch.ones(8, 8)
    expected[2:6, 2:6] = 0
    assert torch.equal(out[0, 0], expected)
    half = AF.cutout(x, torch.tensor([0.5]), torch.tensor([[0.5 + 1 / 16, 0.5]]))  # half a pixel right
    assert torch.equal(half[0, 0, 3], torch.tensor([1, 1, 0.5, 0, 0, 0, 0.5, 1]))


def test_geometric_run_is_one_warp_of_the_matrix_product():
    x = _smooth()
    policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": (30.0, 30.0), "symmetric": False},
                           {"name": "translate-x", "probability": 1.0, "magnitude": (0.1, 0.1), "symmetric": False},
                           {"name": "scale", "probability": 1.0, "magnitude": (1.2, 1.2), "symmetric": False}]).train()
    h, w = x.shape[-2:]
    v = torch.ones(x.shape[0])
    matrix = AF.rotate_matrix(30 * v, h, w) @ AF.translate_x_matrix(0.1 * v, h, w) @ AF.scale_matrix(1.2 * v, h, w)
    assert torch.equal(policy(x), AF.warp(x, matrix))
    # the same composition done op by op (three resamplings) agrees up to interpolation blur
    step = AF.warp(AF.warp(AF.warp(x, AF.rotate_matrix(30 * v, h, w)), AF.translate_x_matrix(0.1 * v, h, w)),
                   AF.scale_matrix(1.2 * v, h, w))
    assert (policy(x) - step).abs().mean() < 0.05


def test_pixel_op_splits_geometric_runs():
    x = _smooth()
    policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": (20.0, 20.0), "symmetric": False},
                           {"name": "brightness", "probability": 1.0, "magnitude": (0.1, 0.1), "symmetric": False},
                           {"name": "rotate", "probability": 1.0, "magnitude": (20.0, 20.0), "symmetric": False}]).train()
    v = torch.full((x.shape[0],), 20.0)
    m = AF.rotate_matrix(v, *x.shape[-2:])
    expected = AF.warp(AF.brightness(AF.warp(x, m), torch.full((x.shape[0],), 0.1)), m)
    assert torch.equal(policy(x), expected)
    assert list(policy.magnitudes()) == ["rotate.0", "brightness", "rotate.1"]


def test_gate_frequency_matches_probability():
    policy = build_policy([{"name": "brightness", "probability": 0.3, "magnitude": (0.5, 0.5), "symmetric": False}])
    x = torch.full((20000, 1, 2, 2), 0.25)
    out = policy.train()(x, generator=torch.Generator().manual_seed(0))
    applied = (out[:, 0, 0, 0] > 0.5).float().mean()
    assert abs(float(applied) - 0.3) < 0.02


def test_choose_one_applies_exactly_one_op_with_weight_frequencies():
    ops = [{"name": "brightness", "probability": 1.0, "magnitude": (d, d), "symmetric": False} for d in (0.1, 0.2, 0.4)]
    policy = build_policy(ops, "choose-one", weights=[1.0, 2.0, 5.0]).train()
    out = policy(torch.zeros(16000, 1, 1, 1), generator=torch.Generator().manual_seed(0)).flatten()
    counts = torch.stack([(out - d).abs().lt(1e-6).float().mean() for d in (0.1, 0.2, 0.4)])
    assert abs(float(counts.sum()) - 1.0) < 1e-6  # every sample got exactly one op
    torch.testing.assert_close(counts, torch.tensor([1 / 8, 2 / 8, 5 / 8]), atol=0.02, rtol=0)


def test_choice_weights_get_gradient():
    ops = [{"name": "brightness", "probability": 1.0, "magnitude": (d, d), "symmetric": False} for d in (0.1, 0.3)]
    policy = build_policy(ops, "choose-one").train()
    policy(torch.full((64, 1, 2, 2), 0.2), generator=torch.Generator().manual_seed(0)).sum().backward()
    assert policy.weights.grad is not None and policy.weights.grad.abs().sum() > 0


@pytest.mark.parametrize("composition", ["choose-one", "sub-policies"])
def test_relaxed_choice_gradients_match_finite_differences(composition):
    ops = [{"name": "brightness", "probability": 0.7, "magnitude": 0.2}, {"name": "rotate", "probability": 0.6},
           {"name": "contrast", "probability": 0.8}]
    groups = ops if composition == "choose-one" else [ops[:2], ops[2:]]
    policy = build_policy(groups, composition, weights=[1.0, 2.0, 0.5][:3 if composition == "choose-one" else 2],
                          hard=False, temperature=1.0).double().train()
    x = _smooth(b=3, c=1, h=8, w=8).double().requires_grad_(True)
    params = policy.sample(3, generator=torch.Generator().manual_seed(0))
    names = [n for n, _ in policy.named_parameters()]
    weights = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(x, *values):
        return (torch.func.functional_call(policy, dict(zip(names, values)), (x,), {"params": params}) * weights).sum()

    values = [p.detach().clone().requires_grad_(True) for p in policy.parameters()]
    assert torch.autograd.gradcheck(loss, (x, *values), eps=1e-6, atol=1e-5, rtol=1e-3)
    grad_w = torch.autograd.grad(loss(x, *values), values[names.index("weights")])[0]
    assert grad_w.abs().min() > 0


def test_sub_policies_apply_whole_groups():
    groups = [[{"name": "brightness", "probability": 1.0, "magnitude": (0.1, 0.1), "symmetric": False},
               {"name": "brightness", "probability": 1.0, "magnitude": (0.2, 0.2), "symmetric": False}],
              [{"name": "brightness", "probability": 1.0, "magnitude": (0.05, 0.05), "symmetric": False}]]
    policy = build_policy(groups, "sub-policies").train()
    assert policy.groups == ((0, 1), (2,))
    out = policy(torch.zeros(2000, 1, 1, 1), generator=torch.Generator().manual_seed(0)).flatten()
    first, second = (out - 0.3).abs().lt(1e-6), (out - 0.05).abs().lt(1e-6)
    assert bool((first | second).all()) and 0.4 < float(first.float().mean()) < 0.6


def test_width_definition_and_gradient():
    policy = build_policy([{"name": "rotate", "probability": 0.5, "magnitude": 90.0},
                           {"name": "hflip", "probability": 0.25}])
    width = policy.width()
    assert math.isclose(float(width.detach()), 0.5 * 180 / 360 + 0.25)
    width.backward()
    rot = policy.ops[0]
    assert math.isclose(float(rot.high.grad), 0.5 * 2 / 360) and math.isclose(float(rot.probability.grad), 0.5)
    chooser = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 90.0}, "hflip"], "choose-one",
                           weights=[3.0, 1.0], probability=1.0)
    assert math.isclose(float(chooser.width().detach()), 0.75 * 0.5 + 0.25 * 1.0)


def test_magnitudes_and_probabilities_are_physical():
    policy = build_policy([{"name": "rotate", "magnitude": 120.0, "probability": 0.9}, "scale"])
    mags = policy.magnitudes()
    assert mags["rotate"].tolist() == [-120.0, 120.0] and mags["scale"].tolist() == [0.8, 1.2]
    assert float(policy.probabilities()["rotate"]) == 0.9 and float(policy.probabilities()["scale"]) == 0.5


def test_out_of_bound_parameters_are_clamped_but_keep_gradient():
    policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 170.0}])
    with torch.no_grad():
        policy.ops[0].high.fill_(250.0)
        policy.ops[0].probability.fill_(1.3)
    assert policy.magnitudes()["rotate"].tolist() == [-180.0, 180.0]
    assert float(policy.probabilities()["rotate"]) == 1.0
    policy.width().backward()
    assert policy.ops[0].high.grad > 0


def test_requires_grad_false_freezes():
    policy = dsa_policy().requires_grad_(False).train()
    x = _smooth().requires_grad_(True)
    policy(x, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in policy.parameters())


def test_identity_policy_and_build_errors():
    x = _smooth()
    assert identity_policy().train()(x) is x
    with pytest.raises(ConfigError, match="unknown op"):
        build_policy(["spin"])
    with pytest.raises(ConfigError, match="composition"):
        build_policy(["rotate"], "shuffle")
    with pytest.raises(ConfigError, match="weights"):
        build_policy(["rotate", "scale"], "choose-one", weights=[1.0])


def test_sample_device_and_generator_streams():
    policy = dsa_policy()
    p1 = policy.sample(8, generator=torch.Generator().manual_seed(0), device="cpu")
    p2 = policy.sample(8, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((p1.u, p1.gate, p1.aux, p1.choice), (p2.u, p2.gate, p2.aux, p2.choice)))
    assert not p1.u.requires_grad and p1.u.shape == (8, len(policy.ops)) and p1.choice.shape == (8, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    policy = dsa_policy().train()
    x = _smooth()
    params = policy.sample(x.shape[0], generator=torch.Generator().manual_seed(0))
    cpu = policy(x, params=params)
    gpu = policy.cuda()(x.cuda(), params=params.to("cuda"))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_backward_has_no_host_sync():
    policy = dsa_policy().cuda().train()
    x = _smooth().cuda().requires_grad_(True)
    params = policy.sample(x.shape[0], generator=torch.Generator().manual_seed(0), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        (policy(x, params=params).sum() - policy.width()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _raises(fn, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        fn()
    assert needle in str(info.value), str(info.value)


def test_bad_params_give_one_clear_error():
    policy = build_policy(["rotate", "brightness"], "choose-one").train()
    x = _smooth(b=4)
    good = policy.sample(4, generator=torch.Generator().manual_seed(0))
    _raises(lambda: policy(x, params="noise"), "params must be AugmentParams from Policy.sample, got str")
    _raises(lambda: policy(x, params=policy.sample(5)), "got batch 4 and a policy of 2 ops")
    _raises(lambda: policy(x, params=AugmentParams(good.u, good.gate, good.aux, None)),
            "params.choice must be a float tensor (4, 2)")
    _raises(lambda: policy(x, params=AugmentParams(good.u, good.gate[:, :1], good.aux, good.choice)),
            "params.gate must be a float tensor (4, 2)")
    _raises(lambda: policy(x, params=AugmentParams(good.u, good.gate, good.aux.to("meta"), good.choice)),
            "params.aux must be a float tensor (4, 2, 2) on cpu")
    _raises(lambda: policy(x, ranges=torch.zeros(4, 2)), "ranges must be a float tensor of shape (4, 2, 2)")


def test_bad_sampling_arguments():
    policy = build_policy(["rotate"])
    _raises(lambda: policy.sample(0), "batch_size must be an integer >= 1, got 0")
    _raises(lambda: policy.sample(True), "batch_size must be an integer >= 1, got True")
    _raises(lambda: policy.sample(2.0), "batch_size must be an integer >= 1, got 2.0")
    _raises(lambda: policy.sample(2, generator=0), "generator must be a torch.Generator or None, got int")
    _raises(lambda: policy.sample(2, device="banana"), "device 'banana' is not a torch device")


@pytest.mark.parametrize("make, needle", [
    (lambda: AugmentOp("rotate", "0.5"), "probability: expected a finite number in [0, 1], got '0.5'"),
    (lambda: AugmentOp("rotate", 10 ** 400), "probability: expected a finite number in [0, 1]"),
    (lambda: AugmentOp("rotate", float("nan")), "probability: expected a finite number"),
    (lambda: AugmentOp("rotate", 0.5, 10 ** 400), "magnitude must be a finite number or (low, high)"),
    (lambda: AugmentOp("rotate", 0.5, (1, "a"), symmetric=False), "range (1, 'a') is not two finite numbers"),
    (lambda: AugmentOp("rotate", 0.5, (1, 2, 3)), "magnitude must be a finite number or (low, high)"),
    (lambda: AugmentOp("rotate", 0.5, "30"), "magnitude must be a finite number or (low, high)"),
    (lambda: AugmentOp("rotate", 0.5, {"low": -10, "high": 10}), "magnitude must be a finite number or (low, high)"),
    (lambda: AugmentOp("rotate", 0.5, symmetric="yes"), "symmetric: expected true or false, got 'yes'"),
    (lambda: AugmentOp(3), "unknown op 3"),
    (lambda: AugmentOp(["rotate"]), "unknown op ['rotate']"),
    (lambda: build_policy("rotate"), "ops must be a list, got str"),
    (lambda: build_policy([["rotate"]]), "an op is a name or a dict with 'name'; got ['rotate']"),
    (lambda: build_policy(["rotate"], "sub-policies"), "ops[0] (a sub-policy) must be a list, got str"),
    (lambda: build_policy([{"name": "rotate", "spin": 1}]), "unknown keys [\"'spin'\"]"),
    (lambda: build_policy(["rotate"], "choose-one", weights=["a"]), "weights must be 1 finite numbers >= 0"),
    (lambda: build_policy(["rotate"], "choose-one", weights=[float("inf")]), "weights must be 1 finite numbers"),
    (lambda: build_policy(["rotate"], image_size=(8,)), "image_size must be (height, width) positive integers"),
    (lambda: build_policy(["rotate"], image_size="8x8"), "image_size must be a list, got str"),
    (lambda: build_policy(["rotate"], temperature="hot"), "temperature must be a finite number > 0, got 'hot'"),
    (lambda: build_policy(["rotate"], hard="yes"), "hard must be True or False, got 'yes'"),
    (lambda: build_policy(["rotate"], provenance=[1]), "provenance must be a mapping or None, got list"),
    (lambda: Policy(["rotate"]), "ops[0] must be an AugmentOp, got str"),
    (lambda: Policy([AugmentOp("rotate")], 3), "composition 3 unknown"),
    (lambda: Policy([AugmentOp("rotate")], "sub-policies", sub_policies=[["0"]]), "sub_policies must list op indices"),
])
def test_bad_construction_arguments(make, needle):
    _raises(make, needle)
