"""Expert trajectories: cache round trip, exact resume after a kill, kept experts, bad files named."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
import torch

from augdistill.augment import build_policy
from augdistill.cli import main
from augdistill.config import ModelConfig
from augdistill.distill.experts import EpochReport, ExpertBank, ExpertSetup, build_for, train_experts
from augdistill.errors import CheckpointError
from augdistill.models import sample_params
from augdistill.distill.experts import _Lock, _generators

MODEL = ModelConfig("convnet", width=8, depth=2, norm="instance")


def _setup(digits, **kwargs) -> ExpertSetup:
    return ExpertSetup.for_dataset(digits.info, MODEL, **{"epochs": 3, "batch_size": 64, "lr": 0.05, **kwargs})


def _bank(digits, out, min_epochs=3) -> ExpertBank:
    return ExpertBank.load(out, info=digits.info, model=build_for(digits.info, MODEL), min_epochs=min_epochs)


def _assert_same_experts(digits, a, b, experts) -> None:
    """Experts ``experts`` of directories ``a`` and ``b`` hold bit-identical trajectories (every epoch)."""
    bank_a, bank_b = _bank(digits, a), _bank(digits, b)
    for i in experts:
        for epoch in range(bank_a.epochs + 1):
            for name, value in bank_a.params(i, epoch).items():
                assert torch.equal(value, bank_b.params(i, epoch)[name]), (i, epoch, name)


class _Kill(Exception):
    pass


def test_round_trip_holds_every_epoch_and_reads_with_weights_only(digits, tmp_path):
    reports: list[EpochReport] = []
    accs = train_experts(_setup(digits), digits, tmp_path, 2, on_epoch=reports.append)
    assert [(r.expert, r.epoch) for r in reports] == [(i, e) for i in range(2) for e in (1, 2, 3)]
    assert reports[-1].val_acc == accs[1] and all(a > 0.3 for a in accs)  # they learn (chance is 0.1)
    raw = torch.load(tmp_path / "expert_0001.pt", weights_only=True)
    assert raw["trajectory"]["classifier.weight"].shape == (4, 10, 32)  # 8 channels on 2x2 after two pools
    assert json.loads((tmp_path / "experts.json").read_text())["setup"]["epochs"] == 3
    bank = _bank(digits, tmp_path, min_epochs=2)
    assert len(bank) == 2 and bank.epochs == 2
    init = sample_params(build_for(digits.info, MODEL), _generators(0, 1)[0])
    for name, value in bank.params(1, 0).items():  # epoch 0 is the initialisation
        assert torch.equal(value, init[name]), name
    assert not torch.equal(bank.params(1, 2)["classifier.weight"], init["classifier.weight"])
    assert not any(p.name.endswith(".tmp") or ".partial" in p.name for p in tmp_path.iterdir())


def test_a_killed_expert_resumes_exactly_and_finished_ones_are_kept(digits, tmp_path):
    policy = build_policy(["rotate", "translate-x"], image_size=(8, 8), probability=0.8)
    straight = tmp_path / "straight"
    train_experts(_setup(digits), digits, straight, 2, policy=policy)

    killed = tmp_path / "killed"

    def kill(r: EpochReport) -> None:
        if (r.expert, r.epoch) == (1, 2):
            raise _Kill

    with pytest.raises(_Kill):
        train_experts(_setup(digits), digits, killed, 2, policy=policy, on_epoch=kill, checkpoint_seconds=0)
    assert (killed / "expert_0000.pt").is_file() and (killed / "expert_0001.partial.pt").is_file()
    (killed / ".expert_0001.partial.pt.abc.tmp").write_bytes(b"torn")  # what a SIGKILL mid-write leaves
    finished = (killed / "expert_0000.pt").stat().st_mtime_ns
    reports: list[EpochReport] = []
    train_experts(_setup(digits), digits, killed, 2, policy=policy, on_epoch=reports.append)
    assert [(r.expert, r.epoch) for r in reports] == [(1, 3)]  # only the missing epoch is trained
    assert (killed / "expert_0000.pt").stat().st_mtime_ns == finished
    assert sorted(p.name for p in killed.iterdir() if not p.name.endswith(".lock")) == [
        "expert_0000.pt", "expert_0001.pt", "experts.json"]
    _assert_same_experts(digits, straight, killed, [1])


def test_processes_sharing_a_directory_split_the_experts_and_take_over_a_dead_holders(digits, tmp_path):
    straight = tmp_path / "straight"
    train_experts(_setup(digits), digits, straight, 3)
    shared = tmp_path / "shared"
    shared.mkdir()
    other = _Lock(shared / ".expert_0000.lock")  # another process is training expert 0
    assert other.acquire(wait=False)
    reports: list[EpochReport] = []
    result: list[list[float]] = []
    worker = threading.Thread(target=lambda: result.append(
        train_experts(_setup(digits), digits, shared, 3, on_epoch=reports.append)))
    worker.start()
    while not (shared / "expert_0002.pt").exists():  # experts 1 and 2 are trained meanwhile ...
        worker.join(0.05)
        assert worker.is_alive()
    worker.join(0.5)
    assert worker.is_alive() and not (shared / "expert_0000.pt").exists()  # ... then it waits for expert 0
    assert {r.expert for r in reports} == {1, 2}
    other.release()  # the holder dies without finishing: the waiting process trains expert 0 itself
    worker.join()
    assert [r.expert for r in reports if r.val_acc is not None] == [1, 2, 0]
    assert result[0] == train_experts(_setup(digits), digits, straight, 3)  # same experts, in index order
    _assert_same_experts(digits, straight, shared, range(3))


def test_bad_files_are_named(digits, tmp_path):
    train_experts(_setup(digits), digits, tmp_path, 2)
    path = tmp_path / "expert_0001.pt"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="expert_0001.pt is corrupted"):
        _bank(digits, tmp_path)
    with pytest.raises(CheckpointError, match="expert_0001.pt is corrupted"):  # not silently retrained
        train_experts(_setup(digits), digits, tmp_path, 2)
    raw = torch.load(tmp_path / "expert_0000.pt", weights_only=True)
    raw["trajectory"]["classifier.bias"] = raw["trajectory"]["classifier.bias"][:2]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"expert_0001.pt: holds expert 0"):
        _bank(digits, tmp_path)
    raw["index"] = 1
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"expert_0001.pt: parameter 'classifier.bias' has shape \(2, 10\)"):
        _bank(digits, tmp_path)
    raw = torch.load(tmp_path / "expert_0000.pt", weights_only=True)
    raw["setup"]["lr"] = 0.5
    torch.save(raw, tmp_path / "expert_0000.pt")
    with pytest.raises(CheckpointError, match=r"expert_0000.pt: trained with a different setup .*lr: 0.5 vs 0.05"):
        _bank(digits, tmp_path)


def test_another_setup_in_the_same_directory_is_refused(digits, tmp_path):
    train_experts(_setup(digits), digits, tmp_path, 1)
    with pytest.raises(CheckpointError, match=r"experts.json: .*another setup \(epochs: 3 vs 4"):
        train_experts(_setup(digits, epochs=4), digits, tmp_path, 1)
    other = dataclasses.replace(_setup(digits), dataset="digits-rot")
    (tmp_path / "experts.json").write_text(json.dumps(
        {"format_version": 1, "kind": "augdistill-experts", "setup": other.to_dict()}))
    with pytest.raises(CheckpointError, match="trained on 'digits-rot', this run distils 'digits'"):
        _bank(digits, tmp_path)
    (tmp_path / "experts.json").write_text("{")
    with pytest.raises(CheckpointError, match="experts.json is not valid JSON"):
        _bank(digits, tmp_path)


def test_cli_trains_resumes_and_reports_errors_in_one_line(tmp_path, capsys):
    args = ["experts", "--dataset", "digits", "--num-experts", "1", "--epochs", "2", "--out", str(tmp_path),
            "--width", "8", "--depth", "2", "--batch-size", "64", "--aug", "none"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "1 experts of 2 epochs on digits" in captured.out and "2/2 [100%] expert 0" in captured.err
    assert main(args[:4] + ["2"] + args[5:]) == 0  # one more expert; the first is kept
    assert sorted(p.name for p in tmp_path.glob("expert_*.pt")) == ["expert_0000.pt", "expert_0001.pt"]
    (tmp_path / "expert_0000.pt").write_bytes(b"not a torch file")
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("augdistill experts: error: expert trajectory") and "expert_0000.pt" in err


def test_experts_of_the_fields_padding_are_refused_for_another_network(digits, tmp_path, capsys):
    args = ["experts", "--dataset", "digits", "--num-experts", "1", "--epochs", "1", "--out", str(tmp_path),
            "--width", "8", "--depth", "2", "--batch-size", "64", "--aug", "none", "--first-padding", "3"]
    assert main(args) == 0
    padded = dataclasses.replace(MODEL, first_padding=3)
    bank = ExpertBank.load(tmp_path, info=digits.info, model=build_for(digits.info, padded), min_epochs=1)
    assert bank.params(0, 1)["classifier.weight"].shape == (10, 8 * 3 * 3)  # 8x8 padded by 3: 12, 6, then 3x3 maps
    with pytest.raises(CheckpointError, match=r"the experts are .*first_padding=3 but this run distils with another"):
        _bank(digits, tmp_path, min_epochs=1)


def test_cli_workers_share_the_experts_and_match_one_process(digits, tmp_path, capsys):
    args = ["experts", "--dataset", "digits", "--num-experts", "3", "--epochs", "3", "--width", "8", "--depth", "2",
            "--batch-size", "64", "--lr", "0.05", "--aug", "none"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert (tmp_path / "two" / ".worker-1.log").is_file()
    _assert_same_experts(digits, tmp_path / "one", tmp_path / "two", range(3))
    assert main([*args, "--out", str(tmp_path / "bad"), "--workers", "0"]) == 2
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err
