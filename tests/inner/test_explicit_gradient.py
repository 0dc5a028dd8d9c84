"""The hand-written ConvNet backward (``ConvNet.loss_gradient``) that ``unroll`` differentiates for nets without
normalisation: equal to autograd's gradient, hypergradients equal to `higher` and to finite differences, chosen
automatically only where it applies, and storing less than autograd's double backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, logits, unroll
from augdistill.models import ConvNet, build_model, sample_params
from augdistill.models.backward import explicit_plan
from augdistill.testing import assert_unroll_matches_higher

#: (input shape, depth): odd sizes (floor-mode pools drop a row / column), a net whose pooling stops at 1x1.
SHAPES = [((1, 11, 11), 3), ((3, 8, 8), 2), ((1, 4, 4), 3)]


def _problem(shape=(1, 11, 11), depth=3, soft=False, dtype=torch.float64, seed=0, norm="none", width=5,
             first_padding=1):
    g = torch.Generator().manual_seed(seed)
    channels = shape[0]
    net = build_model("convnet", shape, 4, width=width, depth=depth, norm=norm, mean=[0.4] * channels,
                      std=[0.3] * channels, first_padding=first_padding).to(dtype)
    theta0 = {k: v.to(dtype) for k, v in sample_params(net, g).items()}
    images = torch.rand(8, *shape, generator=g, dtype=dtype).requires_grad_()
    labels = torch.arange(4).repeat(2)
    targets = torch.softmax(torch.randn(8, 4, generator=g, dtype=dtype), 1).requires_grad_() if soft else labels
    lrs = torch.tensor([0.3, 0.2, 0.25, 0.1], dtype=dtype, requires_grad=True)
    x_real = torch.rand(10, *shape, generator=g, dtype=dtype)
    y_real = torch.randint(0, 4, (10,), generator=g)
    schedule = InnerSchedule(tuple(torch.tensor(i) for i in ([0, 2, 4, 6], [1, 3, 5, 7, 0])), epochs=2)
    return net, theta0, images, targets, lrs, x_real, y_real, schedule


def _outer_loss(net, theta, x_real, y_real):
    return F.cross_entropy(logits(net, theta, x_real), y_real)


@pytest.mark.parametrize("shape, depth, first_padding", [(shape, depth, 1) for shape, depth in SHAPES]
                         + [((1, 7, 7), 3, 3), ((1, 5, 5), 2, 0)])  # the field's padding on grey-scale; none
@pytest.mark.parametrize("soft", [False, True])
def test_loss_gradient_equals_autograd(shape, depth, first_padding, soft):
    net, theta0, images, targets, *_ = _problem(shape, depth, soft, first_padding=first_padding)
    assert net.explicit_gradient
    theta = {k: v.requires_grad_() for k, v in theta0.items()}
    loss = F.cross_entropy(functional_call(net, theta, (images,)), targets)
    reference = torch.autograd.grad(loss, list(theta.values()))
    ours = net.loss_gradient(theta, images, targets)
    assert list(ours) == list(theta)
    for (name, a), b in zip(ours.items(), reference):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape, depth", SHAPES)
@pytest.mark.parametrize("soft", [False, True])
def test_hypergradients_match_higher(shape, depth, soft):
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem(shape, depth, soft)
    leaves = [images, lrs] + ([targets] if soft else [])
    assert_unroll_matches_higher(net, theta0, images, targets, lrs, schedule, x_real, y_real, leaves,
                                 rtol=1e-9, atol=1e-12)


def test_hypergradients_match_finite_differences_with_momentum_and_augmentation():
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem(soft=True)
    momentum = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    brightness = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)

    def loss(images_, targets_, lrs_, momentum_, brightness_):
        theta = unroll(net, theta0, images_, targets_, lrs_, schedule, momentum=momentum_,
                       augment=lambda x, t: x * brightness_ + 0.01 * t)
        return _outer_loss(net, theta, x_real, y_real)

    assert torch.autograd.gradcheck(loss, (images, targets, lrs, momentum, brightness), eps=1e-6, atol=1e-6,
                                    rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("segment", [1, 3])
def test_checkpointed_explicit_unroll_equals_plain(segment):
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem(soft=True)
    grads = []
    for checkpoint in (0, segment):
        theta = unroll(net, theta0, images, targets, lrs, schedule, checkpoint=checkpoint)
        grads.append(torch.autograd.grad(_outer_loss(net, theta, x_real, y_real), [images, targets, lrs]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = ConvNet.loss_gradient

    def counted(self, params, x, targets):
        calls.append(x.shape[0])
        return original(self, params, x, targets)
    monkeypatch.setattr(ConvNet, "loss_gradient", counted)
    return calls


def test_selected_automatically_only_where_it_applies(monkeypatch):
    calls = _counting(monkeypatch)
    net, theta0, images, targets, lrs, *_, schedule = _problem(dtype=torch.float32)
    unroll(net, theta0, images, targets, lrs, schedule)
    assert len(calls) == schedule.total_steps
    calls.clear()
    unroll(net, theta0, images, targets, lrs, schedule, create_graph=False)
    unroll(net, theta0, images, targets, lrs, schedule, precision="bfloat16")
    stacked = {k: torch.stack([v, v]) for k, v in theta0.items()}
    unroll(net, stacked, images, targets, lrs, schedule, stacked=2)
    unroll(net, theta0, images, targets, lrs, schedule, explicit=False)
    assert calls == []  # plain training, autocast, vmap-ed draws and explicit=False keep autograd
    for norm in ("group", "instance", "batch"):
        normed = _problem(norm=norm, width=4)[0]
        assert not normed.explicit_gradient
        with pytest.raises(ConfigError, match="without normalisation"):
            normed.loss_gradient(theta0, images, targets)


@pytest.mark.parametrize("layer", [torch.nn.AvgPool2d(3, stride=1), torch.nn.MaxPool2d(2), torch.nn.Tanh(),
                                   torch.nn.Conv2d(5, 5, 3, padding=1, stride=2)])
def test_plan_refuses_layers_it_does_not_cover(layer):
    net = build_model("convnet", (1, 8, 8), 4, width=5, depth=2, norm="none")
    assert explicit_plan(net.features, "features", "classifier") is not None
    net.features[3] = layer  # the first block's pool
    assert explicit_plan(net.features, "features", "classifier") is None


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``fn()``'s graph."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_explicit_path_equals_generic_path_and_stores_less():
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem((1, 16, 16), 3, dtype=torch.float32)
    results = {}
    for explicit in (True, False):
        def hypergradient(explicit=explicit):
            theta = unroll(net, theta0, images, targets, lrs, schedule, explicit=explicit)
            return torch.autograd.grad(_outer_loss(net, theta, x_real, y_real), [images, lrs])
        results[explicit] = hypergradient(), _saved_bytes(hypergradient)
    for a, b in zip(results[True][0], results[False][0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert results[True][1] <= 0.8 * results[False][1]
