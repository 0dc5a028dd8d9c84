"""The contract every parameterisation keeps: exact budget arithmetic, decoding differentiable w.r.t. every
stored tensor (finite differences), export and re-decoding from the stored tensors, every method's loss
reaching every stored tensor, and ``pixels`` initialised exactly as before parameterisations existed."""

from __future__ import annotations

import json
import math

import pytest
import torch

from augdistill.cli.main import main
from augdistill.config import DistillConfig, MethodConfig, ModelConfig, OuterConfig, SyntheticConfig
from augdistill.data import herd_per_class, take_per_class
from augdistill.distill import Distiller
from augdistill.distill.experts import ExpertSetup, train_experts
from augdistill.distill.methods import METHODS
from augdistill.distill.synthetic import PARAMETERISATIONS, decode_stored
from augdistill.runs.jobs import distill_run
from augdistill.runs.layout import load_distilled

#: small settings that fit digits' 8x8 budget at ipc 1 (the defaults target 28x28 and 32x32 images)
SMALL = {"pixels": {}, "multi-formation": {"factor": 2},
         "latent": {"factor": 2, "decoders": 2, "latent_dim": 2, "decoder_width": 4, "fit_steps": 10}}
#: a small network for every method's step (each method's default network is the field's, slow on CPU)
SMALL_NET = ModelConfig("convnet", width=8, depth=2, norm="instance")


def _build(param: str, ipc: int, shape: tuple[int, int, int], classes: int = 10, **synthetic):
    cfg = DistillConfig(synthetic=SyntheticConfig(param=param, ipc=ipc, **synthetic))
    cls = PARAMETERISATIONS[param]
    per_class = cls.real_per_class(cfg, classes, shape)
    images = torch.rand(classes * per_class, *shape, generator=torch.Generator().manual_seed(0))
    return cls.from_real(images, classes, config=cfg, generator=torch.Generator().manual_seed(0))


# floats counted by hand, default settings (multi-formation factor 2; latent: 4 decoders of width 8,
# codes of 4 channels at 1/4 of the side):
#   28x28x1 decoder: 4*8*9 + 8 + 8*1*9 + 1 = 369, x4 = 1476;  code 4*7*7 = 196
#     ipc 1:  (7840 - 1476) // (10*196) = 3 codes/class  ->  3*10*196 + 1476 = 7356 floats, 10*3*4 images
#     ipc 10: (78400 - 1476) // 1960 = 39                ->  39*1960 + 1476 = 77916, 10*39*4
#   32x32x3 decoder: 288 + 8 + 8*3*9 + 3 = 515, x4 = 2060;  code 4*8*8 = 256
#     ipc 1:  (30720 - 2060) // 2560 = 11                ->  11*2560 + 2060 = 30220, 10*11*4
#     ipc 10: (307200 - 2060) // 2560 = 119              ->  119*2560 + 2060 = 306700, 10*119*4
BUDGETS = [  # param, shape, ipc, stored floats, decoded images
    ("pixels", (1, 28, 28), 1, 7840, 10), ("pixels", (1, 28, 28), 10, 78400, 100),
    ("pixels", (3, 32, 32), 1, 30720, 10), ("pixels", (3, 32, 32), 10, 307200, 100),
    ("multi-formation", (1, 28, 28), 1, 7840, 40), ("multi-formation", (1, 28, 28), 10, 78400, 400),
    ("multi-formation", (3, 32, 32), 1, 30720, 40), ("multi-formation", (3, 32, 32), 10, 307200, 400),
    ("latent", (1, 28, 28), 1, 7356, 120), ("latent", (1, 28, 28), 10, 77916, 1560),
    ("latent", (3, 32, 32), 1, 30220, 440), ("latent", (3, 32, 32), 10, 306700, 4760),
]


@pytest.mark.parametrize("param,shape,ipc,floats,decoded", BUDGETS)
def test_budget_arithmetic_is_exact_at_the_defaults(param, shape, ipc, floats, decoded):
    syn = _build(param, ipc, shape, fit_steps=0)
    assert syn.stored_floats() == floats
    assert syn.budget_floats() == 10 * ipc * math.prod(shape)
    syn.check_budget()
    assert syn.num_decoded == decoded and len(syn.labels) == decoded


@pytest.mark.parametrize("param", list(PARAMETERISATIONS))
def test_decoding_is_differentiable_wrt_every_stored_tensor(param):
    syn = _build(param, 1, (1, 4, 4), classes=2, **SMALL[param]).double()
    names, recipe = list(syn.stored_tensors()), syn.recipe()
    assert torch.equal(syn.decode(), decode_stored(syn.stored_tensors(), recipe))
    inputs = tuple(t.detach().clone().requires_grad_() for t in syn.stored_tensors().values())
    assert torch.autograd.gradcheck(lambda *ts: decode_stored(dict(zip(names, ts)), recipe), inputs,
                                    fast_mode=True)


def test_a_latent_set_over_budget_is_refused_by_the_loop_with_the_excess(digits):
    cfg = DistillConfig(synthetic=SyntheticConfig(param="latent", ipc=1, fit_steps=0))
    # one code per class (4x2x2 = 16 floats) plus 4 default decoders (1476 floats) against 10*64 = 640
    with pytest.raises(Exception, match=r"stores 1636 floats but --ipc 1 allows 640 \(996 too many"):
        Distiller(cfg, digits)


@pytest.mark.parametrize("param", ["multi-formation", "latent"])
def test_export_holds_decoded_and_stored_tensors_and_re_decodes_exactly(param, digits, tmp_path, capsys):
    cfg = DistillConfig(synthetic=SyntheticConfig(param=param, ipc=1, **SMALL[param]),
                        outer=OuterConfig(iterations=2, num_inits=1, real_per_class=4))
    metrics = distill_run(cfg, tmp_path, eval_every=0, final_nets=0, log=lambda m: None)
    s = load_distilled(tmp_path / "synthetic.pt")
    assert s.param == param and s.recipe["kind"] == param
    assert torch.equal(s.redecode(), s.images)
    assert metrics["stored_floats"] == s.stored_floats <= 10 * 64
    assert metrics["decoded_images"] == s.images.shape[0] == len(s.labels) > 10
    raw = torch.load(tmp_path / "synthetic.pt", weights_only=True)  # plain tensors and values only
    assert set(raw["stored"]) == set(s.stored) and raw["recipe"]["kind"] == param
    assert json.loads((tmp_path / "metrics.json").read_text())["stored_floats"] == s.stored_floats
    if param == "latent":  # `show` redraws the pictures (slow) and reports the storage
        assert main(["show", str(tmp_path)]) == 0
        assert f"{s.stored_floats} stored floats" in capsys.readouterr().out


@pytest.fixture(scope="module")
def experts(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("experts")
    train_experts(ExpertSetup.for_dataset(digits.info, SMALL_NET, epochs=2, batch_size=128, lr=0.05), digits, out, 1)
    return out


def _method_config(method: str, request: pytest.FixtureRequest) -> MethodConfig:
    if method == "mtt":
        return MethodConfig(name="mtt", expert_dir=str(request.getfixturevalue("experts")), syn_steps=2,
                            max_start_epoch=1, expert_epochs=1)
    return MethodConfig(name=method)


@pytest.mark.parametrize("param", list(PARAMETERISATIONS))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_reaches_every_stored_tensor(method, param, digits, request):
    cfg = DistillConfig(method=_method_config(method, request), model=SMALL_NET, synthetic=SyntheticConfig(param=param, ipc=1, **SMALL[param]),
                        outer=OuterConfig(num_inits=1, real_per_class=4))
    d = Distiller(cfg, digits)
    d.step()
    for name, t in d.synthetic.stored_tensors().items():
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, (method, name)


def test_pixels_start_from_the_same_images_as_before(digits):
    cfg = DistillConfig(synthetic=SyntheticConfig(ipc=3), outer=OuterConfig(seed=5))
    real, _ = take_per_class(digits.train.x, digits.train.y, 10, 3, seed=5)
    assert torch.equal(Distiller(cfg, digits).synthetic.images, real)
    noise_cfg = DistillConfig(synthetic=SyntheticConfig(ipc=3, init="noise"), outer=OuterConfig(seed=5))
    drawn = torch.rand((30, 1, 8, 8), generator=torch.Generator().manual_seed(5 * 1000 + 4))  # the "synthetic" stream
    assert torch.equal(Distiller(noise_cfg, digits).synthetic.images, drawn)
    herded, _ = herd_per_class(digits.train.x, digits.train.y, 10, 3)
    herding_cfg = DistillConfig(synthetic=SyntheticConfig(ipc=3, init="herding"), outer=OuterConfig(seed=5))
    assert torch.equal(Distiller(herding_cfg, digits).synthetic.images, herded)


@pytest.mark.parametrize("param", ["pixels", "multi-formation"])
def test_clip_pixels_keeps_the_stored_pixels_in_the_unit_range_where_plain_steps_leave_it(param, digits):
    def stepped(clip: bool) -> torch.Tensor:
        cfg = DistillConfig(method=MethodConfig(name="dm"), model=SMALL_NET,
                            synthetic=SyntheticConfig(param=param, ipc=1, clip_pixels=clip, **SMALL[param]),
                            outer=OuterConfig(real_per_class=4, lr_images=100.0))
        d = Distiller(cfg, digits)
        for _ in range(3):
            d.step()
        return d.synthetic.images.detach()

    plain, clipped = stepped(False), stepped(True)
    assert plain.min() < -0.1 or plain.max() > 1.1  # the step size leaves the range without the projection
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert ((clipped == 0) | (clipped == 1)).any() and ((clipped > 0) & (clipped < 1)).any()  # projected, not reset


def test_clip_pixels_is_refused_where_no_stored_tensor_holds_pixels(digits):
    cfg = DistillConfig(synthetic=SyntheticConfig(param="latent", ipc=1, clip_pixels=True, **SMALL["latent"]))
    with pytest.raises(Exception, match=r"--clip-pixels .* --param latent stores none"):
        Distiller(cfg, digits)
