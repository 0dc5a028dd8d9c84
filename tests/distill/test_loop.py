"""The Wang et al. outer loop: learning, both θ₀ modes, exact resume, divergence guard."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from augdistill.config import DistillConfig, MethodConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.errors import TrainingDivergedError
from augdistill.train import replay_accuracies
from augdistill.distill import Distiller


def _config(**outer) -> DistillConfig:
    return DistillConfig(outer=OuterConfig(**{"iterations": 300, **outer}))


def _test_replay(d: Distiller, nets: int = 5) -> torch.Tensor:
    s, recipe = d.synthetic, d.method.replay_recipe()
    return replay_accuracies(d.model, s.decode().detach(), s.targets().detach(), recipe.lrs, recipe.schedule,
                             d.data.test, list(range(nets)))


def test_random_init_distillation_on_digits_beats_real_images(digits):
    d = Distiller(_config(), digits)
    before = _test_replay(d).mean()
    d.fit(300, eval_every=100)
    d.restore_best()
    after = _test_replay(d)
    assert d.best["iteration"] > 0
    # 10 images in all; a random real image per class with the same steps scores far lower
    assert after.mean() > 0.85, after
    assert after.mean() > before + 0.15


def test_fixed_init_trains_its_own_initialisation(digits):
    d = Distiller(_config(init="fixed", num_inits=1, iterations=150), digits)
    d.fit(150)
    s, recipe = d.synthetic, d.method.replay_recipe()
    from augdistill.inner import unroll
    from augdistill.train import accuracy
    theta = unroll(d.model, d.method.fixed_theta, s.decode().detach(), s.targets().detach(), recipe.lrs,
                   recipe.schedule, create_graph=False)
    assert accuracy(d.model, d.data.test.x, d.data.test.y, params=theta) > 0.85


def test_learned_labels_and_lrs_get_gradients_and_respect_the_cap(digits):
    cfg = dataclasses.replace(_config(), synthetic=SyntheticConfig(learn_labels=True),
                              method=MethodConfig(lr_cap=0.3, lr_init=0.2))
    d = Distiller(cfg, digits)
    learned = list(d.synthetic.named_parameters()) + list(d.method.named_parameters())
    before = {k: v.detach().clone() for k, v in learned}
    for _ in range(30):
        d.step()
    for name, p in learned:
        assert not torch.equal(before[name], p), name
    assert float(d.method.lrs().detach().max()) < 0.3


def test_resume_from_state_dict_is_exact(digits, tmp_path):
    from augdistill.runs.atomic import load_tensors, save_tensors
    straight = Distiller(_config(), digits)
    for _ in range(6):
        straight.step()
    first = Distiller(_config(), digits)
    for _ in range(3):
        first.step()
    save_tensors(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = Distiller(_config(), digits)
    resumed.load_state_dict(load_tensors(tmp_path / "ckpt.pt"))
    for _ in range(3):
        resumed.step()
    assert resumed.iteration == 6
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert torch.equal(resumed.method.raw_lrs, straight.method.raw_lrs)


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_state(digits):
    d = Distiller(_config(), digits)
    d.step()
    good = d.synthetic.images.detach().clone()
    with torch.no_grad():
        d.method.raw_lrs[0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="outer step 2"):
        d.step()
    assert torch.equal(d.synthetic.images, good)


def test_gradient_clipping_is_the_methods_default_and_zero_turns_it_off(digits):
    """Wang clips at 10; the matching methods do not clip (their papers' plain SGD step)."""
    def one_step(method: str, clip: float | None) -> tuple[Distiller, torch.Tensor]:
        cfg = DistillConfig(method=MethodConfig(name=method), outer=OuterConfig(grad_clip=clip, sgd_momentum=0.0))
        d = Distiller(cfg, digits)
        before = d.synthetic.images.detach().clone()
        d.step()
        return d, d.synthetic.images.detach() - before

    assert Distiller(DistillConfig(), digits).config.outer.grad_clip == 10.0
    d, off = one_step("dm", None)
    assert d.config.outer.grad_clip == 0.0
    _, huge = one_step("dm", 1e12)
    assert torch.equal(off, huge)                       # 0 clips nothing
    grad_norm = float(off.norm()) / d.config.outer.lr_images   # one plain SGD step: lr x gradient
    _, clipped = one_step("dm", grad_norm / 2)
    assert float(clipped.norm()) == pytest.approx(float(off.norm()) / 2, rel=1e-4)


def test_restore_best_brings_back_the_selected_iterations_policy(digits):
    """``policy.json`` is written after :meth:`restore_best`: the policy must be the selected iteration's, not the
    last one's."""
    config = dataclasses.replace(_config(iterations=6), synthetic=SyntheticConfig(ipc=1),
                                 policy=PolicyConfig(mode="learn", ops=("rotate", "scale")))
    d = Distiller(config, digits)
    d.fit(3, eval_every=3, eval_nets=1)
    selected = {k: v.clone() for k, v in d.policy.state_dict().items()}
    for _ in range(3):  # later steps without validation move the policy on
        d.step()
    assert any(not torch.equal(v, selected[k]) for k, v in d.policy.state_dict().items())
    d.restore_best()
    assert d.best["iteration"] == 3
    assert all(torch.equal(v, selected[k]) for k, v in d.policy.state_dict().items())
