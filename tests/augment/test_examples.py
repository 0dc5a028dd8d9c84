"""The augmentation example scripts and benchmark run end to end (tiny settings)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from augdistill.augment import build_policy, load_policy

ROOT = Path(__file__).resolve().parents[2]


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_with_policy_json_output(tmp_path):
    script = _load("examples/train_with_policy.py")
    out = tmp_path / "r.json"
    script.main([str(ROOT / "policies" / "dsa.json"), "--epochs", "3", "--seeds", "0", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    assert [r["seed"] for r in record["runs"]] == [0, 1]
    assert 0.3 < record["test_accuracy_mean"] <= 1.0 and record["policy"].endswith("dsa.json")


def test_train_with_policy_needs_exactly_one_of_policy_or_no_policy():
    script = _load("examples/train_with_policy.py")
    with pytest.raises(SystemExit):
        script.main([])


def test_augerino_example(tmp_path):
    out = tmp_path / "a.json"
    _load("examples/augerino_digits.py").main(["--dataset", "digits", "--steps", "30", "--json", str(out),
                                                "--save-policy", str(tmp_path)])
    result = json.loads(out.read_text())["results"][0]
    saved = load_policy(tmp_path / "augerino-digits.json")
    assert result["dataset"] == "digits" and saved.provenance["dataset"] == "digits"
    assert saved.magnitudes()["rotate"].tolist() == [result["rotate_low_deg"], result["rotate_high_deg"]]
    assert saved.provenance["metrics"] == {"val_tta_accuracy": result["val_tta_accuracy"]}


def test_benchmark_writes_ratios(tmp_path):
    out = tmp_path / "b.json"
    _load("benchmarks/bench_augment.py").main(["--repeats", "1", "--warmup", "0", "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"256x1x28x28", "256x3x32x32"}
    assert all(r[mode]["ratio"] > 0 for r in results.values() for mode in ("forward", "fwd+bwd"))


def test_batch_sampling_shares_the_op_choice_within_a_batch_only():
    script = _load("examples/evaluate_batch_sampling.py")
    policy = build_policy([[{"name": "hflip", "probability": 1.0}],
                           [{"name": "brightness", "probability": 1.0, "magnitude": (0.5, 0.5)}]],
                          "sub-policies").train()
    x = torch.zeros(6, 1, 4, 4)
    x[..., 0] = 1.0  # a bright left column: a flip moves it, a brightness shift lifts the rest
    augment = script.one_op_per_batch(policy, torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(20):
        y = augment(x)
        flipped = torch.isclose(y[:, 0, 0, -1], torch.tensor(1.0))
        assert bool(flipped.all()) or not bool(flipped.any())  # one op for the whole batch
        seen.add(bool(flipped[0]))
    assert seen == {True, False}  # both ops are drawn across batches


def test_batch_sampling_example_evaluates_a_run(tmp_path):
    from augdistill.cli.main import main as cli_main
    out = tmp_path / "run"
    assert cli_main(["distill", "--out", str(out), "--iterations", "2", "--eval-every", "2", "--final-nets", "0"]) == 0
    record = _load("examples/evaluate_batch_sampling.py").main([str(out), "--nets", "2", "--epochs", "30"])
    assert record["sampling"] == "one op per batch" and len(record["accs"]) == 2
    assert 0.3 < record["mean"] <= 1.0  # digits, 1 distilled image per class: well above chance (0.1)
