"""Block pruning (optimizer.prune.blocks): targets reached, masks kept through training, weights
that pack into the block-sparse kernels, the record, and clear errors."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optimizer import kernels
from optimizer.graph.record import get_record
from optimizer.prune.blocks import (
    MASK_BUFFER,
    BlockPruneConfig,
    prune_blocks_,
    weight_matrix,
)
from optimizer.prune.schedules import ConstantSparsity, PolynomialDecay
from optimizer.quantize import arithmetic as ar


class MLP(nn.Module):
    """Widths that are not multiples of 16 or 4, so edge blocks are partial."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(50, 37)
        self.fc2 = nn.Linear(37, 64)
        self.head = nn.Linear(64, 10)  # N = 10 < 16: below one 16x4 block, skipped by default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 24, 1),
            nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=1, groups=24),  # depthwise: skipped
        )
        self.classifier = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _model(cls=MLP, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls()


def _blocks(mat: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(all-zero, partly-zero) bool grids of the R x C blocks of an [N, K] matrix."""
    r, c = block
    n, k = mat.shape
    br, bc = math.ceil(n / r), math.ceil(k / c)
    zero = torch.zeros(br, bc, dtype=torch.bool)
    partial = torch.zeros(br, bc, dtype=torch.bool)
    for i in range(br):
        for j in range(bc):
            tile = mat[i * r : (i + 1) * r, j * c : (j + 1) * c]
            zero[i, j] = bool((tile == 0).all())
            partial[i, j] = bool((tile == 0).any()) and not zero[i, j]
    return zero, partial


def _expected(sparsity: float, blocks: int) -> float:
    return min(math.floor(sparsity * blocks + 1e-6), blocks - 1) / blocks


@pytest.mark.parametrize("block", [(16, 4), (8, 4), (1, 4), (4, 1)], ids=lambda b: f"{b[0]}x{b[1]}")
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_uniform_sparsity_reaches_target_in_every_layer(block, sparsity):
    model = _model()
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=block, sparsity=sparsity))
    rows = sparsifier.report()
    assert [row.path for row in rows] == ["fc1", "fc2"] + (["head"] if block[0] <= 10 else [])
    for row in rows:
        mat = weight_matrix(model.get_submodule(row.path))
        zero, partial = _blocks(mat.detach(), block)
        assert row.sparsity == pytest.approx(_expected(sparsity, row.blocks))
        assert int(zero.sum()) == row.blocks - row.nonzero_blocks
        assert not partial.any(), f"{row.path}: edge blocks must be masked as a unit"
    assert sparsifier.sparsity() == {row.path: row.sparsity for row in rows}


def _spread_blocks(layer: nn.Linear, block: tuple[int, int]) -> None:
    """Gives the blocks of ``layer`` magnitudes spread over two decades."""
    r, c = block
    n, k = layer.weight.shape
    factor = 10 ** torch.empty(math.ceil(n / r), math.ceil(k / c)).uniform_(-2, 0)
    with torch.no_grad():
        layer.weight.mul_(factor.repeat_interleave(r, 0).repeat_interleave(c, 1)[:n, :k])


def test_global_ranking_reaches_overall_target_and_prunes_uneven_layers_more():
    model = _model()
    _spread_blocks(model.fc2, (8, 4))  # many fc2 blocks far below fc2's mean
    cfg = BlockPruneConfig(block=(8, 4), sparsity=0.6, global_ranking=True)
    sparsifier = prune_blocks_(model, cfg)
    rows = sparsifier.report()
    total = sum(r.blocks for r in rows)
    zero = sum(r.blocks - r.nonzero_blocks for r in rows)
    assert zero == math.floor(0.6 * total)
    by_path = sparsifier.sparsity()
    assert by_path["fc2"] > 0.6 > by_path["fc1"]


def test_global_ranking_ignores_the_scale_of_a_layer():
    masks = []
    for scale in (1.0, 100.0):
        model = _model()
        with torch.no_grad():
            model.fc1.weight.mul_(scale)  # e.g. a layer before a BatchNorm: scale means nothing
        cfg = BlockPruneConfig(block=(8, 4), sparsity=0.6, global_ranking=True)
        sparsifier = prune_blocks_(model, cfg)
        masks.append(_keep_masks(model, sparsifier.paths))
    for path in masks[0]:
        assert torch.equal(masks[0][path], masks[1][path]), path


def test_global_ranking_caps_every_layer():
    model = _model()
    with torch.no_grad():
        model.fc1.weight.mul_(1e-4)
        model.fc1.weight[0, 0] = 1.0  # one strong block, so fc1 normalises to near zero
    cfg = BlockPruneConfig(block=(1, 4), sparsity=0.9, global_ranking=True, max_layer_sparsity=0.95)
    sparsifier = prune_blocks_(model, cfg)
    for row in sparsifier.report():
        assert row.sparsity <= 0.95
    fc1 = next(r for r in sparsifier.report() if r.path == "fc1")
    assert fc1.sparsity == pytest.approx(math.floor(0.95 * fc1.blocks) / fc1.blocks)


def test_importance_l1_and_l2_rank_blocks_differently():
    layer = nn.Linear(8, 1, bias=False)
    with torch.no_grad():  # block A: one large value (l1 mean 1, rms 2); B: even (1.5 and 1.5)
        layer.weight.copy_(torch.tensor([[4.0, 0.0, 0.0, 0.0, 1.5, 1.5, 1.5, 1.5]]))
    kept = {}
    for importance in ("l1", "l2"):
        model = copy.deepcopy(layer)
        cfg = BlockPruneConfig(block=(1, 4), sparsity=0.5, importance=importance)
        prune_blocks_(model, cfg).remove()
        kept[importance] = model.weight[0].tolist()
    assert kept["l1"] == [0.0, 0.0, 0.0, 0.0, 1.5, 1.5, 1.5, 1.5]
    assert kept["l2"] == [4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "block", [(16, 4), (8, 4), (4, 4), (16, 1)], ids=lambda b: f"{b[0]}x{b[1]}"
)
def test_pruned_linears_pack_into_bsr_and_match_torch(block):
    model = _model()
    cfg = BlockPruneConfig(block=block, sparsity=0.75, filter_fn=lambda m, p: True)
    sparsifier = prune_blocks_(model, cfg)
    sparsifier.remove()
    nnz = {row.path: row.nonzero_blocks for row in sparsifier.report()}
    rng = np.random.default_rng(0)
    for path, layer in model.named_children():
        w = layer.weight.detach().numpy()
        x = rng.standard_normal((5, w.shape[1])).astype(np.float32)
        packed = kernels.PackedBsrF32(w, block=block)  # strict: refuses partly-zero blocks
        assert packed.nnz_blocks == nnz[path]
        assert packed.density == pytest.approx(1 - sparsifier.sparsity()[path])
        got = kernels.linear_f32(x, packed, layer.bias.detach().numpy())
        want = layer(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, want, atol=1e-5 * w.shape[1], err_msg=path)

        # The int8 twin: symmetric per-channel weights in [-127, 127], as the exporter writes.
        amax = np.abs(w).max(axis=1)
        scale = np.where(amax > 0, amax / 127, 1.0)
        q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
        packed_s8 = kernels.PackedBsrS8(q, block=block)
        assert packed_s8.nnz_blocks == nnz[path]
        xq = rng.integers(-128, 128, size=(5, w.shape[1]), dtype=np.int8)
        bias = rng.integers(-1000, 1000, size=w.shape[0]).astype(np.int32)
        mult, shift = ar.quantize_multiplier(np.full(w.shape[0], 1 / (64.0 * w.shape[1])))
        np.testing.assert_array_equal(
            kernels.linear_s8(xq, packed_s8, bias, 3, mult, shift, -2),
            ar.linear_s8(xq, q, bias, 3, mult, shift, -2),
            err_msg=path,
        )


def _nhwc_patches(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """im2col with K ordered (kh, kw, in): the rows the NHWC runtime multiplies by [N, K]^T."""
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    b, _, length = cols.shape
    kk = conv.kernel_size[0] * conv.kernel_size[1]
    cols = cols.reshape(b, conv.in_channels, kk, length).permute(0, 3, 2, 1)
    return cols.reshape(b * length, kk * conv.in_channels)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conv_ohwi_layout_zeroes_whole_blocks_of_the_permuted_matrix(kernel_size):
    torch.manual_seed(kernel_size)
    conv = nn.Conv2d(12, 32, kernel_size, padding=kernel_size // 2)
    block = (8, 4)
    sparsifier = prune_blocks_(conv, BlockPruneConfig(block=block, sparsity=0.7))
    sparsifier.remove()
    mat = conv.weight.detach().permute(0, 2, 3, 1).reshape(32, kernel_size**2 * 12)
    assert torch.equal(mat, weight_matrix(conv))
    zero, partial = _blocks(mat, block)
    assert not partial.any()
    assert float(zero.float().mean()) == pytest.approx(_expected(0.7, zero.numel()))
    assert get_record(conv)["block_sparsity"][""]["layout"] == "ohwi"
    if kernel_size == 3:  # K order matters: in OIHW order the zeros are not whole blocks
        _, partial_oihw = _blocks(conv.weight.detach().reshape(32, -1), block)
        assert partial_oihw.any()
    # End to end: the packed ohwi matrix times NHWC patches is the convolution.
    x = torch.randn(2, 12, 5, 5)
    packed = kernels.PackedBsrF32(mat.numpy(), block=block)
    got = kernels.linear_f32(_nhwc_patches(x, conv).numpy(), packed, conv.bias.detach().numpy())
    want = conv(x).detach().permute(0, 2, 3, 1).reshape(-1, 32).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_conv_oihw_layout_blocks_the_plain_reshape():
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 32, 3)
    prune_blocks_(conv, BlockPruneConfig(block=(8, 4), sparsity=0.5, conv_layout="oihw")).remove()
    _, partial = _blocks(conv.weight.detach().reshape(32, -1), (8, 4))
    assert not partial.any()
    assert get_record(conv)["block_sparsity"][""]["layout"] == "oihw"


def test_default_filter_takes_linear_and_dense_conv_big_enough_for_a_block():
    model = _model(CNN)
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(16, 4), sparsity=0.5))
    # features.4 is 1x1 with N = 24 >= 16; depthwise features.6 and classifier (N = 10) skipped.
    assert sparsifier.paths == ["features.0", "features.2", "features.4"]


def test_min_weights_leaves_small_layers_dense():
    model = _model(CNN)
    sizes = {
        p: m.weight.numel()
        for p, m in model.named_modules()
        if p in ("features.0", "features.2", "features.4")
    }
    cut = sorted(sizes.values())[1]  # the smallest layer falls under it, the others do not
    sparsifier = prune_blocks_(
        model, BlockPruneConfig(block=(16, 4), sparsity=0.5, min_weights=cut)
    )
    assert sparsifier.paths == sorted(p for p, n in sizes.items() if n >= cut)
    assert len(sparsifier.paths) == 2
    small = min(sizes, key=sizes.get)
    assert getattr(model.get_submodule(small), MASK_BUFFER, None) is None


def _training_loop(model, sparsifier, opt, steps, check):
    torch.manual_seed(1)
    x, y = torch.randn(32, 50), torch.randint(0, 10, (32,))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        check("after backward")
        opt.step()
        sparsifier.step()
        check("after step")


def _keep_masks(model, paths):
    return {p: getattr(model.get_submodule(p), MASK_BUFFER).clone() for p in paths}


def test_masks_fixed_between_updates_monotone_and_reach_final():
    model = _model()
    sched = PolynomialDecay(0.2, 0.8, begin_step=2, end_step=14, frequency=4, power=1)
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.8, schedule=sched))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = [_keep_masks(model, sparsifier.paths)]  # history[i]: masks after step i
    for _ in range(18):
        _training_loop(model, sparsifier, opt, 1, lambda when: None)
        history.append(_keep_masks(model, sparsifier.paths))
    assert sparsifier.step_count == 18
    for step in range(1, len(history)):
        for path, mask in history[step].items():
            before = history[step - 1][path]
            assert not (mask & ~before).any(), f"{path}: a pruned block came back at step {step}"
            if sched.should_update(step):  # 2, 6, 10, 14: the target rises by 0.2 each time
                assert (before & ~mask).any(), f"{path}: no new block pruned at step {step}"
            else:
                assert torch.equal(mask, before), f"{path}: mask changed at step {step}"
    assert sparsifier.target == 0.8
    for row in sparsifier.report():
        assert row.sparsity == pytest.approx(_expected(0.8, row.blocks))


class _NoSparsifier:
    def step(self) -> None:
        pass


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=1e-2),
    ],
    ids=["sgd_momentum", "adam"],
)
def test_pruned_weights_stay_zero_through_training(make_opt):
    model = _model()
    opt = make_opt(model.parameters())
    _training_loop(model, _NoSparsifier(), opt, 3, lambda when: None)  # momentum, Adam moments
    sched = ConstantSparsity(0.7, begin_step=0, frequency=2)
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.7, schedule=sched))

    def check(when):
        for path in sparsifier.paths:
            m = model.get_submodule(path)
            pruned = ~getattr(m, MASK_BUFFER)
            assert pruned.any()
            if when == "after backward":
                assert (m.weight.grad[pruned] == 0).all(), f"{path}: gradient in a pruned block"
            assert (m.weight[pruned] == 0).all(), f"{path}: weight in a pruned block {when}"

    _training_loop(model, sparsifier, opt, 6, check)
    # Even without sparsifier.step(), the forward pre-hook zeroes what the optimizer moved (the
    # momentum built before pruning still pushes pruned weights).
    opt.step()
    moved = [
        (model.get_submodule(p).weight[~getattr(model.get_submodule(p), MASK_BUFFER)] != 0)
        for p in sparsifier.paths
    ]
    assert any(bool(m.any()) for m in moved)
    model(torch.randn(2, 50))
    check("after a bare optimizer step and a forward")
    sparsifier.remove()
    for row in sparsifier.report():
        assert row.sparsity == pytest.approx(_expected(0.7, row.blocks))


def test_frozen_weights_are_pruned_without_a_gradient_hook():
    model = _model()
    model.fc1.requires_grad_(False)
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.5))
    model(torch.randn(2, 50)).sum().backward()
    assert model.fc1.weight.grad is None
    assert sparsifier.sparsity()["fc1"] == pytest.approx(_expected(0.5, 5 * 13))


def test_two_forwards_before_one_backward_keep_autograd_valid():
    model = _model()
    prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.5))
    x = torch.randn(4, 50)
    (model(x).sum() + model(x * 2).sum()).backward()  # no in-place write between the two
    assert model.fc1.weight.grad is not None


def test_sparsity_zero_is_noop():
    model = _model()
    original = copy.deepcopy(model)
    x = torch.randn(3, 50)
    sparsifier = prune_blocks_(model, BlockPruneConfig(sparsity=0.0))
    assert all(v == 0.0 for v in sparsifier.sparsity().values())
    torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    sparsifier.remove()
    after = model.state_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(after[key], value), key


def test_ignored_modules_are_untouched():
    model = _model()
    original = copy.deepcopy(model)
    cfg = BlockPruneConfig(block=(8, 4), sparsity=0.9, ignore=("fc1",))
    sparsifier = prune_blocks_(model, cfg)
    assert "fc1" not in sparsifier.paths and "fc2" in sparsifier.paths
    assert not hasattr(model.fc1, MASK_BUFFER) and not model.fc1._forward_pre_hooks
    assert torch.equal(model.fc1.weight, original.fc1.weight)
    sparsifier.remove()
    assert "fc1" not in get_record(model)["block_sparsity"]

    cnn = _model(CNN)  # a container path skips everything under it
    sparsifier = prune_blocks_(cnn, BlockPruneConfig(block=(8, 4), ignore=("features",)))
    assert sparsifier.paths == ["classifier"]


def test_remove_strips_hooks_and_buffers_and_restores_state_dict_keys():
    model = _model(CNN)
    keys = list(model.state_dict())
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.6))
    pruned_keys = list(model.state_dict())
    assert {k for k in pruned_keys if k not in keys} == {
        f"{p}.{MASK_BUFFER}" for p in sparsifier.paths
    }
    sparsifier.remove()
    assert list(model.state_dict()) == keys
    for _, m in model.named_modules():
        assert not m._forward_pre_hooks and MASK_BUFFER not in m._buffers
    for p in model.parameters():
        assert not p._backward_hooks
    model(torch.randn(1, 3, 8, 8)).sum().backward()  # still trains, no mask left
    with pytest.raises(RuntimeError, match=r"BlockSparsifier.step`: the masks were removed"):
        sparsifier.step()
    with pytest.raises(RuntimeError, match=r"the masks were removed"):
        sparsifier.remove()


def test_masks_are_buffers_that_save_reload_and_follow_dtype_moves():
    model = _model()
    sched = PolynomialDecay(0.3, 0.8, begin_step=0, end_step=4)
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.8, schedule=sched))
    for _ in range(2):
        sparsifier.step()
    state, position = model.state_dict(), sparsifier.state_dict()

    resumed = _model(seed=1)  # other weights, so the masks must come from the checkpoint
    again = prune_blocks_(resumed, BlockPruneConfig(block=(8, 4), sparsity=0.8, schedule=sched))
    resumed.load_state_dict(state)
    again.load_state_dict(position)
    for _ in range(3):
        sparsifier.step()
        again.step()
    for path in sparsifier.paths:
        a = getattr(model.get_submodule(path), MASK_BUFFER)
        b = getattr(resumed.get_submodule(path), MASK_BUFFER)
        assert torch.equal(a, b), path

    model.double()
    assert getattr(model.fc1, MASK_BUFFER).dtype == torch.bool
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)  # a write the pre-hook must undo before the forward
    model(torch.randn(2, 50, dtype=torch.float64))
    assert (model.fc1.weight[~getattr(model.fc1, MASK_BUFFER)] == 0).all()


def test_remove_writes_the_record():
    model = _model(CNN)
    sched = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=2)
    cfg = BlockPruneConfig(block=(8, 4), sparsity=0.5, schedule=sched)
    sparsifier = prune_blocks_(model, cfg)
    for _ in range(2):
        sparsifier.step()
    sparsifier.remove()
    record = json.loads(json.dumps(get_record(model)))  # JSON-like values only
    measured = sparsifier.sparsity()
    assert set(record["block_sparsity"]) == set(sparsifier.paths)
    for path in sparsifier.paths:
        entry = record["block_sparsity"][path]
        layout = "oi" if path == "classifier" else "ohwi"
        assert entry == {"block": [8, 4], "sparsity": measured[path], "layout": layout}
        assert entry["sparsity"] > 0.4
    (entry,) = [p for p in record["passes"] if p["pass"] == "prune_blocks"]
    assert entry["block"] == [8, 4] and entry["sparsity"] == 0.5 and entry["steps"] == 2
    assert entry["schedule"]["schedule"] == "PolynomialDecay"
    assert entry["modules"] == sparsifier.paths
    assert "total" in sparsifier.summary() and "features.2" in sparsifier.summary()


def test_plain_callable_schedule_updates_every_step():
    model = _model()
    cfg = BlockPruneConfig(block=(8, 4), sparsity=0.5, schedule=lambda step: min(0.1 * step, 0.5))
    sparsifier = prune_blocks_(model, cfg)
    seen = []
    for _ in range(6):
        sparsifier.step()
        seen.append(sparsifier.sparsity()["fc2"])
    assert seen == sorted(seen) and seen[0] > 0 and seen[-1] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"block": (0, 4)}, ValueError, r"block must be \(rows, cols\).*got \(0, 4\)"),
        ({"block": (4,)}, ValueError, r"block must be \(rows, cols\)"),
        ({"block": (300, 4)}, ValueError, r"1 <= rows, cols <= 256"),
        ({"block": (1.5, 4)}, ValueError, r"block must be"),
        ({"block": "16x4"}, ValueError, r"native_bsr_block"),
        ({"sparsity": 1.0}, ValueError, r"sparsity is out of range; expected 0 <= sparsity < 1"),
        ({"sparsity": -0.1}, ValueError, r"sparsity is out of range"),
        ({"sparsity": "0.5"}, TypeError, r"sparsity must be a number"),
        ({"importance": "l3"}, ValueError, r"unknown importance; expected one of \('l1', 'l2'\)"),
        ({"conv_layout": "nchw"}, ValueError, r"unknown conv_layout"),
        ({"ignore": "fc1"}, TypeError, r"ignore must be a tuple of module paths"),
        ({"filter_fn": 3}, TypeError, r"filter_fn must be callable"),
        ({"schedule": 0.5}, TypeError, r"schedule must be callable"),
        ({"min_weights": -1}, ValueError, r"min_weights must be >= 0"),
        ({"min_weights": 1.5}, TypeError, r"min_weights must be an int"),
        (
            {"sparsity": 0.9, "schedule": PolynomialDecay(0.0, 0.8, 0, 10)},
            ValueError,
            r"the schedule ends at sparsity 0.8 but sparsity is 0.9.*Pass sparsity=0.8",
        ),
        (
            {"sparsity": 0.99, "global_ranking": True},
            ValueError,
            r"sparsity 0.99 is above max_layer_sparsity",
        ),
    ],
)
def test_bad_config_raises_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        BlockPruneConfig(**kwargs)


def test_bad_model_inputs_raise_clear_errors():
    model = _model()
    with pytest.raises(
        ValueError, match=r"ignore path 'fc3' is not a module.*Did you mean 'fc2', 'fc1'"
    ):
        prune_blocks_(model, BlockPruneConfig(ignore=("fc3",)))
    with pytest.raises(ValueError, match=r"no module to prune"):
        prune_blocks_(model, BlockPruneConfig(block=(128, 4)))
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        prune_blocks_(object(), BlockPruneConfig())  # type: ignore[arg-type]
    cnn = _model(CNN)
    with pytest.raises(ValueError, match=r"cannot prune `features.6`: grouped conv with 24 groups"):
        prune_blocks_(cnn, BlockPruneConfig(block=(8, 4), filter_fn=lambda m, p: True))
    prune_blocks_(model, BlockPruneConfig(block=(8, 4)))
    with pytest.raises(ValueError, match=r"`fc1` already has block masks"):
        prune_blocks_(model, BlockPruneConfig(block=(8, 4)))
    tied = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    tied[1].weight = tied[0].weight
    with pytest.raises(ValueError, match=r"`1` shares its weight with `0`"):
        prune_blocks_(tied, BlockPruneConfig(block=(4, 4)))
    bad = BlockPruneConfig(block=(8, 4), sparsity=0.5, schedule=lambda step: 2)
    fresh = _model()
    keys = list(fresh.state_dict())
    with pytest.raises(ValueError, match=r"prune_blocks_`: schedule\(0\) returned 2; expected"):
        prune_blocks_(fresh, bad)
    assert list(fresh.state_dict()) == keys and not fresh.fc1._forward_pre_hooks  # left as it was
    late = BlockPruneConfig(block=(8, 4), sparsity=0.5, schedule=lambda step: 2 if step else 0.0)
    sparsifier = prune_blocks_(_model(), late)
    with pytest.raises(ValueError, match=r"BlockSparsifier.step`: schedule\(1\) returned 2"):
        sparsifier.step()


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 40),
    r=st.integers(1, 9),
    c=st.integers(1, 9),
    sparsity=st.floats(0.0, 0.95),
    global_ranking=st.booleans(),
)
def test_any_shape_gets_whole_zero_blocks_at_the_target(n, k, r, c, sparsity, global_ranking):
    torch.manual_seed(n * 41 + k)
    layer = nn.Linear(k, n, bias=False)
    cfg = BlockPruneConfig(
        block=(r, c), sparsity=sparsity, filter_fn=lambda m, p: True, global_ranking=global_ranking
    )
    sparsifier = prune_blocks_(layer, cfg)
    sparsifier.remove()
    zero, partial = _blocks(layer.weight.detach(), (r, c))
    assert not partial.any()
    assert float(zero.float().mean()) == pytest.approx(_expected(sparsity, zero.numel()))
    kernels.PackedBsrF32(layer.weight.detach().numpy(), block=(r, c))  # strict packing accepts it
