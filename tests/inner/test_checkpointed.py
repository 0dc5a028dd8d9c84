"""The unroll's cost options: checkpointing, stacked (vmap) draws and bf16 autocast give the hypergradients of
the plain unroll; checkpointing stores far less."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from augdistill.augment import build_policy
from augdistill.errors import ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.models import build_model, sample_params


def _problem(seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    net = build_model("convnet", (1, 8, 8), 3, width=4, depth=2, norm="group", mean=[0.4], std=[0.3]).to(dtype)
    theta0 = {k: v.to(dtype) for k, v in sample_params(net, g).items()}
    images = torch.rand(6, 1, 8, 8, generator=g, dtype=dtype).requires_grad_()
    targets = torch.softmax(torch.randn(6, 3, generator=g, dtype=dtype), 1).requires_grad_()
    lrs = torch.tensor([0.3, 0.2, 0.25, 0.1, 0.2], dtype=dtype, requires_grad=True)
    x_real = torch.rand(12, 1, 8, 8, generator=g, dtype=dtype)
    y_real = torch.randint(0, 3, (12,), generator=g)
    schedule = InnerSchedule(tuple(torch.tensor(i) for i in ([0, 2, 4], [1, 3, 5], [0, 1, 2, 3, 4, 5], [5, 4],
                                                            [0, 2, 4])), epochs=1)
    return net, theta0, images, targets, lrs, x_real, y_real, schedule


def _hypergradients(checkpoint: int, generator_seed: int | None):
    """Hypergradients w.r.t. images, soft targets, lrs, momentum and a learned policy's parameters, with fresh
    augmentation draws from a seeded generator (or none), plus the generator's final state."""
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem()
    momentum = torch.tensor(0.5, requires_grad=True)
    policy = build_policy(["rotate", "scale"], image_size=(8, 8), probability=1.0)
    generator = torch.Generator().manual_seed(generator_seed or 0)

    def augment(x, t):
        return policy(x, params=policy.sample(x.shape[0], generator=generator))
    theta = unroll(net, theta0, images, targets, lrs, schedule, momentum=momentum,
                   augment=augment if generator_seed is not None else None, checkpoint=checkpoint,
                   generators=(generator,))
    loss = F.cross_entropy(functional_call(net, theta, (x_real,)), y_real)
    leaves = [images, targets, lrs, momentum, *policy.parameters()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [g for g in grads if g is not None], generator.get_state()


@pytest.fixture(scope="module")
def stored():
    """The plain unroll's hypergradients (and generator state), without and with fresh augmentation draws."""
    return {fresh: _hypergradients(0, 7 if fresh else None) for fresh in (False, True)}


@pytest.mark.parametrize("segment, fresh_draws", [(1, True), (2, True), (5, False)])
def test_checkpointed_hypergradients_equal_stored_ones(segment, fresh_draws, stored):
    reference, reference_state = stored[fresh_draws]
    ours, state = _hypergradients(segment, 7 if fresh_draws else None)
    assert len(ours) == len(reference) >= 4
    for a, b in zip(ours, reference):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert torch.equal(state, reference_state)  # the recomputation replayed the draws and rewound the stream


def test_checkpointing_without_replaying_the_generator_gives_wrong_gradients():
    """The test above can fail: recomputing with fresh (not replayed) draws changes the hypergradient."""
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem()
    policy = build_policy(["rotate"], image_size=(8, 8), probability=1.0)
    results = []
    for generators in ((), "replay"):
        g = torch.Generator().manual_seed(3)

        def augment(x, t, g=g):
            return policy(x, params=policy.sample(x.shape[0], generator=g))
        theta = unroll(net, theta0, images, targets, lrs, schedule, augment=augment, checkpoint=2,
                       generators=(g,) if generators else ())
        results.append(torch.autograd.grad(F.cross_entropy(functional_call(net, theta, (x_real,)), y_real), images)[0])
    assert not torch.allclose(results[0], results[1], rtol=1e-3, atol=1e-6)


def test_stacked_draws_equal_separate_unrolls():
    net, _, images, targets, lrs, x_real, y_real, schedule = _problem()
    g = torch.Generator().manual_seed(5)
    draws = [sample_params(net, g) for _ in range(2)]
    separate = []
    for theta0 in draws:
        theta = unroll(net, theta0, images, targets, lrs, schedule, momentum=0.3)
        separate.append(F.cross_entropy(functional_call(net, theta, (x_real,)), y_real))
    ref = torch.autograd.grad(sum(separate), [images, targets, lrs])
    stacked = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    theta = unroll(net, stacked, images, targets, lrs, schedule, momentum=0.3, stacked=2)
    out = torch.func.vmap(lambda p: functional_call(net, p, (x_real,)))(theta)
    loss = F.cross_entropy(out.flatten(0, 1), y_real.repeat(2), reduction="none").view(2, -1).mean(1).sum()
    ours = torch.autograd.grad(loss, [images, targets, lrs])
    torch.testing.assert_close(loss, sum(separate))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_bfloat16_autocast_hypergradients_track_float32():
    """bf16 forward (autocast), float32 parameters and updates: the hypergradient keeps its direction
    (cosine > 0.99) and its size (within 5%) on CPU; the float64 run says how far float32 itself is."""
    net, theta0, images, targets, lrs, x_real, y_real, schedule = _problem()

    def hyper(precision):
        theta = unroll(net, theta0, images, targets, lrs, schedule, precision=precision)
        loss = F.cross_entropy(functional_call(net, theta, (x_real,)), y_real)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, [images, lrs])])

    fp32, bf16 = hyper("float32"), hyper("bfloat16")
    assert not torch.equal(fp32, bf16)  # autocast really ran in bf16
    cosine = F.cosine_similarity(fp32, bf16, dim=0)
    assert cosine > 0.99, cosine
    assert abs(bf16.norm() / fp32.norm() - 1) < 0.05
    with pytest.raises(ConfigError, match="precision must be one of"):
        unroll(net, theta0, images, targets, lrs, schedule, precision="float16")


_MEMORY = textwrap.dedent("""
    import ctypes, json, sys, torch, torch.nn.functional as F
    ctypes.CDLL("libc.so.6").mallopt(-3, 4096)  # M_MMAP_THRESHOLD: tensors are mmap-ed, freed pages leave RSS
    from torch.func import functional_call
    from augdistill.inner import InnerSchedule, unroll
    from augdistill.models import build_model, sample_params
    torch.set_num_threads(1)
    checkpoint, steps = int(sys.argv[1]), int(sys.argv[2])
    net = build_model("convnet", (1, 16, 16), 10, width=16, norm="none")
    theta0 = sample_params(net, torch.Generator().manual_seed(0))
    x, y = torch.rand(20, 1, 16, 16, requires_grad=True), torch.arange(10).repeat_interleave(2)
    def step(k):
        lrs = torch.full((k,), 0.1, requires_grad=True)
        theta = unroll(net, theta0, x, y, lrs, InnerSchedule.full_batch(20, k, 1), checkpoint=checkpoint)
        F.cross_entropy(functional_call(net, theta, (x,)), y).backward()
    def kib(key):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
    step(2)
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
    base = kib("VmRSS")
    step(steps)
    print(json.dumps(kib("VmHWM") - base))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_checkpointing_every_step_stores_far_less():
    """Peak resident memory of one unroll + backward (K = 40) in fresh processes: at most half with checkpointing."""
    peaks = {}
    for checkpoint in (0, 1):
        out = subprocess.run([sys.executable, "-c", _MEMORY, str(checkpoint), "40"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
        peaks[checkpoint] = json.loads(out.stdout)
    assert peaks[0] > 8 * 1024, peaks  # ~ 40 steps of activations
    assert peaks[1] <= 0.5 * peaks[0], peaks
