"""KFS-style latent codes and decoders: the decoder against an independent per-decoder implementation,
gradients w.r.t. every stored tensor against finite differences, the deterministic fit to real images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from augdistill.config import DistillConfig, SyntheticConfig
from augdistill.distill.synthetic import LatentSet
from augdistill.distill.synthetic.latent import decode_latent, initial_decoders

D, DIM, WIDTH, C = 3, 2, 4, 2


def _decoder(dtype=torch.float32, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv1_weight": torch.randn(D, WIDTH, DIM, 3, 3, generator=g, dtype=dtype),
            "conv1_bias": torch.randn(D, WIDTH, generator=g, dtype=dtype),
            "conv2_weight": torch.randn(D, C, WIDTH, 3, 3, generator=g, dtype=dtype),
            "conv2_bias": torch.randn(D, C, generator=g, dtype=dtype)}


def test_decoder_matches_one_convolution_stack_per_decoder():
    codes = torch.rand(5, DIM, 3, 3, generator=torch.Generator().manual_seed(1))
    w = _decoder()
    out = decode_latent(codes, w["conv1_weight"], w["conv1_bias"], w["conv2_weight"], w["conv2_bias"], (6, 6))
    assert out.shape == (5 * D, C, 6, 6)
    up = F.interpolate(codes, size=(6, 6), mode="bilinear", align_corners=False)
    for n in range(5):
        for j in range(D):
            hidden = F.leaky_relu(F.conv2d(up[n:n + 1], w["conv1_weight"][j], w["conv1_bias"][j], padding=1), 0.2)
            expected = F.conv2d(hidden, w["conv2_weight"][j], w["conv2_bias"][j], padding=1)[0]
            torch.testing.assert_close(out[n * D + j], expected, rtol=1e-4, atol=1e-4)


def test_decoding_is_differentiable_wrt_every_stored_tensor():
    codes = torch.rand(2, DIM, 2, 2, dtype=torch.float64)
    w = _decoder(torch.float64)
    inputs = tuple(t.requires_grad_() for t in (codes, *w.values()))
    # fast mode: finite differences along random directions of every input, against the analytic products
    assert torch.autograd.gradcheck(lambda *t: decode_latent(*t, (3, 3)), inputs, fast_mode=True)


def test_initial_decoders_upsample_one_code_channel_each_before_the_fit():
    dec = initial_decoders(D, DIM, WIDTH, C, torch.Generator().manual_seed(0), noise=0.0)
    codes = torch.rand(4, DIM, 3, 3)
    out = decode_latent(codes, *dec.values(), (6, 6)).reshape(4, D, C, 6, 6)
    up = F.interpolate(codes, size=(6, 6), mode="bilinear", align_corners=False)
    for j in range(D):
        for ch in range(C):
            torch.testing.assert_close(out[:, j, ch], up[:, j % DIM])


def _fitted(images, seed=0, steps=40) -> LatentSet:
    cfg = DistillConfig(synthetic=SyntheticConfig(param="latent", codes=2, decoders=2, latent_dim=2, factor=2,
                                                  decoder_width=4, fit_steps=steps))
    return LatentSet.from_real(images, 3, config=cfg, generator=torch.Generator().manual_seed(seed))


def test_fit_to_real_images_is_deterministic_and_gets_closer_than_the_upsampled_codes():
    real = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    real = F.avg_pool2d(F.pad(real, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # smooth, image-like
    unfitted, fitted = _fitted(real, steps=0), _fitted(real)
    assert fitted.num_decoded == 12 and fitted.labels.tolist() == [c for c in range(3) for _ in range(4)]
    before = F.mse_loss(unfitted.decode(), real)
    after = F.mse_loss(fitted.decode(), real)
    assert after < 0.5 * before, (before, after)
    again = _fitted(real)
    for name, t in fitted.stored_tensors().items():
        assert torch.equal(t, again.stored_tensors()[name]), name
    assert all(p.grad is None for p in fitted.parameters())
    other = _fitted(real, seed=1)
    assert not torch.equal(other.conv1_weight, fitted.conv1_weight)


def test_too_many_codes_are_refused_with_the_excess():
    cfg = DistillConfig(synthetic=SyntheticConfig(param="latent", codes=6, fit_steps=0))
    syn = LatentSet.from_real(torch.rand(10 * 6 * 4, 1, 28, 28), 10, config=cfg)
    # 6 codes/class * 10 classes * 4x7x7 + 4 decoders * 369 = 11760 + 1476 = 13236 > 7840
    with pytest.raises(Exception, match=r"stores 13236 floats but --ipc 1 allows 7840 \(5396 too many"):
        syn.check_budget()
