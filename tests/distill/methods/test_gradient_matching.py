"""Gradient matching (DC/DSA): the loss and its image gradient against the per-layer formula written out node by
node, finite differences, siamese draws, the network schedule, exact resume mid-episode, and a digits run."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from augdistill.augment import build_policy
from augdistill.config import DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.distill import Distiller
from augdistill.distill.methods import OuterBatch
from augdistill.distill.methods.gradient_matching import layer_distance, paper_loops
from augdistill.errors import ConfigError
from augdistill.testing.reference import network_at
from augdistill.models import sample_params
from augdistill.runs.atomic import load_tensors, save_tensors

from .digits_gain import SMALL_CONVNET, assert_distilling_beats_the_start

MODEL = ModelConfig("convnet", width=4, depth=2, norm="instance")
OPS = ["rotate", "translate-x", "brightness"]


def _distiller(digits, *, policy="none", siamese=True, ipc=2, real=3, outer_loop=3, inner_loop=2,
               model=MODEL, train_on="synthetic", distance="cosine", **outer) -> Distiller:
    method = MethodConfig(name="dc", outer_loop=outer_loop, inner_loop=inner_loop, net_lr=0.05, train_on=train_on,
                          distance=distance)
    cfg = DistillConfig(method=method,
                        model=model, synthetic=SyntheticConfig(ipc=ipc),
                        outer=OuterConfig(real_per_class=real, **outer),
                        policy=PolicyConfig(mode=policy, ops=tuple(OPS), siamese=siamese, inner_steps=2))
    module = build_policy(OPS, image_size=(8, 8), probability=0.9) if policy != "none" else None
    return Distiller(cfg, digits, policy=module)


def _reference_loss(d: Distiller, theta: dict, x_syn: torch.Tensor, x_real: torch.Tensor,
                    y_real: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """DC's distance written out: per class, per layer with more than one dimension, per output node; or IDC's
    L1 distance, element by element over the convolution kernels."""
    net = network_at(d.model, theta)
    y_syn = d.synthetic.labels
    total = x_syn.new_zeros(())
    for c in range(d.data.info.num_classes):
        g_real = torch.autograd.grad(F.cross_entropy(net(x_real[y_real == c]), y_real[y_real == c]),
                                     list(net.parameters()))
        g_syn = torch.autograd.grad(F.cross_entropy(net(x_syn[y_syn == c]), y_syn[y_syn == c]),
                                    list(net.parameters()), create_graph=True)
        for s, r in zip(g_syn, g_real):
            if s.dim() == 1:  # biases and norm parameters are not matched
                continue
            if distance == "l1":
                if s.dim() == 4:  # IDC matches the convolution kernels only
                    total = total + sum(abs(a - b) for a, b in zip(s.reshape(-1), r.reshape(-1)))
                continue
            for node in range(s.shape[0]):
                a, b = s[node].reshape(-1), r[node].reshape(-1)
                total = total + 1 - (a * b).sum() / ((a * a).sum().sqrt() * (b * b).sum().sqrt() + 1e-6)
    return total


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("distance", ["cosine", "l1"])
def test_loss_and_image_gradient_match_the_per_node_formula(digits, float64, distance):
    d = _distiller(digits.to("cpu"), ipc=2, real=3, distance=distance)
    d.synthetic.images.data = d.synthetic.images.data.double()
    x_real, y_real = d.sampler.sample(3, d.generators["data"])
    x_real = x_real.double()
    batch = OuterBatch(x_real, y_real, d.stream.step(), 0)
    (part,) = list(d.method.losses(batch))
    part.loss.backward()
    theta = d.method.theta

    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    expected = _reference_loss(d, theta, x_syn, x_real, y_real, distance)
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(part.loss, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-10)

    # the gradient is the derivative of the loss: central differences along two random directions
    g = torch.Generator().manual_seed(0)
    for _ in range(1):
        v = torch.randn(x_syn.shape, generator=g)
        h = 1e-6
        with torch.enable_grad():
            plus = _reference_loss(d, theta, (x_syn + h * v).detach(), x_real, y_real, distance)
            minus = _reference_loss(d, theta, (x_syn - h * v).detach(), x_real, y_real, distance)
        torch.testing.assert_close((plus - minus) / (2 * h), (d.synthetic.images.grad * v).sum(), rtol=1e-5,
                                   atol=1e-7)


def test_layer_distance_ignores_vectors_and_scales():
    g = torch.randn(5, 3, 3, 3)
    assert float(layer_distance(torch.randn(7), torch.randn(7))) == 0.0
    torch.testing.assert_close(layer_distance(g, 3 * g), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer_distance(g, -g), torch.tensor(10.0), atol=1e-5, rtol=0)  # 5 nodes, cos -1
    with pytest.raises(ConfigError, match="shapes differ"):
        layer_distance(g, g[:4])


def test_paper_loop_counts_and_overrides():
    assert paper_loops(1) == (1, 1) and paper_loops(10) == (10, 50) and paper_loops(50) == (50, 10)
    assert paper_loops(10, outer_loop=4) == (4, 50) and paper_loops(7, 2, 3) == (2, 3)
    with pytest.raises(ConfigError, match="--outer-loop"):
        paper_loops(7)


@pytest.mark.parametrize("method_siamese", [True, False])
def test_siamese_draw_is_shared_by_real_and_synthetic_images(digits, method_siamese):
    # The real batch is the synthetic set itself: with one draw per class the gradients are the same (D = 0).
    d = _distiller(digits, policy="learn", siamese=method_siamese, ipc=2)
    images, labels = d.synthetic.decode().detach(), d.synthetic.labels
    (part,) = list(d.method.losses(OuterBatch(images, labels, d.stream.step(), 0)))
    if method_siamese:  # 1 - cos of identical gradients: 0 up to rounding and the eps in the denominator
        assert float(part.loss.detach()) < 0.05
    else:
        assert float(part.loss.detach()) > 1.0
    part.loss.backward()
    # the matching loss sees the policy frozen: only the augmentation objective may move it
    assert all(p.grad is None for p in d.policy.parameters())


def test_network_is_trained_between_matching_steps_and_redrawn_per_episode(digits):
    d = _distiller(digits, outer_loop=2, inner_loop=1)
    drawn = sample_params(d.model, torch.Generator().manual_seed(d.generators["init"].initial_seed()))
    d.step()  # draws θ, matches, trains θ one step on the updated set
    images = d.synthetic.images.detach()
    leaves = [p.requires_grad_() for p in drawn.values()]
    loss = F.cross_entropy(torch.func.functional_call(d.model, drawn, (images,)), d.synthetic.labels)
    grads = torch.autograd.grad(loss, leaves)
    expected = {k: v.detach() - 0.05 * g for (k, v), g in zip(drawn.items(), grads)}
    for k in expected:
        torch.testing.assert_close(d.method.theta[k], expected[k])
    trained = {k: v.clone() for k, v in d.method.theta.items()}
    d.step()  # the last matching step of the episode: no training after it
    assert all(torch.equal(trained[k], d.method.theta[k]) for k in trained)
    d.step()  # a new episode: a fresh network
    assert not any(torch.allclose(trained[k], d.method.theta[k]) for k in trained if trained[k].dim() > 1)


def test_network_trained_on_the_real_batch_between_matching_steps(digits):
    # IDC's choice: one SGD step on the step's real batch (no policy here), not on the synthetic set.
    d = _distiller(digits, outer_loop=2, inner_loop=1, train_on="real")
    drawn = sample_params(d.model, torch.Generator().manual_seed(d.generators["init"].initial_seed()))
    data = torch.Generator().manual_seed(d.generators["data"].initial_seed())
    x_real, y_real = d.sampler.sample(3, data)  # the batch the step draws
    d.step()
    leaves = [p.requires_grad_() for p in drawn.values()]
    grads = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(d.model, drawn, (x_real,)), y_real),
                                leaves)
    for (k, v), g in zip(drawn.items(), grads):
        torch.testing.assert_close(d.method.theta[k], v.detach() - 0.05 * g)
    with pytest.raises(ConfigError, match="--outer-loop > 1"):  # the paper's loops at ipc 1 would never train it
        _distiller(digits, outer_loop=1, inner_loop=1, train_on="real")


def test_resume_in_the_middle_of_an_episode_is_bit_exact(digits, tmp_path):
    straight = _distiller(digits, policy="fixed", outer_loop=3, inner_loop=2)
    for _ in range(5):
        straight.step()
    first = _distiller(digits, policy="fixed", outer_loop=3, inner_loop=2)
    for _ in range(2):  # stop after the 2nd of 3 matching steps
        first.step()
    save_tensors(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = _distiller(digits, policy="fixed", outer_loop=3, inner_loop=2)
    resumed.load_state_dict(load_tensors(tmp_path / "ckpt.pt"))
    for _ in range(3):
        resumed.step()
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert all(torch.equal(resumed.method.theta[k], straight.method.theta[k]) for k in straight.method.theta)


def test_digits_run_beats_the_random_real_images_it_starts_from(digits):
    d = _distiller(digits, ipc=1, real=16, outer_loop=1, inner_loop=1, model=SMALL_CONVNET, lr_images=0.05)
    assert_distilling_beats_the_start(d, digits, 30)  # ~0.6 -> ~0.8 on 1 thread in ~4 s


def test_the_command_line_resumes_a_run_stopped_in_the_middle_of_an_episode(tmp_path):
    """The run layer's checkpoint check accepts θ of an unfinished episode (absent at other steps)."""
    from augdistill.cli import main
    args = ["distill", "--method", "dc", "--model", "convnet", "--width", "8", "--depth", "2", "--ipc", "1",
            "--outer-loop", "3", "--inner-loop", "1", "--real-per-class", "4", "--eval-every", "0",
            "--final-nets", "0", "--checkpoint-every", "1"]
    assert main([*args, "--iterations", "2", "--out", str(tmp_path / "a")]) == 0
    assert load_tensors(tmp_path / "a" / "checkpoint.pt")["method"]["_extra_state"]["theta"] is not None
    assert main([*args, "--iterations", "4", "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert main([*args, "--iterations", "4", "--out", str(tmp_path / "b")]) == 0
    resumed, straight = (load_tensors(tmp_path / r / "synthetic.pt") for r in "ab")
    assert torch.equal(resumed["images"], straight["images"])
