"""DM embedding with cached experts at random stages of training (DANCE's middle encoders): the interpolation
against explicit checkpoints, the draws, the step's loss against a hand-built network and explicit class means,
refusals, and a resumed command-line run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from augdistill.config import DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.distill import Distiller
from augdistill.distill.experts import ExpertBank, ExpertSetup, train_experts
from augdistill.distill.methods import OuterBatch
from augdistill.distill.methods.expert_networks import ExpertNetworks
from augdistill.errors import CheckpointError, ConfigError
from augdistill.runs.atomic import load_tensors
from augdistill.testing.reference import network_at

MODEL = ModelConfig("convnet", width=8, depth=2, norm="instance")


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory):
    from augdistill.data import load_dataset
    digits = load_dataset("digits")
    out = tmp_path_factory.mktemp("experts")
    train_experts(ExpertSetup.for_dataset(digits.info, MODEL, epochs=3, batch_size=128, lr=0.05), digits, out, 2)
    return out


def _trajectories(experts: int = 2, epochs: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"w": torch.randn(epochs + 1, 2, 3, generator=g), "b": torch.randn(epochs + 1, 3, generator=g)}
            for _ in range(experts)]


def test_a_position_interpolates_between_the_checkpoints_on_either_side():
    trajectories = _trajectories()
    nets = ExpertNetworks(trajectories, "cpu")
    assert (nets.num_experts, nets.epochs) == (2, 3)
    for expert in range(2):
        for epoch in range(4):  # every checkpoint exactly, the last one included
            at = nets.at(torch.tensor(expert), torch.tensor(float(epoch)))
            assert all(torch.equal(at[k], trajectories[expert][k][epoch]) for k in at)
        at = nets.at(torch.tensor(expert), torch.tensor(1.25))
        for k, v in trajectories[expert].items():
            torch.testing.assert_close(at[k], 0.75 * v[1] + 0.25 * v[2])


def test_draws_cover_every_expert_and_the_whole_trajectory_and_repeat_with_the_seed():
    trajectories = _trajectories(experts=3, epochs=2)
    nets = ExpertNetworks(trajectories, "cpu")
    g, replay = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    seen, positions = set(), []
    for _ in range(300):
        drawn = nets.draw(g)
        expert = int(torch.randint(3, (), generator=replay))
        position = float(torch.rand((), generator=replay)) * 2
        seen.add(expert)
        positions.append(position)
        expected = nets.at(torch.tensor(expert), torch.tensor(position))
        assert all(torch.equal(drawn[k], expected[k]) for k in drawn)
    assert seen == {0, 1, 2}
    assert min(positions) < 0.1 and max(positions) > 1.9  # uniform over [0, E]


def _distiller(digits, method: MethodConfig) -> Distiller:
    cfg = DistillConfig(method=method, model=MODEL, synthetic=SyntheticConfig(ipc=2),
                        outer=OuterConfig(real_per_class=3), policy=PolicyConfig(mode="none"))
    return Distiller(cfg, digits)


def test_the_step_embeds_with_the_drawn_expert_and_its_cross_entropy_regularises(digits, expert_dir):
    d = _distiller(digits, MethodConfig(name="dm", expert_dir=str(expert_dir), ce_weight=0.7))
    bank = ExpertBank.load(expert_dir, info=digits.info, model=d.model, min_epochs=None)
    assert (len(bank), bank.epochs) == (2, 3)
    replay = torch.Generator().manual_seed(d.generators["method"].initial_seed())
    expert = int(torch.randint(2, (), generator=replay))
    position = float(torch.rand((), generator=replay)) * 3
    low = min(int(position), 2)
    a, b = bank.params(expert, low), bank.params(expert, low + 1)
    theta = {k: a[k] + (position - low) * (b[k] - a[k]) for k in a}  # by hand, from the files

    x_real, y_real = d.sampler.sample(3, d.generators["data"])
    (part,) = list(d.method.losses(OuterBatch(x_real, y_real, d.stream.step(), 0)))
    part.loss.backward()

    net = network_at(d.model, theta)
    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    f_real, f_syn = net.features(x_real).flatten(1), net.features(x_syn).flatten(1)
    expected = sum(((f_real[y_real == c].mean(0) - f_syn[d.synthetic.labels == c].mean(0)) ** 2).sum()
                   for c in range(10))
    expected = expected + 0.7 * F.cross_entropy(net(x_syn), d.synthetic.labels)
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(part.loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-3, atol=1e-6)
    assert d.synthetic.images.grad.abs().sum() > 0


def test_refuses_a_pool_beside_the_experts_and_experts_of_another_network(digits, expert_dir):
    with pytest.raises(ConfigError, match="--dm-pool 2"):
        _distiller(digits, MethodConfig(name="dm", expert_dir=str(expert_dir), pool=2))
    cfg = DistillConfig(method=MethodConfig(name="dm", expert_dir=str(expert_dir)),
                        model=ModelConfig("convnet", width=16, depth=2, norm="instance"),
                        synthetic=SyntheticConfig(ipc=1), outer=OuterConfig(real_per_class=3))
    with pytest.raises(CheckpointError, match="experts are"):
        Distiller(cfg, digits)


def test_the_command_line_resumes_a_run_with_experts_exactly(tmp_path, expert_dir):
    from augdistill.cli import main
    args = ["distill", "--method", "dm", "--model", "convnet", "--width", "8", "--depth", "2", "--ipc", "1",
            "--expert-dir", str(expert_dir), "--dm-ce-weight", "1", "--real-per-class", "4",
            "--eval-every", "0", "--final-nets", "0", "--checkpoint-every", "1"]
    assert main([*args, "--iterations", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--iterations", "4", "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert main([*args, "--iterations", "4", "--out", str(tmp_path / "b")]) == 0
    resumed, straight = (load_tensors(tmp_path / r / "synthetic.pt") for r in "ab")
    assert torch.equal(resumed["images"], straight["images"])
    assert json.loads((tmp_path / "a" / "config.json").read_text())["method"]["expert_dir"] == str(expert_dir)
