"""Compact .eom files (format 1.3): packed block-sparse codebook weights decoded at load, small
buffers on 16-byte boundaries, one zero point for every channel, no names on constants and
compact pass metadata. Every packed file must run bit-exact to the quantized module and every
corruption of the packed layout must be refused with a clear error.

The exporter now stores these weights inline (format 1.5, tests/test_eom_inline.py); this module
switches that off (``native.INLINE_WEIGHTS``) to keep testing the 1.3 tensor form, which the
runtime still reads."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from torch import nn

from optimizer import runtime
from optimizer.export import eom_fbs as fb
from optimizer.export import native
from optimizer.export.native import export_native
from tests.eom_fuzz import cpp_fuzz, mutate_and_load

TARGET = "x86_64-avx512vnni"  # BSR block (16, 4)


def _shared_block_sparse(
    n: int, k: int, seed: int, sparsity: float = 0.4, values: int = 15
) -> np.ndarray:
    """An [n, k] float matrix with whole (16, 4) blocks zero and its own 15 values (plus 0) in
    each row (so that the int8 codebook needs a table per row)."""
    rng = np.random.default_rng(seed)
    books = rng.normal(0.0, 0.05, size=(n, values)).astype(np.float32)
    mat = np.take_along_axis(books, rng.integers(0, values, size=(n, k)), axis=1)
    keep = rng.random((-(-n // 16), -(-k // 4))) >= sparsity
    mask = np.kron(keep, np.ones((16, 4)))[:n, :k]
    return (mat * mask).astype(np.float32)


def _model(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(12, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 10)
    ).eval()
    # K = 108: 27 block columns, a 54-bit block mask (2 unused bits in its last byte).
    ohwi = _shared_block_sparse(32, 3 * 3 * 12, seed)  # the exporter's K order: kh, kw, c
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(ohwi.reshape(32, 3, 3, 12)).permute(0, 3, 1, 2))
    return model, torch.randn(4, 12, 4, 4)


def _quantized(seed: int = 0):
    from optimizer.quantize.ptq import Int8Config, quantize_

    model, x = _model(seed)
    return quantize_(model, Int8Config(), calibration=[x]), x


@pytest.fixture(scope="module", autouse=True)
def tensor_form():
    """Packed weights in tensors (format 1.3), not inline (1.5), for every test here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "INLINE_WEIGHTS", False)
        yield


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    q, x = _quantized()
    path = tmp_path_factory.mktemp("compact") / "packed.eom"
    report = export_native(q, (x,), path, target=TARGET)
    return q, x, path, report


def _model_table(data: bytes) -> fb.Model:
    size = struct.unpack_from("<Q", data, 40)[0]
    return fb.Model.GetRootAs(data[64 : 64 + size], 0)


def test_packed_weight_is_chosen_and_bit_exact(packed):
    q, x, path, report = packed
    conv = next(row for row in report.layers if row["name"] == "0")
    assert conv["format"] == "bsr_codebook" and conv["bits"] == 4, report.summary()
    assert conv["per_channel"], "one int8 table per row"
    assert conv["stored_bytes"] < 0.55 * conv["dense_bytes"], conv  # codebook: 0.61
    rt = runtime.load(path)
    assert rt.metadata["edgeopt.format"] == "1.3"
    data = path.read_bytes()
    assert struct.unpack_from("<HH", data, 8) == (1, 3)
    with torch.no_grad():
        want = q(x).numpy()
    np.testing.assert_array_equal(rt.run(x.numpy()), want)
    rt.num_threads = 2
    np.testing.assert_array_equal(rt.run(x.numpy()), want)


def test_packed_file_is_smaller_than_the_int8_bsr_or_codebook_file(packed, tmp_path, monkeypatch):
    q, x, path, _ = packed
    monkeypatch.setattr(native._QLowering, "_qpacked_candidate", staticmethod(lambda m, b: None))
    plain = export_native(q, (x,), tmp_path / "plain.eom", target=TARGET)
    assert runtime.load(tmp_path / "plain.eom").metadata["edgeopt.format"] == "1.1"
    assert path.stat().st_size < plain.size_bytes - 300, (path.stat().st_size, plain.size_bytes)


def test_compact_layout_rules(packed):
    _, _, path, _ = packed
    data = path.read_bytes()
    m = _model_table(data)
    small = [m.Buffers(i) for i in range(m.BuffersLength()) if m.Buffers(i).Size() < 64]
    big = [m.Buffers(i) for i in range(m.BuffersLength()) if m.Buffers(i).Size() >= 64]
    assert small and all(b.Offset() % 16 == 0 for b in small)
    assert big and all(b.Offset() % 64 == 0 for b in big)
    assert any(b.Offset() % 64 for b in small), "small buffers pack on 16-byte boundaries"
    spans = sorted((b.Offset(), b.Offset() + b.Size()) for b in small + big)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), "buffers overlap"
    decoded = [m.Tensors(i) for i in range(m.TensorsLength()) if m.Tensors(i).Decoded()]
    assert len(decoded) == 3 and all(t.Buffer() == -1 for t in decoded), "values, row_ptr, col_idx"
    for i in range(m.TensorsLength()):
        t = m.Tensors(i)
        if i not in (m.Inputs(0), m.Outputs(0)):
            assert t.Name() is None, "only the graph inputs and outputs are named"
        q = t.Quantization()
        if q is not None and q.ScaleLength() > 1:
            assert q.ZeroPointLength() == 1, "one zero point stands for every channel"
    names = [m.Operators(i).Name() for i in range(m.OperatorsLength())]
    assert b"0" in names and b"3" in names, names


def test_compact_passes_keeps_settings_and_drops_traces():
    passes = [
        {"pass": "distill", "epochs": 3, "lr": 2e-4, "final_loss": 0.08, "steps": 66, "seed": 0},
        {"pass": "fine_tune", "epochs": 2},
        {"pass": "distill_blocks", "epochs": 1},
        {"pass": "share_weights", "clusters": 16, "modules": ["a"], "alpha_schedule": None},
        {"pass": "prune_blocks", "block": [16, 4], "sparsity": 0.5, "importance": "l1"},
        {"pass": "quantize_int8", "per_channel": True, "kept_float": [], "observer": "minmax"},
        {"pass": "something_new", "x": 1},
    ]
    text = native._compact_passes(passes)
    assert text == (
        '[{"pass":"share_weights","clusters":16},'
        '{"pass":"prune_blocks","block":[16,4],"sparsity":0.5},'
        '{"pass":"quantize_int8","per_channel":true},{"pass":"something_new"}]'
    )
    assert passes[0]["final_loss"] == 0.08, "the input is not modified"


def test_pack_flat_packs_low_bits_first_without_row_padding():
    got = native._pack_flat(np.array([[1, 2, 3], [4, 5, 6]], np.uint8), 4)
    assert got.tolist() == [0x21, 0x43, 0x65]
    assert native._pack_flat(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1).tolist() == [0x0D, 0x01]
    # 3 bits: a little-endian bit stream, the third index spans bytes 0 and 1.
    assert native._pack_flat(np.array([1, 2, 7]), 3).tolist() == [0xD1, 0x01]


def _export_mutated(tmp_path, monkeypatch, mutate) -> bytes:
    """The packed model exported with ``mutate(writer, weight_dict)`` applied before the
    FlatBuffer is written (so the file is well-formed apart from the mutation)."""
    q, x = _quantized()
    finish = native.EomWriter.finish

    def patched(self, *args, **kwargs):
        weight = next(
            op["weight"] for op in self.operators if op["weight"] and "table" in op["weight"]
        )
        mutate(self, weight)
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(native.EomWriter, "finish", patched)
    export_native(q, (x,), tmp_path / "bad.eom", target=TARGET)
    return (tmp_path / "bad.eom").read_bytes()


def _mask_byte(w, weight, index, value):
    """Sets byte ``index`` of the block mask."""
    buf = w.tensors[weight["block_mask"]]["buffer"]
    raw = bytearray(w._chunks[buf])
    raw[index] = value(raw[index])
    w._chunks[buf] = bytes(raw)


def _second_linear_shares_values(w, weight):
    other = next(op for op in w.operators if op["weight"] and "table" not in op["weight"])
    other["weight"] = dict(weight)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda w, wt: wt.update(bits=9), "bits must be 1 to 8"),
        (lambda w, wt: wt.update(table=wt["row_ptr"]), "weight.table .* must be int8"),
        (lambda w, wt: wt.update(indices=wt["col_idx"]), "weight.indices .* must be uint8"),
        (lambda w, wt: wt.update(format=fb.WeightFormat.CODEBOOK), "only used by a BSR weight"),
        (lambda w, wt: wt.update(bits=0, table=-1), "marked decoded but no packed BSR weight"),
        (lambda w, wt: w.tensors[wt["values"]].update(decoded=False), "per-tensor quantization"),
        (lambda w, wt: w.tensors[wt["values"]].update(buffer=0), "a decoded tensor has no buffer"),
        (lambda w, wt: w.tensors[wt["values"]].update(dtype=2), "must be int8 with"),
        (lambda w, wt: w.tensors[wt["values"]].update(dtype=0), "a decoded tensor must be int8"),
        (lambda w, wt: w.tensors[wt["values"]].update(shape=(1, 16, 4)), "must be int8 with"),
        (lambda w, wt: wt.update(per_channel_table=False), "weight.table .* elements"),
        (_second_linear_shares_values, "decoded by another weight"),
        (lambda w, wt: _mask_byte(w, wt, -1, lambda b: b | 0x80), "sets bits past the 54 blocks"),
        (lambda w, wt: _mask_byte(w, wt, 0, lambda b: b ^ 0x01), "weight.col_idx .* elements"),
        (lambda w, wt: wt.update(block=[16, 8]), "weight.block_mask .* must have 4 elements"),
        (lambda w, wt: w.tensors[wt["row_ptr"]].update(decoded=False), "marked `decoded`"),
        (lambda w, wt: wt.update(col_idx=wt["row_ptr"]), "col_idx .* must be int32 with"),
        (lambda w, wt: wt.update(block_mask=-1), "weight.row_ptr .* must be a constant"),
    ],
)
def test_corrupted_packed_weights_are_refused(tmp_path, monkeypatch, mutate, match):
    data = _export_mutated(tmp_path, monkeypatch, mutate)
    with pytest.raises(ValueError, match=match):
        runtime.loads(data)


def test_fuzzed_packed_files_give_value_error_or_load(packed):
    """Random byte mutations of the packed file (model table and data section, checksum made
    valid again) raise ValueError or load a model that runs."""
    _, x, path, _ = packed
    refused = mutate_and_load(path.read_bytes(), x.numpy(), seed=13)
    assert refused > 100, refused


def test_cpp_fuzz_of_the_packed_file(packed):
    _, _, path, _ = packed
    cpp_fuzz(path)


def test_one_column_blocks_pack_a_linear_whose_pruned_columns_are_scattered(tmp_path):
    """Whole pruned (16, 1) column pieces that never fill a (16, 4) block (the columns of a
    Linear after an NHWC flatten) still pack, with a block mask of one bit per column piece."""
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 32)).eval()
    rng = np.random.default_rng(1)
    w = _shared_block_sparse(32, 64, 1, sparsity=0.0)
    for rows in (slice(0, 16), slice(16, 32)):
        w[rows, np.arange(rng.integers(0, 4), 64, 4)] = 0.0  # every 4th column: no (16, 4) block
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w))
    x = torch.randn(3, 64)
    q = quantize_(model, Int8Config(), calibration=[x])
    report = export_native(q, (x,), tmp_path / "m.eom", target=TARGET)
    row = report.layers[0]
    assert row["format"] == "bsr_codebook" and row["block"] == [16, 1], report.summary()
    with torch.no_grad():
        np.testing.assert_array_equal(runtime.load(tmp_path / "m.eom").run(x.numpy()), q(x).numpy())


def test_rows_of_eight_values_pack_at_three_bits(tmp_path):
    """Packed weights take any index width (the loader decodes them): 7 values and 0 per row
    are 3-bit indices, which span byte boundaries."""
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(100, 40)).eval()  # 40 rows: a partial second block row
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(_shared_block_sparse(40, 100, 2, values=7)))
    x = torch.randn(3, 100)
    q = quantize_(model, Int8Config(), calibration=[x])
    report = export_native(q, (x,), tmp_path / "m.eom", target=TARGET)
    row = report.layers[0]
    assert row["format"] == "bsr_codebook" and row["bits"] == 3, report.summary()
    with torch.no_grad():
        np.testing.assert_array_equal(runtime.load(tmp_path / "m.eom").run(x.numpy()), q(x).numpy())


def test_pruned_blocks_take_no_codebook_entry(tmp_path):
    """Eight shared values and the zeros of pruned blocks: the packed table holds only the
    values of the stored blocks, so the indices are 3-bit (zero would make nine: 4-bit)."""
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 32)).eval()
    rng = np.random.default_rng(3)
    book = np.array([-0.8, -0.5, -0.3, -0.1, 0.1, 0.2, 0.4, 1.0], np.float32)
    keep = rng.random((2, 16)) >= 0.5  # (16, 4) blocks
    w = book[rng.integers(0, 8, size=(32, 64))] * np.kron(keep, np.ones((16, 4)))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w.astype(np.float32)))
    x = torch.randn(3, 64)
    q = quantize_(model, Int8Config(per_channel=False), calibration=[x])
    assert len(np.unique(q.get_submodule("0").weight_int8.numpy())) == 9, "8 values and 0"
    report = export_native(q, (x,), tmp_path / "m.eom", target=TARGET)
    row = report.layers[0]
    assert row["format"] == "bsr_codebook" and row["bits"] == 3, report.summary()
    with torch.no_grad():
        np.testing.assert_array_equal(runtime.load(tmp_path / "m.eom").run(x.numpy()), q(x).numpy())


def test_shared_conv_with_batchnorm_keeps_one_int8_table(tmp_path):
    """Weight sharing then BatchNorm folding scales each channel's codebook differently; int8
    ranges of |bn factor| * max|codebook| give every channel the same int8 values, so the file
    stores one table per layer, not one per channel."""
    import optimizer
    from optimizer.quantize.observers import shared_weight_amax
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)  # positive factors: one table up to sign
        model[1].running_var.uniform_(0.5, 2.0)
    optimizer.share_weights_(model, optimizer.WeightShareConfig(clusters=16, method="optimal"))
    x = torch.randn(4, 8, 6, 6)
    q = quantize_(model, Int8Config(), calibration=[x])
    w8 = q.get_submodule("0").weight_int8.numpy()
    assert len(np.unique(w8)) <= 16, np.unique(w8)
    report = export_native(q, (x,), tmp_path / "m.eom", target=TARGET)
    row = report.layers[0]
    assert row["format"] in ("codebook", "bsr_codebook") and not row["per_channel"], row
    with torch.no_grad():
        np.testing.assert_array_equal(runtime.load(tmp_path / "m.eom").run(x.numpy()), q(x).numpy())
    # A weight that is not shared (or a small layer's distinct values) keeps per-channel ranges.
    assert shared_weight_amax(torch.randn(10, 16)) is None
    assert shared_weight_amax(torch.randn(64, 64)) is None


def test_small_constants_fill_the_padding_before_a_64_byte_boundary():
    w = native.EomWriter()
    big = w.add_constant("a", np.arange(100, dtype=np.uint8))  # 28 bytes of padding after it
    small = w.add_constant("b", np.arange(4, dtype=np.int32))  # 16 bytes: fits the hole
    last = w.add_constant("c", np.arange(64, dtype=np.uint8))
    x = w.add_tensor("x", (1,))
    offsets = {}
    for version in (native.FORMAT_VERSION_INT8, native.FORMAT_VERSION_PACKED):
        data = w.finish([x], [x], version=version)
        m = _model_table(data)
        offsets[version] = [m.Buffers(m.Tensors(t).Buffer()).Offset() for t in (big, small, last)]
    assert offsets[native.FORMAT_VERSION_INT8] == [0, 128, 192], "1.1: every buffer 64-aligned"
    assert offsets[native.FORMAT_VERSION_PACKED] == [0, 112, 128], "1.3: the hole at 112"
