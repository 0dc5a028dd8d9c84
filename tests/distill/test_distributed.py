"""Multi-process distillation: 2 gloo ranks under torchrun learn what one process learns, rank 0 alone writes
and reports, a SIGKILL-ed torchrun job resumes; every method's gradients are reduced correctly; work units
draw their own randomness."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch

from augdistill.augment import build_policy
from augdistill.config import (DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig,
                               SyntheticConfig)
from augdistill.distill import Distiller
from augdistill.distill.distributed import DistContext, Shard, step_seed, unit_generator
from augdistill.errors import ConfigError
from augdistill.runs.jobs import distill_run

WORKER = Path(__file__).with_name("_torchrun_worker.py")
REPO = Path(__file__).resolve().parents[2]  # the worker imports this checkout of augdistill
ARGS = ["--model", "mlp", "--width", "32", "--num-inits", "2", "--iterations", "8", "--checkpoint-every", "2",
        "--eval-every", "4", "--eval-nets", "1", "--final-nets", "1", "--policy", "learn", "--ops", "rotate",
        "--real-per-class", "8"]
OUTPUTS = ("synthetic.pt", "metrics.json", "policy.json", "synthetic.png", "loss.png")


def _config() -> DistillConfig:
    """What ``ARGS`` say, built in Python for the single-process reference."""
    return DistillConfig(model=ModelConfig(name="mlp", width=32),
                         outer=OuterConfig(num_inits=2, iterations=8, real_per_class=8),
                         policy=PolicyConfig(mode="learn", ops=("rotate",)))


def _torchrun(log_dir: Path, kill_at: int, *args: str) -> subprocess.CompletedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
               str(log_dir), str(kill_at), "distill", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
                               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single-process reference run, and the same run under torchrun with 2 gloo ranks: SIGKILL-ed right after
    its checkpoint of iteration 4, then resumed to the end."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the workers' death with their launcher (PR_SET_PDEATHSIG) and /proc are Linux's")
    root = tmp_path_factory.mktemp("distributed")
    single = distill_run(_config(), root / "single", checkpoint_every=2, eval_every=4, eval_nets=1, final_nets=1,
                         log=lambda m: None)
    killed = _torchrun(root / "log-killed", 4, "--out", str(root / "two"), *ARGS)
    resumed = _torchrun(root / "log-resumed", 0, "--out", str(root / "two"), "--resume")
    return root, single, killed, resumed


def test_two_gloo_ranks_learn_what_one_process_learns(runs):
    root, single, killed, resumed = runs
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one, two = (torch.load(root / name / "synthetic.pt", weights_only=True) for name in ("single", "two"))
    assert one["images"].shape == two["images"].shape == (10, 1, 8, 8)
    torch.testing.assert_close(two["images"], one["images"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two["lrs"], one["lrs"], rtol=1e-5, atol=1e-6)
    metrics = json.loads((root / "two" / "metrics.json").read_text())
    losses = [[h["loss"] for h in m["history"] if "loss" in h] for m in (single, metrics)]
    assert len(losses[1]) == 8
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert metrics["selected_iteration"] == single["selected_iteration"]


def test_policy_is_learned_identically(runs):
    root, *_ = runs
    one, two = (torch.load(root / name / "checkpoint.pt", weights_only=True)["policy"] for name in ("single", "two"))
    assert one.keys() == two.keys() and one
    start = build_policy(["rotate"], image_size=(8, 8)).state_dict()
    moved = [k for k in one if not torch.equal(one[k], start[k])]
    assert moved, "the policy did not learn"
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)


def test_rank_zero_alone_writes_and_reports_and_the_run_records_two_ranks(runs):
    root, _, killed, resumed = runs
    for launch in ("log-killed", "log-resumed"):
        assert not (root / launch / "writes-1.txt").exists(), f"rank 1 wrote in {launch}"
    final = (root / "log-resumed" / "writes-0.txt").read_text().split()
    for name in OUTPUTS:
        assert final.count(name) == 1, (name, final)
    assert final.count("checkpoint.pt") == 3  # iterations 6 and 8, and the final one
    assert resumed.stdout.count("replay test accuracy") == 1, resumed.stdout
    assert resumed.stderr.count("replay accuracy on the test split") == 1
    for name in ("config.json", "metrics.json"):
        assert json.loads((root / "two" / name).read_text())["world_size"] == 2


def test_a_sigkilled_torchrun_job_dies_whole_and_resumes(runs):
    root, _, killed, resumed = runs
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    writes = (root / "log-killed" / "writes-0.txt").read_text().split()
    assert writes.count("checkpoint.pt") == 2 and "synthetic.pt" not in writes  # killed after iteration 4
    pids = [int((root / "log-killed" / f"pid-{r}").read_text()) for r in (0, 1)]
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "workers outlived their torchrun agent"
    assert "resumed" in resumed.stderr and "iteration 4/8" in resumed.stderr


# -- every method under 2 ranks, simulated by threads (the gloo test above runs the real collectives) --------

@dataclass
class _Hub:
    """Threads exchanging values at a barrier, standing in for a process group."""

    size: int
    barrier: threading.Barrier = field(init=False)
    slots: list[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.barrier, self.slots = threading.Barrier(self.size, timeout=60), [None] * self.size

    def gather(self, rank: int, value: Any) -> list[Any]:
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


@dataclass(frozen=True)
class _ThreadRank(DistContext):
    hub: Any = None

    def all_reduce_gradients(self, params: Sequence[torch.Tensor], scalars: torch.Tensor) -> torch.Tensor:
        mine = ([None if p.grad is None else p.grad.clone() for p in params], scalars.clone())
        everyone = self.hub.gather(self.rank, mine)
        for i, p in enumerate(params):
            grads = [g[i] for g, _ in everyone if g[i] is not None]
            p.grad = None if not grads else sum(grads[1:], grads[0])
        return sum((s for _, s in everyone[1:]), everyone[0][1])

    def any(self, flag: bool, device: Any = "cpu") -> bool:
        return any(self.hub.gather(self.rank, flag))

    def broadcast_float(self, value: float | None, device: Any = "cpu") -> float:
        return self.hub.gather(self.rank, value)[0]


OPS = ("rotate", "translate-x")
SMALL = ModelConfig("convnet", width=4, depth=2, norm="instance")


def _method_configs(experts: Path) -> dict[str, DistillConfig]:
    learn = PolicyConfig(mode="learn", ops=OPS, siamese=True, inner_steps=2)
    outer = OuterConfig(real_per_class=3, num_inits=2)
    return {
        "wang": DistillConfig(model=ModelConfig("mlp", width=16), outer=dataclasses.replace(outer, num_inits=3),
                              policy=PolicyConfig(mode="learn", ops=OPS)),
        "wang-vmap": DistillConfig(model=ModelConfig("mlp", width=16), policy=learn,
                                   outer=dataclasses.replace(outer, num_inits=4, batch_draws="vmap")),
        "dc": DistillConfig(method=MethodConfig(name="dc", outer_loop=1, inner_loop=1, net_lr=0.05), model=SMALL,
                            synthetic=SyntheticConfig(ipc=1), outer=outer, policy=learn),
        "dm": DistillConfig(method=MethodConfig(name="dm"), model=SMALL, synthetic=SyntheticConfig(ipc=2),
                            outer=outer, policy=learn),
        "dm-pool": DistillConfig(method=MethodConfig(name="dm", pool=2, pool_steps=2, net_lr=0.1, ce_weight=0.5),
                                 model=SMALL, synthetic=SyntheticConfig(ipc=2), outer=outer, policy=learn),
        "dm-terms": DistillConfig(method=MethodConfig(name="dm", layer_weight=0.3, disc_weight=0.5,
                                                      attention_weight=20.0, style_weight=2.0),
                                  model=SMALL, synthetic=SyntheticConfig(ipc=2), outer=outer, policy=learn),
        "dm-kernel": DistillConfig(method=MethodConfig(name="dm", kernel="gaussian", bandwidth=0.5), model=SMALL,
                                   synthetic=SyntheticConfig(ipc=2), outer=outer, policy=learn),
        "dm-fresh": DistillConfig(method=MethodConfig(name="dm"), model=SMALL, synthetic=SyntheticConfig(ipc=2),
                                  outer=outer, policy=dataclasses.replace(learn, siamese=False)),
        "mtt": DistillConfig(method=MethodConfig(name="mtt", expert_dir=str(experts), syn_steps=2, max_start_epoch=2,
                                                 expert_epochs=1, syn_lr_init=0.05),
                             model=SMALL, synthetic=SyntheticConfig(ipc=2), outer=outer, policy=learn),
    }


def _learned(d: Distiller) -> dict[str, torch.Tensor]:
    state = {f"synthetic.{k}": v.detach().clone() for k, v in d.synthetic.named_parameters()}
    state.update({f"method.{k}": v.detach().clone() for k, v in d.method.named_parameters()})
    state.update({f"policy.{k}": v.detach().clone() for k, v in d.policy.named_parameters()})
    return state


@pytest.fixture(scope="module")
def experts(digits, tmp_path_factory):
    from augdistill.distill.experts import ExpertSetup, train_experts
    out = tmp_path_factory.mktemp("experts")
    train_experts(ExpertSetup.for_dataset(digits.info, SMALL, epochs=2, batch_size=128, lr=0.05), digits, out, 1)
    return out


@pytest.mark.parametrize("method,world_size", [("wang", 2), ("wang-vmap", 2), ("dc", 2), ("dm", 2), ("dm", 3),
                                               ("dm-fresh", 3), ("dm-pool", 3), ("dm-terms", 3), ("dm-kernel", 3),
                                               ("mtt", 2)])
def test_every_method_on_several_ranks_learns_what_one_process_learns(method, world_size, digits, experts):
    """Wang's draws and DM's classes (10 over 3 ranks: 4 / 3 / 3) are split over the ranks; dc, mtt and DM with the
    discrimination term run whole on each rank, scaled by 1 / ranks."""
    config = _method_configs(experts)[method]
    steps = 2

    def make(dist: DistContext) -> Distiller:
        return Distiller(config, digits, policy=build_policy(list(OPS), image_size=(8, 8), probability=0.9),
                         dist=dist)

    single = make(DistContext())
    for _ in range(steps):
        single.step()
    hub = _Hub(world_size)
    ranks = [make(_ThreadRank(rank=r, world_size=world_size, hub=hub)) for r in range(world_size)]
    errors: list[BaseException] = []

    def train(d: Distiller) -> None:
        try:
            for _ in range(steps):
                d.step()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            hub.barrier.abort()
    threads = [threading.Thread(target=train, args=(d,)) for d in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    reference = _learned(single)
    start = _learned(make(DistContext()))
    assert any(not torch.equal(reference[k], start[k]) for k in reference if k.startswith("policy."))
    for d in ranks:
        for k, v in _learned(d).items():
            torch.testing.assert_close(v, reference[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{method} {k}: {m}")
    assert ranks[0].history[-1]["loss"] == pytest.approx(single.history[-1]["loss"], rel=1e-5)


# -- work units ---------------------------------------------------------------------------------------------

def test_shards_cover_every_unit_once():
    for world in (1, 2, 3):
        owned = sorted(u for r in range(world) for u in Shard(r, world).units(7))
        assert owned == list(range(7))


def test_unit_streams_depend_only_on_seed_iteration_unit_and_stream():
    def draw(seed, iteration, unit, stream):
        return torch.rand(4, generator=unit_generator(step_seed(seed, iteration), unit, stream))

    assert torch.equal(draw(0, 3, 1, "init"), draw(0, 3, 1, "init"))
    others = [draw(1, 3, 1, "init"), draw(0, 4, 1, "init"), draw(0, 3, 2, "init"), draw(0, 3, 1, "syn_aug")]
    assert all(not torch.allclose(draw(0, 3, 1, "init"), o) for o in others)
    with pytest.raises(Exception, match="unknown unit stream"):
        unit_generator(0, 0, "data")


def test_vmap_draws_need_shared_batches(digits):
    config = DistillConfig(outer=OuterConfig(batch_draws="vmap"), policy=PolicyConfig(mode="learn", ops=OPS))
    with pytest.raises(ConfigError, match="--batch-draws vmap .* --siamese"):
        Distiller(config, digits, policy=build_policy(list(OPS), image_size=(8, 8)))


def test_vmap_draws_equal_looped_draws(digits):
    """Wang's draws unrolled together with vmap learn what the loop learns (siamese policy, 2 steps)."""
    learned = []
    for mode in ("loop", "vmap"):
        config = DistillConfig(model=ModelConfig("mlp", width=32), outer=OuterConfig(num_inits=3, batch_draws=mode,
                                                                                    real_per_class=4),
                               policy=PolicyConfig(mode="learn", ops=OPS, siamese=True))
        d = Distiller(config, digits, policy=build_policy(list(OPS), image_size=(8, 8), probability=0.9))
        assert d.method.batched == (mode == "vmap")
        for _ in range(2):
            d.step()
        learned.append(_learned(d))
    for k in learned[0]:
        torch.testing.assert_close(learned[1][k], learned[0][k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


_LEAVER = """
import os, sys, time
import torch.distributed as dist
from augdistill.distill.distributed import shutdown
rank, store, out, wait = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
if rank == 0:
    time.sleep(1.0)  # rank 0 still writes the run's outputs
    with open(os.path.join(out, "written"), "w") as f:
        f.write(repr(time.time()))
shutdown(wait_for_peers=wait)
with open(os.path.join(out, f"left-{rank}"), "w") as f:
    f.write(repr(time.time()))
"""


@pytest.mark.parametrize("wait", [True, False])
def test_a_rank_leaves_the_group_only_after_rank_zero_has_finished_unless_after_an_error(tmp_path, wait):
    """The CI failure this guards against: rank 1 left (and aborted in gloo's teardown) while rank 0 was still
    writing, and torchrun then stopped rank 0 before its outputs existed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    ranks = [subprocess.Popen([sys.executable, "-c", _LEAVER, str(r), str(tmp_path / "store"), str(tmp_path),
                               str(int(wait))], env=env) for r in (0, 1)]
    assert [p.wait(timeout=60) for p in ranks] == [0, 0]
    written, left = (float((tmp_path / name).read_text()) for name in ("written", "left-1"))
    assert (left > written) == wait, (left, written)
