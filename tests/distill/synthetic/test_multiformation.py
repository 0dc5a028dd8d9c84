"""IDC multi-formation: tiling against an independent per-pixel implementation, IDC's initialisation,
gradients against finite differences, and ``factor = 1`` behaving exactly like ``pixels``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from augdistill.config import DistillConfig, OuterConfig, SyntheticConfig
from augdistill.distill import Distiller
from augdistill.distill.synthetic import MultiFormation, PixelSet
from augdistill.distill.synthetic.multiformation import form_images, pack_tiles, tile_spans
from augdistill.errors import ConfigError


def test_tile_spans_cover_the_side_once_longest_first():
    for size in (5, 8, 28, 32):
        for factor in range(1, 6):
            spans = tile_spans(size, factor)
            assert [s for s, _ in spans] == [sum(n for _, n in spans[:i]) for i in range(factor)]
            assert sum(n for _, n in spans) == size
            assert sorted((n for _, n in spans), reverse=True) == [n for _, n in spans]
            assert max(n for _, n in spans) - min(n for _, n in spans) <= 1


def test_formation_matches_an_independent_crop_and_resize():
    stored = torch.rand(3, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    decoded = form_images(stored, 3)
    assert decoded.shape == (27, 2, 7, 7)
    # tiles of a 7-pixel side with factor 3: rows/cols [0:3], [3:5], [5:7]
    cuts = [(0, 3), (3, 5), (5, 7)]
    for n in range(3):
        for i, (r0, r1) in enumerate(cuts):
            for j, (c0, c1) in enumerate(cuts):
                expected = F.interpolate(stored[n:n + 1, :, r0:r1, c0:c1], size=(7, 7), mode="bilinear",
                                         align_corners=False)[0]
                torch.testing.assert_close(decoded[n * 9 + i * 3 + j], expected)


def test_packing_then_forming_returns_the_real_images_at_tile_resolution():
    real = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    decoded = form_images(pack_tiles(real, 2), 2)
    expected = F.interpolate(F.avg_pool2d(real, 2), size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(decoded, expected)
    # a constant image survives both ways exactly
    flat = torch.full((4, 1, 8, 8), 0.3)
    torch.testing.assert_close(form_images(pack_tiles(flat, 2), 2), flat)


def test_decoding_is_differentiable_against_finite_differences():
    stored = torch.rand(2, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: form_images(x, 2), (stored,))
    assert torch.autograd.gradcheck(lambda x: form_images(x, 3), (stored,))


def test_labels_are_class_major_with_factor_squared_images_per_stored_image():
    syn = MultiFormation(torch.rand(6, 1, 8, 8), num_classes=3, factor=2)
    assert syn.decoded_per_class == 8 and syn.num_decoded == 24
    assert syn.labels.tolist() == [c for c in range(3) for _ in range(8)]
    assert syn.stored_floats() == syn.budget_floats() == 6 * 64


def test_factor_beyond_the_image_side_is_refused():
    with pytest.raises(ConfigError, match="--factor"):
        MultiFormation(torch.rand(2, 1, 8, 8), num_classes=2, factor=9)


def test_factor_one_is_exactly_pixels(digits):
    x = torch.rand(20, 1, 8, 8)
    one, pixels = MultiFormation(x, 10, 1), PixelSet(x, 10)
    assert torch.equal(one.decode(), pixels.decode()) and one.stored_floats() == pixels.stored_floats()

    def run(**synthetic) -> Distiller:
        cfg = DistillConfig(synthetic=SyntheticConfig(ipc=2, **synthetic),
                            outer=OuterConfig(iterations=3, num_inits=1, real_per_class=8))
        return Distiller(cfg, digits).fit(3)
    a, b = run(param="pixels"), run(param="multi-formation", factor=1)
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert torch.equal(a.method.raw_lrs, b.method.raw_lrs)
