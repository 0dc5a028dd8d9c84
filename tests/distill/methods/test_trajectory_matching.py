"""Trajectory matching: the loss and its gradients against `higher`, TESLA's constant-memory gradient against
the full unroll and against an independent autograd computation of the same first-order formula."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from augdistill.augment import build_policy
from augdistill.config import DistillConfig, MethodConfig, ModelConfig, OuterConfig, PolicyConfig, SyntheticConfig
from augdistill.distill import Distiller
from augdistill.distill.experts import ExpertSetup, train_experts
from augdistill.distill.methods import OuterBatch
from augdistill.distill.methods.trajectory_matching import minibatch_schedule, trajectory_loss
from augdistill.errors import CheckpointError, ConfigError
from augdistill.inner import InnerSchedule, unroll
from augdistill.inner.constant_memory import ConstantMemoryUnroll
from augdistill.models import build_model, sample_params
from augdistill.testing.trajectory_reference import (first_order_trajectory_gradients,
                                                     higher_trajectory_gradients, matching_loss)

MODEL = ModelConfig("convnet", width=8, depth=2, norm="instance")
OPS = ["rotate", "translate-x", "brightness"]


@pytest.fixture(scope="module")
def experts(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("experts")
    train_experts(ExpertSetup.for_dataset(digits.info, MODEL, epochs=3, batch_size=64, lr=0.05), digits, out, 2)
    return out


def _distiller(digits, experts, *, constant_memory=False, steps=3, policy="learn", **method) -> Distiller:
    cfg = DistillConfig(method=MethodConfig(name="mtt", expert_dir=str(experts), syn_steps=steps, max_start_epoch=2,
                                            expert_epochs=1, syn_lr_init=0.05, constant_memory=constant_memory,
                                            **method),
                        model=MODEL, synthetic=SyntheticConfig(ipc=2),
                        outer=OuterConfig(num_inits=1, real_per_class=4),
                        policy=PolicyConfig(mode=policy, ops=tuple(OPS), siamese=True))
    module = build_policy(OPS, image_size=(8, 8), probability=0.8) if policy != "none" else None
    return Distiller(cfg, digits, policy=module)


def _outer_batch(d: Distiller) -> OuterBatch:
    x_real, y_real = d.sampler.sample(d.config.outer.real_per_class, d.generators["data"])
    return OuterBatch(x_real, y_real, d.stream.step(), 0)


def _leaves(d: Distiller) -> list[torch.Tensor]:
    return [d.synthetic.images, d.method.log_syn_lr, *d.policy.parameters()]


def _grads(d: Distiller) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in _leaves(d)]


def _replay_draw(d: Distiller, state: torch.Tensor):
    """The (start, target, schedule) the method drew from the ``method`` stream state ``state``."""
    d.generators["method"].set_state(state)
    expert, start_epoch = d.method._draw()
    bank, cfg = d.method.experts, d.config.method
    schedule = minibatch_schedule(d.synthetic.num_decoded, cfg.syn_steps, cfg.syn_batch, d.generators["method"])
    return bank.params(expert, start_epoch), bank.params(expert, start_epoch + cfg.expert_epochs), schedule


def _augment(d: Distiller, batch: OuterBatch, schedule: InnerSchedule):
    labels = d.synthetic.labels
    return lambda x, t: batch.augment.synthetic(x, labels[schedule.batches[t % schedule.steps]])


def test_loss_and_gradients_match_higher_on_a_three_step_unroll(digits, experts):
    d = _distiller(digits, experts)
    batch, state = _outer_batch(d), d.generators["method"].get_state()
    (part,) = list(_backpropagated(d, batch, policy_objective=False))
    ours = _grads(d)
    start, target, schedule = _replay_draw(d, state)
    assert schedule.total_steps == 3
    loss, *ref = higher_trajectory_gradients(d.model, start, target, d.synthetic.decode(), d.synthetic.targets(),
                                             d.method.syn_lr(), schedule, _leaves(d), _augment(d, batch, schedule))
    torch.testing.assert_close(part, loss, rtol=1e-5, atol=1e-7)
    for name, a, b in zip(["images", "log_syn_lr", *[n for n, _ in d.policy.named_parameters()]], ours, ref):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7, msg=name)


def _backpropagated(d: Distiller, batch: OuterBatch, policy_objective: bool):
    """What the loop does with the parts (see Distiller.step): yields each part's MTT loss value."""
    for part in d.method.losses(batch):
        loss = part.loss
        if policy_objective:
            loss = loss + part.weight * d.policy_objective(d.model, part.theta, batch.x_real, batch.y_real,
                                                           batch.augment)
        loss.backward()
        yield part.loss.detach()


@pytest.mark.parametrize("policy_objective", [False, True])
def test_constant_memory_equals_the_first_order_formula_computed_by_autograd(digits, experts, policy_objective):
    """With the learned policy's objective on θ_N added by the loop, as in `--policy learn`."""
    d = _distiller(digits, experts, constant_memory=True, syn_batch=7)
    batch, state = _outer_batch(d), d.generators["method"].get_state()
    (loss,) = list(_backpropagated(d, batch, policy_objective))
    ours = _grads(d)
    start, target, schedule = _replay_draw(d, state)
    assert [len(b) for b in schedule.batches] == [7, 7, 6]  # random minibatches, a permutation's short last chunk
    extra = (lambda theta: d.policy_objective(d.model, theta, batch.x_real, batch.y_real, batch.augment)
             ) if policy_objective else None
    ref_loss, *ref = first_order_trajectory_gradients(
        d.model, start, target, d.synthetic.decode(), d.synthetic.targets(), d.method.syn_lr().expand(3), schedule,
        _leaves(d), augment=_augment(d, batch, schedule), extra_loss=extra)
    if not policy_objective:
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
    for a, b in zip(ours, ref):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def _toy(lr: float, steps: int):
    g = torch.Generator().manual_seed(3)
    net = build_model("convnet", (1, 6, 6), 3, width=4, depth=2, norm="group", mean=[0.4], std=[0.3])
    start = sample_params(net, g)
    target = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    images = torch.rand(6, 1, 6, 6, generator=g, requires_grad=True)
    soft = torch.softmax(torch.randn(6, 3, generator=g), 1).requires_grad_()
    lrs = torch.full((steps,), lr, requires_grad=True)
    scale = torch.tensor(1.0, requires_grad=True)  # stands in for an augmentation parameter
    noise = torch.Generator().manual_seed(5)

    def augment(x, t):  # non-siamese: fresh noise from a generator the constant-memory unroll rewinds
        return (x * scale + 0.05 * torch.rand(x.shape, generator=noise)).clamp(0, 1)

    batches = (torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]))[:min(steps, 2)]
    schedule = InnerSchedule(batches, steps // len(batches))
    return net, start, target, images, soft, lrs, scale, augment, noise, schedule


def _constant_memory(net, start, target, images, soft, lrs, scale, augment, noise, schedule, momentum=0.0):
    run = ConstantMemoryUnroll(net, start, images, soft, lrs, schedule, momentum=momentum, augment=augment,
                               generators=(noise,))
    theta = {k: v.requires_grad_() for k, v in run.theta.items()}
    trajectory_loss(theta, start, target).backward()
    run.backward({k: p.grad for k, p in theta.items()})
    grads = [t.grad.clone() for t in (images, soft, lrs, scale)]
    for t in (images, soft, lrs, scale):
        t.grad = None
    return grads


def _full(net, start, target, images, soft, lrs, scale, augment, noise, schedule):
    theta = unroll(net, start, images, soft, lrs, schedule, augment=augment)
    return torch.autograd.grad(trajectory_loss(theta, start, target), [images, soft, lrs, scale])


def test_constant_memory_equals_the_full_unroll_for_one_step():
    toy = _toy(0.5, steps=1)
    net, start, target, images, soft, lrs, scale, augment, noise, schedule = toy
    assert schedule.total_steps == 1
    state = noise.get_state()
    full = _full(*toy)
    noise.set_state(state)
    for a, b in zip(_constant_memory(*toy), full):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_constant_memory_with_momentum_and_a_rewound_generator_equals_the_first_order_formula():
    toy = _toy(0.3, steps=4)
    net, start, target, images, soft, lrs, scale, augment, noise, schedule = toy
    state = noise.get_state()
    ours = _constant_memory(*toy, momentum=0.5)
    after = noise.get_state()
    noise.set_state(state)
    _, *ref = first_order_trajectory_gradients(net, start, target, images, soft, lrs, schedule,
                                               [images, soft, lrs, scale], momentum=0.5, augment=augment)
    assert torch.equal(after, noise.get_state())  # the generator ends where one pass would leave it
    for a, b in zip(ours, ref):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)


def test_constant_memory_approaches_the_full_unroll_as_the_step_size_shrinks():
    """The documented approximation: the dropped Hessian terms are O(α); at α → 0 the two agree."""
    errors = []
    for lr in (0.3, 0.03, 0.003):
        toy = _toy(lr, steps=4)
        noise, state = toy[8], toy[8].get_state()
        full = _full(*toy)
        noise.set_state(state)
        ours = _constant_memory(*toy)
        images_full, images_ours = full[0], ours[0]
        errors.append(float((images_ours - images_full).norm() / images_full.norm()))
    assert errors[0] > 1e-3  # it is an approximation: at a large step it measurably differs
    assert errors[2] < 5e-3 and errors[2] < errors[1] < errors[0], errors


def test_constant_memory_refuses_a_second_backward():
    toy = _toy(0.1, steps=2)
    net, start, target, images, soft, lrs, scale, augment, noise, schedule = toy
    run = ConstantMemoryUnroll(net, start, images, soft, lrs, schedule)
    zero = {k: torch.zeros_like(v) for k, v in run.theta.items()}
    run.backward(zero)
    with pytest.raises(ConfigError, match="already called"):
        run.backward(zero)


def test_minibatch_schedule_takes_consecutive_chunks_of_permutations():
    g = torch.Generator().manual_seed(0)
    s = minibatch_schedule(10, 5, 4, g)
    sizes = [len(b) for b in s.batches]
    assert sizes == [4, 4, 2, 4, 4]
    first, second = torch.cat(s.batches[:3]), torch.cat(s.batches[3:])
    assert sorted(first.tolist()) == list(range(10)) and len(set(second.tolist())) == 8
    assert minibatch_schedule(10, 3, 0, g).batches[0].tolist() == list(range(10))


def test_matching_loss_is_normalised_by_the_expert_distance():
    start = {"w": torch.zeros(3)}
    target = {"w": torch.tensor([3.0, 0.0, 4.0])}
    assert float(trajectory_loss(start, start, target)) == pytest.approx(1.0)
    assert float(trajectory_loss(target, start, target)) == 0.0
    assert float(matching_loss([torch.ones(3)], [start["w"]], [target["w"]])) == pytest.approx((4 + 1 + 9) / 25)


def test_learns_the_step_size_exports_it_and_resumes_exactly(digits, experts):
    a = _distiller(digits, experts, policy="none")
    for _ in range(4):
        a.step()
    b = _distiller(digits, experts, policy="none")
    for _ in range(2):
        b.step()
    c = _distiller(digits, experts, policy="none")
    c.load_state_dict(b.state_dict())
    for _ in range(2):
        c.step()
    assert torch.equal(a.synthetic.images, c.synthetic.images)
    assert torch.equal(a.method.log_syn_lr, c.method.log_syn_lr)
    assert a.method.export()["syn_lr"] != pytest.approx(0.05, rel=1e-9)
    assert a.method.replay_recipe() is None and a.config.outer.validation == "standard"


def test_clear_errors_for_a_missing_or_mismatched_expert_directory(digits, experts, tmp_path):
    with pytest.raises(ConfigError, match="--expert-dir"):
        Distiller(DistillConfig(method=MethodConfig(name="mtt"), model=MODEL), digits)
    with pytest.raises(CheckpointError, match="does not exist"):
        _distiller(digits, tmp_path / "none", policy="none")
    cfg = _distiller(digits, experts, policy="none").config
    wider = dataclasses.replace(cfg, model=dataclasses.replace(MODEL, width=16))
    with pytest.raises(CheckpointError, match="experts.json.*width=8"):
        Distiller(wider, digits)
    late = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, max_start_epoch=4))
    with pytest.raises(CheckpointError, match="3 epochs but the run reads epoch 4"):
        Distiller(late, digits)


def test_distill_command_runs_mtt_with_constant_memory_and_exports_the_step_size(experts, tmp_path, capsys):
    from augdistill.cli import main
    from augdistill.runs import load_distilled
    out = tmp_path / "run"
    assert main(["distill", "--method", "mtt", "--expert-dir", str(experts), "--constant-memory", "--syn-steps", "4",
                 "--max-start-epoch", "2", "--expert-epochs", "1", "--syn-batch", "5", "--model", "convnet",
                 "--width", "8", "--depth", "2", "--iterations", "4", "--eval-every", "2", "--val-epochs", "3",
                 "--num-inits", "1", "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert '"method": "mtt"' in summary and '"selected_iteration"' in summary
    s = load_distilled(out / "synthetic.pt")
    assert s.method == "mtt" and s.lrs is None and 0 < s.recipe["syn_lr"] < 1
    assert main(["evaluate", str(out), "--protocol", "standard", "--nets", "1", "--epochs", "2", "--json"]) == 0
    assert '"protocol": "standard"' in capsys.readouterr().out
