"""Model families, the registry and generator-driven initialisation."""

from __future__ import annotations

import pytest
import torch

from augdistill.errors import ConfigError
from augdistill.models import build_model, reset_parameters_, sample_params


@pytest.mark.parametrize("name, kwargs", [("convnet", {"norm": "instance"}), ("convnet", {"norm": "group"}),
                                          ("convnet", {"norm": "batch"}), ("convnet", {"norm": "none"}),
                                          ("lenet", {}), ("mlp", {"depth": 2})])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_model_maps_images_to_logits(name, kwargs, shape):
    net = build_model(name, shape, 10, mean=[0.5] * shape[0], std=[0.25] * shape[0], **kwargs)
    assert net(torch.rand(3, *shape)).shape == (3, 10)
    params = sample_params(net, torch.Generator().manual_seed(0))
    assert params.keys() == dict(net.named_parameters()).keys()


def test_sample_params_is_reproducible_and_follows_default_init_bounds():
    net = build_model("convnet", (1, 8, 8), 10, width=16, norm="instance")
    a = sample_params(net, torch.Generator().manual_seed(1))
    b = sample_params(net, torch.Generator().manual_seed(1))
    c = sample_params(net, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["classifier.weight"], c["classifier.weight"])
    w = a["features.0.weight"]  # conv 1 -> 16, 3x3: bound 1/sqrt(9)
    assert w.abs().max() <= 1 / 3 and w.abs().max() > 0.3
    torch.manual_seed(0)
    before = torch.rand(1)
    reset_parameters_(net, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    assert torch.equal(before, torch.rand(1)), "initialisation must not touch the global RNG"
    assert torch.equal(net.classifier.weight, a["classifier.weight"])


def test_unknown_model_or_option_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        build_model("resnet", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="unknown norm"):
        build_model("convnet", (1, 8, 8), 10, norm="layer")
    with pytest.raises(ConfigError, match="lenet"):
        build_model("lenet", (1, 8, 8), 10, norm="group")


@pytest.mark.parametrize("first_padding, sides, features", [(1, [28, 14, 7, 3], 128 * 3 * 3),
                                                            (3, [32, 16, 8, 4], 128 * 4 * 4)])
def test_convnet_first_padding_sets_every_map_size(first_padding, sides, features):
    """The field's code pads a 28x28 grey-scale image's first convolution by 3: maps of 32, 16, 8 and 4 pixels."""
    net = build_model("convnet", (1, 28, 28), 10, first_padding=first_padding)
    seen = []
    for module in net.features:
        if isinstance(module, (torch.nn.Conv2d, torch.nn.AvgPool2d)):
            module.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert seen == [sides[0], sides[1], sides[1], sides[2], sides[2], sides[3]]
    assert net.classifier.in_features == features
    assert [m.padding for m in net.features if isinstance(m, torch.nn.Conv2d)] == [(first_padding,) * 2, (1, 1), (1, 1)]


def test_convnet_refuses_a_first_padding_that_leaves_no_room_for_its_kernel():
    with pytest.raises(ConfigError, match="2x2 image padded by 0 is smaller than the first conv's 3x3 kernel"):
        build_model("convnet", (1, 2, 2), 10, first_padding=0)
