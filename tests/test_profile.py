"""Tests of optimizer.graph.profile (MACs, parameters, reports) and of the test model zoo."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from optimizer.graph.attention import MultiheadSelfAttention
from optimizer.graph.profile import compare, count_macs, count_params, layer_stats
from tests.zoo import ZOO, ZOO_EXPECT

CNNS = ["vgg", "resnet_basic", "resnet_bottleneck", "mobilenetv2", "efficientnet", "densenet"]
CNNS += ["yolo_c2f"]


def _macs_by_path(model: nn.Module, inputs) -> dict[str, int]:
    return {s.path: s.macs for s in layer_stats(model, inputs)}


# --------------------------------------------------------------------------- hand-computed MACs


def test_conv_macs_are_outputs_times_inputs_times_kernel():
    conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
    # output [2, 16, 16, 16] = 8192 elements, each 3 * 3 * 3 multiply-accumulates
    assert count_macs(conv, torch.randn(2, 3, 32, 32)) == 8192 * 27


def test_grouped_conv_macs_divide_inputs_by_groups():
    conv = nn.Conv2d(16, 32, 3, padding=1, groups=4)
    # output [2, 32, 8, 8] = 4096 elements, each sees 16 / 4 = 4 channels x 9 taps
    assert count_macs(conv, torch.randn(2, 16, 8, 8)) == 4096 * 4 * 9


def test_depthwise_conv_macs_are_one_channel_per_output():
    conv = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
    assert count_macs(conv, torch.randn(1, 24, 5, 5)) == 24 * 25 * 9


def test_conv1d_and_transposed_conv_macs():
    assert count_macs(nn.Conv1d(8, 16, 5), torch.randn(2, 8, 20)) == 2 * 16 * 16 * 8 * 5
    # transposed: every input element is scattered to out_channels x kernel outputs
    deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
    assert count_macs(deconv, torch.randn(1, 8, 3, 3)) == 8 * 9 * 4 * 4


def test_linear_macs_count_every_row_of_a_sequence_input():
    fc = nn.Linear(64, 32)
    assert count_macs(fc, torch.randn(2, 10, 64)) == 2 * 10 * 32 * 64


def test_multihead_attention_macs_are_projections_plus_two_matmuls():
    b, t, e, h = 2, 10, 64, 4
    mha = nn.MultiheadAttention(e, h, batch_first=True)
    x = torch.randn(b, t, e)
    projections = 4 * b * t * e * e  # q, k, v, out
    matmuls = 2 * b * h * t * t * (e // h)  # q k^T and attn v
    assert count_macs(mha, (x, x, x)) == projections + matmuls


def test_multihead_attention_macs_with_sequence_first_inputs():
    mha = nn.MultiheadAttention(32, 2)
    x = torch.randn(6, 3, 32)  # [T, B, E]
    assert count_macs(mha, (x, x, x)) == 4 * 3 * 6 * 32 * 32 + 2 * 3 * 2 * 6 * 6 * 16


def test_self_attention_counts_matmuls_on_parent_and_projections_on_children():
    b, t, e, h = 2, 10, 64, 4
    mha = nn.MultiheadAttention(e, h, batch_first=True)
    msa = MultiheadSelfAttention.from_torch(mha)
    x = torch.randn(b, t, e)
    macs = _macs_by_path(msa, x)
    assert macs[""] == 2 * b * h * t * t * (e // h)
    assert macs["q_proj"] == macs["k_proj"] == macs["v_proj"] == macs["out_proj"] == b * t * e * e
    assert count_macs(msa, x) == count_macs(mha, (x, x, x))


def test_self_attention_with_fewer_heads_counts_fewer_macs():
    msa = MultiheadSelfAttention(64, 2, head_dim=16)  # 2 of 4 heads left
    x = torch.randn(2, 10, 64)
    inner = 2 * 16
    expected = 4 * 2 * 10 * 64 * inner + 2 * 2 * 2 * 10 * 10 * 16
    assert count_macs(msa, x) == expected
    (row,) = [s for s in layer_stats(msa, x) if s.path == ""]
    assert (row.in_channels, row.out_channels, row.heads) == (64, inner, 2)


def test_embeddings_and_norms_count_no_macs_but_their_parameters():
    model = nn.Sequential(nn.Embedding(100, 16), nn.LayerNorm(16))
    stats = layer_stats(model, torch.randint(0, 100, (2, 5)))
    assert [(s.kind, s.params, s.macs) for s in stats] == [
        ("Embedding", 1600, 0),
        ("LayerNorm", 32, 0),
    ]


def test_module_called_twice_counts_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(self.fc(x))

    assert count_macs(Twice(), torch.randn(1, 8)) == 2 * 64


# --------------------------------------------------------------------------- side effects


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_hooks_with_kwargs) for m in model.modules())


def test_hooks_are_removed_afterwards():
    model, inputs = ZOO["transformer"]()
    before = _hook_count(model)
    layer_stats(model, inputs)
    assert _hook_count(model) == before == 0


def test_hooks_are_removed_and_modes_restored_when_forward_raises():
    model, _ = ZOO["vgg"]()
    model.train()
    with pytest.raises(RuntimeError):
        layer_stats(model, torch.randn(1, 5, 32, 32))  # wrong channel count
    assert _hook_count(model) == 0
    assert all(m.training for m in model.modules())


def test_profiling_leaves_batchnorm_statistics_and_mode_unchanged():
    model, inputs = ZOO["resnet_basic"]()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    layer_stats(model, inputs)
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_non_module_raises_type_error():
    with pytest.raises(TypeError, match="layer_stats: `model` must be a torch.nn.Module"):
        layer_stats(lambda x: x, torch.ones(1))


# --------------------------------------------------------------------------- zoo-wide


@pytest.mark.parametrize("name", sorted(ZOO))
def test_layer_params_add_up_to_model_params(name):
    model, inputs = ZOO[name]()
    stats = layer_stats(model, inputs)
    assert sum(s.params for s in stats) == count_params(model)
    assert count_macs(model, inputs) > 0


@pytest.mark.parametrize("name", CNNS + ["mlp"])
def test_conv_and_linear_macs_match_torch_pruning_without_bias(name):
    """torch_pruning counts ``MACs + bias adds`` per conv/linear; ours are the MACs alone."""
    tp = pytest.importorskip("torch_pruning", reason="torch-pruning is the peer counter")
    model, inputs = ZOO[name]()
    _, _, tp_layer, _ = tp.utils.count_ops_and_params(model, inputs, layer_wise=True)
    modules = dict(model.named_modules())
    checked = 0
    for s in layer_stats(model, inputs):
        m = modules[s.path]
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        expected = tp_layer[m]
        if m.bias is not None and isinstance(m, nn.Conv2d):
            expected -= s.macs // (
                (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            )
        elif m.bias is not None:
            expected -= m.out_features  # torch_pruning adds the bias once per linear call
        assert s.macs == expected, s.path
        checked += 1
    assert checked >= 3


def test_attention_macs_match_torch_pruning_without_scaling_softmax_and_bias():
    """torch_pruning also counts the 1/sqrt(d) scaling, softmax and bias adds of attention."""
    tp = pytest.importorskip("torch_pruning", reason="torch-pruning is the peer counter")
    b, t, e, h = 2, 10, 64, 4
    mha = nn.MultiheadAttention(e, h, batch_first=True)
    x = torch.randn(b, t, e)
    _, _, tp_layer, _ = tp.utils.count_ops_and_params(mha, (x, x, x), layer_wise=True)
    extra = b * (t * e + 3 * t * e + h * t * t + t * e)  # scaling, in-proj bias, softmax, out bias
    assert count_macs(mha, (x, x, x)) == tp_layer[mha] - extra


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_traces_with_fx_and_matches_eager(name):
    model, inputs = ZOO[name]()
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(*inputs), model(*inputs))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_factory_is_deterministic_and_in_eval_mode(name):
    (m1, x1), (m2, x2) = ZOO[name](), ZOO[name]()
    assert not m1.training
    assert all(torch.equal(a, b) for a, b in zip(x1, x2))
    with torch.no_grad():
        assert torch.equal(m1(*x1), m2(*x2))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_hidden_widths_are_multiples_of_eight(name):
    model, _ = ZOO[name]()
    assert ZOO_EXPECT[name]["prunable"]
    for path, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            widths = [m.out_channels] + ([m.in_channels] if m.in_channels != 3 else [])
        elif isinstance(m, nn.Linear):
            widths = [m.in_features]
        else:
            continue
        assert all(w % 8 == 0 for w in widths), (path, widths)


# --------------------------------------------------------------------------- reports


def test_compare_reports_channels_params_macs_and_totals():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1))
    x = torch.randn(1, 3, 4, 4)
    before = layer_stats(model, x)
    model[0], model[2] = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
    report = compare(before, layer_stats(model, x))
    first = report.rows[0]
    assert (first.channels_before, first.channels_after) == ((3, 16), (3, 8))
    assert (first.macs_before, first.macs_after) == (16 * 16 * 27, 16 * 8 * 27)
    assert report.params_before == 448 + 136
    assert report.params_after == 224 + 72
    assert report.macs_ratio == pytest.approx(
        (16 * 16 * 27 + 16 * 8 * 16) / (16 * 8 * 27 + 16 * 64)
    )
    text = str(report)
    assert "| `0` | Conv2d | 3, 16 -> 3, 8 |" in text
    assert "**total**" in text and "x fewer" in text
    assert text == report.to_markdown()


def test_compare_marks_removed_and_added_layers():
    x = torch.randn(1, 8)
    before = layer_stats(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)), x)
    after = layer_stats(nn.Sequential(nn.Linear(8, 8), nn.Identity(), nn.Linear(8, 2)), x)
    report = compare(before, after)
    removed = next(r for r in report.rows if r.path == "1")
    assert removed.channels_after is None and removed.params_after == 0
    assert "| `1` | Linear | 8, 8 -> - |" in report.to_markdown()
    added = compare(after, before)
    assert [r.path for r in added.rows] == ["0", "1", "2"]


def test_compare_folds_self_attention_projections_into_the_attention_row():
    mha = nn.MultiheadAttention(64, 4, batch_first=True)
    x = torch.randn(2, 10, 64)

    class Wrap(nn.Module):
        def __init__(self, attn):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            return self.attn(x, x, x)[0]

    before = layer_stats(Wrap(mha), x)
    after = layer_stats(Wrap(MultiheadSelfAttention.from_torch(mha)), x)
    report = compare(before, after)
    assert [r.path for r in report.rows] == ["attn"]
    (row,) = report.rows
    assert row.kind == "MultiheadAttention -> MultiheadSelfAttention"
    assert (row.params_before, row.macs_before) == (row.params_after, row.macs_after)
    assert "(4 heads)" in report.to_markdown()


def test_compare_of_identical_models_has_ratio_one_and_no_arrows():
    model, inputs = ZOO["mobilenetv2"]()
    stats = layer_stats(model, inputs)
    report = compare(stats, layer_stats(model, inputs))
    assert report.params_ratio == report.macs_ratio == 1.0
    table = report.to_markdown().split("\n\n")[0]
    assert "->" not in table
    assert report.to_dict()["macs_before"] == count_macs(model, inputs)
