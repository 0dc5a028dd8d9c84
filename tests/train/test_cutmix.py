"""CutMix for the evaluation networks: the pasted box, the mixed loss, the draws it takes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augdistill.train.cutmix import cutmix
from augdistill.train.evaluate import StandardProtocol, train_standard


def test_the_box_holds_the_partners_pixels_and_keep_is_the_rest():
    b, h, w = 6, 9, 7
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 2, h, w).clone()
    for seed in range(50):
        mix = cutmix(x, torch.Generator().manual_seed(seed))
        assert sorted(mix.partner.tolist()) == list(range(b))
        for i in range(b):
            own = mix.images[i] == i
            pasted = mix.images[i] == mix.partner[i]
            assert bool((own | pasted).all())
            if mix.partner[i] != i:
                rows, cols = torch.nonzero(~own[0], as_tuple=True)
                area = rows.numel()
                assert 1 - area / (h * w) == pytest.approx(mix.keep)
                if area:  # a rectangle, the same in every channel
                    box = (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)
                    assert box == area and torch.equal(own[0], own[1])


def test_keep_covers_the_unit_interval_and_a_seed_repeats():
    x = torch.rand(4, 1, 28, 28)
    keeps = [cutmix(x, torch.Generator().manual_seed(s)).keep for s in range(300)]
    # the box is clipped at the border, so more than half of an image is its own on average (0.71 measured)
    assert min(keeps) < 0.3 and max(keeps) > 0.95 and 0.6 < sum(keeps) / len(keeps) < 0.8
    a, b = (cutmix(x, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.partner, b.partner) and a.keep == b.keep


@pytest.mark.parametrize("soft", [False, True])
def test_the_loss_mixes_both_targets_by_area(soft):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g)
    targets = torch.softmax(torch.randn(5, 3, generator=g), 1) if soft else torch.tensor([0, 1, 2, 1, 0])
    mix = cutmix(torch.rand(5, 1, 8, 8, generator=g), g)
    def ce(t):
        if soft:
            return -(t * torch.log_softmax(logits, 1)).sum(1).mean()
        return -torch.log_softmax(logits, 1)[torch.arange(5), t].mean()
    expected = mix.keep * ce(targets) + (1 - mix.keep) * ce(targets[mix.partner])
    torch.testing.assert_close(mix.loss(logits, targets), expected)


def _train(cutmix_share: float, generator: torch.Generator) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1)), torch.arange(12) % 3
    return train_standard(net, x, y, StandardProtocol(epochs=3, batch_size=5, cutmix=cutmix_share), generator)


def test_without_cutmix_training_draws_only_its_shuffles():
    """cutmix 0 takes no draws, so every evaluation without it is what it was before the option existed."""
    g, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    _train(0.0, g)
    for _ in range(3):
        torch.randperm(12, generator=reference)
    assert torch.equal(g.get_state(), reference.get_state())


def test_cutmix_changes_training_and_bad_shares_are_refused():
    plain, mixed = _train(0.0, torch.Generator().manual_seed(3)), _train(1.0, torch.Generator().manual_seed(3))
    assert not torch.equal(plain[1].weight, mixed[1].weight)
    with pytest.raises(Exception, match="cutmix"):
        StandardProtocol(cutmix=1.5)
