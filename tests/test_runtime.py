"""optimizer.runtime and the .eom loader: the Python API, clear errors for bad files and bad
inputs, a bounded fuzz loop over mutated valid files (float and int8), the int8 operators against
optimizer.quantize.arithmetic (the reference twin), corrupted int8 files, the C++ runtime test
and edgeopt-bench on the host, and the checked-in FlatBuffers code matching the schema."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from optimizer import runtime
from optimizer.export import eom_fbs as fb
from optimizer.export import native
from optimizer.export.native import export_native
from optimizer.quantize import arithmetic as ar
from tests.eom_fuzz import fix_crc
from tests.zoo import ZOO

ROOT = Path(__file__).resolve().parents[1]
HOST_BUILD = ROOT / "build" / "host"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    out = {}
    d = tmp_path_factory.mktemp("eom")
    for name in ("mobilenetv2", "yolo_c2f", "mlp"):
        model, inputs = ZOO[name]()
        out[name] = d / f"{name}.eom"
        export_native(model, inputs, out[name])
    from optimizer.quantize.ptq import Int8Config, quantize_

    for name in ("mobilenetv2", "efficientnet"):
        model, inputs = ZOO[name]()
        q = quantize_(model, Int8Config(), calibration=[inputs[0]])
        out[f"{name}_int8"] = d / f"{name}_int8.eom"
        export_native(q, inputs, out[f"{name}_int8"])
    return out


def _x(rt: runtime.Runtime) -> np.ndarray:
    spec = rt.inputs[0]
    return np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)


# -- API ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "mobilenetv2_int8"])
def test_concurrent_runs_from_python_threads_are_correct(files, name):
    """Runs from several Python threads at once (a small model keeps the GIL during a run, a
    larger one releases it; the model runs one call at a time either way): every result equals
    the single-threaded one and nothing deadlocks."""
    import threading

    rt = runtime.load(files[name])
    xs = [np.random.default_rng(i).standard_normal(rt.inputs[0]["shape"]).astype(np.float32)
          for i in range(4)]  # fmt: skip
    want = [rt.run(x).copy() for x in xs]
    errors: list[str] = []

    def worker(i: int) -> None:
        for _ in range(50):
            y = rt.run(xs[i])
            if not np.array_equal(y, want[i]):
                errors.append(f"thread {i}: result differs")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a run from a Python thread never returned"
    assert not errors, errors


def test_run_profile_and_threads(files):
    rt = runtime.load(files["mobilenetv2"])
    x = _x(rt)
    y = rt.run(x)
    assert y.shape == tuple(rt.outputs[0]["shape"]) and y.dtype == np.float32
    prof = rt.profile(x, 5)
    assert len(prof.layers) == len(rt.layers) and prof.runs == 5
    assert all(layer.kernel and layer.median_s >= 0 for layer in prof.layers)
    assert sum(layer.median_s for layer in prof.layers) <= max(prof.total_s) * 1.5
    assert "conv2d" in prof.table()
    rt.num_threads = 2
    assert rt.num_threads == 2
    np.testing.assert_array_equal(rt.run(x), y)


def test_arena_reuses_activation_memory(files):
    rt = runtime.load(files["yolo_c2f"])
    assert 0 < rt.arena_bytes < rt.activation_bytes / 2


def test_torch_tensors_are_accepted_and_loads_reads_bytes(files):
    rt = runtime.loads(files["mlp"].read_bytes())
    x = _x(rt)
    np.testing.assert_array_equal(rt.run(torch.from_numpy(x)), rt.run(x))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda x: x.astype(np.float64), "dtype float32, got float64"),
        (lambda x: x[:1], "shape"),
        (lambda x: x.reshape(-1), "shape"),
        (lambda x: x.tolist(), "numpy array"),
    ],
)
def test_wrong_inputs_raise_value_error(files, bad, match):
    rt = runtime.load(files["mlp"])
    with pytest.raises(ValueError, match=match):
        rt.run(bad(_x(rt)))


def test_wrong_input_count_and_threads(files):
    rt = runtime.load(files["mlp"])
    with pytest.raises(ValueError, match="takes 1 input"):
        rt.run(_x(rt), _x(rt))
    with pytest.raises(ValueError, match=r"\[1, 256\]"):
        rt.num_threads = 0
    with pytest.raises(TypeError):
        rt.num_threads = 1.5
    with pytest.raises(ValueError, match="runs"):
        rt.profile(_x(rt), runs=0)


def test_non_contiguous_input_is_accepted(files):
    rt = runtime.load(files["mlp"])
    x = _x(rt)
    wide = np.zeros((x.shape[0], x.shape[1] * 2), np.float32)
    wide[:, ::2] = x
    np.testing.assert_array_equal(rt.run(wide[:, ::2]), rt.run(x))


# -- bad files ----------------------------------------------------------------------------------


def _load_bytes(data: bytes):
    return runtime.loads(bytes(data))


def test_truncated_files_are_refused(files):
    data = files["mlp"].read_bytes()
    for cut in (0, 10, 63, 64, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError, match="truncated"):
            _load_bytes(data[:cut])


def test_corrupted_file_fails_the_checksum(files):
    data = bytearray(files["mlp"].read_bytes())
    data[len(data) // 2] ^= 0x10
    with pytest.raises(ValueError, match="checksum mismatch"):
        _load_bytes(data)


def test_names_that_are_not_utf8_are_escaped(files):
    """Operator names come from the file: a byte that is not UTF-8 must not break the error
    message or the layer list (Python would raise UnicodeDecodeError): it is shown as \\xNN."""
    data = bytearray(files["mlp"].read_bytes())
    i = data.find(b"body.2")
    assert i > 0, "the MLP has an operator named body.2"
    data[i + 4] = 0xFF
    rt = runtime.loads(bytes(fix_crc(data)))
    names = [layer["name"] for layer in rt._m.layers]
    assert "body\\xff2" in names, names
    rt.profile(_x(rt), 1)


def test_wrong_version_is_refused(files):
    data = bytearray(files["mlp"].read_bytes())
    struct.pack_into("<H", data, 8, native.FORMAT_VERSION[0] + 1)
    with pytest.raises(ValueError, match=r"format version 2\.0 is not supported.*update"):
        _load_bytes(data)
    struct.pack_into("<H", data, 8, 0)
    with pytest.raises(ValueError, match="re-export"):
        _load_bytes(data)


def test_newer_minor_version_is_read(files):
    data = bytearray(files["mlp"].read_bytes())
    struct.pack_into("<H", data, 10, native.FORMAT_VERSION[1] + 3)
    assert _load_bytes(data).run(_x(runtime.load(files["mlp"]))).shape == (2, 10)


def test_big_endian_file_is_refused(files):
    data = bytearray(files["mlp"].read_bytes())
    struct.pack_into(">I", data, 12, native.ENDIAN_MARKER)
    with pytest.raises(ValueError, match="big-endian"):
        _load_bytes(data)


def test_not_a_model_file(tmp_path):
    with pytest.raises(ValueError, match="not a .eom model"):
        _load_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(OSError):
        runtime.load(tmp_path / "missing.eom")


def test_bad_table_with_valid_checksum_is_refused(files):
    data = bytearray(files["mlp"].read_bytes())
    struct.pack_into("<Q", data, 40, 16)  # model table size
    with pytest.raises(ValueError, match="does not verify|section table"):
        _load_bytes(fix_crc(data))


def test_fuzzed_files_give_value_error_or_load(files):
    """Bounded fuzz loop: random byte mutations (mostly in the header and the model table, with
    the checksum made valid again so they reach the parser) must raise ValueError or load a model
    that then runs; never crash or raise anything else."""
    rng = random.Random(7)
    outcomes = {"refused": 0, "loaded": 0}
    for name in ("mobilenetv2", "yolo_c2f", "efficientnet_int8"):
        good = files[name].read_bytes()
        table_end = 64 + struct.unpack_from("<Q", good, 40)[0]
        for _ in range(300):
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                at = (
                    rng.randrange(24, table_end)
                    if rng.random() < 0.85
                    else rng.randrange(24, len(good))
                )
                data[at] = rng.randrange(256)
            if rng.random() < 0.9:
                fix_crc(data)
            try:
                rt = _load_bytes(data)
            except ValueError as e:
                assert str(e).startswith("edgeopt model: "), e
                outcomes["refused"] += 1
                continue
            rt.run(np.zeros(rt.inputs[0]["shape"], np.float32))
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 450, outcomes


# -- int8 operators against the reference arithmetic, and corrupted int8 files --------------------


def _q(scale: float, zero_point: int) -> dict:
    return {"scale": [scale], "zero_point": [zero_point]}


def _binary_file(op: str, sa, za, sb, zb, so, zo, shape_a, shape_b, clamp=(-128, 127)) -> bytes:
    """int8 inputs a, b -> ADD / MUL (numpy broadcasting) -> int8 output."""
    w = native.EomWriter()
    a = w.add_tensor("a", shape_a, np.int8, _q(sa, za))
    b = w.add_tensor("b", shape_b, np.int8, _q(sb, zb))
    out_shape = np.broadcast_shapes(shape_a, shape_b)
    y = w.add_tensor("y", out_shape, np.int8, _q(so, zo))
    stage = {"input_zero_points": [za, zb], "output_zero_point": zo}
    stage.update(qmin=clamp[0], qmax=clamp[1])
    if op == "add":
        m1, s1, m2, s2, mo, shift = ar.add_multipliers(sa, sb, so)
        stage.update(input_multiplier=[m1, m2], input_shift=[s1, s2], left_shift=20)
        stage.update(multiplier=[mo], shift=[shift])
    else:
        m, shift = ar.mul_multiplier(sa, sb, so)
        stage.update(multiplier=[m], shift=[shift])
    op_type = fb.OpType.ADD if op == "add" else fb.OpType.MUL
    w.add_operator(op_type, op, [a, b], [y], int8=stage)
    return w.finish([a, b], [y], version=native.FORMAT_VERSION_INT8)


@pytest.mark.parametrize("seed", range(4))
def test_int8_add_and_mul_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    shapes = [((2, 3, 4, 16), (2, 3, 4, 16)), ((2, 3, 4, 16), (2, 1, 1, 16)), ((3, 5), (1, 5))]
    for shape_a, shape_b in shapes:
        sa, sb, so = (float(np.float32(v)) for v in rng.uniform(0.005, 0.2, 3))
        za, zb, zo = (int(v) for v in rng.integers(-20, 20, 3))
        a = rng.integers(-128, 128, shape_a).astype(np.int8)
        b = rng.integers(-128, 128, shape_b).astype(np.int8)
        lo = int(rng.integers(-128, 0))
        add = runtime.loads(
            _binary_file("add", sa, za, sb, zb, so, zo, shape_a, shape_b, (lo, 127))
        )
        want = ar.add_s8(a, b, za, zb, zo, ar.add_multipliers(sa, sb, so), 20, (lo, 127))
        np.testing.assert_array_equal(add.run(a, b), want)
        mul = runtime.loads(_binary_file("mul", sa, za, sb, zb, so * 0.1, zo, shape_a, shape_b))
        m, s = ar.mul_multiplier(sa, sb, so * 0.1)
        np.testing.assert_array_equal(mul.run(a, b), ar.mul_s8(a, b, za, zb, zo, m, s))


@pytest.mark.parametrize(
    ("sa", "sb", "so", "zo"),
    [
        (0.04, 0.04, 0.05, -128),
        (0.1, 0.013, 0.09, 5),
        (0.003, 0.2, 0.2, 128 - 1),
        (0.05, 0.02, 0.001, 0),
    ],
)
def test_int8_add_every_input_pair_matches_the_reference(sa, sb, so, zo):
    """All 65536 (a, b) pairs: the vector ADD stages (the single-rounding fast one included, with
    an input multiplier of shift 0 where one scale is the larger) against the reference."""
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 65536)
    b = np.tile(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 65536)
    sa, sb, so = (float(np.float32(v)) for v in (sa, sb, so))
    add = runtime.loads(_binary_file("add", sa, -13, sb, 9, so, zo, a.shape, b.shape, (-128, 127)))
    want = ar.add_s8(a, b, -13, 9, zo, ar.add_multipliers(sa, sb, so), 20, (-128, 127))
    np.testing.assert_array_equal(add.run(a, b), want)


def _unary_file(op_type: int, shape, out_shape, options=None, q_out=(0.05, 3)) -> bytes:
    w = native.EomWriter()
    x = w.add_tensor("x", shape, np.int8, _q(0.05, 3))
    y = w.add_tensor("y", out_shape, np.int8, _q(*q_out))
    w.add_operator(op_type, "op", [x], [y], options=options)
    return w.finish([x], [y], version=native.FORMAT_VERSION_INT8)


def test_int8_pools_and_lut_match_the_reference():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 7, 6, 16)).astype(np.int8)
    for k, s, p in (((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 0))):
        want = ar.avg_pool2d_s8(x, k, s, p)
        opts = {"kernel": k, "stride": s, "pad": [p[0], p[1], p[0], p[1]], "count_include_pad": 0}
        f = _unary_file(fb.OpType.AVG_POOL2D, x.shape, want.shape, ("Pool2DOptions", opts))
        np.testing.assert_array_equal(runtime.loads(f).run(x), want)
        want = ar.max_pool2d_s8(x, k, s, p)
        f = _unary_file(fb.OpType.MAX_POOL2D, x.shape, want.shape, ("Pool2DOptions", opts))
        np.testing.assert_array_equal(runtime.loads(f).run(x), want)
    gap = runtime.loads(_unary_file(fb.OpType.GLOBAL_AVG_POOL, x.shape, (2, 1, 1, 16)))
    np.testing.assert_array_equal(gap.run(x), ar.avg_pool2d_s8(x, (7, 6)))
    table = rng.integers(-128, 128, 256).astype(np.int8)
    f = _unary_file(fb.OpType.LUT, x.shape, x.shape, ("LutOptions", {"table": table}), (0.1, -4))
    np.testing.assert_array_equal(runtime.loads(f).run(x), ar.lookup_s8(x, table))


_POOL_SCRIPT = """
import sys, numpy as np
from optimizer import runtime
from optimizer.export import eom_fbs as fb
from optimizer.quantize import arithmetic as ar
from tests.test_runtime import _unary_file
rng = np.random.default_rng(5)
kernels = set()
for c in (5, 16, 51, 64):  # scalar only; one 16-lane block; 32 + 16 + a 3-channel tail; 2 x 32
    x = rng.integers(-128, 128, (2, 7, 6, c)).astype(np.int8)
    for k, s, p in (((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 0))):
        want = ar.max_pool2d_s8(x, k, s, p)
        opts = {"kernel": k, "stride": s, "pad": [p[0], p[1], p[0], p[1]], "count_include_pad": 0}
        rt = runtime.loads(_unary_file(fb.OpType.MAX_POOL2D, x.shape, want.shape,
                                       ("Pool2DOptions", opts), (0.05, 3)))
        np.testing.assert_array_equal(rt.run(x), want, err_msg=f"C={c} k={k} s={s} p={p}")
        kernels.add(rt.layers[0]["kernel"])
print(sorted(kernels))
"""


@pytest.mark.parametrize("path", ["scalar", "avx2"])
def test_int8_max_pool_matches_the_reference_on_each_path(path):
    """The generic and AVX2 max pools (32- and 16-channel vectors, scalar tail) against the
    reference, paths chosen by EDGEOPT_PATHS in a fresh process."""
    from optimizer import kernels

    reason = kernels.unavailable_reason(path)
    if reason is not None:
        pytest.skip(reason)
    env = dict(os.environ, EDGEOPT_PATHS=path)
    out = subprocess.run(
        [sys.executable, "-c", _POOL_SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"s8_maxpool_direct__{'generic' if path == 'scalar' else path}" in out.stdout, out.stdout


def test_int8_max_pool_applies_a_narrower_clamp_of_its_stage():
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (1, 4, 4, 40)).astype(np.int8)
    w = native.EomWriter()
    xi = w.add_tensor("x", x.shape, np.int8, _q(0.05, 3))
    yi = w.add_tensor("y", (1, 2, 2, 40), np.int8, _q(0.05, 3))
    opts = {"kernel": (2, 2), "stride": (2, 2), "pad": [0, 0, 0, 0], "count_include_pad": 0}
    stage = {"input_zero_point": 3, "output_zero_point": 3, "qmin": -20, "qmax": 90}
    w.add_operator(
        fb.OpType.MAX_POOL2D, "pool", [xi], [yi], options=("Pool2DOptions", opts), int8=stage
    )
    got = runtime.loads(w.finish([xi], [yi], version=native.FORMAT_VERSION_INT8)).run(x)
    want = np.clip(ar.max_pool2d_s8(x, (2, 2), (2, 2), (0, 0)), -20, 90)
    np.testing.assert_array_equal(got, want)


def test_int8_quantize_and_dequantize_match_the_reference():
    w = native.EomWriter()
    x = w.add_tensor("x", (4, 51))  # 204 values: vectors of 8 and a tail
    q = w.add_tensor("q", (4, 51), np.int8, _q(0.037, -7))
    y = w.add_tensor("y", (4, 51))
    w.add_operator(fb.OpType.QUANTIZE, "quant", [x], [q])
    w.add_operator(fb.OpType.DEQUANTIZE, "dequant", [q], [y])
    rt = runtime.loads(w.finish([x], [y], version=native.FORMAT_VERSION_INT8))
    v = np.random.default_rng(0).normal(0, 3, (4, 51)).astype(np.float32)
    v[0, :4] = [0.0185, -0.0185, 0.0555, 100.0]  # ties at half a step, saturation
    v[1, 3:9] = [np.inf, -np.inf, 1e30, -1e30, -0.0, 0.0]
    v[3, -3:] = [0.0185, -0.0555, 4.7545]  # in the tail
    want = ar.dequantize(ar.quantize(v, np.float32(0.037), -7), np.float32(0.037), -7)
    np.testing.assert_array_equal(rt.run(v), want)
    v[2, 5] = np.nan  # the runtime quantizes NaN to the zero point (dequantized: 0.0)
    want[2, 5] = 0.0
    np.testing.assert_array_equal(rt.run(v), want)


def _linear_file(**bad) -> bytes:
    """QUANTIZE -> int8 LINEAR -> LUT -> DEQUANTIZE, with one field replaced by ``bad``."""
    w = native.EomWriter()
    x = w.add_tensor("x", (2, 8))
    xq = w.add_tensor("xq", (2, 8), np.int8, bad.get("xq_q", _q(0.05, 3)))
    w.add_operator(fb.OpType.QUANTIZE, "quant", [x], [xq])
    wq = {"scale": np.full(4, 0.01, np.float32), "zero_point": [0] * 4, "axis": 0}
    values = w.add_constant("fc.w", np.arange(32, dtype=np.int8).reshape(4, 8), wq)
    bias = w.add_constant("fc.b", np.arange(4, dtype=np.int32))
    yq = w.add_tensor("yq", (2, 4), np.int8, _q(0.1, -2))
    stage = {"multiplier": [1 << 30] * 4, "shift": [-3] * 4, "input_zero_point": 3}
    stage.update(output_zero_point=-2, qmin=-128, qmax=127)
    stage.update(bad.get("stage", {}))
    weight = {"format": fb.WeightFormat.DENSE, "n": 4, "k": 8, "values": values}
    w.add_operator(fb.OpType.LINEAR, "fc", [xq], [yq], weight=weight, bias=bias, int8=stage)
    zq = w.add_tensor("zq", (2, 4), np.int8, _q(0.1, -2))
    table = bad.get("table", np.arange(-128, 128).astype(np.int8))
    w.add_operator(fb.OpType.LUT, "act", [yq], [zq], options=("LutOptions", {"table": table}))
    y = w.add_tensor("y", (2, 4))
    w.add_operator(fb.OpType.DEQUANTIZE, "dequant", [zq], [y])
    return w.finish([x], [y], version=native.FORMAT_VERSION_INT8)


def test_hand_built_int8_linear_matches_the_reference():
    rt = runtime.loads(_linear_file())
    x = np.random.default_rng(1).normal(0, 2, (2, 8)).astype(np.float32)
    xq = ar.quantize(x, np.float32(0.05), 3)
    w = np.arange(32, dtype=np.int8).reshape(4, 8)
    m, s = np.full(4, 1 << 30), np.full(4, -3)
    yq = ar.linear_s8(xq, w, np.arange(4), 3, m, s, -2)
    np.testing.assert_array_equal(rt.run(x), ar.dequantize(yq, np.float32(0.1), -2))
    assert [layer["kernel"].split("__")[0] for layer in rt.layers] == [
        "quantize",
        "s8_gemm",
        "s8_lut",
        "dequantize",
    ]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"xq_q": _q(0.0, 3)}, r"tensor 1 \(`xq`\): scale must be finite and > 0"),
        ({"xq_q": _q(float("nan"), 3)}, "scale must be finite and > 0"),
        ({"xq_q": {"scale": [0.05], "zero_point": [3, 4]}}, "as many zero points"),
        ({"xq_q": _q(0.05, 300)}, "zero point 300 out of the int8 range"),
        ({"table": np.zeros(255, np.int8)}, r"`act`.*table must have 256 int8 entries.*got 255"),
        ({"stage": {"input_zero_point": 4}}, r"`fc`.*input_zero_point = 4 differs"),
        ({"stage": {"multiplier": [1 << 30] * 3}}, "int8.multiplier must have 4 entries, got 3"),
        ({"stage": {"multiplier": [5] * 4}}, "not a normalized fixed-point multiplier"),
        ({"stage": {"shift": [40] * 4}}, r"int8.shift\[0\] = 40 out of range \[-31, 30\]"),
        ({"stage": {"qmin": 10, "qmax": 0}}, "qmin <= qmax"),
    ],
)
def test_corrupted_int8_files_are_refused_with_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        runtime.loads(_linear_file(**bad))


def test_int8_runs_on_int8_inputs_are_checked(files):
    rt = runtime.load(files["mobilenetv2_int8"])
    assert rt.inputs[0]["dtype"] == np.float32 and rt.metadata["edgeopt.format"] == "1.1"
    with pytest.raises(ValueError, match="dtype float32, got int8"):
        rt.run(np.zeros(rt.inputs[0]["shape"], np.int8))


# -- native binaries on the host ------------------------------------------------------------------


def _host(name: str) -> Path:
    exe = HOST_BUILD / name
    if not exe.exists():
        pytest.fail(f"{exe} is missing: `make native` builds it (make test does this first)")
    return exe


def test_cpp_runtime_test_passes():
    out = subprocess.run(
        [str(_host("edgeopt_test_runtime"))], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["mobilenetv2", "yolo_c2f", "mobilenetv2_int8"])
def test_cpp_fuzz_of_exported_models(files, name):
    out = subprocess.run(
        [str(_host("edgeopt_test_runtime")), "--model", str(files[name]), "--fuzz", "2000"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["mobilenetv2", "mobilenetv2_int8"])
def test_edgeopt_bench_reports_and_matches_python(files, name, tmp_path):
    rt = runtime.load(files[name])
    x = _x(rt)
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    cmd = [
        str(_host("edgeopt-bench")),
        "--model",
        str(files[name]),
        "--threads",
        "1",
        "--warmup",
        "2",
        "--runs",
        "5",
        "--json",
        str(tmp_path / "b.json"),
        "--input",
        str(tmp_path / "x.bin"),
        "--output",
        str(tmp_path / "y.bin"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"]
    assert len(report["layers"]) == len(rt.layers)
    assert all(layer["kernel"] for layer in report["layers"])
    if name.endswith("_int8"):
        assert any(layer["kernel"].startswith("s8_") for layer in report["layers"]), report
    assert ("warning" in out.stderr) == (report["warning"] is not None)
    y = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32).reshape(rt.outputs[0]["shape"])
    np.testing.assert_array_equal(y, rt.run(x))


def test_edgeopt_bench_rejects_bad_arguments(files):
    bench = str(_host("edgeopt-bench"))
    out = subprocess.run(
        [bench, "--model", str(files["mlp"]), "--runs", "0"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--runs" in out.stderr
    out = subprocess.run([bench, "--model", "/nonexistent.eom"], capture_output=True, text=True)
    assert out.returncode == 1 and "cannot open" in out.stderr


# -- schema ------------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("flatc") is None,
    reason="flatc not found: Debian's flatbuffers-compiler (.ci/run installs it)",
)
def test_checked_in_flatbuffers_code_matches_the_schema(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gen", ROOT / "kernels/runtime/schema/generate.py"
    )
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    cpp, py = gen.generate(tmp_path)
    assert cpp.read_text() == gen.CPP_OUT.read_text(), "run kernels/runtime/schema/generate.py"
    assert py.read_text() == gen.PY_OUT.read_text(), "run kernels/runtime/schema/generate.py"


class _Depthwise(torch.nn.Module):
    """Depthwise convs the AVX-512 kernel pads and blocks differently: stride 2, dilation 2, a
    5x5 window with uneven padding, channel counts with a partial 32-block (48: 16 left, 40: 8);
    then dense convs through the padded im2col (height dilation and stride, no width padding,
    a 2x3 window)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw1 = torch.nn.Conv2d(c, c, 3, 2, 1, groups=c)
        self.dw2 = torch.nn.Conv2d(c, c, 3, 1, 2, dilation=2, groups=c)
        self.dw3 = torch.nn.Conv2d(c, c, 5, 1, (1, 2), groups=c)
        self.full1 = torch.nn.Conv2d(c, 24, 3, (2, 1), (2, 0), dilation=(2, 1))
        self.full2 = torch.nn.Conv2d(24, 16, (2, 3), 1, (0, 1))

    def forward(self, x):
        x = self.dw3(torch.relu(self.dw2(torch.relu(self.dw1(x)))))
        return self.full2(torch.relu(self.full1(x)))


@pytest.mark.parametrize(("c", "threads"), [(48, 1), (40, 2), (64, 2)])
def test_int8_conv_strides_dilations_and_partial_blocks_are_exact(c, threads, tmp_path):
    from optimizer.quantize.ptq import Int8Config, quantize_

    torch.manual_seed(c)
    x = torch.randn(2, c, 11, 9)
    q = quantize_(_Depthwise(c).eval(), Int8Config(), calibration=[x])
    export_native(q, (x,), tmp_path / "dw.eom")
    rt = runtime.load(tmp_path / "dw.eom")
    rt.num_threads = threads
    with torch.no_grad():
        want = q(x).numpy()
    np.testing.assert_array_equal(rt.run(x.numpy()), want)
