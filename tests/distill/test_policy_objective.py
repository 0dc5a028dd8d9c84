"""The policy objective's critics: gradient against finite differences, the critic's training, invariance discovery
on digits-rot (and its absence on upright digits), resume of the critic's state, and the spread width of flips."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from augdistill.augment import build_policy, policy_param_groups
from augdistill.config import DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.data import ClassBalancedSampler, load_dataset
from augdistill.distill import Distiller
from augdistill.distill.policy_objective import Critic, PolicyObjective, subsample_per_class
from augdistill.distill.synthetic.pixels import PixelSet
from augdistill.errors import ConfigError
from augdistill.inner import AugmentStream
from augdistill.models import build_model, sample_params

MODEL = ModelConfig("convnet", width=8, depth=2, norm="instance")


def _stream(policy, seed: int = 0, siamese: bool = True) -> AugmentStream:
    return AugmentStream(policy, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1),
                         num_classes=3, siamese=siamese)


def _small_problem() -> tuple:
    """A float64 MLP, 6 synthetic and 12 real 8x8 images of 3 classes, and a rotate / translate / flip policy."""
    g = torch.Generator().manual_seed(0)
    net = build_model("mlp", (1, 8, 8), 3, width=16).double()
    synthetic = PixelSet(torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64), 3)
    x_real = torch.rand(12, 1, 8, 8, generator=g, dtype=torch.float64)
    y_real = torch.arange(3).repeat_interleave(4)
    policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 40.0},
                           {"name": "translate-x", "probability": 0.7, "magnitude": 0.1},
                           {"name": "hflip", "probability": 0.3}], image_size=(8, 8))
    return net, synthetic, x_real, y_real, policy


def test_critic_gradient_matches_finite_differences_of_the_loss_at_the_critics_parameters():
    """standalone's gradient w.r.t. magnitudes = d/dφ [CE(θ_critic; A_φ(x_real)) − λ width(φ)], θ_critic held fixed
    (the critic is a constant of the objective), with J = 2 fresh draws per image, float64."""
    net, synthetic, x_real, y_real, policy = _small_problem()
    config = PolicyConfig(mode="learn", critic="synthetic", width_weight=0.3, width_measure="spread", copies=2,
                          critic_steps=3, critic_lr=0.1, critic_per_class=3)
    objective = PolicyObjective(policy, config, num_classes=3)
    step = _stream(policy).step()
    real_state = step.real_generator.get_state()
    loss = objective.standalone(net, synthetic, x_real, y_real, step, torch.Generator().manual_seed(1))
    params = [policy.ops[0].high, policy.ops[1].high]
    analytic = torch.autograd.grad(loss, params)
    theta = objective.critic.params
    x_sub, y_sub = subsample_per_class(x_real, y_real, 3, 3)
    fresh = dataclasses.replace(step, class_draw=None)

    def at_fixed_critic() -> torch.Tensor:  # the draws standalone made: the real stream from where it stood
        step.real_generator.set_state(real_state)
        return objective(net, theta, x_sub, y_sub, fresh)

    torch.testing.assert_close(at_fixed_critic(), loss.detach())
    for param, grad in zip(params, analytic):
        eps = 1e-5 * (1.0 if param is params[1] else 100.0)
        with torch.no_grad():
            param += eps
            plus = at_fixed_critic()
            param -= 2 * eps
            minus = at_fixed_critic()
            param += eps
        numeric = (plus - minus) / (2 * eps)
        assert grad.abs() > 1e-6
        torch.testing.assert_close(grad, numeric.to(grad.dtype), rtol=1e-4, atol=1e-8)


def _shifted(objective, param: torch.Tensor, shift: float) -> torch.Tensor:
    """``objective()`` (which may differentiate inside) with ``param`` moved by ``shift``, then put back."""
    with torch.no_grad():
        param += shift
    try:
        return objective().detach()
    finally:
        with torch.no_grad():
            param -= shift


def test_lookahead_gradient_matches_finite_differences_of_an_independent_unroll():
    """``lookahead``: the synthetic critic, then 2 SGD steps written out by hand on the synthetic set augmented
    with the learnable policy (the draws standalone made, replayed), scored by CE on the clean real batch minus
    λ width; standalone's value equals it and its gradient equals central differences of it, float64."""
    net, synthetic, x_real, y_real, policy = _small_problem()
    config = PolicyConfig(mode="learn", critic="lookahead", width_weight=0.3, critic_steps=2, critic_lr=0.1,
                          inner_steps=2, inner_lr=0.5, critic_per_class=3)
    objective = PolicyObjective(policy, config, num_classes=3)
    step = _stream(policy).step()
    start = step.synthetic_generator.get_state()
    loss = objective.standalone(net, synthetic, x_real, y_real, step, torch.Generator().manual_seed(1))
    params = [policy.ops[0].high, policy.ops[1].high]  # the gates are straight-through: no finite differences
    analytic = torch.autograd.grad(loss, params)
    theta = objective.critic.params
    x_sub, y_sub = subsample_per_class(x_real, y_real, 3, 3)
    images, labels = synthetic.decode().detach(), synthetic.labels

    def by_hand() -> torch.Tensor:  # replay: the critic's 2 draws, then one fresh draw per lookahead step
        step.synthetic_generator.set_state(start)
        for _ in range(2):
            policy.sample(6, generator=step.synthetic_generator)
        weights = {k: v.detach().requires_grad_() for k, v in theta.items()}
        for _ in range(2):
            augmented = policy(images, params=policy.sample(6, generator=step.synthetic_generator))
            ce = F.cross_entropy(functional_call(net, weights, (augmented,)), labels)
            grads = torch.autograd.grad(ce, list(weights.values()), create_graph=True)
            weights = {k: w - 0.5 * gk for (k, w), gk in zip(weights.items(), grads)}
        return F.cross_entropy(functional_call(net, weights, (x_sub,)), y_sub) - 0.3 * policy.width()

    torch.testing.assert_close(by_hand().detach(), loss.detach())
    for param, grad in zip(params, analytic):
        eps = 1e-3 if param is params[0] else 1e-5
        numeric = (_shifted(by_hand, param, eps) - _shifted(by_hand, param, -eps)) / (2 * eps)
        assert grad.abs() > 1e-7, param
        torch.testing.assert_close(grad, numeric.to(grad.dtype), rtol=1e-4, atol=1e-9)


def test_critic_trains_like_an_evaluation_network_and_restarts():
    """SGD with momentum 0.9 and weight decay 5e-4, written out by hand for two steps; a fresh θ₀ after ``reset``."""
    g = torch.Generator().manual_seed(0)
    net = build_model("mlp", (1, 4, 4), 2, width=8).double()
    x, y = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1] * 3)
    critic = Critic(lr=0.3, steps=2, reset=2)
    theta = critic.train(net, lambda: x, y, torch.Generator().manual_seed(5))
    params = {k: v.double() for k, v in sample_params(net, torch.Generator().manual_seed(5)).items()}  # the θ₀ drawn
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    for _ in range(2):
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(F.cross_entropy(functional_call(net, leaves, (x,)), y), list(leaves.values()))
        for (k, p), gk in zip(leaves.items(), grads):
            velocity[k] = 0.9 * velocity[k] + gk + 5e-4 * p.detach()
            params[k] = p.detach() - 0.3 * velocity[k]
    for k in theta:
        torch.testing.assert_close(theta[k], params[k])
    critic.train(net, lambda: x, y, torch.Generator().manual_seed(6))  # call 2 continues
    assert not torch.equal(critic.params["net.0.weight"] if "net.0.weight" in critic.params else
                           next(iter(critic.params.values())), next(iter(params.values())))
    restarted = critic.train(net, lambda: x, y, torch.Generator().manual_seed(5))  # call 3: fresh θ₀, 2 steps
    for k in theta:
        torch.testing.assert_close(restarted[k], params[k])


@pytest.mark.parametrize("dataset", ["digits-rot", "digits"])
def test_real_critic_discovers_rotation_invariance_and_refuses_translation(dataset):
    """Augerino's objective on a critic trained on augmented real batches: on digits-rot (rotated uniformly) the
    rotation range opens to nearly ±180° while the 8x8 images' translation closes; on upright digits rotation
    closes too."""
    torch.manual_seed(0)
    data = load_dataset(dataset)
    policy = build_policy([{"name": "rotate", "probability": 1.0, "magnitude": 30.0},
                           {"name": "translate-x", "probability": 1.0, "magnitude": 0.125}], image_size=(8, 8))
    model = build_model("convnet", (1, 8, 8), 10, mean=data.info.mean, std=data.info.std, width=16, depth=2)
    objective = PolicyObjective(policy, PolicyConfig(mode="learn", critic="real", critic_lr=0.05, width_weight=0.1),
                                num_classes=10)
    optimizer = torch.optim.Adam(policy_param_groups(policy, 0.02))
    g = [torch.Generator().manual_seed(i) for i in range(3)]
    stream = AugmentStream(policy, g[0], g[1], num_classes=10, siamese=True)
    sampler = ClassBalancedSampler(data.train.x, data.train.y, 10)
    synthetic = PixelSet(data.train.x[:10], 10)
    for _ in range(80):
        x, y = sampler.sample(8, g[2])
        optimizer.zero_grad()
        objective.standalone(model, synthetic, x, y, stream.step(), g[2]).backward()
        optimizer.step()
    rotate, translate = (float(r[1]) for r in policy.magnitudes().values())
    if dataset == "digits-rot":
        assert rotate > 120 and translate < 0.06, (rotate, translate)
    else:
        assert rotate < 20, rotate


def test_distiller_resumes_the_critic_exactly(digits):
    """A run checkpointed after 2 steps and resumed takes the same third step as the uninterrupted one."""
    cfg = DistillConfig(method=MethodConfig(name="dm"), model=MODEL, synthetic=SyntheticConfig(ipc=1),
                        outer=OuterConfig(real_per_class=4),
                        policy=PolicyConfig(mode="learn", ops=("rotate", "hflip"), siamese=True, critic="real",
                                            width_measure="spread", critic_per_class=2))

    def distiller() -> Distiller:
        return Distiller(cfg, digits, policy=build_policy(["rotate", "hflip"], image_size=(8, 8)))

    a = distiller()
    a.step(), a.step()
    state = copy.deepcopy(a.state_dict())  # what a checkpoint file holds
    assert state["policy_objective"]["critic"]["calls"] == 2
    b = distiller()
    b.load_state_dict(state)
    a.step(), b.step()
    for (name, pa), pb in zip(a.policy.named_parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb), name
    for k, v in a.policy_objective.critic.params.items():
        assert torch.equal(v, b.policy_objective.critic.params[k]), k
    with pytest.raises(ConfigError, match="no policy critic"):
        distiller().policy_objective.load_state_dict({})


def test_subsample_keeps_the_first_images_of_every_class():
    x, y = torch.arange(12.0).view(12, 1, 1, 1), torch.arange(3).repeat_interleave(4)
    xs, ys = subsample_per_class(x, y, 3, 2)
    assert xs.flatten().tolist() == [0, 1, 4, 5, 8, 9] and ys.tolist() == [0, 0, 1, 1, 2, 2]
    assert subsample_per_class(x, y, 3, 0)[0] is x
