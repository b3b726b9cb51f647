"""The transformer pieces of the native runtime: GATHER (nn.Embedding on int32 token ids) against
numpy's ``table[ids]`` (its reference twin), out-of-range ids and corrupted GATHER files refused
with clear errors, attention lowering (nn.MultiheadAttention sequence-first and without bias,
MultiheadSelfAttention with its own head width and block-sparse projections) against PyTorch,
refusals of what has no lowering (cross-attention, attention weights, ids read as values), the
format version of files with and without GATHER, and edgeopt-bench on a transformer file."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from optimizer import runtime
from optimizer.export import eom_fbs as fb
from optimizer.export import native
from optimizer.export.native import EomWriter, export_native
from optimizer.graph.attention import MultiheadSelfAttention
from optimizer.graph.record import get_record
from tests.zoo import ZOO

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "build" / "host" / "edgeopt-bench"


def _close(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.abs(want).max()) + 1e-6
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * scale)


def _parity(model: nn.Module, inputs: tuple, path: Path) -> native.NativeExportReport:
    model.eval()
    report = export_native(model, inputs, path)
    rt = runtime.load(path)
    xs = [x.numpy().astype(np.int32) if not x.is_floating_point() else x.numpy() for x in inputs]
    with torch.no_grad():
        want = model(*inputs)
    want = (want[0] if isinstance(want, tuple) else want).numpy()
    y = rt.run(*xs)
    _close(y, want)
    rt.num_threads = 2
    np.testing.assert_array_equal(rt.run(*xs), y)
    return report


def _gather_file(
    table_shape=(10, 4), ids_shape=(2, 3), out_shape=None, ids_dtype=np.int32, table_const=True
) -> bytes:
    """A one-operator GATHER file; arguments make it wrong in one place."""
    w = EomWriter()
    table = np.arange(np.prod(table_shape), dtype=np.float32).reshape(table_shape) * 0.5
    ids = w.add_tensor("ids", ids_shape, ids_dtype)
    ins = [ids]
    if table_const:
        t = w.add_constant("embed.weight", table)
    else:
        t = w.add_tensor("table", table_shape)
        ins.append(t)
    out_shape = out_shape or tuple(ids_shape) + tuple(table_shape[1:])
    y = w.add_tensor("y", out_shape)
    w.add_operator(fb.OpType.GATHER, "embed", [t, ids], [y])
    return w.finish(ins, [y], version=native.FORMAT_VERSION_GATHER)


# -- GATHER -------------------------------------------------------------------------------------


def test_gather_matches_numpy_reference():
    rt = runtime.loads(_gather_file((7, 3, 2), (2, 5)))
    ids = np.random.default_rng(0).integers(0, 7, (2, 5)).astype(np.int32)
    table = np.arange(42, dtype=np.float32).reshape(7, 3, 2) * 0.5
    np.testing.assert_array_equal(rt.run(ids), table[ids])
    assert rt.layers[0]["op"] == "gather" and rt.layers[0]["kernel"]


@pytest.mark.parametrize("bad", [100, -1, 2**31 - 1])
def test_out_of_range_ids_raise_value_error(bad, tmp_path):
    model, inputs = ZOO["transformer"]()
    export_native(model, inputs, tmp_path / "t.eom")
    rt = runtime.load(tmp_path / "t.eom")
    ids = inputs[0].numpy().astype(np.int32)
    good = rt.run(ids)
    ids[1, 3] = bad  # 100: one past the vocabulary
    with pytest.raises(ValueError, match=r"`embed`.*index -?\d+ at position \[1, 3\].*\[0, 100\)"):
        rt.run(ids)
    ids[1, 3] = inputs[0][1, 3]
    np.testing.assert_array_equal(rt.run(ids), good)  # the model still runs afterwards


def test_int64_ids_are_refused_not_cast(tmp_path):
    model, inputs = ZOO["transformer"]()
    export_native(model, inputs, tmp_path / "t.eom")
    rt = runtime.load(tmp_path / "t.eom")
    with pytest.raises(
        ValueError, match=r"dtype int32, got int64. Convert with x.astype\(np.int32\)"
    ):
        rt.run(inputs[0].numpy())  # int64, as PyTorch's ids


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"out_shape": (2, 3, 5)}, r"must have shape \[2, 3, 4\], the file says \[2, 3, 5\]"),
        ({"out_shape": (2, 4)}, r"must have shape \[2, 3, 4\]"),
        ({"ids_dtype": np.float32}, r"input 1 \(`ids`\) must be int32, got float32"),
        ({"table_const": False}, r"table \(input 0\) \(`table`\) must be a constant"),
    ],
)
def test_corrupted_gather_files_are_refused(kw, match):
    with pytest.raises(ValueError, match=r"operator 0 \(`embed`, GATHER\): .*" + match):
        runtime.loads(_gather_file(**kw))


def test_files_without_gather_keep_their_version(tmp_path):
    model, inputs = ZOO["mlp"]()
    export_native(model, inputs, tmp_path / "m.eom")
    data = (tmp_path / "m.eom").read_bytes()
    assert struct.unpack_from("<HH", data, 8) == native.FORMAT_VERSION == (1, 0)
    model, inputs = ZOO["transformer"]()
    export_native(model, inputs, tmp_path / "t.eom")
    data = (tmp_path / "t.eom").read_bytes()
    assert struct.unpack_from("<HH", data, 8) == native.FORMAT_VERSION_GATHER
    assert runtime.FORMAT_VERSION >= native.FORMAT_VERSION_GATHER


# -- attention ----------------------------------------------------------------------------------


class _SeqFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(24, 3, bias=False)  # [T, B, E]
        self.fc = nn.Linear(24, 8)

    def forward(self, x):
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.fc(y + x)


def test_sequence_first_attention_without_bias(tmp_path):
    torch.manual_seed(0)
    _parity(_SeqFirst(), (torch.randn(5, 2, 24),), tmp_path / "a.eom")


class _Msa(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = MultiheadSelfAttention(24, 3, head_dim=5)  # inner width 15 != 24

    def forward(self, x):
        return self.attn(x)[0]


def test_self_attention_module_with_its_own_head_width(tmp_path):
    torch.manual_seed(1)
    report = _parity(_Msa(), (torch.randn(2, 6, 24),), tmp_path / "a.eom")
    assert [r["name"] for r in report.layers] == ["attn.qkv_proj", "attn.out_proj"]


def test_block_sparse_projection_keeps_its_own_format(tmp_path):
    torch.manual_seed(2)
    model = _Msa()
    with torch.no_grad():
        model.attn.q_proj.weight[:, :12] = 0  # 3 of the 6 1x4 blocks of every row
    get_record(model)["block_sparsity"]["attn.q_proj"] = {"block": [1, 4]}
    report = _parity(model, (torch.randn(2, 6, 24),), tmp_path / "a.eom")
    formats = {r["name"]: r["format"] for r in report.layers}
    assert formats == {
        "attn.q_proj": "bsr",
        "attn.k_proj": "dense",
        "attn.v_proj": "dense",
        "attn.out_proj": "dense",
    }


class _Weights(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[1]


class _Cross(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x, y):
        return self.attn(x, y, y)[0]


class _IdsOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def forward(self, ids):
        return self.embed(ids), ids


@pytest.mark.parametrize(
    "model, inputs, match",
    [
        (_Weights(), (torch.randn(1, 4, 16),), r"`getitem` .*attention weights \(need_weights\)"),
        (_Cross(), (torch.randn(1, 4, 16), torch.randn(1, 4, 16)), r"`attn` .*self-attention"),
        (_IdsOut(), (torch.zeros(1, 3, dtype=torch.long),), r"integer ids `ids` feed"),
    ],
    ids=["weights", "cross", "ids_as_values"],
)
def test_unsupported_attention_uses_are_refused(model, inputs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        export_native(model.eval(), inputs, tmp_path / "x.eom")
    assert not (tmp_path / "x.eom").exists()


# -- edgeopt-bench ------------------------------------------------------------------------------


def test_edgeopt_bench_runs_the_transformer(tmp_path):
    if not BENCH.exists():
        pytest.fail(f"{BENCH} is missing: `make native` builds it (make test does this first)")
    model, inputs = ZOO["transformer"]()
    export_native(model, inputs, tmp_path / "t.eom")
    ids = inputs[0].numpy().astype(np.int32)
    (tmp_path / "ids.bin").write_bytes(ids.tobytes())
    cmd = [str(BENCH), "--model", str(tmp_path / "t.eom"), "--warmup", "1", "--runs", "3"]
    cmd += ["--json", str(tmp_path / "b.json"), "--input", str(tmp_path / "ids.bin")]
    cmd += ["--output", str(tmp_path / "y.bin")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert any(layer["op"] == "gather" for layer in report["layers"]), report["layers"]
    y = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32).reshape(2, 10)
    np.testing.assert_array_equal(y, runtime.load(tmp_path / "t.eom").run(ids))


def test_edgeopt_bench_without_input_feeds_valid_ids_and_refuses_bad_ones(tmp_path):
    """Without --input, token ids are zeros (always in range); an --input with an id outside the
    table is a clear error with exit code 1, not an abort."""
    if not BENCH.exists():
        pytest.fail(f"{BENCH} is missing: `make native` builds it (make test does this first)")
    model, inputs = ZOO["transformer"]()
    export_native(model, inputs, tmp_path / "t.eom")
    cmd = [str(BENCH), "--model", str(tmp_path / "t.eom"), "--warmup", "1", "--runs", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = np.full(inputs[0].shape, 10**6, np.int32)
    (tmp_path / "bad.bin").write_bytes(bad.tobytes())
    out = subprocess.run(
        [*cmd, "--input", str(tmp_path / "bad.bin")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "edgeopt-bench:" in out.stderr and "1000000" in out.stderr, out.stderr


def test_fuzzed_transformer_files_give_value_error_or_run(tmp_path):
    """Bounded fuzz loop over the transformer file (GATHER, attention): mutated bytes, mostly in
    the header and model table with the checksum made valid again, must be refused with
    ValueError or load and run (zero ids) or fail the run with ValueError; never crash."""
    import random
    import zlib

    model, inputs = ZOO["transformer"]()
    export_native(model, inputs, tmp_path / "t.eom")
    good = (tmp_path / "t.eom").read_bytes()
    table_end = 64 + struct.unpack_from("<Q", good, 40)[0]
    rng = random.Random(11)
    outcomes = {"refused": 0, "ran": 0}
    for _ in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            hi = table_end if rng.random() < 0.85 else len(good)
            data[rng.randrange(24, hi)] = rng.randrange(256)
        struct.pack_into("<I", data, 20, zlib.crc32(memoryview(data)[24:]) & 0xFFFFFFFF)
        try:
            rt = runtime.loads(bytes(data))
            rt.run(*[np.zeros(s["shape"], s["dtype"]) for s in rt.inputs])
        except ValueError as e:
            assert str(e).startswith("edgeopt model: "), e
            outcomes["refused"] += 1
            continue
        outcomes["ran"] += 1
    assert outcomes["refused"] > 200, outcomes
