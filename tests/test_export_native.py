"""export_native + the C++ runtime: float parity with PyTorch on the zoo, weight formats (dense,
block-sparse, codebook), the NCHW/NHWC boundary, fusion, and refusals before anything is written;
int8 (the GraphModule of optimizer.quantize_) bit-exact on the zoo CNNs and the digits models,
with BSR / codebook int8 weights for block-pruned / shared models.

The zoo ``transformer`` (nn.Embedding on token ids as GATHER, nn.MultiheadAttention lowered to
LINEAR / BATCH_MATMUL / SOFTMAX) is covered at the end of this file and in
tests/test_native_attention.py; attention masks are still refused, with the module path named.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optimizer
from optimizer import runtime
from optimizer.export.native import export_native
from tests.zoo import ZOO

COVERED = [
    "vgg",
    "resnet_basic",
    "resnet_bottleneck",
    "mobilenetv2",
    "efficientnet",
    "densenet",
    "yolo_c2f",
    "mlp",
]


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    # fp32 sums in another order: tolerance scaled by the output's magnitude.
    scale = float(np.abs(want).max()) + 1e-6
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * scale, err_msg=what)


def _torch(model: nn.Module, inputs: tuple) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(*inputs).numpy()


def _export_run(model, inputs, path, **kw):
    report = export_native(model, inputs, path, **kw)
    rt = runtime.load(path)
    return report, rt, rt.run(*[x.numpy() for x in inputs])


@pytest.mark.parametrize("name", COVERED)
def test_zoo_float_parity_with_pytorch(name, tmp_path):
    model, inputs = ZOO[name]()
    report, rt, y = _export_run(model, inputs, tmp_path / f"{name}.eom")
    _close(y, _torch(model, inputs), name)
    assert report.size_bytes == (tmp_path / f"{name}.eom").stat().st_size
    assert all(layer["kernel"] for layer in rt.layers), "every layer names its kernel after a run"
    rt.num_threads = 2
    np.testing.assert_array_equal(rt.run(*[x.numpy() for x in inputs]), y)


class _MaskedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.register_buffer("mask", torch.triu(torch.ones(4, 4, dtype=torch.bool), 1))

    def forward(self, x):
        return self.attn(x, x, x, attn_mask=self.mask)[0]


def test_attention_mask_is_refused_naming_the_module(tmp_path):
    target = tmp_path / "t.eom"
    with pytest.raises(ValueError) as err:
        export_native(_MaskedAttention().eval(), (torch.randn(1, 4, 16),), target)
    msg = str(err.value)
    assert "nothing was written" in msg and "attn_mask" in msg, msg
    assert "`attn` (MultiheadAttention)" in msg, msg
    assert not target.exists()


def test_failed_export_leaves_an_existing_file_untouched(tmp_path):
    path = tmp_path / "m.eom"
    path.write_bytes(b"old")
    model = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4))
    with pytest.raises(ValueError, match=r"`1` \(LSTM\)"):
        export_native(model, (torch.randn(1, 4),), path)
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path], "no temporary file is left behind"


class _Ops(nn.Module):
    """Conv geometry and the non-CNN ops: dilation, 'same', grouped, channel multiplier,
    ceil-mode max pool, average pool without padding counted, upsample, softmax, layer norm,
    GELU, mean, matmul, split by sizes, scalar arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding="same", dilation=2)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
        self.c = nn.Conv2d(8, 16, 3, padding=1, groups=8)  # depthwise, channel multiplier 2
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 16)
        self.bn = nn.BatchNorm1d(16)

    def forward(self, x):
        x = F.gelu(self.a(x)) * 0.5 + 1.0
        x = torch.sigmoid(self.b(x)) / 2.0
        x = self.avg(F.hardswish(self.c(x)))
        x = F.interpolate(self.pool(x), scale_factor=2, mode="nearest")
        s = torch.softmax(x, dim=1)
        t = x.mean((2, 3), keepdim=True) + s
        u, v = torch.split(t, [6, 10], dim=1)
        t = torch.cat([v, u], 1)
        seq = t.flatten(2)  # [N, 16, HW]
        seq = self.ln(seq.reshape(seq.shape[0], 16, -1).mean(2, keepdim=True).reshape(-1, 1, 16))
        att = torch.matmul(seq.reshape(-1, 4, 4), seq.reshape(-1, 4, 4))
        return self.bn(self.fc(F.gelu(att.reshape(-1, 16), approximate="tanh"))) - 0.25


def test_op_coverage_parity(tmp_path):
    torch.manual_seed(0)
    model = _Ops().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    inputs = (torch.randn(2, 4, 13, 11),)
    report, rt, y = _export_run(model, inputs, tmp_path / "ops.eom")
    _close(y, _torch(model, inputs), "ops")
    for op in ("upsample_nearest", "softmax", "layer_norm", "batch_matmul", "split", "mean"):
        assert op in report.ops, report.ops


def test_image_outputs_and_inputs_keep_pytorch_layout(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(1, 3, 6, 7)
    report, rt, y = _export_run(model, (x,), tmp_path / "img.eom")
    assert rt.inputs[0]["shape"] == (1, 3, 6, 7) and rt.outputs[0]["shape"] == (1, 5, 6, 7)
    _close(y, _torch(model, (x,)), "image")
    assert report.fused == ["1"], "the ReLU runs inside the conv"
    assert report.ops == {"transpose": 2, "conv2d": 1}


def test_flatten_into_linear_permutes_weight_columns_not_activations(tmp_path):
    model, inputs = ZOO["vgg"]()
    report, _, _ = _export_run(model, inputs, tmp_path / "vgg.eom")
    assert report.ops["transpose"] == 1, "only the input is transposed; flatten feeds the linear"


def test_block_pruned_mlp_is_stored_as_bsr_and_matches(tmp_path):
    model, inputs = ZOO["mlp"]()
    dense = export_native(model, inputs, tmp_path / "dense.eom")
    sp = optimizer.prune_blocks_(model, optimizer.BlockPruneConfig(block=(8, 4), sparsity=0.75))
    sp.remove()
    report, rt, y = _export_run(model, inputs, tmp_path / "bsr.eom")
    _close(y, _torch(model, inputs), "block-pruned mlp")
    formats = {row["name"]: row["format"] for row in report.layers}
    assert "bsr" in formats.values(), formats
    assert report.size_bytes < 0.6 * dense.size_bytes
    kernels = [layer["kernel"] for layer in rt.layers if layer["op"] == "linear"]
    assert any("bsrgemm" in k for k in kernels), kernels


def test_live_block_masks_are_stripped_and_kept_as_zeros(tmp_path):
    model, inputs = ZOO["mlp"]()
    optimizer.prune_blocks_(model, optimizer.BlockPruneConfig(block=(8, 4), sparsity=0.5))
    want = _torch(model, inputs)  # the pre-hook applies the masks
    report, _, y = _export_run(model, inputs, tmp_path / "live.eom")
    _close(y, want, "masked mlp")
    assert any(row["format"] == "bsr" for row in report.layers)
    assert any(hasattr(m, "weight_block_mask") for m in model.modules()), "model left as it was"


def test_block_pruned_convs_are_bsr_in_ohwi_order(tmp_path):
    model, inputs = ZOO["resnet_basic"]()
    sp = optimizer.prune_blocks_(model, optimizer.BlockPruneConfig(block=(8, 4), sparsity=0.7))
    sp.remove()
    report, _, y = _export_run(model, inputs, tmp_path / "rb.eom")
    _close(y, _torch(model, inputs), "block-pruned resnet")
    convs = [row for row in report.layers if row["op"] == "conv2d"]
    assert sum(row["format"] == "bsr" for row in convs) >= len(convs) // 2, report.summary()


def test_channel_pruned_model_gives_a_smaller_file(tmp_path):
    model, inputs = ZOO["mobilenetv2"]()
    before = export_native(model, inputs, tmp_path / "a.eom").size_bytes
    optimizer.prune_channels_(model, inputs, optimizer.ChannelPruneConfig(ratio=0.5))
    report, _, y = _export_run(model, inputs, tmp_path / "b.eom")
    _close(y, _torch(model, inputs), "channel-pruned mobilenetv2")
    assert report.size_bytes < 0.7 * before


def test_shared_weights_are_stored_as_codebooks(tmp_path):
    model, inputs = ZOO["mlp"]()
    optimizer.share_weights_(model, optimizer.WeightShareConfig(clusters=16))
    report, rt, y = _export_run(model, inputs, tmp_path / "cb.eom")
    _close(y, _torch(model, inputs), "shared mlp")
    rows = [row for row in report.layers if row["format"] == "codebook"]
    assert rows and all(row["bits"] == 4 for row in rows), report.layers
    assert any("cbgemm" in layer["kernel"] for layer in rt.layers)


def test_target_is_recorded_in_metadata(tmp_path):
    model, inputs = ZOO["mlp"]()
    export_native(model, inputs, tmp_path / "m.eom", target="rpi5")
    meta = runtime.load(tmp_path / "m.eom").metadata
    assert meta["edgeopt.target"] == "rpi5" and meta["edgeopt.format"] == "1.0", "float: 1.0"


def test_bad_arguments_raise_clear_errors(tmp_path):
    model, inputs = ZOO["mlp"]()
    with pytest.raises(TypeError, match="nn.Module"):
        export_native("model", inputs, tmp_path / "x.eom")
    with pytest.raises(TypeError, match="example_inputs"):
        export_native(model, "x", tmp_path / "x.eom")
    with pytest.raises(ValueError, match="NaN"):
        export_native(model, (torch.full((2, 64), float("nan")),), tmp_path / "x.eom")
    with torch.no_grad():
        model.out.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="out.weight"):
        export_native(model, inputs, tmp_path / "x.eom")


# -- int8 (format 1.1): the GraphModule of optimizer.quantize_, bit-exact ------------------------

INT8_COVERED = [
    "vgg",
    "resnet_basic",
    "resnet_bottleneck",
    "mobilenetv2",
    "efficientnet",
    "densenet",
    "yolo_c2f",  # int8 split, upsample, concat, max pool
    "mlp",
]
# resnet_bottleneck's middle block uses GroupNorm, which has no int8 kernel: kept in float, it is
# a float island (DEQUANTIZE, float GroupNorm and ReLU, QUANTIZE) inside the int8 graph.
_KEEP_FLOAT = {"resnet_bottleneck": ["blocks.1.bn1", "blocks.1.bn2", "blocks.1.bn3"]}


def _quantize(model, inputs, keep_float=()):
    from optimizer.quantize.ptq import Int8Config, quantize_

    return quantize_(model, Int8Config(keep_float=list(keep_float)), calibration=[inputs[0]])


def _int8_parity(q, inputs, path):
    """Exports ``q``, runs it natively and returns (report, runtime, output), asserting the
    output equals the quantized GraphModule's bit for bit (the dequantized floats of the same
    int8 values)."""
    report = export_native(q, inputs, path)
    rt = runtime.load(path)
    y = rt.run(*[x.numpy() for x in inputs])
    with torch.no_grad():
        want = q(*inputs).numpy()
    np.testing.assert_array_equal(y, want, err_msg=str(path))
    return report, rt, y


@pytest.mark.parametrize("name", INT8_COVERED)
def test_zoo_int8_is_bit_exact_to_the_quantized_module(name, tmp_path):
    model, inputs = ZOO[name]()
    q = _quantize(model, inputs, _KEEP_FLOAT.get(name, ()))
    report, rt, y = _int8_parity(q, inputs, tmp_path / f"{name}.eom")
    assert report.ops["quantize"] >= 1 and report.ops["dequantize"] >= 1, report.ops
    assert rt.metadata["edgeopt.format"] == "1.1"
    assert all(layer["kernel"] for layer in rt.layers), "every layer names its kernel after a run"
    convs = [layer["kernel"] for layer in rt.layers if layer["op"] in ("conv2d", "linear")]
    assert convs and all(k.startswith(("s8_", "im2col+s8_")) for k in convs), convs
    rt.num_threads = 2
    np.testing.assert_array_equal(rt.run(*[x.numpy() for x in inputs]), y)
    if name == "resnet_bottleneck":
        assert report.ops["group_norm"] == 3 and report.ops["quantize"] == 4, report.ops
    if name == "efficientnet":
        assert report.ops["lut"] >= 4 and report.ops["mul"] == 3, report.ops
    if name == "densenet":
        assert report.ops["concat"] >= 1, report.ops
    if name == "yolo_c2f":
        assert report.ops["split"] >= 1 and report.ops["upsample_nearest"] == 1, report.ops


def test_int8_file_is_about_a_quarter_of_the_float_file(tmp_path):
    model, inputs = ZOO["vgg"]()
    fp32 = export_native(model, inputs, tmp_path / "f.eom").size_bytes
    report = export_native(_quantize(model, inputs), inputs, tmp_path / "q.eom")
    assert report.size_bytes < 0.35 * fp32, (report.size_bytes, fp32)
    assert all(row["format"] == "dense" for row in report.layers), report.summary()


@pytest.mark.parametrize("name", sorted(["vgg", "resnet", "mobilenetv2", "mlp"]))
def test_digits_int8_is_bit_exact(name, tmp_path):
    from optimizer.examples import digits

    train, _ = digits.loaders(64, 0)
    calib = [x for x, _ in list(train)[:2]]
    model = digits.pretrained(name).eval()
    q = _quantize(model, (calib[0],))
    for batch in (1, 16):
        x = (calib[1][:batch],)
        _int8_parity(q, x, tmp_path / f"{name}_{batch}.eom")


def test_channel_pruned_int8_is_exact_and_smaller(tmp_path):
    model, inputs = ZOO["mobilenetv2"]()
    before = export_native(_quantize(model, inputs), inputs, tmp_path / "a.eom").size_bytes
    optimizer.prune_channels_(model, inputs, optimizer.ChannelPruneConfig(ratio=0.5))
    report, _, _ = _int8_parity(_quantize(model, inputs), inputs, tmp_path / "b.eom")
    assert report.size_bytes < 0.7 * before


def test_block_pruned_int8_is_stored_as_bsr(tmp_path):
    model, inputs = ZOO["mlp"]()
    dense = export_native(_quantize(model, inputs), inputs, tmp_path / "d.eom")
    sp = optimizer.prune_blocks_(model, optimizer.BlockPruneConfig(block=(8, 4), sparsity=0.75))
    sp.remove()
    report, rt, _ = _int8_parity(_quantize(model, inputs), inputs, tmp_path / "bsr.eom")
    assert any(row["format"] == "bsr" and row["block"] == [8, 4] for row in report.layers), (
        report.summary()
    )
    assert report.size_bytes < 0.6 * dense.size_bytes
    kernels = [layer["kernel"] for layer in rt.layers if layer["op"] == "linear"]
    assert any(k.startswith("s8_bsrgemm_b8x4") for k in kernels), kernels


def test_block_pruned_int8_convs_are_bsr(tmp_path):
    model, inputs = ZOO["resnet_basic"]()
    sp = optimizer.prune_blocks_(model, optimizer.BlockPruneConfig(block=(8, 4), sparsity=0.7))
    sp.remove()
    report, _, _ = _int8_parity(_quantize(model, inputs), inputs, tmp_path / "rb.eom")
    convs = [row for row in report.layers if row["op"] == "conv2d"]
    assert sum(row["format"] == "bsr" for row in convs) >= len(convs) // 2, report.summary()


def test_shared_int8_is_stored_as_codebooks(tmp_path):
    model, inputs = ZOO["mlp"]()
    dense = export_native(_quantize(model, inputs), inputs, tmp_path / "d.eom")
    optimizer.share_weights_(model, optimizer.WeightShareConfig(clusters=16))
    report, rt, _ = _int8_parity(_quantize(model, inputs), inputs, tmp_path / "cb.eom")
    rows = [row for row in report.layers if row["format"] == "codebook"]
    assert rows and all(row["bits"] == 4 for row in rows), report.summary()
    # A tiny MLP: per-channel tables (16 bytes a row) weigh against 4-bit indices.
    assert sum(row["stored_bytes"] for row in rows) <= 0.75 * sum(r["dense_bytes"] for r in rows)
    assert report.size_bytes < dense.size_bytes
    assert any("s8_cbgemm_i4" in layer["kernel"] for layer in rt.layers), rt.layers


def test_pruned_shared_int8_file_is_much_smaller_than_dense_int8(tmp_path):
    model, inputs = ZOO["vgg"]()
    dense = export_native(_quantize(model, inputs), inputs, tmp_path / "d.eom")
    sp = optimizer.prune_blocks_(model, optimizer.BlockPruneConfig(block=(8, 4), sparsity=0.75))
    sp.remove()
    optimizer.share_weights_(model, optimizer.WeightShareConfig(clusters=16))
    report, _, _ = _int8_parity(_quantize(model, inputs), inputs, tmp_path / "ps.eom")
    assert report.size_bytes < 0.55 * dense.size_bytes, (report.size_bytes, dense.size_bytes)
    # Every layer keeps only its stored blocks; with one shared int8 table per layer
    # (codebook-aware scales) the packed block-sparse codebook is the smallest.
    assert all(row["format"] in ("bsr", "bsr_codebook") for row in report.layers), report.summary()
    assert any(row["format"] == "bsr_codebook" for row in report.layers), report.summary()


def test_pruned_shared_int8_weights_inline_save_bytes_with_the_same_outputs(tmp_path, monkeypatch):
    """Format 1.5: the compact file of a block-pruned shared VGG stores its weights inline
    (no tensor, buffer or BufferRef per weight): smaller than the 1.3 tensor form, same outputs."""
    from optimizer.export import native

    model, inputs = ZOO["vgg"]()
    sp = optimizer.prune_blocks_(model, optimizer.BlockPruneConfig(block=(8, 4), sparsity=0.75))
    sp.remove()
    optimizer.share_weights_(model, optimizer.WeightShareConfig(clusters=16))
    q = _quantize(model, inputs)
    report, rt, y = _int8_parity(q, inputs, tmp_path / "inline.eom")
    assert rt.metadata["edgeopt.format"] == "1.5"
    monkeypatch.setattr(native, "INLINE_WEIGHTS", False)
    old = export_native(q, inputs, tmp_path / "tensors.eom")
    old_rt = runtime.load(tmp_path / "tensors.eom")
    assert old_rt.metadata["edgeopt.format"] == "1.3"
    np.testing.assert_array_equal(old_rt.run(*[x.numpy() for x in inputs]), y)
    layers = len(report.layers)
    saved = old.size_bytes - report.size_bytes
    print(f"vgg: {report.size_bytes} bytes inline, {old.size_bytes} in tensors ({saved} saved)")
    assert saved >= 100 * layers, (report.size_bytes, old.size_bytes, layers)


def test_int8_modules_outside_a_graph_module_are_refused(tmp_path):
    from optimizer.quantize.modules import QLinear, QuantStub

    model = nn.Sequential(QuantStub(0.1, 0), QLinear.from_float(nn.Linear(4, 2), 0.1, 0, 0.1, 0))
    with pytest.raises(TypeError, match="GraphModule that optimizer.quantize_ returns"):
        export_native(model, (torch.randn(1, 4),), tmp_path / "x.eom")
    assert not (tmp_path / "x.eom").exists()


# -- transformer: nn.Embedding as GATHER on int32 ids, attention as LINEAR / BATCH_MATMUL / SOFTMAX


def _transformer_parity(model, inputs, path):
    report = export_native(model, inputs, path)
    rt = runtime.load(path)
    assert rt.inputs[0]["dtype"] == np.int32 and rt.metadata["edgeopt.format"] == "1.2"
    assert report.ops["gather"] == 1 and report.ops["softmax"] == 2, report.ops
    ids = inputs[0].numpy().astype(np.int32)
    y = rt.run(ids)
    want = _torch(model, inputs)
    _close(y, want, "transformer")
    rt.num_threads = 2
    np.testing.assert_array_equal(rt.run(ids), y)
    return y, want


def test_transformer_float_parity_with_pytorch(tmp_path):
    model, inputs = ZOO["transformer"]()
    _transformer_parity(model, inputs, tmp_path / "t.eom")


def test_pruned_heads_transformer_parity_with_pytorch(tmp_path):
    from optimizer.graph.attention import MultiheadSelfAttention

    model, inputs = ZOO["transformer"]()
    optimizer.prune_channels_(model, inputs, optimizer.ChannelPruneConfig(ratio=0.5))
    attn = model.layers[0].attn
    assert isinstance(attn, MultiheadSelfAttention) and attn.num_heads < 4
    _transformer_parity(model, inputs, tmp_path / "p.eom")
