"""Knowledge distillation: logit KL, feature and block-wise losses, seeding, and torchrun."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optimizer.distill import DistillConfig, distill_, distill_blocks_, fine_tune_, soft_kl_loss
from optimizer.graph.record import get_record

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False}


# --- data and models ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> dict:
    """sklearn's 8x8 digits, fixed split: 1200 to train, the rest to test."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.long)
    return {"x": x[:1200], "y": y[:1200], "x_test": x[1200:], "y_test": y[1200:]}


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 100) -> list:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def mlp(hidden: int, d_in: int = 64, d_out: int = 10) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class SmallCNN(nn.Module):
    """conv-bn-relu blocks on 1x8x8 images: the shape of a ResNet stage, tiny."""

    def __init__(self, width: int):
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block3 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x.view(-1, 1, 8, 8))))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def mlp_teacher(digits: dict) -> nn.Module:
    torch.manual_seed(0)
    teacher = mlp(64)
    cfg = DistillConfig(epochs=15, lr=1e-2, **QUIET)
    fine_tune_(teacher, batches(digits["x"], digits["y"], 64), cfg)
    return teacher.eval()


@pytest.fixture(scope="module")
def cnn_teacher(digits: dict) -> nn.Module:
    torch.manual_seed(0)
    teacher = SmallCNN(16)
    cfg = DistillConfig(epochs=3, lr=1e-2, **QUIET)
    fine_tune_(teacher, batches(digits["x"][:600], digits["y"][:600], 50), cfg)
    return teacher.eval()


def prune_hidden(model: nn.Sequential, keep: int) -> nn.Sequential:
    """The `keep` hidden units of largest L1 norm: a channel-pruned copy of the MLP."""
    idx = model[0].weight.abs().sum(1).topk(keep).indices.sort().values
    student = mlp(keep, model[0].in_features, model[2].out_features)
    with torch.no_grad():
        student[0].weight.copy_(model[0].weight[idx])
        student[0].bias.copy_(model[0].bias[idx])
        student[2].weight.copy_(model[2].weight[:, idx])
        student[2].bias.copy_(model[2].bias)
    return student


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- the logit loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_soft_kl_loss_matches_hand_computation(temperature):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_s = softmax(s.double().numpy() / temperature)
    p_t = softmax(t.double().numpy() / temperature)
    kl_per_row = (p_t * (np.log(p_t) - np.log(p_s))).sum(1)
    expected = kl_per_row.mean() * temperature**2
    assert float(soft_kl_loss(s.double(), t.double(), temperature)) == pytest.approx(
        expected, 1e-12
    )


def test_soft_kl_loss_two_class_example_by_hand():
    # Teacher logits (ln 3, 0) at T = 1: p_t = (3/4, 1/4); student uniform: p_s = (1/2, 1/2).
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2). At T = 2, p_t = (sqrt3, 1) / (sqrt3 + 1), and T^2 = 4.
    t = torch.tensor([[np.log(3.0), 0.0]], dtype=torch.float64)
    s = torch.zeros(1, 2, dtype=torch.float64)
    assert float(soft_kl_loss(s, t, 1.0)) == pytest.approx(0.75 * np.log(1.5) + 0.25 * np.log(0.5))
    a = np.sqrt(3.0) / (np.sqrt(3.0) + 1)
    by_hand = 4 * (a * np.log(2 * a) + (1 - a) * np.log(2 * (1 - a)))
    assert float(soft_kl_loss(s, t, 2.0)) == pytest.approx(by_hand)


def test_soft_kl_loss_classes_on_dim_one_for_dense_outputs():
    s, t = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    flat = soft_kl_loss(s.permute(0, 2, 3, 1).reshape(-1, 5), t.permute(0, 2, 3, 1).reshape(-1, 5))
    assert torch.allclose(soft_kl_loss(s, t), flat)


def test_first_step_loss_is_alpha_weighted_sum_of_kd_and_hard(mlp_teacher, digits):
    torch.manual_seed(3)
    student = mlp(8)
    x, y = digits["x"][:100], digits["y"][:100]
    with torch.no_grad():
        s_logits, t_logits = student(x), mlp_teacher(x)
    kd = float(soft_kl_loss(s_logits, t_logits, 3.0))
    hard = float(F.cross_entropy(s_logits, y))
    cfg = DistillConfig(epochs=1, temperature=3.0, alpha=0.7, **QUIET)
    result = distill_(student, mlp_teacher, [(x, y)], cfg)
    assert result.components["kd"][0] == pytest.approx(kd, rel=1e-5)
    assert result.components["hard"][0] == pytest.approx(hard, rel=1e-5)
    assert result.epoch_losses[0] == pytest.approx(0.7 * kd + 0.3 * hard, rel=1e-5)
    assert result.steps == 1


# --- end-to-end distillation ---------------------------------------------------------------------


def test_distill_improves_pruned_student_over_no_training(mlp_teacher, digits):
    student = prune_hidden(mlp_teacher, keep=8)
    before = accuracy(student, digits["x_test"], digits["y_test"])
    cfg = DistillConfig(epochs=10, lr=1e-2, temperature=4.0, alpha=0.9, **QUIET)
    result = distill_(student, mlp_teacher, batches(digits["x"], digits["y"]), cfg)
    after = accuracy(student, digits["x_test"], digits["y_test"])
    teacher_acc = accuracy(mlp_teacher, digits["x_test"], digits["y_test"])
    assert after > before + 0.05, (before, after)
    assert after > teacher_acc - 0.08, (after, teacher_acc)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_distill_loss_decreases(mlp_teacher, digits):
    torch.manual_seed(0)
    student = mlp(16)
    cfg = DistillConfig(epochs=4, lr=5e-3, **QUIET)
    losses = distill_(student, mlp_teacher, batches(digits["x"], digits["y"]), cfg).epoch_losses
    assert len(losses) == 4
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_alpha_zero_equals_fine_tune(mlp_teacher, digits):
    torch.manual_seed(0)
    start = mlp(16)
    loader = DataLoader(TensorDataset(digits["x"], digits["y"]), batch_size=100, shuffle=True)
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    cfg = DistillConfig(epochs=2, alpha=0.0, seed=5, optimizer="sgd", lr=0.05, **QUIET)
    ra = distill_(a, mlp_teacher, loader, cfg)
    rb = fine_tune_(b, loader, cfg)
    assert same_weights(a, b)
    assert ra.epoch_losses == rb.epoch_losses
    assert not same_weights(a, start)


def test_cosine_alpha_schedule_moves_from_teacher_to_labels(mlp_teacher, digits):
    torch.manual_seed(0)
    start = mlp(16)
    data = batches(digits["x"], digits["y"])
    sched, const = copy.deepcopy(start), copy.deepcopy(start)
    cfg = DistillConfig(epochs=3, alpha=0.9, alpha_schedule="cosine", **QUIET)
    res = distill_(sched, mlp_teacher, data, cfg)
    distill_(const, mlp_teacher, data, DistillConfig(epochs=3, alpha=0.9, **QUIET))
    assert not same_weights(sched, const)
    assert res.epoch_losses[-1] < res.epoch_losses[0]
    assert get_record(sched)["passes"][-1]["alpha_schedule"] == "cosine"
    unlabeled = [(x, None) for x, _ in data]
    with pytest.raises(ValueError, match="targets are None"):
        distill_(
            copy.deepcopy(start),
            mlp_teacher,
            unlabeled,
            DistillConfig(epochs=1, alpha=1.0, alpha_schedule="cosine", **QUIET),
        )
    with pytest.raises(ValueError, match="alpha_schedule needs data with a length"):
        distill_(copy.deepcopy(start), mlp_teacher, iter(data), cfg)


def test_mixup_distills_on_mixed_inputs_repeatably(mlp_teacher, digits):
    torch.manual_seed(0)
    start = mlp(16)
    loader = DataLoader(TensorDataset(digits["x"], digits["y"]), batch_size=100, shuffle=True)
    runs = []
    for fn in ("distill", "distill", "fine_tune"):
        student = copy.deepcopy(start)
        cfg = DistillConfig(epochs=2, seed=3, mixup=0.4, **QUIET)
        if fn == "distill":
            res = distill_(student, mlp_teacher, loader, cfg)
        else:
            res = fine_tune_(student, loader, cfg)
        assert res.epoch_losses[-1] < res.epoch_losses[0]
        runs.append(student)
    assert same_weights(runs[0], runs[1])
    assert not same_weights(runs[0], runs[2])
    plain = copy.deepcopy(start)
    distill_(plain, mlp_teacher, loader, DistillConfig(epochs=2, seed=3, **QUIET))
    assert not same_weights(plain, runs[0])  # the mixing really changed what was trained on
    with pytest.raises(ValueError, match="mixup needs one floating-point input"):
        tokens = [(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long))]
        fine_tune_(
            nn.Sequential(nn.Embedding(5, 10), nn.Flatten(), nn.Linear(30, 10)),
            tokens,
            DistillConfig(epochs=1, mixup=0.4, **QUIET),
        )


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_same_seed_gives_bit_identical_weights(mlp_teacher, digits, optimizer):
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10))
    loader = DataLoader(TensorDataset(digits["x"], digits["y"]), batch_size=100, shuffle=True)
    runs = []
    for seed in (7, 7, 8):
        student = copy.deepcopy(start)
        torch.manual_seed(1234 + len(runs))  # whatever the caller's RNG state: the seed decides
        cfg = DistillConfig(
            epochs=2, seed=seed, optimizer=optimizer, features=[("0", "0")], **QUIET
        )
        distill_(student, mlp_teacher, loader, cfg)
        runs.append(student)
    assert same_weights(runs[0], runs[1])
    assert not same_weights(runs[0], runs[2])


@pytest.mark.parametrize("api", ["distill_", "fine_tune_"])
def test_same_seed_repeats_with_a_loader_that_has_its_own_generator(mlp_teacher, digits, api):
    """A DataLoader made with generator= shuffles with its own RNG, which a global seed does
    not reach: the same seed must still give the same result after the loader was iterated,
    and the loader's generator is left as the call found it."""
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    gen = torch.Generator().manual_seed(5)
    ds = TensorDataset(digits["x"], digits["y"])
    loader = DataLoader(ds, batch_size=100, shuffle=True, generator=gen)
    cfg = DistillConfig(epochs=2, seed=4, **QUIET)

    def run() -> nn.Module:
        student = copy.deepcopy(start)
        if api == "distill_":
            distill_(student, mlp_teacher, loader, cfg)
        else:
            fine_tune_(student, loader, cfg)
        return student

    first = run()
    for _ in loader:  # the caller draws from the loader between the two calls
        pass
    state = gen.get_state()
    second = run()
    assert same_weights(first, second)
    assert torch.equal(gen.get_state(), state), "the loader's generator was not restored"


def test_teacher_is_not_modified(mlp_teacher, digits):
    teacher = copy.deepcopy(mlp_teacher).train()
    before = copy.deepcopy(teacher.state_dict())
    torch.manual_seed(0)
    student = mlp(8)
    cfg = DistillConfig(epochs=1, features=[("0", "0")], **QUIET)
    distill_(student, teacher, batches(digits["x"], digits["y"]), cfg)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in teacher.modules()), "teacher's train mode was not restored"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in teacher.modules())
    assert all(p.grad is None for p in teacher.parameters())


def test_student_train_eval_modes_are_restored(cnn_teacher, digits):
    torch.manual_seed(0)
    student = SmallCNN(8).train()
    student.block1[1].eval()  # a frozen BatchNorm, as users keep them
    modes = {n: m.training for n, m in student.named_modules()}
    cfg = DistillConfig(epochs=1, max_steps_per_epoch=2, **QUIET)
    distill_(student, cnn_teacher, batches(digits["x"], digits["y"]), cfg)
    assert {n: m.training for n, m in student.named_modules()} == modes
    student.eval()
    fine_tune_(student, batches(digits["x"], digits["y"]), cfg)
    assert not any(m.training for m in student.modules())


def test_feature_loss_with_different_widths_trains_adapter_and_student(cnn_teacher, digits):
    torch.manual_seed(0)
    student = SmallCNN(8)
    keys = set(student.state_dict())
    data = batches(digits["x"][:400], digits["y"][:400], 50)
    cfg = DistillConfig(
        epochs=4, lr=1e-2, features=[("block2", "block2")], feature_weight=1.0, **QUIET
    )
    untrained = distill_(copy.deepcopy(student), cnn_teacher, data, replace_epochs(cfg, 0))
    conv_before = student.block2[0].weight.clone()
    result = distill_(student, cnn_teacher, data, cfg)

    adapter = result.adapters["block2"]
    assert isinstance(adapter, nn.Conv2d) and adapter.kernel_size == (1, 1)
    assert (adapter.in_channels, adapter.out_channels) == (8, 16)
    assert not torch.equal(adapter.weight, untrained.adapters["block2"].weight)
    assert not torch.equal(student.block2[0].weight, conv_before)
    feature = result.components["feature"]
    assert feature[-1] < 0.7 * feature[0], feature
    assert set(student.state_dict()) == keys, "the adapter must not be added to the student"


def test_feature_on_linear_layers_uses_linear_adapter_and_identity_when_widths_match(
    mlp_teacher, digits
):
    torch.manual_seed(0)
    student = mlp(8)
    cfg = DistillConfig(epochs=1, features=[("0", "0"), ("2", "2")], **QUIET)
    result = distill_(student, mlp_teacher, batches(digits["x"], digits["y"]), cfg)
    assert isinstance(result.adapters["0"], nn.Linear)
    assert (result.adapters["0"].in_features, result.adapters["0"].out_features) == (8, 64)
    assert "2" not in result.adapters  # logits are 10 wide on both sides: identity


def test_alpha_one_learns_from_teacher_without_labels(mlp_teacher, digits):
    torch.manual_seed(0)
    student = mlp(16)
    data = [(x, None) for x, _ in batches(digits["x"], digits["y"])]
    cfg = DistillConfig(epochs=6, lr=1e-2, alpha=1.0, temperature=2.0, **QUIET)
    result = distill_(student, mlp_teacher, data, cfg)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert accuracy(student, digits["x_test"], digits["y_test"]) > 0.7


def test_custom_hard_loss_is_used():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cfg = DistillConfig(epochs=20, lr=0.05, hard_loss=F.mse_loss, lr_schedule=None, **QUIET)
    result = fine_tune_(model, batches(x, y, 32), cfg)
    assert result.epoch_losses[-1] < 1e-3 < result.epoch_losses[0]


def test_augment_gives_student_and_teacher_the_same_augmented_inputs():
    seen = {"student": [], "teacher": []}

    class Probe(nn.Linear):
        def __init__(self, who):
            super().__init__(4, 3)
            self.who = who

        def forward(self, x):
            seen[self.who].append(x.detach().clone())
            return super().forward(x)

    torch.manual_seed(0)
    student, teacher = Probe("student"), Probe("teacher")
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    calls = []

    def augment(v):
        calls.append(v.shape)
        return v * 2.0 + 1.0

    cfg = DistillConfig(epochs=1, lr=1e-3, augment=augment, **QUIET)
    distill_(student, teacher, batches(x, y, 8), cfg)
    assert len(calls) == 2 and calls[0] == (8, 4)
    assert len(seen["student"]) == len(seen["teacher"]) == 2
    for s, t, raw in zip(seen["student"], seen["teacher"], (x[:8], x[8:])):
        torch.testing.assert_close(s, raw * 2.0 + 1.0)
        torch.testing.assert_close(t, s)
    with pytest.raises(TypeError, match="augment must be a callable"):
        DistillConfig(augment="shift")


def test_teacher_views_average_the_teachers_logits(mlp_teacher, digits):
    """The KD target is the mean of the teacher's logits over the views (one batched pass)."""
    torch.manual_seed(3)
    student = mlp(8)
    x, y = digits["x"][:100], digits["y"][:100]
    views = [x, x.flip(1), x * 0.5]
    calls = []

    def teacher_views(v):
        calls.append(v.shape)
        return [v, v.flip(1), v * 0.5]

    with torch.no_grad():
        s_logits = student(x)
        mean_logits = torch.stack([mlp_teacher(v) for v in views]).mean(0)
    expected = float(soft_kl_loss(s_logits, mean_logits, 2.0))
    plain = float(soft_kl_loss(s_logits, mlp_teacher(x).detach(), 2.0))
    cfg = DistillConfig(epochs=1, temperature=2.0, teacher_views=teacher_views, **QUIET)
    result = distill_(student, mlp_teacher, [(x, y)], cfg)
    assert calls == [(100, 64)]
    assert result.components["kd"][0] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - plain) > 1e-3  # the views changed the target
    entry = get_record(student)["passes"][-1]
    assert "teacher_views" in entry["teacher_views"]


def test_teacher_views_of_one_view_equal_plain_distillation(mlp_teacher, digits):
    data = batches(digits["x"][:300], digits["y"][:300])
    a, b = prune_hidden(mlp_teacher, 8), prune_hidden(mlp_teacher, 8)
    distill_(a, mlp_teacher, data, DistillConfig(epochs=2, seed=1, mixup=0.2, **QUIET))
    cfg = DistillConfig(epochs=2, seed=1, mixup=0.2, teacher_views=lambda v: [v], **QUIET)
    distill_(b, mlp_teacher, data, cfg)
    assert same_weights(a, b)


def test_teacher_views_with_non_tensor_inputs_and_features(cnn_teacher, digits):
    """Dict inputs go through the teacher one view at a time; feature targets use view 0."""

    class DictNet(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image)

    teacher, student = DictNet(copy.deepcopy(cnn_teacher)), DictNet(SmallCNN(8))
    x, y = digits["x"][:64], digits["y"][:64]
    seen = []
    hook = teacher.net.block2.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    cfg = DistillConfig(
        epochs=1,
        features=[("net.block2", "net.block2")],
        teacher_views=lambda d: [d, {"image": d["image"].flip(-1)}],
        **QUIET,
    )
    result = distill_(student, teacher, [({"image": x}, y)], cfg)
    hook.remove()
    # one probe pass learns the adapter widths, then one teacher pass per view
    assert seen == [64, 64, 64] and result.steps == 1 and "feature" in result.components


def test_teacher_views_misuse_raises(mlp_teacher, digits):
    data = batches(digits["x"][:100], digits["y"][:100])
    with pytest.raises(TypeError, match="teacher_views must be a callable"):
        DistillConfig(teacher_views=[1, 2])
    with pytest.raises(ValueError, match="teacher_views=None with blockwise"):
        DistillConfig(teacher_views=lambda v: [v], blockwise=True, blocks=[("0", "0")])
    bad = DistillConfig(epochs=1, teacher_views=lambda v: v, **QUIET)
    with pytest.raises(TypeError, match="non-empty list"):
        distill_(mlp(8), mlp_teacher, data, bad)
    empty = DistillConfig(epochs=1, teacher_views=lambda v: [], **QUIET)
    with pytest.raises(TypeError, match="of length 0"):
        distill_(mlp(8), mlp_teacher, data, empty)
    short = DistillConfig(epochs=1, teacher_views=lambda v: [v, v[:10]], **QUIET)
    with pytest.raises(ValueError, match=r"view 1 have shape \(10, 10\)"):
        distill_(mlp(8), mlp_teacher, data, short)
    # fine_tune_ has no teacher: the views are ignored, like alpha and temperature
    a, b = mlp(8), mlp(8)
    b.load_state_dict(a.state_dict())
    fine_tune_(a, data, DistillConfig(epochs=1, **QUIET))
    fine_tune_(b, data, DistillConfig(epochs=1, teacher_views=lambda v: [v, v], **QUIET))
    assert same_weights(a, b)


def test_max_steps_per_epoch_and_loader_without_length(mlp_teacher, digits):
    def stream():
        yield from batches(digits["x"], digits["y"], 50)

    class Reiterable:
        def __iter__(self):
            return stream()

    torch.manual_seed(0)
    cfg = DistillConfig(epochs=3, max_steps_per_epoch=5, **QUIET)
    assert fine_tune_(mlp(8), Reiterable(), cfg).steps == 15
    assert fine_tune_(mlp(8), batches(digits["x"], digits["y"], 50), cfg).steps == 15


def test_run_is_recorded_on_the_student(mlp_teacher, digits):
    torch.manual_seed(0)
    student = mlp(8)
    distill_(
        student, mlp_teacher, batches(digits["x"], digits["y"]), DistillConfig(epochs=1, **QUIET)
    )
    entry = get_record(student)["passes"][-1]
    assert entry["pass"] == "distill" and entry["epochs"] == 1 and entry["temperature"] == 4.0
    fine_tune_(student, batches(digits["x"], digits["y"]), DistillConfig(epochs=1, **QUIET))
    assert get_record(student)["passes"][-1]["pass"] == "fine_tune"


def test_progress_bars_go_to_stderr_only_when_asked(mlp_teacher, digits, capsys):
    data = batches(digits["x"][:200], digits["y"][:200])
    fine_tune_(mlp(8), data, DistillConfig(epochs=1, progress=False))
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == ""
    fine_tune_(mlp(8), data, DistillConfig(epochs=1, progress=True))
    loud = capsys.readouterr()
    assert "epoch 1/1" in loud.err and loud.out == ""


# --- block-wise ----------------------------------------------------------------------------------


def test_blockwise_changes_only_the_named_blocks(cnn_teacher, digits):
    torch.manual_seed(0)
    student = SmallCNN(8)
    before = copy.deepcopy(student.state_dict())
    cfg = DistillConfig(epochs=2, lr=1e-2, blockwise=True, blocks=[("block2", "block2")], **QUIET)
    result = distill_(student, cnn_teacher, batches(digits["x"][:400], digits["y"][:400], 50), cfg)
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("block2.") for k in changed), changed
    assert "block2.0.weight" in changed and "block2.1.running_mean" in changed
    assert set(result.adapters) == {"block2:in", "block2:out"}
    assert isinstance(result.adapters["block2:in"], nn.Conv2d)
    assert result.adapters["block2:in"].in_channels == 16  # teacher width in, student width out
    assert result.block_losses["block2"][-1] < result.block_losses["block2"][0]


def test_blocks_are_independent_sequential_parallel_and_alone_agree(cnn_teacher, digits):
    torch.manual_seed(0)
    start = SmallCNN(8)
    data = batches(digits["x"][:300], digits["y"][:300], 50)
    pairs = [("block1", "block1"), ("block2", "block2"), ("block3", "block3")]
    cfg = DistillConfig(epochs=2, lr=1e-2, blocks=pairs, **QUIET)
    sequential, parallel, alone = (copy.deepcopy(start) for _ in range(3))
    r_seq = distill_blocks_(sequential, cnn_teacher, data, cfg)
    r_par = distill_blocks_(parallel, cnn_teacher, data, cfg, parallel=True)
    distill_blocks_(alone, cnn_teacher, data, cfg, blocks=[("block2", "block2")])
    assert same_weights(sequential, parallel)
    assert r_seq.block_losses == r_par.block_losses
    assert r_seq.steps == r_par.steps == 3 * 2 * len(data)
    assert same_weights(alone.block2, sequential.block2)
    assert same_weights(alone.block1, start.block1)


def test_blockwise_through_distill_uses_mse_of_each_block(mlp_teacher, digits):
    torch.manual_seed(0)
    student = mlp(8)
    cfg = DistillConfig(epochs=3, lr=1e-2, blockwise=True, blocks=[("0", "0"), ("2", "2")], **QUIET)
    result = distill_(student, mlp_teacher, batches(digits["x"], digits["y"]), cfg)
    assert set(result.block_losses) == {"0", "2"}
    assert result.epoch_losses[-1] < result.epoch_losses[0]


# --- errors --------------------------------------------------------------------------------------


def replace_epochs(cfg: DistillConfig, epochs: int) -> DistillConfig:
    import dataclasses

    return dataclasses.replace(cfg, epochs=epochs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature > 0"),
        ({"temperature": -1.0}, "temperature > 0"),
        ({"alpha": 1.5}, "0 <= alpha <= 1"),
        ({"alpha": -0.1}, "0 <= alpha <= 1"),
        ({"epochs": -1}, "epochs >= 0"),
        ({"epochs": 2.5}, "epochs >= 0"),
        ({"lr": 0.0}, "lr > 0"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"lr_schedule": "step"}, "unknown lr_schedule"),
        ({"weight_decay": -1.0}, "weight_decay >= 0"),
        ({"feature_weight": -1.0}, "feature_weight >= 0"),
        ({"max_steps_per_epoch": 0}, "max_steps_per_epoch >= 1"),
        ({"blockwise": True}, "needs blocks"),
        ({"features": [("a",)]}, r"features\[0\]"),
        ({"blocks": "block1"}, "list of"),
        ({"blockwise": True, "blocks": [("a", "a")], "features": [("b", "b")]}, "features=()"),
        ({"mixup": -0.5}, "mixup must be >= 0"),
        ({"alpha_schedule": "linear"}, "unknown alpha_schedule"),
    ],
)
def test_bad_config_raises_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig(**kwargs)


def test_unknown_module_paths_are_named_in_the_error(mlp_teacher, digits):
    data = batches(digits["x"][:100], digits["y"][:100])
    student = mlp(8)
    with pytest.raises(ValueError, match=r"student has no module `fc9`.*config.features"):
        distill_(student, mlp_teacher, data, DistillConfig(features=[("fc9", "0")], **QUIET))
    with pytest.raises(ValueError, match=r"teacher has no module `00`.*Did you mean `0`"):
        distill_(student, mlp_teacher, data, DistillConfig(features=[("0", "00")], **QUIET))
    bad_block = DistillConfig(blockwise=True, blocks=[("0", "block9")], **QUIET)
    with pytest.raises(ValueError, match=r"teacher has no module `block9`.*config.blocks"):
        distill_(student, mlp_teacher, data, bad_block)
    assert get_record(student)["passes"] == [], "nothing may run before the paths are checked"


def test_a_named_module_the_forward_never_calls_is_an_error(mlp_teacher, digits):
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(8)
            self.unused = nn.Linear(8, 8)  # registered, but forward never calls it

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    student = WithUnused()
    cfg = DistillConfig(features=[("unused", "0")], **QUIET)
    with pytest.raises(ValueError, match="student module `unused` did not run"):
        distill_(student, mlp_teacher, batches(digits["x"][:100], digits["y"][:100]), cfg)


def test_other_misuse_raises(mlp_teacher, digits):
    data = batches(digits["x"][:100], digits["y"][:100])
    with pytest.raises(ValueError, match="same object"):
        distill_(mlp_teacher, mlp_teacher, data, DistillConfig(**QUIET))
    with pytest.raises(ValueError, match="overlap"):
        distill_blocks_(
            SmallCNN(8),
            SmallCNN(16),
            data,
            DistillConfig(**QUIET),
            [("block1", "block1"), ("block1.0", "block1.0")],
        )
    with pytest.raises(ValueError, match="no batches"):
        fine_tune_(mlp(8), [], DistillConfig(**QUIET))
    with pytest.raises(TypeError, match=r"\(inputs, targets\) pair"):
        fine_tune_(mlp(8), [digits["x"][:10]], DistillConfig(**QUIET))
    with pytest.raises(ValueError, match="targets are None"):
        fine_tune_(mlp(8), [(digits["x"][:10], None)], DistillConfig(**QUIET))
    with pytest.raises(ValueError, match="finite loss"):
        fine_tune_(
            mlp(8), [(digits["x"][:10] * float("nan"), digits["y"][:10])], DistillConfig(**QUIET)
        )


# --- torchrun ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no torch.distributed with the gloo backend",
)
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(_free_port()), str(ROOT / "tests" / "_ddp_distill_script.py"),
        str(tmp_path),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    # A new session, so that a hang kills torchrun's workers too, not just torchrun.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in 120 s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    for key in r0["state_dict"]:
        assert torch.equal(r0["state_dict"][key], r1["state_dict"][key]), key
    # 16 batches a round-robin epoch: 8 per process, 3 epochs.
    assert r0["fine_tune_steps"] == r1["fine_tune_steps"] == 24
    assert r0["distill_steps"] == 24
    assert r0["fine_tune_losses"] == r1["fine_tune_losses"]
    assert r0["fine_tune_losses"][-1] < r0["fine_tune_losses"][0]
    assert r0["distill_losses"][-1] < r0["distill_losses"][0]
    assert r0["block_losses"] == r1["block_losses"] and set(r0["block_losses"]) == {"0", "2"}
