"""torchvision v2 / kornia export: same ops, ranges, probabilities; clear errors otherwise."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch
from torchvision.transforms import v2

from augdistill.augment import OPS, AugmentOp, Policy, build_policy, dsa_policy
from augdistill.errors import ConfigError

EXPORTABLE_TV = [n for n, s in OPS.items() if not isinstance(s.torchvision, str)]
EXPORTABLE_K = [n for n, s in OPS.items() if not isinstance(s.kornia, str)]


def _tv_range(name: str, t) -> tuple[float, float] | None:
    """The (low, high) a torchvision transform samples from, read back from its attributes."""
    if isinstance(t, v2.RandomRotation):
        return tuple(t.degrees)
    if isinstance(t, v2.RandomAffine):
        if name.startswith("translate"):
            hi = t.translate[0 if name.endswith("x") else 1]
            return (-hi, hi)
        if name == "scale":
            return tuple(t.scale)
        return tuple(t.shear[:2] if name.endswith("x") else t.shear[2:])
    if isinstance(t, v2.ColorJitter):
        return tuple(getattr(t, name))
    assert isinstance(t, v2.RandomHorizontalFlip)
    return None


def test_torchvision_pipeline_matches_op_list_magnitudes_and_probabilities():
    specs = [{"name": n, "probability": 0.1 + 0.05 * i} for i, n in enumerate(EXPORTABLE_TV)]
    policy = build_policy(specs)
    pipeline = policy.to_torchvision()
    assert isinstance(pipeline, v2.Compose) and len(pipeline.transforms) == len(policy.ops)
    mags, probs = policy.magnitudes(), policy.probabilities()
    for op, wrapper in zip(policy.ops, pipeline.transforms):
        assert isinstance(wrapper, v2.RandomApply) and wrapper.p == float(probs[op.name])
        got = _tv_range(op.name, wrapper.transforms[0])
        assert got == (None if op.name not in mags else tuple(mags[op.name].tolist())), op.name
    out = pipeline(torch.rand(3, 16, 16))
    assert out.shape == (3, 16, 16)


def test_torchvision_choice_compositions():
    policy = build_policy([["rotate", "scale"], ["contrast"]], "sub-policies", weights=[1.0, 3.0])
    pipeline = policy.to_torchvision()
    assert isinstance(pipeline, v2.RandomChoice) and pipeline.p == [0.25, 0.75]
    assert [len(t.transforms) for t in pipeline.transforms] == [2, 1]


@pytest.mark.parametrize("name", [n for n in OPS if n not in EXPORTABLE_TV])
def test_torchvision_refuses_ops_without_equivalent(name):
    with pytest.raises(ConfigError, match=f"op '{name}' has no exact torchvision equivalent"):
        build_policy([name]).to_torchvision()


def test_asymmetric_translation_refused():
    policy = build_policy([{"name": "translate-x", "magnitude": (0.0, 0.2), "symmetric": False}])
    with pytest.raises(ConfigError, match="symmetrically"):
        policy.to_torchvision()
    with pytest.raises(ConfigError, match="symmetrically"):
        policy.to_kornia()


FIXED = {"rotate": 25.0, "translate-x": 0.125, "translate-y": 0.125, "scale": 1.25, "shear-x": 15.0,
         "shear-y": -15.0, "hflip": None, "brightness": 0.2, "contrast": 1.3, "saturation": 0.5, "hue": 0.1,
         "sharpness": 1.5}


@pytest.mark.parametrize("name", EXPORTABLE_K)
def test_kornia_export_applies_the_same_transform(name):
    """With p=1 and a degenerate range the kornia module and the policy must produce the same image."""
    value = FIXED[name]
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 24, 24, generator=g), 2)
    if name.startswith("translate"):  # kornia only translates symmetrically: replay its per-sample draw
        policy = Policy([AugmentOp(name, 1.0, value)]).train()
        module = policy.to_kornia()[0]
        assert module.p == 1.0 and module._param_generator.translate == ((value, 0.0) if name.endswith("x")
                                                                         else (0.0, value))
        out = module(x)
        axis = 0 if name.endswith("x") else 1
        shift = module._params["translations"][:, axis] / x.shape[3 - axis]  # pixels -> fraction of the side
        ranges = torch.stack([shift, shift], dim=1)[:, None, :]
        torch.testing.assert_close(out, policy(x, ranges=ranges), atol=2e-4, rtol=0)
        return
    op = AugmentOp(name, 1.0) if value is None else AugmentOp(name, 1.0, (value, value), symmetric=False)
    policy = Policy([op]).train()
    exported = policy.to_kornia()
    assert isinstance(exported, K.AugmentationSequential) and len(exported) == 1
    torch.testing.assert_close(exported(x), policy(x), atol=2e-4, rtol=0)


def test_kornia_refuses_cutout_and_dsa_names_it():
    with pytest.raises(ConfigError, match="op 'cutout' has no exact kornia equivalent"):
        dsa_policy().to_kornia()
    exported = dsa_policy(flip=False).to_kornia  # still has cutout
    with pytest.raises(ConfigError):
        exported()
    choose = build_policy(["rotate", "brightness"], "choose-one", weights=[1.0, 1.0])
    out = choose.to_kornia()(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 1, 8, 8)
