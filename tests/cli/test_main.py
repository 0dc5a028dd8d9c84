"""The command line end to end: the main job and its outputs, the commands that read them, resuming with the
run's own settings, and the real entry point's one-line errors (the table of bad invocations is in
``test_bad_invocations.py``; kills and resumes in ``tests/runs/test_resume.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from augdistill.runs import load_distilled

from .conftest import TINY

FAST = ["--iterations", "20", "--eval-every", "10", "--final-nets", "2"]


def test_distill_writes_every_output_and_evaluate_reads_them(tmp_path, cli):
    out = tmp_path / "run"
    result = cli("distill", "--out", out, *FAST)
    assert result.code == 0
    for name in ("synthetic.pt", "config.json", "metrics.json", "synthetic.png", "loss.png", "checkpoint.pt",
                 "augdistill-run.json"):
        assert (out / name).is_file(), name
    assert "replay test accuracy" in result.out
    s = load_distilled(out / "synthetic.pt")
    assert s.images.shape == (10, 1, 8, 8) and s.lrs.shape == (10,)
    raw = torch.load(out / "synthetic.pt", weights_only=True)
    assert {"images", "labels", "lrs", "batches"} <= raw.keys()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_iteration"] in (10, 20)

    result = cli("evaluate", out, "--protocol", "replay", "--nets", "2", "--json")
    assert result.code == 0
    record = json.loads(result.out)
    assert {"mean", "std", "accs", "protocol", "ipc", "dataset"} <= record.keys()
    assert record["protocol"] == "replay" and len(record["accs"]) == 2 and record["ipc"] == 1
    assert record["mean"] == pytest.approx(metrics["test_replay"]["mean"], abs=1e-6)

    result = cli("evaluate", out, "--protocol", "standard", "--nets", "1", "--epochs", "2")
    assert result.code == 0 and "standard" in result.out
    # networks SEED .. SEED+NETS-1: the second of two is the one --seed 1 trains alone (no augmentation draws)
    two, second = (json.loads(cli("evaluate", out, "--protocol", "standard", "--epochs", "2", "--json", *flags).out)
                   for flags in (("--nets", "2"), ("--nets", "1", "--seed", "1")))
    assert second["accs"] == two["accs"][1:] and second["seed"] == 1
    result = cli("evaluate", out, "--protocol", "herding", "--nets", "1", "--epochs", "2", "--json",
                 "--batch-size", "4", "--cutmix", "0.5")
    assert result.code == 0
    record = json.loads(result.out)
    assert (record["protocol"], record["epochs"], record["batch_size"], record["cutmix"]) == ("herding", 2, 4, 0.5)
    assert record["model"] == "convnet-3, width 128, instance norm, first padding 1"
    padded = json.loads(cli("evaluate", out, "--protocol", "standard", "--nets", "1", "--epochs", "2", "--json",
                            "--first-padding", "3").out)
    assert padded["model"].endswith("first padding 3") and padded["accs"] != two["accs"][:1]
    (out / "synthetic.png").unlink()
    assert cli("show", out).code == 0
    assert (out / "synthetic.png").is_file()


def test_resume_continues_with_the_runs_own_settings(tmp_path, cli):
    out = tmp_path / "run"
    flags = ["--ipc", "2", "--lr-cap", "0.5", "--learn-labels", "--num-inits", "1", "--real-per-class", "8"]
    assert cli("distill", "--out", out, *flags, "--iterations", "3", "--eval-every", "3", "--final-nets", "0").code == 0
    before = json.loads((out / "config.json").read_text())
    result = cli("distill", "--out", out, "--resume", "--iterations", "5")  # nothing else given: as it was
    assert result.code == 0, result.err
    assert f"resumed {out} at iteration 3/5" in result.err
    after = json.loads((out / "config.json").read_text())
    before["outer"]["iterations"] = 5
    assert after == before
    assert json.loads((out / "augdistill-run.json").read_text())["options"]["eval_every"] == 3
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["iteration"] for h in history if "val_acc" in h] == [3, 5]


def test_time_budget_stops_validates_and_finishes_then_resume_continues(tmp_path, cli):
    """A budget spent during the first step: the run validates iteration 1 (between the --eval-every points),
    writes every output as a finished run does and records where it stopped; --resume without a budget then
    continues to --iterations, keeping the history."""
    out = tmp_path / "run"
    result = cli("distill", "--out", out, "--iterations", "6", "--eval-every", "3", "--eval-nets", "1",
                 "--final-nets", "1", "--time-budget", "0.001")
    assert result.code == 0, result.err
    assert "time budget of 0.001 s spent after iteration 1" in result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["time_budget"] == {"seconds": 0.001, "stopped_after": 1}
    assert metrics["selected_iteration"] == 1 and metrics["selected_val_acc"] is not None
    assert [h["iteration"] for h in metrics["history"] if "val_acc" in h] == [1]
    assert load_distilled(out / "synthetic.pt").images.shape == (10, 1, 8, 8) and "test_replay" in metrics
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 1

    result = cli("distill", "--out", out, "--resume", "--time-budget", "0")
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "time_budget" not in metrics
    assert [h["iteration"] for h in metrics["history"] if "val_acc" in h] == [1, 3, 6]


def test_resume_rejects_a_changed_configuration(run_copy, cli):
    from augdistill.config import DistillConfig, OuterConfig, SyntheticConfig
    from augdistill.errors import CheckpointError
    from augdistill.runs import distill_run
    with pytest.raises(CheckpointError, match="synthetic.ipc is 1 in the run"):
        distill_run(DistillConfig(synthetic=SyntheticConfig(ipc=2), outer=OuterConfig(iterations=4)), run_copy,
                    resume=True, checkpoint_every=2, eval_every=2, eval_nets=1, final_nets=1)
    assert cli("distill", "--out", run_copy, *TINY).code == 2  # refuses to overwrite without --resume


def test_policy_run_writes_a_loadable_policy_and_the_policy_commands_read_it(tmp_path, cli):
    from augdistill.augment import load_policy
    out = tmp_path / "run"
    assert cli("distill", "--out", out, "--ipc", "2", "--policy", "learn", "--ops", "rotate,scale", "--iterations", "6",
               "--eval-every", "3", "--final-nets", "2").code == 0
    policy = load_policy(out / "policy.json")
    assert [op.spec.name for op in policy.ops] == ["rotate", "scale"]
    provenance = json.loads((out / "policy.json").read_text())["provenance"]
    assert provenance["dataset"] == "digits" and "test_replay_mean" in provenance["metrics"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert provenance["metrics"]["selected_iteration"] == metrics["selected_iteration"]
    selected = torch.load(out / "checkpoint.pt", weights_only=True)["best"]["state"]["policy"]
    assert all(torch.allclose(v, selected[k]) for k, v in policy.state_dict().items())  # the selected state, not the last
    result = cli("policy", "show", out / "policy.json")
    assert result.code == 0 and "rotate" in result.out and "degrees" in result.out
    assert cli("policy", "plot", out).code == 0
    assert (out / "policy_evolution.png").is_file() and (out / "policy_samples.png").is_file()
    result = cli("evaluate", out, "--protocol", "standard", "--with-policy", "--nets", "1", "--epochs", "2", "--json")
    assert result.code == 0 and json.loads(result.out)["augmentation"] == "run"
    result = cli("distill", "--out", tmp_path / "bad", "--policy", "learn", "--ops", "warp")
    assert result.code == 2 and "warp" in result.err


def test_the_installed_entry_point_prints_one_line_and_exits_2(tmp_path):
    argv = [sys.executable, "-m", "augdistill", "distill", "--ipc", "-3", "--out", str(tmp_path / "x")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["augdistill distill: error: --ipc must be >= 1, got -3"]
