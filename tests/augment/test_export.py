"""torchvision v2 / kornia export of every op and every shipped policy; pasteable snippets.

(The exported distributions are compared with the policy's in ``test_export_distribution.py``.)
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from augdistill.augment import OP_NAMES, OPS, AugmentOp, AugmentParams, Policy, build_policy, load_policy
from augdistill.augment import kornia_ops, torchvision_ops
from augdistill.augment.export import python_snippet, to_kornia, to_torchvision
from augdistill.errors import ConfigError, PolicyFormatError

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHIPPED = sorted(POLICIES.glob("*.json"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _tv_range(name: str, t) -> tuple[float, float] | None:
    """The (low, high) a torchvision transform samples from, read back from its attributes."""
    if isinstance(t, (torchvision_ops.RandomTranslate, torchvision_ops.RandomBrightnessDelta,
                      torchvision_ops.RandomSharpness, torchvision_ops.RandomCutout)):
        return t.low, t.high
    if isinstance(t, v2.RandomRotation):
        return tuple(t.degrees)
    if isinstance(t, v2.RandomAffine):
        if name == "scale":
            return tuple(t.scale)
        return tuple(t.shear[:2] if name.endswith("x") else t.shear[2:])
    if isinstance(t, v2.ColorJitter):
        return tuple(getattr(t, name))
    assert isinstance(t, v2.RandomHorizontalFlip) and t.p == 1.0
    return None


def test_every_op_exports_with_its_range_and_probability():
    specs = [{"name": n, "probability": 0.1 + 0.05 * i} for i, n in enumerate(OP_NAMES)]
    policy = build_policy(specs)
    pipeline = policy.to_torchvision()
    assert isinstance(pipeline, v2.Compose) and len(pipeline.transforms) == len(OP_NAMES)
    mags, probs = policy.magnitudes(), policy.probabilities()
    for op, wrapper in zip(policy.ops, pipeline.transforms):
        assert isinstance(wrapper, v2.RandomApply) and wrapper.p == float(probs[op.name])
        got = _tv_range(op.name, wrapper.transforms[0])
        assert got == (None if op.name not in mags else tuple(mags[op.name].tolist())), op.name
    assert pipeline(torch.rand(3, 16, 16)).shape == (3, 16, 16)
    kornia = policy.to_kornia()
    assert isinstance(kornia, K.AugmentationSequential) and len(kornia) == len(OP_NAMES)
    assert [m.p for m in kornia.children()] == [float(probs[n]) for n in OP_NAMES]
    assert kornia(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


def test_compositions_and_empty_policies():
    policy = build_policy([["rotate", "scale"], ["contrast"], []], "sub-policies", weights=[1.0, 3.0, 0.0])
    tv = policy.to_torchvision()
    assert isinstance(tv, v2.RandomChoice) and tv.p == [0.25, 0.75, 0.0]
    assert [type(t) for t in tv.transforms] == [v2.Compose, v2.Compose, v2.Identity]
    kornia = policy.to_kornia()
    assert isinstance(kornia, kornia_ops.RandomChoice) and kornia.weights.tolist() == [1.0, 3.0, 0.0]
    assert isinstance(kornia.branches[2], torch.nn.Identity)
    for empty in (Policy([]), load_policy(POLICIES / "identity.json")):
        x = torch.rand(3, 8, 8)
        assert isinstance(empty.to_torchvision(), v2.Identity) and empty.to_torchvision()(x) is x
        assert isinstance(empty.to_kornia(), torch.nn.Identity)


def test_kornia_choice_is_per_sample_with_the_weights():
    ops = [{"name": "brightness", "probability": 1.0, "magnitude": (d, d), "symmetric": False} for d in (0.1, 0.3)]
    module = build_policy(ops, "choose-one", weights=[1.0, 3.0]).to_kornia()
    torch.manual_seed(0)
    out = module(torch.zeros(4000, 1, 2, 2)).flatten(1)[:, 0]
    assert float((out - 0.3).abs().lt(1e-6).float().mean()) == pytest.approx(0.75, abs=0.03)
    assert bool(((out - 0.1).abs().lt(1e-6) | (out - 0.3).abs().lt(1e-6)).all())


FIXED = {"rotate": 25.0, "translate-x": 0.125, "translate-y": -0.2, "scale": 1.25, "shear-x": 15.0, "shear-y": -15.0,
         "hflip": None, "brightness": 0.2, "contrast": 1.3, "saturation": 0.5, "hue": 0.1, "sharpness": 1.5,
         "cutout": 0.4}


@pytest.mark.parametrize("name", OP_NAMES)
def test_kornia_export_applies_the_same_transform(name):
    """With p=1 and a degenerate range the kornia module and the policy produce the same image
    (cutout: the policy replays the module's sampled centre)."""
    value = FIXED[name]
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 24, 24, generator=g), 2)
    op = AugmentOp(name, 1.0) if value is None else AugmentOp(name, 1.0, (value, value), symmetric=False)
    policy = Policy([op]).train()
    exported = policy.to_kornia()
    out = exported(x)
    params = policy.sample(4, generator=g)
    if name == "cutout":
        sampled = exported[0]._params
        centre = torch.stack([sampled["centre_x"], sampled["centre_y"]], dim=1)[:, None, :]
        params = AugmentParams(params.u, params.gate, centre, None)
    torch.testing.assert_close(out, policy(x, params=params), atol=2e-4, rtol=0)


class _Images(Dataset):
    """Each item: every pipeline applied to one PIL image and one float tensor."""

    def __init__(self, pipelines: list) -> None:
        self.pipelines = pipelines

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(i)
        tensor = torch.rand(3, 16, 16, generator=g)
        pil = PIL.Image.fromarray((tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        outs = []
        for pipeline in self.pipelines:
            from_pil = pipeline(pil)
            assert isinstance(from_pil, PIL.Image.Image) and from_pil.size == (16, 16)
            outs += [torch.from_numpy(np.asarray(from_pil)).permute(2, 0, 1).float() / 255, pipeline(tensor)]
        return torch.stack(outs)


def test_shipped_policies_export_and_run_in_dataloader_workers():
    """Every shipped policy: a plain v2 pipeline that survives pickling (what spawned DataLoader workers
    receive) unchanged, and runs on PIL images and tensors inside a DataLoader with two workers."""
    pipelines = [load_policy(path).to_torchvision() for path in SHIPPED]
    clones = pickle.loads(pickle.dumps(pipelines))
    for pipeline, clone in zip(pipelines, clones):
        x = torch.rand(3, 16, 16)
        torch.manual_seed(3)
        a = pipeline(x)
        torch.manual_seed(3)
        assert torch.equal(clone(x), a)
    loader = DataLoader(_Images(clones), batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and batches[0].shape == (2, 2 * len(SHIPPED), 3, 16, 16)
    assert all(bool(torch.isfinite(b).all()) and float(b.min()) >= 0 and float(b.max()) <= 1 for b in batches)


@pytest.mark.parametrize("name", ["translate-x", "brightness", "sharpness", "cutout"])
def test_own_transforms_keep_input_types(name):
    """The package's v2 transforms on uint8 tensors, tv_tensors.Image and PIL: same type, same result."""
    pipeline = Policy([AugmentOp(name, 1.0)]).to_torchvision()
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8)
    outs = {}
    for kind, inpt in (("uint8", image), ("tv", tv_tensors.Image(image)), ("float", image.float() / 255),
                       ("pil", PIL.Image.fromarray(image.permute(1, 2, 0).numpy()))):
        torch.manual_seed(0)
        out = pipeline(inpt)
        assert type(out) is type(inpt) or (kind == "pil" and isinstance(out, PIL.Image.Image))
        outs[kind] = torch.tensor(np.asarray(out)).permute(2, 0, 1) if kind == "pil" else out.as_subclass(torch.Tensor)
    assert torch.equal(outs["uint8"], outs["tv"]) and outs["uint8"].dtype == torch.uint8
    reference = (outs["float"] * 255).round()
    inner = (slice(None), slice(2, -2), slice(2, -2))  # PIL fills the border uncovered by a shift its own way
    for kind in ("uint8", "pil"):
        assert float((outs[kind].float() - reference)[inner].abs().max()) <= 2.0, kind  # uint8 rounding


def _exec(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("path", SHIPPED + [None], ids=[p.name for p in SHIPPED] + ["every-op"])
def test_torchvision_snippet_builds_the_same_pipeline(path):
    policy = load_policy(path) if path else build_policy([{"name": n, "probability": 0.7} for n in OP_NAMES])
    code = python_snippet(path or policy, to="torchvision")
    imports = {alias.name.split(".")[0] for node in ast.walk(ast.parse(code))
               if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in ([ast.alias(node.module)] if isinstance(node, ast.ImportFrom) else node.names)}
    assert imports <= {"__future__", "typing", "torch", "torchvision", "PIL"}, imports
    built = _exec(code)["pipeline"]
    exported = to_torchvision(policy)
    assert repr(built) == repr(exported)
    x = torch.rand(3, 16, 16)
    for seed in range(5):
        torch.manual_seed(seed)
        a = exported(x)
        torch.manual_seed(seed)
        assert torch.equal(built(x), a)


@pytest.mark.parametrize("path", [POLICIES / "dsa.json", None], ids=["dsa", "every-op"])
def test_kornia_snippet_builds_the_same_pipeline(path):
    policy = load_policy(path) if path else build_policy([{"name": n, "probability": 0.7} for n in OP_NAMES])
    code = python_snippet(policy, to="kornia")
    assert "augdistill" not in code.replace("exported from an augdistill policy", "")
    built = _exec(code)["pipeline"]
    exported = to_kornia(policy)
    x = torch.rand(6, 3, 16, 16)
    for seed in range(3):
        torch.manual_seed(seed)
        a = exported(x)
        torch.manual_seed(seed)
        assert torch.equal(built(x), a)


def test_snippet_errors():
    with pytest.raises(ConfigError, match="export target 'onnx' unknown"):
        python_snippet(build_policy(["rotate"]), to="onnx")
    with pytest.raises(PolicyFormatError, match="cannot read"):
        python_snippet("/nonexistent/policy.json")
    with pytest.raises(ConfigError, match="expected a Policy"):
        to_torchvision("policies/dsa.json")

