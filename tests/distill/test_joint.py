"""The joint bilevel loop: gradients to both groups, freezing, invariance discovery."""

from __future__ import annotations


import pytest
import torch

from augdistill.augment import build_policy, dsa_policy
from augdistill.config import (DataConfig, DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig,
                               SyntheticConfig)
from augdistill.data import load_dataset
from augdistill.errors import ConfigError
from augdistill.distill import Distiller
from augdistill.distill.methods.wang import real_loss
from augdistill.distill.policy_objective import PolicyObjective
from augdistill.inner import InnerSchedule, StepAugment, unroll
from augdistill.models import build_model, sample_params

OPS = ["rotate", "translate-x", "scale", "brightness", "hflip"]


def _joint(digits, mode="learn", ipc=2, **policy) -> Distiller:
    cfg = DistillConfig(synthetic=SyntheticConfig(ipc=ipc, learn_labels=True),
                        outer=OuterConfig(num_inits=1, real_per_class=16),
                        policy=PolicyConfig(mode=mode, ops=tuple(OPS), **policy))
    return Distiller(cfg, digits, policy=build_policy(OPS, image_size=(8, 8), probability=0.7))


@pytest.mark.parametrize("siamese", [False, True])
def test_one_backward_pass_reaches_every_learnable_quantity(digits, siamese):
    d = _joint(digits, siamese=siamese)
    d.step()
    for name, p in list(d.synthetic.named_parameters()) + list(d.policy.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_policy_stays_bit_identical_and_synthetic_still_learns(digits):
    d = _joint(digits, mode="fixed")
    policy_before = {k: v.clone() for k, v in d.policy.state_dict().items()}
    images_before = d.synthetic.images.detach().clone()
    for _ in range(3):
        d.step()
    assert all(torch.equal(policy_before[k], v) for k, v in d.policy.state_dict().items())
    assert not torch.equal(images_before, d.synthetic.images)


def test_frozen_synthetic_set_stays_bit_identical_and_policy_still_learns(digits):
    d = _joint(digits)
    d.synthetic.requires_grad_(False)
    synthetic_before = {k: v.clone() for k, v in d.synthetic.state_dict().items()}
    policy_before = {k: v.clone() for k, v in d.policy.state_dict().items()}
    for _ in range(3):
        d.step()
    assert all(torch.equal(synthetic_before[k], v) for k, v in d.synthetic.state_dict().items())
    assert any(not torch.equal(policy_before[k], v) for k, v in d.policy.state_dict().items())


@pytest.mark.parametrize("learn", [("magnitudes",), ("probabilities", "weights")])
def test_policy_learn_updates_the_named_kinds_only(digits, learn):
    """``--policy-learn``: DSA's policy fine-tuned in part; what is not named stays bit-identical to the loaded one."""
    cfg = DistillConfig(outer=OuterConfig(num_inits=1, real_per_class=16),
                        policy=PolicyConfig(mode="learn", siamese=True, learn=learn))
    d = Distiller(cfg, digits, policy=dsa_policy(image_size=(8, 8)))
    kinds = {"probabilities": lambda name: name.endswith("probability"), "weights": lambda name: name == "weights",
             "magnitudes": lambda name: name.endswith(("low", "high"))}
    before = {k: v.clone() for k, v in d.policy.state_dict().items()}
    for _ in range(3):
        d.step()
    moved = {k for k, v in d.policy.state_dict().items() if not torch.equal(before[k], v)}
    assert moved and all(any(kinds[kind](name) for kind in learn) for name in moved), moved
    assert all(any(kinds[kind](name) for name in moved) for kind in learn), moved


@pytest.mark.parametrize("method", ["wang", "dm"])
def test_policy_every_moves_the_policy_on_its_turns_only(digits, method):
    """``--policy-every 3``: the policy (and the critic of a method without its own unroll) takes outer steps 1,
    4, 7, …; the synthetic set learns on every step."""
    model = ModelConfig() if method == "wang" else ModelConfig("convnet", width=8, depth=2, norm="instance")
    cfg = DistillConfig(method=MethodConfig(name=method), model=model, synthetic=SyntheticConfig(ipc=1),
                        outer=OuterConfig(num_inits=1, real_per_class=8),
                        policy=PolicyConfig(mode="learn", ops=tuple(OPS), critic="real", critic_per_class=4, every=3))
    d = Distiller(cfg, digits, policy=build_policy(OPS, image_size=(8, 8), probability=0.7))
    moved = []
    for _ in range(5):
        policy_before = [p.detach().clone() for p in d.policy.parameters()]
        images_before = d.synthetic.images.detach().clone()
        d.step()
        moved.append(any(not torch.equal(a, b) for a, b in zip(policy_before, d.policy.parameters())))
        assert not torch.equal(images_before, d.synthetic.images)
    assert moved == [True, False, False, True, False]
    if method == "dm":
        assert d.state_dict()["policy_objective"]["critic"]["calls"] == 2


def test_policy_learn_refuses_what_the_policy_lacks(digits):
    cfg = DistillConfig(policy=PolicyConfig(mode="learn", learn=("weights",)))
    with pytest.raises(ConfigError, match="--policy-learn weights: this policy has nothing of that kind"):
        Distiller(cfg, digits, policy=build_policy(OPS, image_size=(8, 8)))
    with pytest.raises(ConfigError, match="--policy-learn must name some of"):
        PolicyConfig(mode="learn", learn=("gates",))


def test_policy_hypergradient_matches_finite_differences():
    """d(joint loss)/d(rotation range) through the augmented unroll and the augmented real loss, float64."""
    g = torch.Generator().manual_seed(0)
    net = build_model("mlp", (1, 8, 8), 3, width=16).double()
    theta0 = {k: v.double() for k, v in sample_params(net, g).items()}
    images = torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    x_real = torch.rand(9, 1, 8, 8, generator=g, dtype=torch.float64)
    y_real = torch.arange(3).repeat_interleave(3)
    schedule = InnerSchedule.full_batch(6, steps=3, epochs=1)
    lrs = torch.full((3,), 0.5, dtype=torch.float64)
    policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 40.0},
                           {"name": "translate-x", "probability": 1.0, "magnitude": 0.1}], image_size=(8, 8))
    draws = [policy.sample(6, generator=g) for _ in range(3)]
    real_draw = StepAugment(policy, policy.sample(3, generator=g), g, g)  # siamese: one draw per class
    objective = PolicyObjective(policy, PolicyConfig(mode="learn", width_weight=0.3))

    def joint_loss() -> torch.Tensor:
        theta = unroll(net, theta0, images, labels, lrs, schedule,
                       augment=lambda x, t: policy(x.double(), params=draws[t]))
        return real_loss(net, theta, x_real, y_real) + objective(net, theta, x_real, y_real, real_draw)

    high = policy.ops[0].high
    (analytic,) = torch.autograd.grad(joint_loss(), [high])
    eps = 1e-4
    with torch.no_grad():
        high += eps
        plus = joint_loss()
        high -= 2 * eps
        minus = joint_loss()
        high += eps
    numeric = (plus - minus) / (2 * eps)
    assert analytic.abs() > 1e-6
    torch.testing.assert_close(analytic, numeric.to(analytic.dtype), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("dataset, low, high", [("digits-rot", 60.0, 180.0), ("digits", 0.0, 30.0)])
def test_joint_loop_discovers_rotation_invariance(dataset, low, high):
    cfg = DistillConfig(data=DataConfig(name=dataset), synthetic=SyntheticConfig(ipc=5),
                        outer=OuterConfig(iterations=150), policy=PolicyConfig(mode="learn", ops=("rotate",)))
    d = Distiller(cfg, load_dataset(dataset), policy=build_policy(["rotate"], image_size=(8, 8)))
    d.fit()
    lo, hi = (float(v) for v in d.policy.magnitudes()["rotate"])
    assert low <= max(abs(lo), abs(hi)) <= high, (lo, hi)


@pytest.mark.parametrize("method", ["wang", "dm"])
def test_per_class_ranges_learn_apart_and_resume_exactly(digits, method, tmp_path):
    """``--policy-per-class``: every class's ranges start at the policy's and move apart; with ``magnitudes`` only
    the shared gates and choice stay as loaded; validation (replay for Wang) augments each class within its own
    ranges; a run resumed from its state dict continues bit for bit."""
    from augdistill.augment import ClassRangesPolicy
    from augdistill.runs.atomic import load_tensors, save_tensors
    model = ModelConfig() if method == "wang" else ModelConfig("convnet", width=8, depth=2, norm="instance")
    cfg = DistillConfig(method=MethodConfig(name=method), model=model, synthetic=SyntheticConfig(ipc=1),
                        outer=OuterConfig(num_inits=1, real_per_class=8, val_epochs=10),
                        policy=PolicyConfig(mode="learn", siamese=True, critic="real", critic_per_class=4,
                                            learn=("magnitudes",), per_class=True, width_weight=1.0))

    def distiller() -> Distiller:
        return Distiller(cfg, digits, policy=dsa_policy(image_size=(8, 8), flip=False))

    d = distiller()
    assert isinstance(d.policy, ClassRangesPolicy) and d.policy.num_classes == 10
    start = d.policy.table().detach().clone()
    shared = {k: v.clone() for k, v in d.policy.policy.state_dict().items()}
    for _ in range(2):
        d.step()
    save_tensors(d.state_dict(), tmp_path / "ckpt.pt")
    d.step()
    table = d.policy.table().detach()
    moved = (table - start).abs().amax(dim=(1, 2))
    assert bool((moved > 0).all()), moved  # every class learned
    assert not torch.equal(table[0], table[1])  # and not alike
    assert all(torch.equal(shared[k], v) for k, v in d.policy.policy.state_dict().items())
    assert 0.0 <= d.validate(nets=1) <= 1.0
    resumed = distiller()
    resumed.load_state_dict(load_tensors(tmp_path / "ckpt.pt"))
    resumed.step()
    assert torch.equal(resumed.policy.table(), d.policy.table())
    assert torch.equal(resumed.synthetic.images, d.synthetic.images)


def test_per_class_ranges_need_a_learned_policy():
    with pytest.raises(ConfigError, match="--policy-per-class learns one range per op and class; it needs --policy"):
        PolicyConfig(mode="fixed", per_class=True)
