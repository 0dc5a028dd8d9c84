"""``--ema``: the moving average of the synthetic set is what validation measures, selection keeps and the run
exports; it is checkpointed and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from augdistill.config import DistillConfig, MethodConfig, OuterConfig, SyntheticConfig
from augdistill.distill import Distiller
from augdistill.distill.averaging import ema_weight
from augdistill.errors import ConfigError
from augdistill.runs.atomic import load_tensors, save_tensors
from augdistill.runs.layout import load_distilled


def _dm(beta: float, **synthetic) -> DistillConfig:
    """Distribution matching on digits: cheap steps that move the set every time."""
    return DistillConfig(method=MethodConfig(name="dm"), synthetic=SyntheticConfig(**synthetic),
                         outer=OuterConfig(iterations=20, real_per_class=8, ema=beta, val_epochs=5))


@pytest.mark.parametrize("param", [{}, {"param": "multi-formation", "factor": 2}])
def test_the_average_is_the_discounted_mean_of_the_iterates(digits, param):
    """avg_t = Σ β^{t−i} s_i / Σ β^{t−i} over the recorded iterates s_1 … s_t, for every stored tensor (pixels;
    multi-formation's tiles)."""
    beta = 0.8
    d = Distiller(_dm(beta, **param), digits)
    iterates = []
    for _ in range(12):
        d.step()
        iterates.append({k: p.detach().clone() for k, p in d.synthetic.named_parameters()})
    weights = torch.tensor([beta ** (len(iterates) - i) for i in range(1, len(iterates) + 1)])
    averaged = dict(d.average.set.named_parameters())
    for k, p in d.synthetic.named_parameters():
        expected = sum(w * s[k] for w, s in zip(weights, iterates)) / weights.sum()
        torch.testing.assert_close(averaged[k], expected)
        assert not torch.allclose(averaged[k], p.detach(), atol=1e-4), k  # it lags the iterate
    assert not any(p.requires_grad for p in averaged.values())


def test_the_newest_iterate_weighs_one_then_one_minus_beta():
    assert ema_weight(0.95, 1) == 1.0
    assert ema_weight(0.95, 2) == pytest.approx(0.05 / (1 - 0.95 ** 2))
    assert ema_weight(0.95, 1000) == pytest.approx(0.05)


def test_validation_selection_and_restore_use_the_average(digits):
    d = Distiller(_dm(0.9), digits)
    d.fit(8, eval_every=4, eval_nets=1)
    best = d.best["state"]["synthetic"]["images"]
    assert d.best["iteration"] in (4, 8)
    if d.best["iteration"] == 8:
        torch.testing.assert_close(best, d.average.set.images, rtol=0, atol=0)
    assert not torch.equal(best, d.synthetic.images.detach())  # the raw set at 8 is not what was kept
    d.restore_best()
    assert torch.equal(d.synthetic.images.detach(), best)


def test_without_validation_the_average_is_what_restore_best_leaves(digits):
    d = Distiller(_dm(0.9), digits)
    d.fit(5)
    average = d.average.set.images.clone()
    d.restore_best()
    assert torch.equal(d.synthetic.images.detach(), average)


def test_off_by_default_and_the_set_trains_the_same_way(digits):
    plain, averaged = Distiller(_dm(0.0), digits), Distiller(_dm(0.9), digits)
    assert plain.average is None
    for _ in range(4):
        plain.step(), averaged.step()
    assert torch.equal(plain.synthetic.images, averaged.synthetic.images)  # the average never feeds back


def test_the_average_is_checkpointed_and_resumes_exactly(digits, tmp_path):
    straight = Distiller(_dm(0.9), digits)
    for _ in range(6):
        straight.step()
    first = Distiller(_dm(0.9), digits)
    for _ in range(3):
        first.step()
    save_tensors(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = Distiller(_dm(0.9), digits)
    resumed.load_state_dict(load_tensors(tmp_path / "ckpt.pt"))
    for _ in range(3):
        resumed.step()
    assert torch.equal(resumed.average.set.images, straight.average.set.images)
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)


@pytest.mark.parametrize("beta", [-0.1, 1.0, float("nan")])
def test_a_decay_outside_0_1_is_refused(beta):
    with pytest.raises(ConfigError, match="--ema"):
        OuterConfig(ema=beta)


def test_the_cli_exports_the_average_and_a_checkpoint_without_it_is_refused(tmp_path, capsys):
    from augdistill.cli import main
    out = tmp_path / "run"
    argv = ["distill", "--out", str(out), "--method", "dm", "--iterations", "4", "--eval-every", "0",
            "--final-nets", "0", "--real-per-class", "8", "--ema", "0.9"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["outer"]["ema"] == 0.9
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    exported = load_distilled(out / "synthetic.pt").images
    assert torch.equal(exported, checkpoint["average"]["images"])
    assert not torch.equal(exported, checkpoint["synthetic"]["images"])

    del checkpoint["average"]
    torch.save(checkpoint, out / "checkpoint.pt")
    capsys.readouterr()
    assert main(["distill", "--out", str(out), "--resume", "--iterations", "6"]) != 0
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "average" in err and "Traceback" not in err
