"""The augmentation example scripts and benchmark run end to end (tiny settings)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from augdistill.augment import load_policy

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
