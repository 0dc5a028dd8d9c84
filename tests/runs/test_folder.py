"""Run folders that know themselves: marker, one writer at a time, restarts, and nothing written where
it does not belong."""

from __future__ import annotations

import json
import os

import pytest
import torch

from augdistill.config import DistillConfig, OuterConfig, SyntheticConfig
from augdistill.errors import CheckpointError, ConfigError
from augdistill.runs import distill_run, folder

QUICK = dict(checkpoint_every=1, eval_every=0, final_nets=0, log=lambda m: None)


def _config(iterations: int = 2) -> DistillConfig:
    return DistillConfig(outer=OuterConfig(iterations=iterations, num_inits=1, real_per_class=8))


def test_a_new_run_is_marked_with_its_format_and_options(tmp_path):
    out = tmp_path / "run"
    distill_run(_config(), out, **QUICK)
    marker = folder.read_marker(out)
    assert marker["format"] == "augdistill-run" and marker["format_version"] == folder.RUN_FORMAT_VERSION
    assert marker["options"] == {"device": "cpu", "checkpoint_every": 1, "eval_every": 0, "eval_nets": 5,
                                 "final_nets": 0, "time_budget": 0.0}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_iteration"] == 2 and metrics["selected_val_acc"] is None  # never validated: the last


def test_a_held_lock_refuses_a_second_writer_and_is_released_after(tmp_path):
    out = tmp_path / "run"
    with folder.claim(out, resume=False, options={}):
        refused = f"being written by another augdistill process \\(pid {os.getpid()}\\)"
        with pytest.raises(CheckpointError, match=refused):
            distill_run(_config(), out, **QUICK)
    distill_run(_config(), out, **QUICK)  # released: the same folder is a run now, continued from scratch
    assert (out / "checkpoint.pt").is_file()


def test_a_failed_first_attempt_leaves_no_folder_and_a_refused_folder_is_untouched(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ConfigError, match="--ipc 500 with --syn-init real"):
        distill_run(DistillConfig(synthetic=SyntheticConfig(ipc=500)), out, **QUICK)
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(CheckpointError, match="not an augdistill run"):
            distill_run(_config(), mine, resume=resume, **QUICK)
    assert os.listdir(mine) == ["notes.txt"]


def test_a_run_stopped_before_its_first_checkpoint_restarts_or_resumes(tmp_path):
    out = tmp_path / "run"
    with folder.claim(out, resume=False, options={}):  # what a kill -9 during start-up leaves behind
        (out / "config.json").write_text(json.dumps(_config().to_dict()))
        (out / ".checkpoint.pt.abc.tmp").write_bytes(b"torn")  # what a kill during a checkpoint write leaves
    logged = []
    distill_run(_config(), out, resume=True, **{**QUICK, "log": logged.append})
    assert any("stopped before its first checkpoint; starting it from iteration 0" in m for m in logged)
    assert not any(n.endswith(".tmp") for n in os.listdir(out))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 2
    os.remove(out / "checkpoint.pt"), os.remove(out / "synthetic.pt"), os.remove(out / "metrics.json")
    distill_run(_config(3), out, **QUICK)  # restarted without --resume, with another configuration
    assert json.loads((out / "config.json").read_text())["outer"]["iterations"] == 3


def test_a_run_written_before_markers_existed_is_resumed_and_marked(tmp_path):
    out = tmp_path / "run"
    distill_run(_config(), out, **QUICK)
    os.remove(out / folder.MARKER_FILE)
    with pytest.raises(CheckpointError, match="already holds a run"):
        distill_run(_config(), out, **QUICK)
    distill_run(_config(3), out, resume=True, **QUICK)
    assert folder.read_marker(out)["format_version"] == folder.RUN_FORMAT_VERSION


def test_finishing_a_finished_run_again_changes_nothing_it_learned(tmp_path):
    out = tmp_path / "run"
    first = distill_run(_config(), out, **QUICK)
    images = torch.load(out / "synthetic.pt", weights_only=True)["images"]
    again = distill_run(_config(), out, resume=True, **QUICK)
    assert again["history"] == first["history"]
    assert torch.equal(torch.load(out / "synthetic.pt", weights_only=True)["images"], images)
