"""optimizer.runtime and the .eom loader: the Python API, clear errors for bad files and bad
inputs, a bounded fuzz loop over mutated valid files, the C++ runtime test and edgeopt-bench on
the host, and the checked-in FlatBuffers code matching the schema."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from optimizer import runtime
from optimizer.export import native
from optimizer.export.native import export_native
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
    return out


def _fix_crc(data: bytearray) -> bytearray:
    struct.pack_into("<I", data, 20, zlib.crc32(memoryview(data)[24:]) & 0xFFFFFFFF)
    return data


def _x(rt: runtime.Runtime) -> np.ndarray:
    spec = rt.inputs[0]
    return np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)


# -- API ----------------------------------------------------------------------------------------


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
        _load_bytes(_fix_crc(data))


def test_fuzzed_files_give_value_error_or_load(files):
    """Bounded fuzz loop: random byte mutations (mostly in the header and the model table, with
    the checksum made valid again so they reach the parser) must raise ValueError or load a model
    that then runs; never crash or raise anything else."""
    rng = random.Random(7)
    outcomes = {"refused": 0, "loaded": 0}
    for name in ("mobilenetv2", "yolo_c2f"):
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
                _fix_crc(data)
            try:
                rt = _load_bytes(data)
            except ValueError as e:
                assert str(e).startswith("edgeopt model: "), e
                outcomes["refused"] += 1
                continue
            rt.run(np.zeros(rt.inputs[0]["shape"], np.float32))
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 300, outcomes


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


@pytest.mark.parametrize("name", ["mobilenetv2", "yolo_c2f"])
def test_cpp_fuzz_of_exported_models(files, name):
    out = subprocess.run(
        [str(_host("edgeopt_test_runtime")), "--model", str(files[name]), "--fuzz", "2000"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr


def test_edgeopt_bench_reports_and_matches_python(files, tmp_path):
    rt = runtime.load(files["mobilenetv2"])
    x = _x(rt)
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    cmd = [
        str(_host("edgeopt-bench")),
        "--model",
        str(files["mobilenetv2"]),
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
