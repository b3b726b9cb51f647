"""The runtime cross-built for aarch64 and armv7, run under qemu-user: the C++ runtime test passes
and edgeopt-bench computes an exported model's outputs as the host runtime does (fp32, within
tolerance: NEON and x86 kernels sum in different orders; int8 bit for bit: integer kernels are
exact on every path)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from optimizer import runtime
from optimizer.export.native import export_native
from tests.test_native_cross import _cross_build, _qemu, _run
from tests.zoo import ZOO

ARCHES = {
    "aarch64": ("aarch64-linux-gnu-g++", "qemu-aarch64", "max"),
    "armv7": ("arm-linux-gnueabihf-g++", "qemu-arm", "cortex-a7"),
}


@pytest.fixture(scope="module", params=sorted(ARCHES))
def cross(request):
    arch = request.param
    compiler, qemu, cpu = ARCHES[arch]
    build = _cross_build(arch, compiler)
    return arch, build, [_qemu(qemu), "-cpu", cpu]


def test_runtime_test_under_qemu(cross):
    arch, build, qemu = cross
    _run([*qemu, str(build / "edgeopt_test_runtime"), "--quick"])


def _bench_under_qemu(qemu, build, path, x, tmp_path):
    """One run of the cross-built edgeopt-bench on ``x`` (2 threads); writes tmp_path/y.bin."""
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    cmd = [*qemu, str(build / "edgeopt-bench"), "--model", str(path), "--warmup", "0"]
    cmd += ["--runs", "1", "--threads", "2", "--input", str(tmp_path / "x.bin")]
    cmd += ["--output", str(tmp_path / "y.bin")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.mark.parametrize("name", ["mobilenetv2", "yolo_c2f"])
def test_bench_under_qemu_matches_host(cross, name, tmp_path):
    arch, build, qemu = cross
    model, inputs = ZOO[name]()
    path = tmp_path / f"{name}.eom"
    export_native(model, inputs, path)
    x = inputs[0].numpy()
    out = _bench_under_qemu(qemu, build, path, x, tmp_path)
    assert "neon" in out.stdout, f"{arch}: the GEMM layers run NEON kernels\n{out.stdout}"
    want = runtime.load(path).run(x)
    got = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32).reshape(want.shape)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=arch)


def test_int8_bench_under_qemu_is_bit_exact_to_host(cross, tmp_path):
    from optimizer.quantize.ptq import Int8Config, quantize_

    arch, build, qemu = cross
    model, inputs = ZOO["mobilenetv2"]()  # int8 conv (im2col, 1x1, depthwise), add, pooling
    q = quantize_(model, Int8Config(), calibration=[inputs[0]])
    path = tmp_path / "mobilenetv2_int8.eom"
    export_native(q, inputs, path)
    x = inputs[0].numpy()
    out = _bench_under_qemu(qemu, build, path, x, tmp_path)
    assert "s8_gemm__neon" in out.stdout, f"{arch}: int8 GEMMs run NEON kernels\n{out.stdout}"
    want = runtime.load(path).run(x)
    got = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32).reshape(want.shape)
    np.testing.assert_array_equal(got, want, err_msg=arch)
