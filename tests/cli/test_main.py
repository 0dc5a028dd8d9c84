"""The command line: the main job end to end, clear one-line errors, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from augdistill.cli import main
from augdistill.runs import load_distilled

FAST = ["--iterations", "60", "--eval-every", "30", "--final-nets", "2"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "augdistill", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "2"})


def test_distill_writes_every_output_and_evaluate_reads_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), *FAST]) == 0
    for name in ("synthetic.pt", "config.json", "metrics.json", "synthetic.png", "loss.png", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert "replay test accuracy" in capsys.readouterr().out
    s = load_distilled(out / "synthetic.pt")
    assert s.images.shape == (10, 1, 8, 8) and s.lrs.shape == (10,)
    raw = torch.load(out / "synthetic.pt", weights_only=True)
    assert {"images", "labels", "lrs", "batches"} <= raw.keys()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_iteration"] in (30, 60)

    assert main(["evaluate", str(out), "--protocol", "replay", "--nets", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"mean", "std", "accs", "protocol", "ipc", "dataset"} <= record.keys()
    assert record["protocol"] == "replay" and len(record["accs"]) == 2 and record["ipc"] == 1
    assert record["mean"] == pytest.approx(metrics["test_replay"]["mean"], abs=1e-6)

    assert main(["evaluate", str(out), "--protocol", "standard", "--nets", "1", "--epochs", "2"]) == 0
    assert "standard" in capsys.readouterr().out
    (out / "synthetic.png").unlink()
    assert main(["show", str(out)]) == 0
    assert (out / "synthetic.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["distill", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["distill", "--dataset", "mnist", "--data-root", "/no/such/folder"], "/no/such/folder does not exist"),
    (["distill", "--ipc", "-3"], "--ipc must be >= 1, got -3"),
    (["evaluate", "/no/such/run"], "run directory /no/such/run does not exist"),
])
def test_bad_input_gives_one_clear_line_and_nonzero_exit(args, message, tmp_path):
    result = _run(*args, "--out", str(tmp_path / "x")) if args[0] == "distill" else _run(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_corrupted_or_missing_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), *FAST]) == 0
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = _run("distill", "--out", str(out), "--resume")
    assert result.returncode == 2 and "checkpoint" in result.stderr and "corrupted" in result.stderr
    assert "Traceback" not in result.stderr
    (out / "checkpoint.pt").unlink()
    result = _run("distill", "--out", str(out), "--resume")
    assert result.returncode == 2 and "does not exist" in result.stderr
    (out / "synthetic.pt").write_bytes(b"\x00garbage")
    result = _run("evaluate", str(out))
    assert result.returncode == 2 and "synthetic" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_from_its_checkpoint(tmp_path, sig):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "augdistill", "distill", "--out", str(out), "--iterations", "100000",
           "--checkpoint-every", "20", "--eval-every", "0", "--final-nets", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert "continue with --resume" in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    stopped_at = state["iteration"]
    assert stopped_at >= 20
    result = _run("distill", "--out", str(out), "--resume", "--iterations", str(stopped_at + 20))
    assert result.returncode == 0, result.stderr
    assert f"resumed {out} at iteration {stopped_at}/" in result.stderr
    final = torch.load(out / "checkpoint.pt", weights_only=True)
    assert final["iteration"] == stopped_at + 20
    assert [h["iteration"] for h in final["history"] if "loss" in h] == list(range(1, stopped_at + 21))


def test_resume_rejects_a_changed_configuration(tmp_path):
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), *FAST]) == 0
    from augdistill.config import DistillConfig, SyntheticConfig
    from augdistill.errors import CheckpointError
    from augdistill.runs import distill_run
    with pytest.raises(CheckpointError, match="synthetic.ipc"):
        distill_run(DistillConfig(synthetic=SyntheticConfig(ipc=2)), out, resume=True)
    assert main(["distill", "--out", str(out), *FAST]) == 2  # refuses to overwrite without --resume


def test_policy_run_writes_a_loadable_policy_and_the_policy_commands_read_it(tmp_path, capsys):
    from augdistill.augment import load_policy
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), "--ipc", "2", "--policy", "learn", "--ops", "rotate,scale", *FAST]) == 0
    policy = load_policy(out / "policy.json")
    assert [op.spec.name for op in policy.ops] == ["rotate", "scale"]
    provenance = json.loads((out / "policy.json").read_text())["provenance"]
    assert provenance["dataset"] == "digits" and "test_replay_mean" in provenance["metrics"]
    capsys.readouterr()
    assert main(["policy", "show", str(out / "policy.json")]) == 0
    table = capsys.readouterr().out
    assert "rotate" in table and "degrees" in table
    assert main(["policy", "plot", str(out)]) == 0
    assert (out / "policy_evolution.png").is_file() and (out / "policy_samples.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--protocol", "standard", "--with-policy", "--nets", "1", "--epochs", "2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["augmentation"] == "run"
    assert main(["distill", "--out", str(tmp_path / "bad"), "--policy", "learn", "--ops", "warp"]) == 2
    assert "warp" in capsys.readouterr().err
