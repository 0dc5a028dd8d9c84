"""The functional inner trainer: hypergradients against `higher` and finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, sample_params
from augdistill.testing import assert_unroll_matches_higher


def _problem(dtype=torch.float32, soft=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    net = build_model("convnet", (1, 6, 6), 3, width=4, depth=2, norm="group", mean=[0.4], std=[0.3]).to(dtype)
    theta0 = {k: v.to(dtype) for k, v in sample_params(net, g).items()}
    images = torch.rand(6, 1, 6, 6, generator=g, dtype=dtype).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    targets = torch.softmax(torch.randn(6, 3, generator=g, dtype=dtype), 1).requires_grad_() if soft else labels
    lrs = torch.tensor([0.3, 0.2, 0.25, 0.1], dtype=dtype, requires_grad=True)
    x_real = torch.rand(12, 1, 6, 6, generator=g, dtype=dtype)
    y_real = torch.randint(0, 3, (12,), generator=g)
    schedule = InnerSchedule(tuple(torch.tensor(i) for i in ([0, 2, 4], [1, 3, 5])), epochs=2)
    return net, theta0, images, targets, lrs, x_real, y_real, schedule


def _outer_loss(net, theta, x_real, y_real):
    return F.cross_entropy(functional_call(net, theta, (x_real,)), y_real)


@pytest.mark.parametrize("soft", [False, True])
def test_hypergradients_match_higher(soft):
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem(soft=soft)
    leaves = [images, lrs] + ([targets] if soft else [])
    assert_unroll_matches_higher(net, theta0, images, targets, lrs, schedule, x_real, y_real, leaves,
                                 rtol=1e-4, atol=1e-6)


def test_hypergradients_match_finite_differences():
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem(dtype=torch.float64, soft=True)
    momentum = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)

    def loss(images_, targets_, lrs_, momentum_):
        theta = unroll(net, theta0, images_, targets_, lrs_, schedule, momentum=momentum_)
        return _outer_loss(net, theta, x_real, y_real)

    assert torch.autograd.gradcheck(loss, (images, targets, lrs, momentum), eps=1e-6, atol=1e-5, rtol=1e-3,
                                    fast_mode=True)


def test_augment_receives_every_step_and_gets_gradient():
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem()
    scale = torch.tensor(1.0, requires_grad=True)
    seen = []

    def augment(x, t):
        seen.append(t)
        return x * scale

    theta = unroll(net, theta0, images, targets, lrs, schedule, augment=augment)
    (grad,) = torch.autograd.grad(_outer_loss(net, theta, x_real, y_real), [scale])
    assert seen == [0, 1, 2, 3]
    assert grad.abs() > 0


def test_without_graph_matches_with_graph_and_is_detached():
    net, theta0, images, targets, lrs, *_, schedule = _problem()
    a = unroll(net, theta0, images, targets, lrs, schedule)
    b = unroll(net, theta0, images, targets, lrs, schedule, create_graph=False)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
        assert not b[k].requires_grad


def test_wrong_number_of_learning_rates_is_a_clear_error():
    net, theta0, images, targets, lrs, *_, schedule = _problem()
    with pytest.raises(ConfigError, match="expected 4 learning rates"):
        unroll(net, theta0, images, targets, lrs[:3], schedule)


def test_class_chunks_cover_each_class_in_turn():
    s = InnerSchedule.class_chunks(num_classes=2, ipc=4, per_class=2, steps=3, epochs=1)
    assert [b.tolist() for b in s.batches] == [[0, 1, 4, 5], [2, 3, 6, 7], [0, 1, 4, 5]]
    with pytest.raises(ConfigError):
        InnerSchedule.class_chunks(num_classes=2, ipc=3, per_class=2, steps=1, epochs=1)
