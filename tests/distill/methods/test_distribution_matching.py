"""Distribution matching (DM): the loss and its image gradient against explicit per-class means and finite
differences, siamese draws, one fresh network a step, the policy learning only from its own objective, the pool of
semi-trained networks and the class-aware regulariser (IDM) against a hand-written SGD step, and a digits run."""

from __future__ import annotations


import dataclasses
import json
import statistics

import pytest
import torch
import torch.nn.functional as F

from augdistill.augment import build_policy
from augdistill.config import DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.distill import Distiller
from augdistill.distill.methods import OuterBatch
from augdistill.distill.methods.distribution_matching import class_means
from augdistill.errors import ConfigError
from augdistill.testing.reference import network_at
from augdistill.models import sample_params
from augdistill.runs.atomic import load_tensors, save_tensors

from .digits_gain import SMALL_CONVNET, assert_distilling_beats_the_start

MODEL = ModelConfig("convnet", width=8, depth=2, norm="instance")
OPS = ["rotate", "translate-x", "brightness"]


def _distiller(digits, *, policy="none", siamese=True, ipc=2, real=3, model=MODEL, method=None,
               **outer) -> Distiller:
    cfg = DistillConfig(method=method or MethodConfig(name="dm"), model=model, synthetic=SyntheticConfig(ipc=ipc),
                        outer=OuterConfig(real_per_class=real, **outer),
                        policy=PolicyConfig(mode=policy, ops=tuple(OPS), siamese=siamese, inner_steps=2))
    module = build_policy(OPS, image_size=(8, 8), probability=0.9) if policy != "none" else None
    return Distiller(cfg, digits, policy=module)


def _reference_loss(d: Distiller, theta: dict, x_syn: torch.Tensor, x_real: torch.Tensor,
                    y_real: torch.Tensor) -> torch.Tensor:
    """Σ_c ‖mean of real embeddings of c − mean of synthetic embeddings of c‖², class by class, image by image."""
    net = network_at(d.model, theta)
    y_syn = d.synthetic.labels
    f_real, f_syn = net.features(x_real).flatten(1), net.features(x_syn).flatten(1)
    total = x_syn.new_zeros(())
    for c in range(d.data.info.num_classes):
        real = [f for f, y in zip(f_real, y_real) if y == c]
        syn = [f for f, y in zip(f_syn, y_syn) if y == c]
        total = total + ((sum(real) / len(real) - sum(syn) / len(syn)) ** 2).sum()
    return total


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_loss_and_image_gradient_match_explicit_class_means(digits, float64):
    d = _distiller(digits, ipc=2, real=3)
    d.synthetic.images.data = d.synthetic.images.data.double()
    x_real, y_real = d.sampler.sample(3, d.generators["data"])
    order = torch.randperm(len(y_real), generator=torch.Generator().manual_seed(0))  # any order of classes
    x_real, y_real = x_real[order].double(), y_real[order]
    theta = sample_params(d.model, torch.Generator().manual_seed(d.generators["init"].initial_seed()))
    (part,) = list(d.method.losses(OuterBatch(x_real, y_real, d.stream.step(), 0)))
    part.loss.backward()

    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    expected = _reference_loss(d, theta, x_syn, x_real, y_real)
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(part.loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-12)

    v, h = torch.randn(x_syn.shape, generator=torch.Generator().manual_seed(1)), 1e-6
    with torch.no_grad():
        plus = _reference_loss(d, theta, x_syn + h * v, x_real, y_real)
        minus = _reference_loss(d, theta, x_syn - h * v, x_real, y_real)
    torch.testing.assert_close((plus - minus) / (2 * h), (expected_grad * v).sum(), rtol=1e-5, atol=1e-9)


def _first_step(d: Distiller) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """The first step's loss on a float64 synthetic set and real batch, back-propagated into the images; returns
    the loss, the real batch and the network θ the step drew."""
    d.synthetic.images.data = d.synthetic.images.data.double()
    x_real, y_real = d.sampler.sample(3, d.generators["data"])
    x_real = x_real.double()
    theta = sample_params(d.model, torch.Generator().manual_seed(d.generators["init"].initial_seed()))
    (part,) = list(d.method.losses(OuterBatch(x_real, y_real, d.stream.step(), 0)))
    part.loss.backward()
    return part.loss, x_real, y_real, theta


def test_layer_wise_alignment_matches_every_block_by_explicit_means(digits, float64):
    # CAFE's layer-wise term: each block's output after its pool, class by class, weighted per feature.
    method = MethodConfig(name="dm", layer_weight=0.3)
    d = _distiller(digits, ipc=2, real=3, method=method)
    loss, x_real, y_real, theta = _first_step(d)

    net, y_syn = network_at(d.model, theta), d.synthetic.labels
    x_syn = d.synthetic.images.detach().clone().requires_grad_()

    def blocks(x):  # the outputs after each 2x2 pool, by running the modules one by one
        outputs = []
        for module in net.features:
            x = module(x)
            if isinstance(module, torch.nn.AvgPool2d):
                outputs.append(x.flatten(1))
        return outputs

    per_layer = []
    for f_real, f_syn in zip(blocks(x_real), blocks(x_syn), strict=True):
        term = x_syn.new_zeros(())
        for c in range(d.data.info.num_classes):
            real = f_real[y_real == c].mean(0)
            syn = f_syn[y_syn == c].mean(0)
            term = term + ((real - syn) ** 2).sum()
        per_layer.append((term, f_real.shape[1]))
    assert len(per_layer) == 2 and per_layer[0][1] == 4 * per_layer[1][1]  # 8x8 -> 4x4 -> 2x2, width 8
    (last, size) = per_layer[-1]
    expected = last + 0.3 * (size / per_layer[0][1]) * per_layer[0][0]
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert per_layer[0][0].item() > 0.01 * last.item()  # the earlier block's term is not negligible


def test_discrimination_loss_classifies_each_real_image_by_the_synthetic_means(digits, float64):
    # CAFE's discrimination term, image by image: logits are inner products with each class's synthetic mean.
    d = _distiller(digits, ipc=2, real=3, method=MethodConfig(name="dm", disc_weight=0.4))
    assert d.method.shards is False  # it needs every class in one process
    loss, x_real, y_real, theta = _first_step(d)

    net, y_syn = network_at(d.model, theta), d.synthetic.labels
    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    f_real, f_syn = net.features(x_real).flatten(1).detach(), net.features(x_syn).flatten(1)
    means = [f_syn[y_syn == c].mean(0) for c in range(d.data.info.num_classes)]
    disc = sum(-torch.log_softmax(torch.stack([f @ m for m in means]), 0)[y] for f, y in zip(f_real, y_real))
    expected = _reference_loss(d, theta, x_syn, x_real, y_real) + 0.4 * disc / len(y_real)
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert _distiller(digits, method=MethodConfig(name="dm")).method.shards is True


def _relu_outputs(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every ReLU's output in ``net.features``, by running its modules one by one."""
    outputs = []
    for module in net.features:
        x = module(x)
        if isinstance(module, torch.nn.ReLU):
            outputs.append(x)
    return outputs


def _class_mean_gap(statistic, a_real: torch.Tensor, y_real: torch.Tensor, a_syn: torch.Tensor,
                    y_syn: torch.Tensor) -> torch.Tensor:
    """Σ_c ‖mean over the real images of class c of statistic(a) − the same over the synthetic ones‖², image by image
    (``a_real`` / ``a_syn``: one block's ReLU outputs ``(B, C, H, W)``; ``statistic``: one image's map to a tensor)."""
    gap = a_real.new_zeros(())
    for c in range(10):
        real = [statistic(a) for a in a_real[y_real == c]]
        syn = [statistic(a) for a in a_syn[y_syn == c]]
        gap = gap + ((sum(real) / len(real) - sum(syn) / len(syn)) ** 2).sum()
    return gap


def test_attention_matching_matches_explicit_attention_maps(digits, float64):
    # DataDAM's term, image by image: Σ_channels |ReLU output| of every block but the last, each map of unit norm.
    d = _distiller(digits, ipc=2, real=3, method=MethodConfig(name="dm", attention_weight=50.0))
    loss, x_real, y_real, theta = _first_step(d)

    net, y_syn = network_at(d.model, theta), d.synthetic.labels
    x_syn = d.synthetic.images.detach().clone().requires_grad_()

    attention = x_syn.new_zeros(())
    real_maps, syn_maps = _relu_outputs(net, x_real), _relu_outputs(net, x_syn)
    assert len(real_maps) == 2 and real_maps[0].shape[-1] == 8  # depth 2: the first block's 8x8 map only
    assert d.data.info.num_classes == 10
    for a_real, a_syn in zip(real_maps[:-1], syn_maps[:-1], strict=True):
        attention = attention + _class_mean_gap(lambda m: m.abs().sum(0).flatten() / m.abs().sum(0).norm(),
                                                a_real, y_real, a_syn, y_syn)
    expected = _reference_loss(d, theta, x_syn, x_real, y_real) + 50.0 * attention
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert 50.0 * attention.item() > 0.01 * (expected - 50.0 * attention).item()  # the term is not negligible


def _reference_style(net: torch.nn.Module, x_syn: torch.Tensor, y_syn: torch.Tensor, x_real: torch.Tensor,
                     y_real: torch.Tensor) -> torch.Tensor:
    """Decomposed DM's style term image by image: every block's channel correlations mean_positions a_i a_j, the
    class means of real and synthetic compared entry by entry, each block weighted by D_last / C²."""
    def gram(a):  # (C, H, W) -> (C, C), position by position
        positions = [a[:, i, j] for i in range(a.shape[1]) for j in range(a.shape[2])]
        return sum(torch.outer(v, v) for v in positions) / len(positions)

    last = net.features(x_real[:1]).numel()
    style = x_syn.new_zeros(())
    real_maps, syn_maps = _relu_outputs(net, x_real), _relu_outputs(net, x_syn)
    assert len(real_maps) == 2  # depth 2: both blocks count, the last one included
    for a_real, a_syn in zip(real_maps, syn_maps, strict=True):
        style = style + last / a_real.shape[1] ** 2 * _class_mean_gap(gram, a_real, y_real, a_syn, y_syn)
    return style


def test_style_matching_matches_explicit_gram_matrices(digits, float64):
    d = _distiller(digits, ipc=2, real=3, method=MethodConfig(name="dm", style_weight=5.0))
    loss, x_real, y_real, theta = _first_step(d)
    net, y_syn = network_at(d.model, theta), d.synthetic.labels
    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    style = _reference_style(net, x_syn, y_syn, x_real, y_real)
    expected = _reference_loss(d, theta, x_syn, x_real, y_real) + 5.0 * style
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert 5.0 * style.item() > 0.01 * (expected - 5.0 * style).item()  # the term is not negligible


def _reference_mmd(d: Distiller, theta: dict, x_syn: torch.Tensor, x_real: torch.Tensor, y_real: torch.Tensor,
                   bandwidth: float) -> torch.Tensor:
    """M3D's loss pair by pair: Σ_c σ_c² (mean k_rr' + mean k_ss' − 2 mean k_rs), 2σ_c² = bandwidth × the median
    of the class's real-real squared distances (a constant)."""
    net = network_at(d.model, theta)
    y_syn = d.synthetic.labels
    f_real, f_syn = net.features(x_real).flatten(1), net.features(x_syn).flatten(1)
    total = x_syn.new_zeros(())
    for c in range(d.data.info.num_classes):
        real, syn = list(f_real[y_real == c]), list(f_syn[y_syn == c])
        median = statistics.median(float(((a - b) ** 2).sum().detach()) for i, a in enumerate(real)
                                   for j, b in enumerate(real) if i != j)
        two_sigma2 = bandwidth * median

        def mean_k(xs, ys):
            return sum(torch.exp(-((a - b) ** 2).sum() / two_sigma2) for a in xs for b in ys) / (len(xs) * len(ys))

        total = total + two_sigma2 / 2 * (mean_k(real, real) + mean_k(syn, syn) - 2 * mean_k(real, syn))
    return total


def test_gaussian_kernel_loss_and_image_gradient_match_the_pairwise_mmd(digits, float64):
    d = _distiller(digits, ipc=2, real=3, method=MethodConfig(name="dm", kernel="gaussian", bandwidth=0.5))
    loss, x_real, y_real, theta = _first_step(d)

    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    expected = _reference_mmd(d, theta, x_syn, x_real, y_real, 0.5)
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert expected_grad.abs().max() > 0

    v, h = torch.randn(x_syn.shape, generator=torch.Generator().manual_seed(1)), 1e-6
    with torch.no_grad():
        plus = _reference_mmd(d, theta, x_syn + h * v, x_real, y_real, 0.5)
        minus = _reference_mmd(d, theta, x_syn - h * v, x_real, y_real, 0.5)
    torch.testing.assert_close((plus - minus) / (2 * h), (expected_grad * v).sum(), rtol=1e-5, atol=1e-9)


def test_a_wide_gaussian_kernel_gives_the_mean_matching_loss_back(digits, float64):
    d = _distiller(digits, ipc=2, real=3, method=MethodConfig(name="dm", kernel="gaussian", bandwidth=1e6))
    loss, x_real, y_real, theta = _first_step(d)
    x_syn = d.synthetic.images.detach()
    dm = _reference_loss(d, theta, x_syn, x_real, y_real)
    torch.testing.assert_close(loss, dm, rtol=1e-4, atol=0)
    narrow = _distiller(digits, ipc=2, real=3, method=MethodConfig(name="dm", kernel="gaussian", bandwidth=0.5))
    assert abs(_first_step(narrow)[0].item() - dm.item()) > 0.01 * dm.item()  # a finite width is not DM


@pytest.mark.parametrize("options, message", [({"layer_weight": 0.3}, "--dm-layer-weight 0.3"),
                                              ({"bandwidth": 0.0}, "--dm-bandwidth")])
def test_gaussian_kernel_refuses_what_it_cannot_do(digits, options, message):
    with pytest.raises(ConfigError, match=message):
        _distiller(digits, method=MethodConfig(name="dm", kernel="gaussian", **options))
    with pytest.raises(ConfigError, match=r"needs >= 2 real images matched per class, got 1 \(--real-per-class 1 x"):
        _distiller(digits, real=1, method=MethodConfig(name="dm", kernel="gaussian"))
    with pytest.raises(ConfigError, match=r"got 1 \(--real-per-class 3 x --dm-easy-fraction 0.2\)"):
        _distiller(digits, real=3, method=MethodConfig(name="dm", kernel="gaussian", easy_fraction=0.2))


def test_class_means_of_unordered_rows():
    features = torch.tensor([[1.0, 0.0], [5.0, 2.0], [3.0, 4.0], [7.0, 6.0]])
    means = class_means(features, torch.tensor([1, 0, 1, 2]), 3)
    torch.testing.assert_close(means, torch.tensor([[5.0, 2.0], [2.0, 2.0], [7.0, 6.0]]))


@pytest.mark.parametrize("siamese", [True, False])
def test_siamese_draw_is_shared_and_the_policy_is_frozen(digits, siamese):
    # The real batch is the synthetic set itself: with one draw per class the means are identical.
    d = _distiller(digits, policy="learn", siamese=siamese)
    images, labels = d.synthetic.decode().detach(), d.synthetic.labels
    (part,) = list(d.method.losses(OuterBatch(images, labels, d.stream.step(), 0)))
    if siamese:
        assert float(part.loss.detach()) == 0.0
    else:
        assert float(part.loss.detach()) > 1e-3
    part.loss.backward()
    assert all(p.grad is None for p in d.policy.parameters())


def test_one_fresh_network_per_step_and_the_policy_learns_from_its_objective(digits):
    d = _distiller(digits, policy="learn")
    before = {k: v.detach().clone() for k, v in d.policy.state_dict().items()}
    state = d.generators["init"].get_state()
    d.step()
    after_one = d.generators["init"].get_state()
    d.step()
    g = torch.Generator()
    g.set_state(state)
    sample_params(d.model, g)  # exactly one network drawn per step
    assert torch.equal(g.get_state(), after_one)
    assert any(not torch.equal(before[k], v) for k, v in d.policy.state_dict().items())


POOL = MethodConfig(name="dm", pool=2, pool_steps=1, pool_lifetime=2, net_lr=0.5, ce_weight=0.7)


@pytest.mark.parametrize("side", ["real", "synthetic"])
def test_pool_network_takes_an_sgd_step_on_its_training_set_and_the_regulariser_is_its_cross_entropy(digits, side,
                                                                                                     float64):
    d = _distiller(digits, method=dataclasses.replace(POOL, pool_train_on=side))
    d.synthetic.images.data = d.synthetic.images.data.double()
    x_real, y_real = d.sampler.sample(3, d.generators["data"])
    x_real = x_real.double()
    x_syn = d.synthetic.images.detach().clone()
    pick = torch.Generator().manual_seed(d.generators["method"].initial_seed())
    index = int(torch.randint(2, (), generator=pick))
    theta0 = sample_params(d.model, torch.Generator().manual_seed(d.generators["init"].initial_seed()))
    (part,) = list(d.method.losses(OuterBatch(x_real, y_real, d.stream.step(), 0)))

    net = network_at(d.model, theta0)  # the reference SGD step, by an ordinary module and optimiser
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x_train, y_train = (x_real, y_real) if side == "real" else (x_syn, d.synthetic.labels)
    F.cross_entropy(net(x_train), y_train).backward()
    opt.step()
    theta1 = dict(net.named_parameters())
    assert d.method.pool.ages.tolist() == [1 if i == index else -1 for i in range(2)]
    torch.testing.assert_close(d.method.pool.flat[index], torch.cat([p.detach().flatten() for p in theta1.values()]))

    ce = F.cross_entropy(net(x_syn), d.synthetic.labels)
    expected = _reference_loss(d, theta1, x_syn, x_real, y_real) + 0.7 * ce
    torch.testing.assert_close(part.loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("style_weight", [0.0, 2.0])
def test_easy_fraction_matches_each_class_by_its_real_images_of_lowest_loss(digits, float64, style_weight):
    # The sample-difficulty correction: of each class's 4 real images, the 2 the step's (semi-trained) network
    # classifies with the lowest cross-entropy, found here by sorting each class's losses by hand; the style term's
    # real Gram matrices are those of the same images.
    method = dataclasses.replace(POOL, ce_weight=0.0, easy_fraction=0.5, style_weight=style_weight)
    d = _distiller(digits, method=method, real=4)
    d.synthetic.images.data = d.synthetic.images.data.double()
    x_real, y_real = d.sampler.sample(4, d.generators["data"])
    order = torch.randperm(len(y_real), generator=torch.Generator().manual_seed(0))  # any order of classes
    x_real, y_real = x_real[order].double(), y_real[order]
    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    (part,) = list(d.method.losses(OuterBatch(x_real, y_real, d.stream.step(), 0)))
    part.loss.backward()

    theta1 = d.method.pool._unflatten(d.method.pool.flat[int(d.method.pool.ages.argmax())])  # the trained member
    net = network_at(d.model, theta1)
    with torch.no_grad():
        losses = F.cross_entropy(net(x_real), y_real, reduction="none")
    easy = [i for c in range(10) for i in sorted((i for i in range(len(y_real)) if y_real[i] == c),
                                                key=lambda i: float(losses[i]))[:2]]
    def reference(rows):  # the loss with the real batch's rows `rows` matched
        loss = _reference_loss(d, theta1, x_syn, x_real[rows], y_real[rows])
        if style_weight:
            loss = loss + style_weight * _reference_style(net, x_syn, d.synthetic.labels, x_real[rows], y_real[rows])
        return loss

    expected = reference(easy)
    (expected_grad,) = torch.autograd.grad(expected, x_syn)
    torch.testing.assert_close(part.loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_grad, rtol=1e-8, atol=1e-12)
    everything = reference(list(range(len(y_real))))
    assert abs(everything.item() - expected.item()) > 1e-3 * expected.item()  # the choice of images matters


def test_pool_members_age_and_are_replaced_after_their_lifetime(digits):
    d = _distiller(digits, method=POOL)
    ages = []
    for _ in range(8):
        before = d.method.pool.flat.clone()
        d.step()
        ages.append(d.method.pool.ages.tolist())
        changed = [i for i in range(2) if not torch.equal(before[i], d.method.pool.flat[i])]
        assert len(changed) == 1  # one member drawn and trained per step
    assert all(0 < a <= 2 for step in ages[-4:] for a in step)  # lifetime 2: a member at 2 restarts at 1
    assert any(a == 1 for a in ages[-1]) or any(a == 1 for a in ages[-2])


def test_pool_is_checkpointed_and_a_resumed_run_continues_exactly(digits, tmp_path):
    straight = _distiller(digits, method=POOL, policy="fixed")
    for _ in range(4):
        straight.step()
    first = _distiller(digits, method=POOL, policy="fixed")
    for _ in range(2):
        first.step()
    save_tensors(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = _distiller(digits, method=POOL, policy="fixed")
    resumed.load_state_dict(load_tensors(tmp_path / "ckpt.pt"))
    for _ in range(2):
        resumed.step()
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert torch.equal(resumed.method.pool.flat, straight.method.pool.flat)


def test_needs_a_feature_extractor(digits):
    with pytest.raises(ConfigError, match="features"):
        _distiller(digits, model=ModelConfig("mlp", width=8))


def test_digits_run_beats_the_random_real_images_it_starts_from(digits):
    d = _distiller(digits, ipc=1, real=16, model=SMALL_CONVNET, lr_images=1.0)
    assert_distilling_beats_the_start(d, digits, 50)  # ~0.6 -> ~0.8 on 1 thread in ~1 s


def test_the_command_line_resumes_a_run_with_a_pool(tmp_path):
    """The run layer's checkpoint check accepts the pool's buffers, and the resumed run ends where a straight one does."""
    from augdistill.cli import main
    args = ["distill", "--method", "dm", "--model", "convnet", "--width", "8", "--depth", "2", "--ipc", "1",
            "--dm-pool", "3", "--dm-pool-steps", "2", "--dm-ce-weight", "0.5", "--real-per-class", "4",
            "--eval-every", "0", "--final-nets", "0", "--checkpoint-every", "1"]
    assert main([*args, "--iterations", "2", "--out", str(tmp_path / "a")]) == 0
    assert load_tensors(tmp_path / "a" / "checkpoint.pt")["method"]["pool.ages"].max() == 2
    assert main([*args, "--iterations", "4", "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert main([*args, "--iterations", "4", "--out", str(tmp_path / "b")]) == 0
    resumed, straight = (load_tensors(tmp_path / r / "synthetic.pt") for r in "ab")
    assert torch.equal(resumed["images"], straight["images"])


def test_the_command_line_runs_the_gaussian_kernel(tmp_path):
    from augdistill.cli import main
    assert main(["distill", "--method", "dm", "--model", "convnet", "--width", "8", "--depth", "2", "--ipc", "1",
                 "--real-per-class", "4", "--dm-kernel", "gaussian", "--dm-bandwidth", "2", "--iterations", "2",
                 "--eval-every", "0", "--final-nets", "0", "--out", str(tmp_path)]) == 0
    method = json.loads((tmp_path / "config.json").read_text())["method"]
    assert (method["kernel"], method["bandwidth"]) == ("gaussian", 2.0)


def test_the_first_padding_reaches_the_networks_that_distil_validate_and_evaluate(tmp_path, monkeypatch):
    """``--first-padding 3`` (the field's ConvNet on grey-scale images) is the padding of the distillation network, of
    the validation networks, and by default of ``evaluate``'s; ``evaluate --first-padding`` overrides it."""
    from augdistill.cli import main
    from augdistill.distill import validation
    from augdistill.runs.jobs import evaluate_run
    seen = []
    real = validation.standard_accuracies
    monkeypatch.setattr(validation, "standard_accuracies",
                        lambda *a, **k: seen.append(a[5].model.first_padding) or real(*a, **k))
    assert main(["distill", "--method", "dm", "--model", "convnet", "--width", "8", "--depth", "2", "--ipc", "1",
                 "--real-per-class", "4", "--first-padding", "3", "--iterations", "1", "--eval-every", "1",
                 "--eval-nets", "1", "--val-epochs", "1", "--final-nets", "0", "--out", str(tmp_path)]) == 0
    assert seen and set(seen) == {3}
    assert json.loads((tmp_path / "config.json").read_text())["model"]["first_padding"] == 3
    default = evaluate_run(tmp_path, "standard", nets=1, epochs=1)
    override = evaluate_run(tmp_path, "standard", nets=1, epochs=1, first_padding=1)
    assert default.model.endswith("first padding 3") and override.model.endswith("first padding 1")


def test_adversarial_policy_receives_the_reversed_gradient_of_the_matching_loss(digits, float64):
    # The policy's gradient through both the real and the synthetic side, against the explicit loss computed with
    # the policy applied directly (gradient not reversed); the synthetic images' gradient is unchanged.
    alpha = 0.3
    d = _distiller(digits, policy="learn", siamese=True)
    d.synthetic.images.data = d.synthetic.images.data.double()
    x_real, y_real = d.sampler.sample(3, d.generators["data"])
    x_real = x_real.double()
    theta = sample_params(d.model, torch.Generator().manual_seed(d.generators["init"].initial_seed()))
    augment = d.stream.step()
    (part,) = list(d.method.losses(OuterBatch(x_real, y_real, augment.adversarial(alpha), 0)))
    part.loss.backward()

    x_syn = d.synthetic.images.detach().clone().requires_grad_()
    policy = [p for p in d.policy.parameters() if p.requires_grad]
    expected = _reference_loss(d, theta, augment.synthetic(x_syn, d.synthetic.labels), augment.real(x_real, y_real),
                               y_real)
    *expected_policy, expected_images = torch.autograd.grad(expected, [*policy, x_syn])
    torch.testing.assert_close(part.loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.synthetic.images.grad, expected_images, rtol=1e-8, atol=1e-12)
    assert sum(float(g.abs().sum()) for g in expected_policy) > 1e-6
    for p, g in zip(policy, expected_policy, strict=True):
        torch.testing.assert_close(p.grad, -alpha * g, rtol=1e-8, atol=1e-12)


def test_the_loop_adds_the_adversarial_gradient_on_the_policy_turns_only(digits):
    # Twin runs that differ only in α: on a policy turn (the first step) the policy's gradient is the objective's plus −α times the
    # matching loss's, so (g_α − g_0) / α is the same for two α; off its turns the policy gets no gradient.
    def policy_grads(alpha: float, every: int = 1, steps: int = 1) -> list[torch.Tensor]:
        cfg = DistillConfig(method=MethodConfig(name="dm"), model=MODEL, synthetic=SyntheticConfig(ipc=2),
                            outer=OuterConfig(real_per_class=3),
                            policy=PolicyConfig(mode="learn", ops=tuple(OPS), siamese=True, inner_steps=2,
                                                adversarial=alpha, every=every))
        d = Distiller(cfg, digits, policy=build_policy(OPS, image_size=(8, 8), probability=0.9))
        for _ in range(steps):
            d.step()
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in d.policy.parameters()]

    base, one, three = policy_grads(0.0), policy_grads(1.0), policy_grads(3.0)
    for g0, g1, g3 in zip(base, one, three, strict=True):
        torch.testing.assert_close(g3 - g0, 3 * (g1 - g0), rtol=1e-4, atol=1e-6)
    assert sum(float((g1 - g0).abs().sum()) for g0, g1 in zip(base, one)) > 1e-6
    # with --policy-every 2 the second step is not the policy's turn: nothing reaches it
    assert all(float(g.abs().sum()) == 0 for g in policy_grads(1.0, every=2, steps=2))


def test_adversarial_policy_needs_a_matching_loss(digits):
    cfg = DistillConfig(policy=PolicyConfig(mode="learn", ops=("rotate",), adversarial=0.1))
    with pytest.raises(ConfigError, match="--method wang has none it can read"):
        Distiller(cfg, digits)
