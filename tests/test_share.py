"""Weight sharing (optimizer.share): the 1-D clustering on its own (exact optimum vs brute force
and k-means), at most k values per layer/channel with zeros kept, fine-tuning that keeps weights
shared, codebooks that run bit-exact in the int8 kernels, the record, and clear errors."""

from __future__ import annotations

import copy
import functools
import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from optimizer import kernels
from optimizer.distill.core import DistillConfig, fine_tune_
from optimizer.graph.record import get_record
from optimizer.prune.blocks import BlockPruneConfig, prune_blocks_
from optimizer.prune.channels import ChannelPruneConfig, prune_channels_
from optimizer.prune.plan import load, save
from optimizer.quantize import arithmetic as ar
from optimizer.share import (
    ShareReport,
    WeightShareConfig,
    bits_for,
    codebook,
    codebook_of,
    codebook_s8,
    codebooks,
    kernel_matrix,
    share_weights_,
)
from optimizer.share import cluster as C
from tests.zoo import ZOO

METHODS = ("kmeans++", "linear", "density", "optimal")


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 48)
        self.fc2 = nn.Linear(48, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.conv1d = nn.Conv1d(4, 8, 3)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(F.relu(self.conv2(F.relu(self.bn(self.conv1(x))))))
        return self.fc(y.mean(dim=(2, 3)))


def _made(cls: type, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls().eval()


def _distinct_per_row(mat: np.ndarray) -> np.ndarray:
    s = np.sort(mat, axis=1)
    return (s[:, 1:] != s[:, :-1]).sum(axis=1) + 1


def _assert_shared(module: nn.Module, k: int, per_channel: bool, zeros: torch.Tensor | None):
    mat = kernel_matrix(module.weight.detach()).numpy()
    if per_channel:
        assert _distinct_per_row(mat).max() <= k
    else:
        assert np.unique(mat).size <= k
    if zeros is not None:
        assert torch.all(module.weight.detach()[zeros] == 0)


def _brute_sse(x: np.ndarray, k: int, w: np.ndarray) -> float:
    order = np.argsort(x)
    xs, ws = x[order], w[order]
    n, best = len(xs), np.inf
    for used in range(1, min(k, n) + 1):
        for cuts in itertools.combinations(range(1, n), used - 1):
            edges = [0, *cuts, n]
            total = 0.0
            for a, b in zip(edges[:-1], edges[1:]):
                xx, ww = xs[a:b], ws[a:b]
                if ww.sum() > 0:
                    total += float((ww * (xx - (ww * xx).sum() / ww.sum()) ** 2).sum())
            best = min(best, total)
    return best


# --- 1-D clustering -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(-20, 20), min_size=1, max_size=8),
    st.integers(1, 4),
    st.one_of(st.none(), st.lists(st.integers(0, 3), min_size=8, max_size=8)),
)
def test_optimal_kmeans_equals_brute_force_on_tiny_inputs(values, k, weights):
    x = np.array(values, np.float64) / 7.0  # repeated values and non-dyadic fractions
    w = None if weights is None else np.array(weights[: len(values)], np.float64)
    if w is not None and w.sum() == 0:
        w[0] = 1.0
    got = C.optimal_kmeans_1d(x, k, weights=w)
    ww = np.ones_like(x) if w is None else w
    assert C.sse(x, got.centres, got.labels, ww) == pytest.approx(_brute_sse(x, k, ww), abs=1e-9)
    assert got.centres.size <= k and np.all(np.diff(got.centres) > 0)


@pytest.mark.parametrize("dist", ["normal", "t3", "bimodal", "discrete"])
@pytest.mark.parametrize("k", [2, 5, 16])
def test_optimal_sse_is_at_most_kmeans_sse_on_random_data(dist, k):
    rng = np.random.default_rng(k)
    x = {
        "normal": lambda: rng.normal(size=3000),
        "t3": lambda: rng.standard_t(3, size=3000),
        "bimodal": lambda: np.r_[rng.normal(-2, 0.3, 1500), rng.normal(1, 0.1, 1500)],
        "discrete": lambda: rng.integers(-9, 9, size=3000) / 3.0,
    }[dist]()
    best = C.optimal_kmeans_1d(x, k)
    opt = C.sse(x, best.centres, best.labels)
    for init in C.INITS:
        for seed in range(3):
            km = C.kmeans_1d(x, k, init=init, seed=seed)
            assert opt <= C.sse(x, km.centres, km.labels) * (1 + 1e-12) + 1e-12, (init, seed)


def test_optimal_on_binned_long_input_is_within_a_millionth_of_exact():
    x = np.random.default_rng(0).standard_t(4, size=20_000)  # heavy tails: lone outliers
    exact = C.optimal_kmeans_1d(x, 12, max_points=100_000)
    binned = C.optimal_kmeans_1d(x, 12, max_points=2048)
    e, b = C.sse(x, exact.centres, exact.labels), C.sse(x, binned.centres, binned.labels)
    assert e <= b * (1 + 1e-12) and b <= e * (1 + 1e-6)


def test_linear_and_density_inits_follow_deep_compression():
    x = np.random.default_rng(1).normal(size=1001)
    np.testing.assert_allclose(
        C.init_centres(x, 5, "linear"), np.linspace(x.min(), x.max(), 5), rtol=0, atol=1e-12
    )
    # Density: evenly spaced levels (j + 1/2) / k of the empirical CDF.
    dens = C.init_centres(x, 4, "density")
    np.testing.assert_allclose(dens, np.sort(x)[[125, 375, 625, 875]], atol=1e-12)
    pp = C.init_centres(x, 6, "kmeans++", seed=3)
    assert np.all(np.isin(np.round(pp, 12), np.round(x, 12)))  # centres are data points
    np.testing.assert_array_equal(pp, C.init_centres(x, 6, "kmeans++", seed=3))


@pytest.mark.parametrize("method", METHODS)
def test_fewer_distinct_values_than_k_are_kept_exactly(method):
    x = np.array([0.5, -1.0, 0.5, 2.0, -1.0, 0.5])
    centres, labels = C.cluster_rows(x[None], 8, method=method)
    np.testing.assert_array_equal(centres[0][labels[0]], x)
    assert np.isnan(centres[0][3:]).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=60),
    st.integers(2, 9),
    st.sampled_from(METHODS),
)
def test_every_point_is_labelled_with_its_nearest_centre(values, k, method):
    x = np.array(values)
    centres, labels = C.cluster_rows(x[None], k, method=method)
    c = centres[0][~np.isnan(centres[0])]
    d = np.abs(x[:, None] - c[None, :])
    chosen = d[np.arange(x.size), labels[0]]
    assert np.all(chosen <= d.min(axis=1) + 1e-9 * (1 + np.abs(x)))
    assert c.size <= k and np.all(np.diff(c) > 0)


@pytest.mark.parametrize("method", ["linear", "density", "optimal"])
def test_rows_are_clustered_independently_of_the_batch(method):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 300)) * rng.uniform(0.1, 3, size=(6, 1))
    valid = rng.random(x.shape) > 0.3
    centres, labels = C.cluster_rows(x, 7, valid=valid, method=method)
    for r in range(6):
        c1, l1 = C.cluster_rows(x[r : r + 1], 7, valid=valid[r : r + 1], method=method)
        np.testing.assert_allclose(centres[r], c1[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(labels[r], l1[0])
    assert np.all(labels[~valid] == -1) and np.all(labels[valid] >= 0)


def test_clustering_rejects_bad_input():
    with pytest.raises(ValueError, match="k is out of range"):
        C.kmeans_1d([1.0, 2.0], 0)
    with pytest.raises(ValueError, match=r"x\[1\]=nan"):
        C.optimal_kmeans_1d([1.0, float("nan")], 2)
    with pytest.raises(ValueError, match="unknown init"):
        C.kmeans_1d([1.0, 2.0], 2, init="random")
    with pytest.raises(ValueError, match="unknown method"):
        C.cluster_rows(np.ones((1, 3)), 2, method="spectral")


# --- share_weights_ -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("per_channel", [False, True])
def test_zoo_layers_hold_at_most_k_values_and_still_run(name, per_channel):
    model, inputs = ZOO[name]()
    report = share_weights_(model, WeightShareConfig(clusters=16, per_channel=per_channel))
    report.remove()
    for path in report.paths:
        _assert_shared(model.get_submodule(path), 16, per_channel, None)
    assert torch.isfinite(model(*inputs)).all()
    assert max(r.rel_error for r in report.rows) < 0.02  # 16 values: ~0.4 % of the energy


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(2, 20),
    st.booleans(),
    st.sampled_from(METHODS),
    st.floats(0.0, 0.9),
    st.integers(0, 2**16),
)
def test_any_k_leaves_at_most_k_values_including_zero(k, per_channel, method, sparsity, seed):
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(40, 12)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(12, 40, generator=gen))
        layer.weight[torch.rand(12, 40, generator=gen) < sparsity] = 0
        layer.weight[3] = 0  # an all-zero channel
    zeros = layer.weight.detach() == 0
    model = nn.Sequential(layer)
    cfg = WeightShareConfig(clusters=k, per_channel=per_channel, method=method, seed=seed)
    share_weights_(model, cfg).remove()
    _assert_shared(layer, k, per_channel, zeros)


def test_optimal_method_has_the_least_error_per_layer():
    base = _made(MLP)
    errors = {}
    for method in METHODS:
        model = copy.deepcopy(base)
        rep = share_weights_(model, WeightShareConfig(clusters=8, method=method))
        errors[method] = {r.path: r.rel_error for r in rep.rows}
    for path, best in errors["optimal"].items():
        for method in METHODS:
            assert best <= errors[method][path] * (1 + 1e-9), (path, method)


@pytest.mark.parametrize("method", METHODS)
def test_sharing_a_shared_model_again_changes_nothing(method):
    model = _made(MLP)
    cfg = WeightShareConfig(clusters=6, per_channel=True, method=method)
    share_weights_(model, cfg).remove()
    before = copy.deepcopy(model.state_dict())
    share_weights_(model, cfg).remove()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_record_state_dict_and_report():
    model = _made(CNN)
    keys = list(model.state_dict())
    cfg = WeightShareConfig(clusters=4, per_channel=True, method="density", ignore=("fc",))
    report = share_weights_(model, cfg)
    assert isinstance(report, ShareReport)
    assert list(model.state_dict()) == keys  # nothing added, even while hooks are live
    rec = get_record(model)
    assert set(rec["weight_sharing"]) == {"conv1", "conv2", "dw", "conv1d"}
    assert rec["weight_sharing"]["conv2"] == {
        "clusters": 4,
        "per_channel": True,
        "bits": 2,
        "method": "density",
        "keep_zeros": True,
        "layout": "ohwi",
    }
    assert rec["weight_sharing"]["conv1d"]["layout"] == "ohi"
    assert rec["passes"][-1]["pass"] == "share_weights"
    assert rec["passes"][-1]["modules"] == report.paths
    json.dumps(rec)  # JSON-like values only
    row = report.rows[report.paths.index("conv2")]
    assert row.shape == (24, 16 * 9) and row.bits == 2 and row.distinct <= 4
    assert "conv2" in report.summary() and "hooks live" in repr(report)
    report.remove()
    assert "removed" in repr(report)
    assert all(not model.get_submodule(p)._forward_pre_hooks for p in report.paths)
    assert list(model.state_dict()) == keys
    with pytest.raises(RuntimeError, match="removed"):
        report.remove()


@pytest.mark.parametrize("k,bits", [(2, 2), (4, 2), (5, 4), (16, 4), (17, 8), (256, 8)])
def test_bits_follow_k(k, bits):
    assert bits_for(k) == bits == WeightShareConfig(clusters=k).bits


# --- Codebooks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
def test_codebook_rebuilds_the_weight_in_kernel_order(per_channel):
    model = _made(CNN)
    share_weights_(model, WeightShareConfig(clusters=8, per_channel=per_channel)).remove()
    for path in ("conv2", "fc", "conv1d", "dw"):
        m = model.get_submodule(path)
        idx, table = codebook(m)
        w = m.weight.detach()
        expect = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.ndim == 4 else None
        mat = kernel_matrix(w).numpy()
        if expect is not None:
            np.testing.assert_array_equal(mat, expect.numpy())
        assert idx.dtype == np.uint8 and idx.shape == mat.shape
        assert table.dtype == np.float32
        if per_channel:
            assert table.shape == (mat.shape[0], 8)
            np.testing.assert_array_equal(np.take_along_axis(table, idx.astype(np.int64), 1), mat)
        else:
            assert table.shape == (8,)
            np.testing.assert_array_equal(table[idx], mat)


def test_float_codebook_kernel_matches_dense_matmul():
    model = _made(MLP)
    share_weights_(model, WeightShareConfig(clusters=16, method="optimal")).remove()
    idx, table = codebook(model.fc1)
    packed = kernels.PackedCodebookF32(idx, table, bits=4)
    x = np.random.default_rng(0).normal(size=(3, 20)).astype(np.float32)
    bias = model.fc1.bias.detach().numpy()
    got = kernels.linear_f32(x, packed, bias)
    np.testing.assert_allclose(got, model.fc1(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def _requant(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bias = rng.integers(-2000, 2000, size=n).astype(np.int32)
    mult, shift = ar.quantize_multiplier(rng.uniform(0.001, 0.01, size=n))
    return bias, mult, shift


@pytest.mark.parametrize("per_channel_share", [False, True])
@pytest.mark.parametrize("per_channel_scale", [False, True])
@pytest.mark.parametrize("k", [4, 16])
def test_int8_keeps_at_most_k_values_and_codebook_kernel_is_bit_exact(
    per_channel_share, per_channel_scale, k
):
    model = _made(CNN, seed=k)
    with torch.no_grad():
        model.conv2.weight[:, :4] = 0  # pruned input channels stay zero through int8
    share_weights_(model, WeightShareConfig(clusters=k, per_channel=per_channel_share)).remove()
    rng = np.random.default_rng(k)
    for path in ("conv2", "fc", "conv1"):
        m = model.get_submodule(path)
        w = kernel_matrix(m.weight.detach()).numpy()
        n, kk = w.shape
        if per_channel_scale:
            scale = np.abs(w).max(axis=1).astype(np.float64) / 127  # reference per channel
            q = ar.quantize(w, scale[:, None], 0)
        else:
            scale = np.float64(np.abs(w).max() / 127)
            q = ar.quantize(w, float(scale), 0)
        assert _distinct_per_row(q).max() <= k  # every channel, in every combination
        if not per_channel_share and not per_channel_scale:
            assert np.unique(q).size <= k  # one table, one scale: the whole layer
        assert np.all(q[w == 0] == 0)
        idx, table, bits = codebook_s8(m, scale)
        assert bits == bits_for(k) and table.dtype == np.int8
        if per_channel_scale or per_channel_share:
            assert table.shape == (n, 1 << bits)
            np.testing.assert_array_equal(np.take_along_axis(table, idx.astype(np.int64), 1), q)
        else:
            assert table.shape == (1 << bits,)
            np.testing.assert_array_equal(table[idx], q)
        packed = kernels.PackedCodebookS8(idx, table, bits=bits)
        x = rng.integers(-128, 128, size=(5, kk), dtype=np.int8)
        bias, mult, shift = _requant(n, k)
        ref = ar.linear_s8(x, q, bias, -3, mult, shift, 5)
        np.testing.assert_array_equal(kernels.linear_s8(x, packed, bias, -3, mult, shift, 5), ref)
        dense = kernels.PackedLinearS8(q)
        np.testing.assert_array_equal(kernels.linear_s8(x, dense, bias, -3, mult, shift, 5), ref)
        # The same codebook from the int8 matrix itself (what an exporter holding q does).
        i2, t2 = codebook_of(q, per_channel=True, entries=1 << bits)
        np.testing.assert_array_equal(np.take_along_axis(t2, i2.astype(np.int64), 1), q)


def test_codebooks_of_a_saved_and_loaded_model(tmp_path):
    model = _made(MLP)
    share_weights_(model, WeightShareConfig(clusters=6, per_channel=True)).remove()
    save(model, tmp_path / "shared.pt")
    loaded = load(tmp_path / "shared.pt", build_fn=lambda: _made(MLP, seed=1))
    assert "_edgeopt_share" not in loaded.fc1.__dict__  # only the record travels
    books = codebooks(loaded)
    assert set(books) == {"fc1", "fc2", "head"}
    idx, table = books["fc2"]
    assert table.shape == (32, 6)
    np.testing.assert_array_equal(
        np.take_along_axis(table, idx.astype(np.int64), 1), loaded.fc2.weight.detach().numpy()
    )


# --- Fine-tuning ----------------------------------------------------------------------------------


def _task(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=g)
    y = (x[:, :5] * torch.arange(1, 6)).argmax(dim=1)
    return x, y


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    """A briefly trained MLP: sharing is applied to trained models and fine-tuning recovers."""
    model = _made(MLP)
    x, y = _task()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
        lambda p: torch.optim.Adam(p, lr=3e-3, weight_decay=1e-4),
        lambda p: torch.optim.AdamW(p, lr=3e-3, foreach=False),
    ],
    ids=["sgd", "adam", "adamw"],
)
@pytest.mark.parametrize("per_channel", [False, True])
def test_fine_tuning_keeps_weights_shared_zeros_zero_and_lowers_the_loss(make_opt, per_channel):
    model = _made(MLP)
    model.load_state_dict(_trained_state())
    with torch.no_grad():
        model.fc1.weight[model.fc1.weight.abs() < 0.05] = 0  # a pruned layer
    zeros = {n: m.weight.detach() == 0 for n, m in model.named_children()}
    k = 4  # coarse enough that sharing costs accuracy for fine-tuning to win back
    report = share_weights_(model, WeightShareConfig(clusters=k, per_channel=per_channel))
    x, y = _task()
    opt = make_opt(model.parameters())
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        report.apply_()  # the forward pre-hook does this too; check the weights as they stand
        for name, m in model.named_children():
            _assert_shared(m, k, per_channel, zeros[name])
    assert losses[-1] < 0.8 * losses[0]
    keys = list(model.state_dict())
    report.remove()
    assert list(model.state_dict()) == keys
    for name, m in model.named_children():
        _assert_shared(m, k, per_channel, zeros[name])


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_gradients_are_pooled_per_cluster(pooling):
    model = _made(MLP)
    cfg = WeightShareConfig(clusters=5, grad_pooling=pooling)
    share_weights_(model, cfg).remove()
    plain = _made(MLP, seed=1)  # the same shared weights, no hooks: the raw gradient
    plain.load_state_dict(model.state_dict())
    report = share_weights_(model, cfg)  # the same clusters again (sharing is idempotent)
    x, y = _task(1)
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    w = model.fc2.weight.detach()
    raw = plain.fc2.weight.grad
    for value in torch.unique(w):
        members = w == value
        pooled = raw[members].sum() / (members.sum() if pooling == "mean" else 1)
        torch.testing.assert_close(
            model.fc2.weight.grad[members], pooled.expand(int(members.sum()))
        )
    report.remove()


def test_forward_snaps_weights_that_drifted_back_to_their_cluster():
    model = _made(MLP)
    report = share_weights_(model, WeightShareConfig(clusters=5))
    w = model.fc1.weight
    zero_before = w.detach() == 0
    with torch.no_grad():
        w.add_(torch.randn_like(w) * 1e-6)  # what rounding in an optimizer could do
    model(torch.randn(2, 20))
    _assert_shared(model.fc1, 5, False, zero_before)
    report.remove()
    with torch.no_grad():
        w.add_(1e-3 * torch.randn_like(w))
    model(torch.randn(2, 20))
    assert np.unique(w.detach().numpy()).size > 5  # hooks gone: a plain module again


def test_distillation_loop_keeps_sharing():
    model = _made(MLP)
    report = share_weights_(model, WeightShareConfig(clusters=4, per_channel=True))
    x, y = _task(2)
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    fine_tune_(model, data, DistillConfig(epochs=2, lr=1e-2, progress=False, weight_decay=1e-3))
    report.remove()
    for m in model.children():
        _assert_shared(m, 4, True, None)


# --- With pruning ---------------------------------------------------------------------------------


def test_sharing_after_block_pruning_keeps_every_zero_block():
    model = _made(MLP)
    prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.75)).remove()
    zero = model.fc1.weight.detach() == 0
    assert zero.float().mean() >= 0.7
    report = share_weights_(model, WeightShareConfig(clusters=16, per_channel=True))
    report.remove()
    torch.testing.assert_close(model.fc1.weight.detach() == 0, zero)  # zeros exactly where
    assert get_record(model)["block_sparsity"]["fc1"]["sparsity"] >= 0.7
    packed = kernels.PackedBsrS8(
        ar.quantize(model.fc1.weight.detach().numpy(), 0.01, 0), block=(8, 4)
    )
    assert packed.density <= 0.3


def test_sharing_after_channel_pruning():
    model, inputs = ZOO["resnet_basic"]()
    prune_channels_(model, inputs, ChannelPruneConfig(ratio=0.5))
    report = share_weights_(model, WeightShareConfig(clusters=16, method="optimal"))
    report.remove()
    for path in report.paths:
        _assert_shared(model.get_submodule(path), 16, False, None)
    assert torch.isfinite(model(*inputs)).all()
    assert len(get_record(model)["plan"]) > 0 and len(get_record(model)["weight_sharing"]) > 0


def test_keep_zeros_false_clusters_zeros_like_any_value():
    layer = nn.Linear(64, 16)
    with torch.no_grad():
        layer.weight[:, ::2] = 0
    model = nn.Sequential(layer)
    share_weights_(model, WeightShareConfig(clusters=3, keep_zeros=False)).remove()
    assert np.unique(layer.weight.detach().numpy()).size <= 3


# --- Size -----------------------------------------------------------------------------------------


def test_a_3mb_model_is_shared_to_at_most_k_values_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(  # 750k float32 weights, 3 MB
        nn.Conv2d(3, 64, 3),
        nn.Conv2d(64, 128, 3),
        nn.Conv2d(128, 256, 3),
        nn.Flatten(),
        nn.Linear(256, 512),
        nn.Linear(512, 256),
    )
    assert 2.5e6 < 4 * sum(p.numel() for p in model.parameters()) < 3.5e6
    share_weights_(model, WeightShareConfig(clusters=16)).remove()
    # Speed is measured by hand (about 0.5 s on 2 cores, see the PR note), never asserted here.
    for layer in model:
        if hasattr(layer, "weight"):
            assert np.unique(layer.weight.detach().numpy()).size <= 16


# --- Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 0, -3, 257, 1000])
def test_clusters_out_of_range_is_a_value_error_naming_it(k):
    with pytest.raises(ValueError, match=rf"2 <= clusters <= 256.*got {k}\b"):
        WeightShareConfig(clusters=k)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"clusters": 2.5}, TypeError, "clusters must be an int"),
        ({"clusters": True}, TypeError, "clusters must be an int"),
        ({"method": "kmeans"}, ValueError, "unknown method"),
        ({"grad_pooling": "max"}, ValueError, "unknown grad_pooling"),
        ({"per_channel": 1}, TypeError, "per_channel must be a bool"),
        ({"ignore": "fc"}, TypeError, "ignore must be a tuple"),
        ({"filter_fn": 3}, TypeError, "filter_fn must be callable"),
        ({"max_iter": 0}, ValueError, "max_iter is out of range"),
    ],
)
def test_bad_config_is_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        WeightShareConfig(**kwargs)


def test_unsupported_module_selected_by_filter_fn_is_a_value_error():
    model = _made(CNN)
    with pytest.raises(ValueError, match=r"`bn`: unsupported module type BatchNorm2d"):
        share_weights_(model, WeightShareConfig(filter_fn=lambda m, path: True))
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"`0`: unsupported module type Embedding"):
        share_weights_(emb, WeightShareConfig(filter_fn=lambda m, path: True))
    assert "weight_sharing" not in get_record(model)  # nothing changed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight_is_a_value_error_naming_path_and_value(bad):
    model = _made(MLP)
    with torch.no_grad():
        model.fc2.weight[3, 7] = bad
    before = model.fc1.weight.detach().clone()
    with pytest.raises(ValueError, match=rf"`fc2.weight` has a non-finite value {bad}.*\[3, 7\]"):
        share_weights_(model, WeightShareConfig())
    torch.testing.assert_close(model.fc1.weight.detach(), before)  # checked before any change


def test_other_refusals():
    model = _made(MLP)
    with pytest.raises(ValueError, match="ignore path 'fc3'.*Did you mean .*'fc1'"):
        share_weights_(model, WeightShareConfig(ignore=("fc3",)))
    with pytest.raises(ValueError, match="no module to share"):
        share_weights_(model, WeightShareConfig(ignore=("fc1", "fc2", "head")))
    with pytest.raises(TypeError, match="config must be a WeightShareConfig"):
        share_weights_(model, {"clusters": 16})
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(8, 4), sparsity=0.5))
    with pytest.raises(ValueError, match="`fc1` still has block-pruning masks"):
        share_weights_(model, WeightShareConfig())
    sparsifier.remove()
    report = share_weights_(model, WeightShareConfig())
    with pytest.raises(ValueError, match="`fc1` is already shared with live hooks"):
        share_weights_(model, WeightShareConfig())
    report.remove()
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    with pytest.raises(ValueError, match="`1` shares its weight with `0`"):
        share_weights_(tied, WeightShareConfig())
    with pytest.raises(ValueError, match="lazy module"):
        share_weights_(nn.Sequential(nn.LazyLinear(3)), WeightShareConfig())


def test_codebook_refusals():
    dense = nn.Linear(30, 8)
    with pytest.raises(ValueError, match="240 distinct values in the matrix; expected at most 16"):
        codebook(dense, clusters=16)
    with pytest.raises(ValueError, match="unsupported module type BatchNorm1d"):
        codebook(nn.BatchNorm1d(3))
    model = _made(MLP)
    share_weights_(model, WeightShareConfig(clusters=16)).remove()
    with pytest.raises(ValueError, match=r"expected shape \(\) or \(48,\), got \(5,\)"):
        codebook_s8(model.fc1, np.ones(5))
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        codebook_s8(model.fc1, 0.0)
    with pytest.raises(ValueError, match="must be 2-D"):
        codebook_of(np.zeros(3))


def test_bn_folding_of_a_model_with_live_sharing_hooks_keeps_its_function():
    """Folding BatchNorm into a shared conv (hooks still live) must not re-snap the folded
    weights to the clusters, which span channels the fold scales differently."""
    from optimizer.quantize.fold import float_graph

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)
    )
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].running_mean.normal_()
    model.eval()
    share_weights_(model, WeightShareConfig(clusters=4))  # hooks live (no .remove())
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = model(x)
        got = float_graph(model, (x,))(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
