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
