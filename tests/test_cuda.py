"""The CUDA path: run wherever a GPU is present (``pytest -m cuda``, ``benchmarks/gpu_check.sh``), skipped
elsewhere. Hypergradients match the CPU's, the inner loop never waits for the host, checkpointing and bf16 keep
their promises on the device, and 2 NCCL ranks (where 2 GPUs exist) learn what one process learns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from augdistill.augment import build_policy
from augdistill.config import DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.distill import Distiller
from augdistill.distill.methods import OuterBatch
from augdistill.distill.distributed import step_seed
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, sample_params

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
OPS = ("rotate", "translate-x", "brightness")


@pytest.fixture
def exact_float32():
    """Switch TF32 off (Ampere and later use it for convolutions by default) to compare with the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _problem(device: str, *, width: int = 8, images: int = 10, steps: int = 6):
    g = torch.Generator().manual_seed(0)
    net = build_model("convnet", (1, 28, 28), 10, width=width, norm="instance").to(device)
    theta0 = {k: v.to(device) for k, v in sample_params(net, g).items()}
    x = torch.rand(images, 1, 28, 28, generator=g).to(device).requires_grad_()
    y = torch.arange(images).remainder(10).to(device)
    lrs = torch.full((steps,), 0.1, device=device, requires_grad=True)
    x_real = torch.rand(40, 1, 28, 28, generator=g).to(device)
    y_real = torch.randint(0, 10, (40,), generator=g).to(device)
    return net, theta0, x, y, lrs, x_real, y_real, InnerSchedule.full_batch(images, steps, 1)


def _hypergradient(device: str, **options):
    net, theta0, x, y, lrs, x_real, y_real, schedule = _problem(device)
    theta = unroll(net, theta0, x, y, lrs, schedule, momentum=0.5, **options)
    return torch.autograd.grad(F.cross_entropy(functional_call(net, theta, (x_real,)), y_real), [x, lrs])


def test_cuda_hypergradients_match_the_cpu(exact_float32):
    for cpu, cuda in zip(_hypergradient("cpu"), _hypergradient("cuda")):
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-3, atol=1e-6)


def _step_without_host_sync(d: Distiller) -> None:
    """After a warm-up step (allocations, kernels, the first network), one more step of ``d``'s method (its losses,
    their backward and its work after the update) with CUDA's sync debug mode set to error: any host
    synchronisation inside raises."""
    d.step()
    x_real, y_real = d.sampler.sample(d.config.outer.real_per_class, d.generators["data"])
    batch = OuterBatch(x_real, y_real, d.stream.step(), 1, step_seed=step_seed(0, 1))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for part in d.method.losses(batch):
            part.loss.backward()
        d.method.after_update(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("batch_draws", ["loop", "vmap"])
def test_wang_inner_loop_never_waits_for_the_host(digits, batch_draws):
    """Every part of a Wang step (θ₀ draws, augmented unroll, real loss, backward) runs with CUDA's sync debug
    mode set to error: any host synchronisation inside would raise."""
    config = DistillConfig(outer=OuterConfig(num_inits=2, batch_draws=batch_draws),
                           policy=PolicyConfig(mode="learn", ops=OPS, siamese=True))
    d = Distiller(config, digits, policy=build_policy(list(OPS), image_size=(8, 8), probability=0.9), device="cuda")
    _step_without_host_sync(d)
    assert d.synthetic.images.grad is not None and d.synthetic.images.grad.is_cuda


MATCHING = {
    "dc": MethodConfig(name="dc", outer_loop=3, inner_loop=1, net_lr=0.05),
    "dc-idc": MethodConfig(name="dc", outer_loop=3, inner_loop=1, net_lr=0.05, train_on="real", distance="l1"),
    "dm-pool-terms": MethodConfig(name="dm", pool=2, net_lr=0.1, ce_weight=0.5, layer_weight=0.3, disc_weight=0.5,
                                  attention_weight=20.0, style_weight=2.0),
    "dm-kernel": MethodConfig(name="dm", pool=2, net_lr=0.1, kernel="gaussian"),
}


@pytest.mark.parametrize("method", sorted(MATCHING))
@pytest.mark.parametrize("param", ["pixels", "multi-formation"])
def test_matching_steps_never_wait_for_the_host(digits, method, param):
    """A gradient or distribution matching step (decode, siamese augmentation, matching loss, backward, and the
    network's training between matching steps) runs with CUDA's sync debug mode set to error."""
    config = DistillConfig(method=MATCHING[method], model=ModelConfig("convnet", width=8, depth=2),
                           synthetic=SyntheticConfig(ipc=2, param=param), outer=OuterConfig(real_per_class=4),
                           policy=PolicyConfig(mode="learn", ops=OPS, siamese=True))
    d = Distiller(config, digits, policy=build_policy(list(OPS), image_size=(8, 8), probability=0.9), device="cuda")
    _step_without_host_sync(d)
    grads = [p.grad for p in d.synthetic.parameters()]
    assert all(g is not None and g.is_cuda and bool(g.abs().sum() > 0) for g in grads)


def test_checkpointing_at_least_halves_cuda_memory():
    peaks = {}
    for checkpoint in (0, 1):
        net, theta0, x, y, _, x_real, y_real, _ = _problem("cuda", width=32, images=100, steps=40)
        lrs = torch.full((40,), 0.05, device="cuda", requires_grad=True)
        schedule = InnerSchedule.full_batch(100, 40, 1)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        theta = unroll(net, theta0, x, y, lrs, schedule, checkpoint=checkpoint)
        F.cross_entropy(functional_call(net, theta, (x_real,)), y_real).backward()
        torch.cuda.synchronize()
        peaks[checkpoint] = torch.cuda.max_memory_allocated() - before
        del theta
    assert peaks[1] <= 0.5 * peaks[0], peaks


def test_bf16_autocast_tracks_float32_on_cuda(exact_float32):
    fp32 = torch.cat([g.flatten() for g in _hypergradient("cuda")])
    bf16 = torch.cat([g.flatten() for g in _hypergradient("cuda", precision="bfloat16")])
    # 0.9495 on an H200 (torch 2.11, 2026-11-27): bf16's 8-bit mantissa through a 10-step unroll and its second
    # derivative keeps the direction, not 0.99 of it (the bound this test first guessed, before any GPU ran it).
    assert F.cosine_similarity(fp32, bf16, dim=0) > 0.9
    assert abs(float(bf16.norm() / fp32.norm()) - 1) < 0.05


def test_distillation_learns_on_cuda(digits):
    config = DistillConfig(model=ModelConfig(name="mlp", width=64), outer=OuterConfig(num_inits=2, iterations=60))
    d = Distiller(config, digits, device="cuda")
    before = d.validate(2)
    d.fit(60)
    assert d.synthetic.images.is_cuda and d.validate(2) > before + 0.1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_nccl_ranks_learn_what_one_process_learns(tmp_path):
    args = ["distill", "--device", "cuda", "--iterations", "6", "--eval-every", "3", "--eval-nets", "1",
            "--final-nets", "1", "--num-inits", "4", "--checkpoint-every", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "augdistill", *args, "--out", str(tmp_path / "one")], check=True, env=env)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                    "augdistill", *args, "--out", str(tmp_path / "two")], check=True, env=env)
    one, two = (torch.load(tmp_path / r / "synthetic.pt", weights_only=True) for r in ("one", "two"))
    torch.testing.assert_close(two["images"], one["images"], rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2
