"""Inline int8 weights (format 1.5): compact files carry their packed block-sparse codebook, int8
block-sparse and codebook weights (and those operators' int32 biases) as vectors of the Weight
table instead of constant tensors. Every such file must run bit-exact to the quantized module,
be smaller than the 1.3 tensor form, and every corruption of an inline field must be refused with
a clear error naming the operator and the field."""

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
from tests.test_eom_compact import TARGET, _model_table, _shared_block_sparse
from tests.test_native_cross import _cross_build, _qemu
from tests.test_runtime_cross import ARCHES, _bench_under_qemu


def _mixed(seed: int = 0):
    """conv (packed BSR codebook) -> linear (codebook: shared, no zero block) -> linear (int8
    BSR: block-sparse, too many values to share), quantized, with its input."""
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(12, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64),
        nn.ReLU(),
        nn.Linear(64, 48),
    ).eval()
    rng = np.random.default_rng(seed)
    ohwi = _shared_block_sparse(32, 3 * 3 * 12, seed)
    sparse = rng.normal(0.0, 0.05, size=(48, 64)).astype(np.float32)
    sparse *= np.kron(rng.random((3, 16)) >= 0.6, np.ones((16, 4)))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(ohwi.reshape(32, 3, 3, 12)).permute(0, 3, 1, 2))
        model[3].weight.copy_(torch.from_numpy(_shared_block_sparse(64, 128, seed, sparsity=0.0)))
        model[5].weight.copy_(torch.from_numpy(sparse))
    x = torch.randn(4, 12, 2, 2)
    return quantize_(model, Int8Config(), calibration=[x]), x


def _tensor_form(q, x, path):
    """The same model written with its weights in tensors (format 1.3)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "INLINE_WEIGHTS", False)
        return export_native(q, (x,), path, target=TARGET)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    q, x = _mixed()
    d = tmp_path_factory.mktemp("inline")
    report = export_native(q, (x,), d / "inline.eom", target=TARGET)
    old = _tensor_form(q, x, d / "tensors.eom")
    return q, x, d / "inline.eom", report, d / "tensors.eom", old


def test_every_weight_form_is_inline_and_bit_exact(mixed):
    q, x, path, report, _, _ = mixed
    formats = [(row["name"], row["format"]) for row in report.layers]
    assert formats == [("0", "bsr_codebook"), ("3", "codebook"), ("5", "bsr")], report.summary()
    data = path.read_bytes()
    assert struct.unpack_from("<HH", data, 8) == (1, 5)
    rt = runtime.load(path)
    assert rt.metadata["edgeopt.format"] == "1.5"
    m = _model_table(data)
    assert not any(m.Tensors(i).Decoded() for i in range(m.TensorsLength())), "no decoded tensors"
    weights = {}
    for i in range(m.OperatorsLength()):
        op = m.Operators(i)
        if op.Weight() is None:
            continue
        w = op.Weight()
        weights[op.Name().decode()] = w
        assert op.Bias() == -1 and w.InlineBiasLength() == w.N(), "the bias is inline"
        for field in (w.Values, w.RowPtr, w.ColIdx, w.Indices, w.Table, w.BlockMask):
            assert field() == -1, "no weight tensor"
    conv, book, sparse = weights["0"], weights["3"], weights["5"]
    assert conv.Format() == fb.WeightFormat.BSR and conv.Bits() == 4
    assert conv.InlineBlockMaskLength() == 7 and conv.InlineIndicesLength() > 0  # 54 blocks
    assert conv.InlineTableLength() % 32 == 0 and conv.InlineValuesLength() == 0
    assert sparse.Format() == fb.WeightFormat.BSR and sparse.Bits() == 0
    assert sparse.InlineValuesLength() % (16 * 4) == 0 and sparse.InlineIndicesLength() == 0
    assert book.Format() == fb.WeightFormat.CODEBOOK and book.InlineBlockMaskLength() == 0
    assert book.InlineIndicesLength() == 64 * 64 and book.InlineTableLength() % 64 == 0
    with torch.no_grad():
        want = q(x).numpy()
    np.testing.assert_array_equal(rt.run(x.numpy()), want)
    rt.num_threads = 2
    np.testing.assert_array_equal(rt.run(x.numpy()), want)


def test_inline_file_is_smaller_than_the_tensor_form_with_the_same_outputs(mixed):
    _, x, path, report, old_path, old = mixed
    assert runtime.load(old_path).metadata["edgeopt.format"] == "1.3"
    saved = old.size_bytes - report.size_bytes
    print(f"inline: {report.size_bytes} bytes, tensors: {old.size_bytes} ({saved} saved)")
    assert saved >= 3 * 120, (report.size_bytes, old.size_bytes)  # 3 layers, 7 + 4 tensors
    new_rt, old_rt = runtime.load(path), runtime.load(old_path)
    np.testing.assert_array_equal(new_rt.run(x.numpy()), old_rt.run(x.numpy()))
    kinds = [(a["kernel"], b["kernel"]) for a, b in zip(new_rt.layers, old_rt.layers)]
    assert all(a == b for a, b in kinds), kinds  # the same kernels run
    # The weight bytes: the inline vectors instead of the constants (tables lose unused entries).
    assert 0 < old_rt.weight_bytes - new_rt.weight_bytes < 200, (
        new_rt.weight_bytes,
        old_rt.weight_bytes,
    )


def test_files_without_a_compact_feature_keep_tensors(tmp_path):
    """A codebook-only int8 file is not compact (1.1): its weights stay in tensors."""
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 10)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(_shared_block_sparse(10, 64, 5, sparsity=0.0)))
    x = torch.randn(3, 64)
    q = quantize_(model, Int8Config(), calibration=[x])
    report = export_native(q, (x,), tmp_path / "m.eom", target=TARGET)
    assert report.layers[0]["format"] == "codebook", report.summary()
    data = (tmp_path / "m.eom").read_bytes()
    assert struct.unpack_from("<HH", data, 8) == (1, 1)
    m = _model_table(data)
    w = next(m.Operators(i).Weight() for i in range(m.OperatorsLength()) if m.Operators(i).Weight())
    assert w.Indices() >= 0 and w.InlineIndicesLength() == 0


@pytest.mark.parametrize(
    "build",
    ["one_column", "three_bits", "pruned_zero", "depthwise"],
)
def test_packed_layers_run_bit_exact_inline(tmp_path, build):
    """The 1.3 tests' packed layers (one-column blocks, 3-bit indices spanning bytes, a table
    without the pruned zeros) and a depthwise conv (decoded dense) in the inline form."""
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(7)
    rng = np.random.default_rng(7)
    config = Int8Config()
    if build == "one_column":
        model = nn.Sequential(nn.Linear(64, 32)).eval()
        w = _shared_block_sparse(32, 64, 1, sparsity=0.0)
        for rows in (slice(0, 16), slice(16, 32)):
            w[rows, np.arange(rng.integers(0, 4), 64, 4)] = 0.0
        x = torch.randn(3, 64)
    elif build == "three_bits":
        model = nn.Sequential(nn.Linear(100, 40)).eval()
        w = _shared_block_sparse(40, 100, 2, values=7)
        x = torch.randn(3, 100)
    elif build == "pruned_zero":
        model = nn.Sequential(nn.Linear(64, 32)).eval()
        book = np.array([-0.8, -0.5, -0.3, -0.1, 0.1, 0.2, 0.4, 1.0], np.float32)
        keep = rng.random((2, 16)) >= 0.5
        w = book[rng.integers(0, 8, size=(32, 64))] * np.kron(keep, np.ones((16, 4)))
        config = Int8Config(per_channel=False)
        x = torch.randn(3, 64)
    else:  # depthwise (decoded dense for the direct kernel): 16 outputs of 9 taps, 3 block columns
        model = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1, groups=4)).eval()
        book = np.array([-0.9, -0.4, -0.2, 0.3, 0.5, 0.8, 1.0], np.float32)
        w = book[rng.integers(0, 7, size=(16, 9))] * np.kron([[1, 0, 1]], np.ones((16, 4)))[:, :9]
        w = w.reshape(16, 1, 3, 3)
        config = Int8Config(per_channel=False)
        x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(np.ascontiguousarray(w, np.float32)))
    q = quantize_(model, config, calibration=[x])
    report = export_native(q, (x,), tmp_path / "m.eom", target=TARGET)
    assert report.layers[0]["format"] == "bsr_codebook", report.summary()
    rt = runtime.load(tmp_path / "m.eom")
    assert rt.metadata["edgeopt.format"] == "1.5", report.summary()
    with torch.no_grad():
        np.testing.assert_array_equal(rt.run(x.numpy()), q(x).numpy())


# -- corruptions ----------------------------------------------------------------------------------


def _export_mutated(tmp_path, monkeypatch, mutate, model=None) -> bytes:
    """The mixed model exported with ``mutate(writer, weights)`` applied before the FlatBuffer is
    written; ``weights`` maps the module path to its (inline) weight dict."""
    q, x = model or _mixed()
    finish = native.EomWriter.finish

    def patched(self, *args, **kwargs):
        weights = {op["name"]: op["weight"] for op in self.operators if op["weight"]}
        mutate(self, weights)
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(native.EomWriter, "finish", patched)
    export_native(q, (x,), tmp_path / "bad.eom", target=TARGET)
    return (tmp_path / "bad.eom").read_bytes()


def _set(name: str, **fields):
    return lambda w, ws: ws[name].update(fields)


def _edit(name: str, key: str, fn):
    return lambda w, ws: ws[name].update({key: fn(ws[name][key])})


def _bit(index: int, flip: int):
    def fn(mask):
        mask = mask.copy()
        mask[index] ^= flip
        return mask

    return fn


def _bias_tensor(w, ws):
    """The inline bias is kept and the operator names a bias tensor too."""
    op = next(op for op in w.operators if op["name"] == "0")
    op["bias"] = w.add_constant("b", np.zeros(32, np.int32))


def _bias_on_dense(w, ws):
    op = next(op for op in w.operators if op["name"] == "3")
    values = w.add_constant("v", np.ones((64, 128), np.int8))
    op["weight"] = {"format": 0, "n": 64, "k": 128, "values": values}
    op["weight"]["inline_bias"] = np.zeros(64, np.int32)


def _table_rows(name: str, drop: int):
    """The table of `name` with the last `drop` entries of every row removed."""

    def mutate(w, ws):
        wt = ws[name]
        rows = wt["n"] if wt.get("per_channel_table") else 1
        table = np.asarray(wt["inline_table"]).reshape(rows, -1)
        wt["inline_table"] = np.ascontiguousarray(table[:, : table.shape[1] - drop]).reshape(-1)

    return mutate


CORRUPTIONS = [
    (_set("0", bits=9), "operator 2 .*`0`.*bits must be 1 to 8, got 9"),
    (_set("0", bits=5), "`0`.*weight.inline_indices has .* bytes; .* values of 5 bits need"),
    (_set("0", bits=1), "`0`.*weight.inline_table has .* entries; expected 32 row"),
    (_set("0", per_channel_table=False), "weight.inline_table has .* expected 1 row"),
    (_table_rows("0", 1), "weight.inline_indices: index .* is past the .*-entry table"),
    (_edit("0", "inline_table", lambda t: t[:-1]), "weight.inline_table has"),
    (_edit("0", "inline_indices", lambda t: t[:-1]), "weight.inline_indices has .* bytes"),
    (_edit("0", "inline_block_mask", _bit(6, 0x80)), "inline_block_mask sets bits past the 54"),
    (_edit("0", "inline_block_mask", _bit(0, 0x01)), "weight.inline_indices has .* bytes"),
    (_edit("0", "inline_block_mask", lambda m: m[:-1]), "inline_block_mask has 6 bytes; the 2 x"),
    (lambda w, ws: ws["0"].pop("inline_block_mask"), "inline_block_mask is missing"),
    (lambda w, ws: ws["0"].pop("inline_table"), "weight.inline_table is missing"),
    (lambda w, ws: ws["0"].pop("inline_indices"), "weight.inline_indices is missing"),
    (_set("0", values=0), "weight.values must be absent \\(-1\\) in an inline weight, got 0"),
    (_set("0", table=1), "weight.table must be absent"),
    (_set("0", format=0), "inline weight fields .* need a BSR or CODEBOOK weight, got .* DENSE"),
    (_set("0", block=[16, 8]), "inline_block_mask has 7 bytes; the 2 x 14 block grid needs 4"),
    (_set("0", inline_values=np.zeros(4, np.int8)), "inline_values is for bits 0"),
    (_set("5", bits=0, inline_table=np.zeros(2, np.int8)), "`5`.*inline_indices / inline_table"),
    (_edit("5", "inline_values", lambda v: v[:-1]), "`5`.*weight.inline_values has .* blocks"),
    (lambda w, ws: ws["5"].pop("inline_values"), "weight.inline_values is missing"),
    (_set("3", bits=3), "`3`.*weight.bits must be 1, 2, 4 or 8, got 3"),
    (_edit("3", "inline_indices", lambda t: t[:-1]), "`3`.*inline_indices has 4095 bytes; 64 rows"),
    (_table_rows("3", 1), "`3`.*inline_indices: index \\d+ at \\[.*\\] is past the \\d+-entry"),
    (_set("3", inline_block_mask=np.ones(1, np.uint8)), "belong to BSR weights, not CODEBOOK"),
    (_edit("0", "inline_bias", lambda b: b[:-1]), "inline_bias has 31 entries; .* 32 output"),
    (_bias_tensor, "bias must be -1 with weight.inline_bias"),
    (_bias_on_dense, "`3`.*weight.inline_bias needs an inline weight"),
]


@pytest.mark.parametrize("mutate, match", CORRUPTIONS)
def test_corrupted_inline_weights_are_refused(tmp_path, monkeypatch, mutate, match):
    data = _export_mutated(tmp_path, monkeypatch, mutate)
    with pytest.raises(ValueError, match=match):
        runtime.loads(data)


def test_a_float_operator_refuses_inline_fields(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 4)).eval(), torch.randn(2, 8)

    def mutate(w, ws):
        ws["0"]["inline_values"] = np.zeros(32, np.int8)

    data = _export_mutated(tmp_path, monkeypatch, mutate, model=(model, x))
    with pytest.raises(ValueError, match="`0`.*inline weight fields .* hold int8 weights only"):
        runtime.loads(data)


def test_fuzzed_inline_files_give_value_error_or_load(mixed):
    """Random byte mutations of the inline file (checksum made valid again) raise ValueError or
    load a model that runs."""
    _, x, path, _, _, _ = mixed
    refused = mutate_and_load(path.read_bytes(), x.numpy(), seed=15)
    # Most bytes are now inline weight values (any value loads): fewer mutations are refused.
    assert refused > 20, refused


def test_cpp_fuzz_of_the_inline_file(mixed):
    _, _, path, _, _, _ = mixed
    cpp_fuzz(path)


@pytest.fixture(scope="module", params=sorted(ARCHES))
def arm(request):
    """(arch, build folder, qemu command) of a cross build (tests/test_runtime_cross.py's)."""
    compiler, qemu, cpu = ARCHES[request.param]
    return request.param, _cross_build(request.param, compiler), [_qemu(qemu), "-cpu", cpu]


def test_inline_file_under_qemu_is_bit_exact_to_host(arm, mixed, tmp_path):
    """The cross-built edgeopt-bench (aarch64, armv7 under qemu-user) decodes the inline weights
    and computes the host runtime's outputs bit for bit."""
    arch, build, qemu = arm
    _, x, path, _, _, _ = mixed
    _bench_under_qemu(qemu, build, path, x.numpy(), tmp_path)
    want = runtime.load(path).run(x.numpy())
    got = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32).reshape(want.shape)
    np.testing.assert_array_equal(got, want, err_msg=arch)
