"""``augdistill policy export``: the printed snippet builds a pipeline that runs with only torch and torchvision."""

from __future__ import annotations

import pytest
import torch

from augdistill.cli import main


@pytest.mark.parametrize("to", ["torchvision", "kornia"])
def test_exported_snippet_runs_and_augments(to, capsys, tmp_path):
    from augdistill.augment import dsa_policy
    path = tmp_path / "dsa.json"
    dsa_policy((16, 16)).save(path)
    assert main(["policy", "export", str(path), "--to", to]) == 0
    source = capsys.readouterr().out
    code = [line for line in source.splitlines() if not line.lstrip().startswith("#")]
    assert not any("import augdistill" in line or "from augdistill" in line for line in code)
    namespace: dict = {}
    exec(compile(source, "<snippet>", "exec"), namespace)
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(0)
    y = namespace["pipeline"](x if to == "kornia" else x[0])
    assert y.shape == (x.shape if to == "kornia" else x[0].shape) and torch.isfinite(y).all()


@pytest.mark.parametrize("to", ["torchvision", "kornia"])
def test_a_per_class_policy_shows_every_class_and_exports_by_label(to, capsys, tmp_path):
    from augdistill.augment import ClassRangesPolicy, build_policy
    base = build_policy([{"name": "brightness", "probability": 1.0, "magnitude": (-0.5, 0.5)}])
    path = tmp_path / "per-class.json"
    ClassRangesPolicy(base, ["dark", "light"], torch.tensor([[[-0.4, -0.2]], [[0.2, 0.3]]])).save(path)
    assert main(["policy", "show", str(path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["dark", "-0.4..-0.2"] for line in shown), shown
    assert any(line.split()[:2] == ["light", "0.2..0.3"] for line in shown), shown
    assert main(["policy", "export", str(path), "--to", to]) == 0
    source = capsys.readouterr().out
    assert "import augdistill" not in source and "from augdistill" not in source
    namespace: dict = {}
    exec(compile(source, "<snippet>", "exec"), namespace)
    flat = torch.full((2, 1, 4, 4), 0.5)
    if to == "kornia":
        out, labels = namespace["pipeline"](flat, torch.tensor([0, 1]))
    else:
        out = torch.stack([namespace["pipeline"](flat[k], k)[0] for k in range(2)])
    shift = out.mean((1, 2, 3)) - 0.5
    assert -0.4 - 1e-6 <= shift[0] <= -0.2 + 1e-6 and 0.2 - 1e-6 <= shift[1] <= 0.3 + 1e-6
