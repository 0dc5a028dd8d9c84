"""Property-based fuzzing of the run-file readers: random or mutated ``config.json``, ``metrics.json``,
``synthetic.pt`` and ``checkpoint.pt`` either load as valid or raise an :class:`AugdistillError`, never
anything else; what loads satisfies the schema. Also: no ``torch.load`` without ``weights_only=True``
anywhere in the repository, and a malicious pickle in any run file is refused without running."""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from augdistill.augment import build_policy
from augdistill.config import DistillConfig, OuterConfig, PolicyConfig, SyntheticConfig, config_from_dict
from augdistill.data import load_dataset
from augdistill.distill import Distiller
from augdistill.errors import AugdistillError, CheckpointError
from augdistill.runs import distill_run
from augdistill.runs.jobs import _load_checkpoint
from augdistill.runs.layout import load_config, load_distilled, load_metrics, save_distilled
from augdistill.runs.schema import PIXEL_MARGIN

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CONFIG = DistillConfig(synthetic=SyntheticConfig(ipc=2, learn_labels=True),
                       outer=OuterConfig(iterations=2, num_inits=1, real_per_class=8),
                       policy=PolicyConfig(mode="learn", ops=("rotate",)))


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory) -> Path:
    """A finished run with soft labels, a learned policy and a validated best state."""
    out = tmp_path_factory.mktemp("fuzz") / "run"
    distill_run(CONFIG, out, checkpoint_every=1, eval_every=1, eval_nets=1, final_nets=0, log=lambda m: None)
    return out


# -- strategies ---------------------------------------------------------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=6))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=3), max_leaves=12)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool]


@st.composite
def tensors(draw) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 11), max_size=4))
    dtype = draw(st.sampled_from(DTYPES))
    fill = draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, 255.0, 1e30, math.nan, math.inf, -math.inf, 200.0]))
    base = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    scaled = base * draw(st.sampled_from([1, 10, 300]))
    value = torch.where(base < draw(st.floats(0, 1)), torch.full(shape, fill), scaled)
    if dtype.is_floating_point:
        return value.to(dtype)
    return torch.nan_to_num(value, nan=0, posinf=2**31, neginf=-2**31).clamp(-2**31, 2**31 - 1).to(dtype)


VALUES = JSON | tensors() | st.just({}) | st.just([])


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += _paths(v, prefix + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += _paths(v, prefix + (i,))
    return found


def _replace(obj: Any, path: tuple, value: Any, delete: bool) -> Any:
    """``obj`` with the item at ``path`` replaced by ``value`` (or deleted from its dict / list)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        out = dict(obj)
        if delete and not rest:
            out.pop(head)
        else:
            out[head] = _replace(obj[head], rest, value, delete)
        return out
    items = list(obj)
    if delete and not rest:
        items.pop(head)
    else:
        items[head] = _replace(items[head], rest, value, delete)
    return type(obj)(items) if isinstance(obj, tuple) else items


@st.composite
def mutated(draw, original: Any, values: st.SearchStrategy) -> Any:
    """``original`` with one to three items replaced by ``values`` or deleted."""
    obj = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(obj)))
        obj = _replace(obj, path, draw(values), delete=bool(path) and draw(st.booleans()))
    return obj


def _loads_or_refuses(load: Any, *args: Any) -> tuple[bool, Any]:
    """``(True, load(*args))``, or ``(False, None)`` when it raised a one-line :class:`AugdistillError`
    (anything else fails the test)."""
    try:
        return True, load(*args)
    except AugdistillError as e:
        assert str(e).strip() and "\n" not in str(e).strip(), repr(e)
        return False, None


def _json_run(valid_run: Path, tmp: Path, name: str, content: Any) -> Path:
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    text = content if isinstance(content, (str, bytes)) else json.dumps(content)
    (run / name).write_bytes(text.encode() if isinstance(text, str) else text)
    return run


# -- JSON files ---------------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_config_json_loads_valid_or_refuses(valid_run, tmp_path, data):
    original = json.loads((valid_run / "config.json").read_text())
    content = data.draw(mutated(original, JSON) | JSON | st.binary(max_size=40) | st.text(max_size=40))
    loaded, config = _loads_or_refuses(load_config, _json_run(valid_run, tmp_path, "config.json", content))
    if loaded:
        assert isinstance(config, DistillConfig) and config_from_dict(config.to_dict()) == config
        assert all(math.isfinite(v) for s in config.to_dict().values() for v in s.values()
                   if isinstance(v, float))


@FUZZ
@given(data=st.data())
def test_metrics_json_loads_valid_or_refuses(valid_run, tmp_path, data):
    original = json.loads((valid_run / "metrics.json").read_text())
    content = data.draw(mutated(original, JSON) | JSON | st.binary(max_size=40))
    loaded, metrics = _loads_or_refuses(load_metrics, _json_run(valid_run, tmp_path, "metrics.json", content))
    if loaded:
        steps = [h["iteration"] for h in metrics.get("history", []) if "loss" in h]
        assert steps == list(range(1, len(steps) + 1))


# -- torch files --------------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_synthetic_pt_loads_valid_or_refuses(valid_run, tmp_path, data):
    original = torch.load(valid_run / "synthetic.pt", weights_only=True)
    path = tmp_path / "synthetic.pt"
    if data.draw(st.booleans()):
        torch.save(data.draw(mutated(original, VALUES)), path)
    else:  # the bytes of a valid file, truncated or with a flipped byte
        raw = bytearray((valid_run / "synthetic.pt").read_bytes())
        i = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] if data.draw(st.booleans()) else raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:]
        path.write_bytes(bytes(raw))
    loaded, s = _loads_or_refuses(load_distilled, path)
    if loaded:
        assert s.images.dim() == 4 and bool(torch.isfinite(s.images).all())
        assert float(s.images.min()) >= -PIXEL_MARGIN and float(s.images.max()) <= 1 + PIXEL_MARGIN
        assert s.labels.shape == (s.images.shape[0],) and int(s.labels.min()) >= 0
        assert s.lrs is None or (s.lrs.shape == (s.schedule.total_steps,) and bool((s.lrs >= 0).all()))


def test_learned_pixels_beyond_0_1_load_and_0_255_pixels_are_refused(valid_run, tmp_path):
    """A latent set's decoders reached [-1.04, 1.47] and a DM set [-1.78, 6.11] on Fashion-MNIST: our own
    runs' files must load (the DM set did not, under the old margin of 4)."""
    original = torch.load(valid_run / "synthetic.pt", weights_only=True)
    lo, hi = original["images"].min(), original["images"].max()
    for span, loads in (((-1.1, 1.5), True), ((-1.78, 6.11), True), ((0.0, 255.0), False)):
        images = (original["images"] - lo) / (hi - lo) * (span[1] - span[0]) + span[0]
        torch.save({**original, "images": images}, tmp_path / "synthetic.pt")
        assert _loads_or_refuses(load_distilled, tmp_path / "synthetic.pt")[0] is loads


def test_a_set_the_reader_would_refuse_is_never_written(valid_run, tmp_path):
    s = load_distilled(valid_run / "synthetic.pt")
    bad = dataclasses.replace(s, images=s.images * 255)
    with pytest.raises(CheckpointError, match=r"field 'images'.*expected values in \[-32.0, 33.0\]"):
        save_distilled(bad, tmp_path / "synthetic.pt")
    assert not (tmp_path / "synthetic.pt").exists()
    save_distilled(s, tmp_path / "synthetic.pt")
    assert torch.equal(load_distilled(tmp_path / "synthetic.pt").images, s.images)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _distiller(digits) -> Distiller:
    return Distiller(CONFIG, digits, policy=build_policy(["rotate"], image_size=(8, 8)))


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_checkpoint_pt_loads_valid_or_refuses(valid_run, digits, tmp_path, data):
    original = torch.load(valid_run / "checkpoint.pt", weights_only=True)
    path = tmp_path / "checkpoint.pt"
    torch.save(data.draw(mutated(original, VALUES)), path)
    distiller = _distiller(digits)
    loaded, _ = _loads_or_refuses(_load_checkpoint, distiller, path)
    if loaded:
        try:  # whatever was accepted trains on, or stops with a library error
            distiller.step()
        except AugdistillError:
            pass
    assert 0 <= distiller.iteration <= CONFIG.outer.iterations + 1


def test_an_unmutated_checkpoint_resumes(valid_run, digits, tmp_path):
    distiller = _distiller(digits)
    _load_checkpoint(distiller, valid_run / "checkpoint.pt")
    assert distiller.iteration == 2 and distiller.best["iteration"] in (1, 2)


# -- pickles and torch.load --------------------------------------------------------------------------
def test_a_raw_malicious_pickle_in_any_run_file_is_refused_and_never_runs(valid_run, digits, tmp_path):
    sentinel = tmp_path / "ran"
    evil = f"cposix\nsystem\n(S'touch {sentinel}'\ntR.".encode()  # protocol 0: posix.system("touch ...")
    run = Path(shutil.copytree(valid_run, tmp_path / "run"))
    for name in ("synthetic.pt", "checkpoint.pt"):
        (run / name).write_bytes(evil)
    with pytest.raises(AugdistillError, match="was refused: it asks to run or build posix.system"):
        load_distilled(run / "synthetic.pt")
    with pytest.raises(AugdistillError, match="was refused"):
        _load_checkpoint(_distiller(digits), run / "checkpoint.pt")
    assert not sentinel.exists()


def _torch_loads(root: Path) -> list[tuple[str, int, bool]]:
    """``(file, line, has weights_only=True)`` for every ``torch.load(...)`` call under ``root``."""
    found = []
    for file in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                found.append((str(file.relative_to(REPO)), node.lineno, safe))
    return found


def test_every_torch_load_in_the_repository_is_weights_only():
    calls = [c for folder in ("augdistill", "tests", "examples", "benchmarks") for c in _torch_loads(REPO / folder)]
    assert calls, "the scan found no torch.load at all"
    assert [c for c in calls if not c[2]] == []
