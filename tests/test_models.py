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
