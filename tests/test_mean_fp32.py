"""A global average pool in XNNPACK's arithmetic (``Int8Config(requantization="fp32")``).

LiteRT's XNNPACK delegate runs TFLite's int8 MEAN over H and W (TFLiteConverter's form of a
global average pool) but not an int8 AVERAGE_POOL_2D, which splits the delegated graph in two.
In fp32 mode the exporter therefore writes MEAN, and the module, the numpy reference and the
native runtime compute XNNPACK's MEAN arithmetic
(:func:`optimizer.quantize.arithmetic.global_avg_pool_s8_fp32`): these tests pin that arithmetic
against LiteRT itself on single-op files, then check the modules, the runtime and whole models.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import optimizer
from optimizer import runtime
from optimizer.export import eom_fbs as fb
from optimizer.export import native
from optimizer.export.tflite_schema import TfliteModelBuilder
from optimizer.quantize import arithmetic as ar
from optimizer.quantize import modules as qm

FP32 = optimizer.Int8Config(requantization="fp32")
f32 = np.float32


def _mean_file(shape, si, zi, so, zo, keep_dims=True) -> bytes:
    """One int8 MEAN over axes [1, 2] of an NHWC input, as TFLiteConverter writes it."""
    tb = TfliteModelBuilder("mean")
    n, _, _, c = shape
    x = tb.add_tensor("x", shape, tb.INT8, scale=si, zero_point=zi)
    y = tb.add_tensor("y", (n, 1, 1, c) if keep_dims else (n, c), tb.INT8, scale=so, zero_point=zo)
    axes = tb.add_constant("axes", np.array([1, 2], np.int32), tb.INT32)
    opts = tb.reducer_options(keep_dims)
    tb.add_operator(tb.MEAN, [x, axes], [y], tb.REDUCER_OPTIONS, opts, 2)
    return tb.finish([x], [y])


def _run_litert(blob: bytes, xs: np.ndarray, reference: bool = False) -> tuple[np.ndarray, list]:
    from optimizer.export.tflite import _interpreter

    it = _interpreter(blob, reference=reference)
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    out = []
    for x in xs:
        it.set_tensor(i, x)
        it.invoke()
        out.append(it.get_tensor(o).reshape(-1).copy())
    return np.stack(out), [str(d["op_name"]) for d in it._get_ops_details()]


def _cases(seed: int, count: int):
    """Shapes with even H * W (exact ties), equal and unequal scales, extreme zero points."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        if (h * w) % 2 and i % 4:
            w += 1
        c = int(rng.integers(1, 40))
        si = float(np.exp(rng.uniform(math.log(1e-4), math.log(1.0))))
        zi = int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))
        ratio = [1.0, 1.0, 2.0, 0.5, 0.25, 1.7, 0.37][i % 7]
        zo = zi if i % 3 == 0 else int(rng.integers(-128, 128))
        xs = rng.integers(-128, 128, (24, 1, h, w, c)).astype(np.int8)
        xs[12:] = np.clip(zi + rng.integers(-3, 4, (12, 1, h, w, c)), -128, 127)
        yield (1, h, w, c), si, zi, si * ratio, zo, bool(i % 2), xs


def _xnn_mean_float32(x: np.ndarray, si, zi, so, zo) -> np.ndarray:
    """An independent float32 spelling of XNNPACK's MEAN, element by element."""
    n = x.shape[1] * x.shape[2]
    scale = f32(f32(f32(si) / f32(so)) * f32(f32(1) / f32(n)))
    bias = f32(f32(zo) + f32(f32(-zi * n) * scale))
    out = np.empty((x.shape[0], x.shape[3]), np.int64)
    for b in range(x.shape[0]):
        for c in range(x.shape[3]):
            acc = f32(int(x[b, :, :, c].astype(np.int64).sum()))
            out[b, c] = int(np.rint(f32(f32(acc * scale) + bias)))
    return np.clip(out, -128, 127)


# -- what LiteRT computes ------------------------------------------------------------------------


def test_litert_xnnpack_mean_is_the_reference_arithmetic():
    """XNNPACK's MEAN (LiteRT's default interpreter) equals global_avg_pool_s8_fp32 bit for bit:
    float32 raw sum times float32(float32(s_in / s_out) * float32(1 / n)), plus the float32 bias,
    rounded half to even; the FMA-fused and the zero-point-first spellings differ on ties."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    fused_differs = zp_first_differs = 0
    for shape, si, zi, so, zo, keep, xs in _cases(0, 28):
        got, ops = _run_litert(_mean_file(shape, si, zi, so, zo, keep), xs)
        assert "DELEGATE" in ops, f"XNNPACK did not take the MEAN: {ops}"
        n = shape[1] * shape[2]
        scale = ar.mean_fp32_scale(si, so, n)
        want = ar.global_avg_pool_s8_fp32(xs[:, 0], scale, zi, zo).reshape(len(xs), -1)
        np.testing.assert_array_equal(got, want, err_msg=f"{shape} {si} {zi} {so} {zo} {keep}")
        np.testing.assert_array_equal(want, _xnn_mean_float32(xs[:, 0], si, zi, so, zo))
        acc = xs[:, 0].astype(np.int64).sum(axis=(1, 2))
        bias = ar.mean_fp32_bias(scale, zi, zo, n)
        fused = np.rint((acc.astype(np.float64) * float(scale) + float(bias)).astype(f32))
        fused_differs += int((np.clip(fused, -128, 127) != got).sum())
        zp_first = np.rint((acc - n * zi).astype(f32) * scale) + zo
        zp_first_differs += int((np.clip(zp_first, -128, 127) != got).sum())
    assert fused_differs > 0 and zp_first_differs > 0  # the cases reach the ties that tell


def _tflite_integer_mean(x: np.ndarray, si, zi, so, zo) -> np.ndarray:
    """TFLite's reference int8 MEAN over H and W: the multiplier of s_in / s_out divided by n in
    fixed point (truncating), then MultiplyByQuantizedMultiplier of sum(x - z_in)."""
    n = x.shape[1] * x.shape[2]
    m, e = (int(v[0]) for v in ar.quantize_multiplier(float(f32(si)) / float(f32(so))))
    k = min(n.bit_length() - 1, 32, 31 + e)
    m = (m << k) // n
    acc = x.astype(np.int64).sum(axis=(1, 2)) - n * zi
    v = ar.multiply_by_quantized_multiplier(acc, np.int64(m), np.int64(e - k)) + zo
    return np.clip(v, -128, 127)


def test_litert_reference_mean_is_tflites_integer_mean_not_ours():
    """LiteRT's reference kernels compute a third arithmetic (fixed point, truncated 1/n): the
    reason the gemmlowp mode keeps AVERAGE_POOL_2D, which they compute bit for bit."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    differs = 0
    for shape, si, zi, so, zo, keep, xs in _cases(1, 10):
        got, _ = _run_litert(_mean_file(shape, si, zi, so, zo, keep), xs, reference=True)
        want = _tflite_integer_mean(xs[:, 0], si, zi, so, zo).reshape(len(xs), -1)
        np.testing.assert_array_equal(got, want, err_msg=f"{shape} {si} {zi} {so} {zo}")
        if si == so and zi == zo:
            ours = ar.avg_pool2d_s8(xs[:, 0], shape[1:3]).reshape(len(xs), -1)
            differs += int((ours != got).sum())
    assert differs > 0


# -- the module -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("hw", "zp"), [((4, 4), 3), ((2, 7), -128), ((5, 6), 127), ((1, 1), 0)])
def test_fp32_global_pool_module_equals_the_numpy_references(hw, zp):
    m = qm.QAvgPool2d(0.037, zp, hw, hw, path="pool")
    assert m.set_requantization("fp32", input_size=hw)
    assert m.requantization == "fp32" and m.requant_scale.dtype == torch.float32
    assert m.requant_scale.item() == ar.mean_fp32_scale(0.037, 0.037, hw[0] * hw[1])
    g = torch.Generator().manual_seed(hw[0] * 100 + hw[1])
    x = torch.randint(-128, 128, (64, 9, *hw), dtype=torch.int8, generator=g)
    x[32:] = (zp + torch.randint(-3, 4, (32, 9, *hw), generator=g)).clamp(-128, 127)
    y = m(x)
    assert y.dtype == torch.int8 and tuple(y.shape) == (64, 9, 1, 1)
    nhwc = x.permute(0, 2, 3, 1).numpy()
    want = ar.global_avg_pool_s8_fp32(nhwc, m.requant_scale.item(), zp, zp)
    np.testing.assert_array_equal(y.permute(0, 2, 3, 1).numpy(), want)
    np.testing.assert_array_equal(
        y.reshape(64, 9).numpy(), _xnn_mean_float32(nhwc, *(0.037, zp) * 2)
    )


def test_only_global_pools_take_fp32_and_bad_modes_are_refused():
    m = qm.QAvgPool2d(0.05, 1, (2, 2), (2, 2), path="p")
    assert not m.set_requantization("fp32", input_size=(4, 4))  # a 2x2 window on 4x4: TFLite's
    assert m.requantization == "gemmlowp" and "requant_scale" not in dict(m.named_buffers())
    assert not qm.QAvgPool2d(0.05, 1, (3, 3), (1, 1), (1, 1)).set_requantization("fp32", (3, 3))
    with pytest.raises(ValueError, match="`p`: requantization must be 'gemmlowp' or 'fp32'"):
        m.set_requantization("xnnpack")
    g = qm.QAvgPool2d(0.05, 1, (4, 4), (4, 4), path="g")
    assert g.set_requantization("fp32", input_size=(4, 4))
    with pytest.raises(ValueError, match=r"`g`: in fp32 requantization this is a global pool"):
        g(torch.zeros(1, 2, 8, 8, dtype=torch.int8))
    assert g.set_requantization("gemmlowp") and "requant_scale" not in dict(g.named_buffers())


class _Pools(nn.Module):
    """A conv, a 2x2 average pool (not global: stays AVERAGE_POOL_2D), then the three spellings
    of a global average pool, concatenated into a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.local = nn.AvgPool2d(2)
        self.adaptive = nn.AdaptiveAvgPool2d(1)
        self.full = nn.AvgPool2d(3)
        self.fc = nn.Linear(12 * 3, 5)

    def forward(self, x):
        h = self.local(torch.relu(self.conv(x)))
        a = self.adaptive(h).flatten(1)
        b = self.full(h).flatten(1)
        c = h.mean((2, 3))
        return self.fc(torch.cat([a, b, c], 1))


def _pools_quantized():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 6, 6)
    return optimizer.quantize_(_Pools().eval(), FP32, calibration=[x]), x


def test_every_global_pool_spelling_becomes_an_fp32_mean():
    q, x = _pools_quantized()
    pools = {p: m for p, m in q.named_modules() if isinstance(m, qm.QAvgPool2d)}
    modes = sorted(m.requantization for m in pools.values())
    assert modes == ["fp32", "fp32", "fp32", "gemmlowp"], {
        p: m.requantization for p, m in pools.items()
    }


def test_fp32_export_writes_mean_and_agrees_with_litert_and_the_runtime(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    from optimizer.export.tflite import _interpreter

    q, x = _pools_quantized()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = optimizer.export_tflite(q, x[:1], tmp_path / "m.tflite", sample_inputs=x)
    assert r.ops.get("MEAN") == 3 and r.ops.get("AVERAGE_POOL_2D") == 1, r.ops
    assert "TRANSPOSE" not in r.ops
    assert r.max_abs_diff == 0, r  # LiteRT (XNNPACK) == the module, bit for bit
    native.export_native(q, x, tmp_path / "m.eom")
    rt = runtime.load(tmp_path / "m.eom")
    np.testing.assert_array_equal(rt.run(x.numpy()), q(x).detach().numpy())
    kernels = [layer["kernel"] for layer in rt.layers if layer["op"] == "global_avg_pool"]
    assert kernels == ["s8_global_mean_fp32__generic"] * 3, kernels
    # gemmlowp mode keeps AVERAGE_POOL_2D (TFLite's kernel computes its arithmetic)
    qg = optimizer.quantize_(_Pools().eval(), optimizer.Int8Config(), calibration=[x])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rg = optimizer.export_tflite(qg, x[:1], tmp_path / "g.tflite", sample_inputs=x)
    assert "MEAN" not in rg.ops and rg.ops.get("AVERAGE_POOL_2D") == 4, rg.ops
    ops = [str(d["op_name"]) for d in _interpreter((tmp_path / "m.tflite").read_bytes())
           ._get_ops_details()]  # fmt: skip
    assert ops.count("DELEGATE") == 2  # the local AVERAGE_POOL_2D still splits this toy graph


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet", "vgg"])
def test_digits_fp32_cnn_is_one_xnnpack_partition(name, tmp_path):
    """The digits CNNs in fp32 mode: MEAN for the global pool, FULLY_CONNECTED for the classifier
    (no RESHAPE around it), no AVERAGE_POOL_2D, no TRANSPOSE, and XNNPACK takes the whole graph
    (one DELEGATE node, no int8 op left to LiteRT's own kernels), bit for bit."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    from optimizer.examples import digits
    from optimizer.export.tflite import _interpreter

    train, _ = digits.loaders(batch_size=64, seed=0)
    calib = torch.cat([b[0] for b in train])[:128]
    q = optimizer.quantize_(digits.pretrained(name).eval(), FP32, calibration=[calib])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = optimizer.export_tflite(q, calib[:1], tmp_path / "m.tflite", sample_inputs=calib)
    assert r.ops.get("MEAN", 0) == (0 if name == "vgg" else 1), r.ops
    assert r.ops.get("FULLY_CONNECTED", 0) >= 1, r.ops
    assert not {"AVERAGE_POOL_2D", "TRANSPOSE", "RESHAPE"} & set(r.ops), r.ops
    assert r.max_abs_diff == 0, r
    ops = [str(d["op_name"]) for d in _interpreter((tmp_path / "m.tflite").read_bytes())
           ._get_ops_details()]  # fmt: skip
    assert ops.count("DELEGATE") == 1, ops


# -- the native runtime's FP32 GLOBAL_AVG_POOL ---------------------------------------------------


def _pool_file(shape=(2, 3, 4, 5), zp=-7, **stage_fields) -> bytes:
    """QUANTIZE -> GLOBAL_AVG_POOL with an FP32 stage -> DEQUANTIZE (NHWC)."""
    w = native.EomWriter()
    n, _, _, c = shape
    x = w.add_tensor("x", shape)
    xq = w.add_tensor("xq", shape, np.int8, {"scale": [0.05], "zero_point": [zp]})
    w.add_operator(fb.OpType.QUANTIZE, "quant", [x], [xq])
    yq = w.add_tensor("yq", (n, 1, 1, c), np.int8, {"scale": [0.05], "zero_point": [zp]})
    stage = {
        "requantization": fb.Requantization.FP32,
        "scale": np.array([ar.mean_fp32_scale(0.05, 0.05, shape[1] * shape[2])], np.float32),
        "output_zero_point": zp,
        "qmin": -128,
        "qmax": 127,
    }
    stage.update(stage_fields)
    stage = {k: v for k, v in stage.items() if v is not None}
    w.add_operator(fb.OpType.GLOBAL_AVG_POOL, "pool", [xq], [yq], int8=stage)
    y = w.add_tensor("y", (n, 1, 1, c))
    w.add_operator(fb.OpType.DEQUANTIZE, "dequant", [yq], [y])
    return w.finish([x], [y], version=native.FORMAT_VERSION_FP32_REQUANT)


@pytest.mark.parametrize(
    ("shape", "zp"), [((2, 3, 4, 5), -7), ((1, 8, 8, 33), 127), ((3, 1, 2, 1), -128)]
)
def test_hand_built_fp32_global_pool_matches_the_reference(shape, zp):
    rt = runtime.loads(_pool_file(shape, zp))
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, shape).astype(np.float32)
    xq = ar.quantize(x, f32(0.05), zp)
    xq[0, 0, 0] = zp + 1 if zp < 127 else zp - 1  # a sum off the grid of n
    x = ar.dequantize(xq, f32(0.05), zp)
    scale = ar.mean_fp32_scale(0.05, 0.05, shape[1] * shape[2])
    yq = ar.global_avg_pool_s8_fp32(xq, scale, zp, zp)
    np.testing.assert_array_equal(rt.run(x), ar.dequantize(yq, f32(0.05), zp))
    assert [layer["kernel"] for layer in rt.layers][1] == "s8_global_mean_fp32__generic"


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"scale": None}, "int8.scale of an FP32 GLOBAL_AVG_POOL must hold 1 float32"),
        ({"scale": np.ones(2, np.float32)}, "must hold 1 float32"),
        ({"scale": np.array([-0.5], np.float32)}, r"int8.scale\[0\] = -0.5 must be finite"),
        ({"scale": np.array([np.inf], np.float32)}, "must be finite and > 0"),
        ({"multiplier": [1 << 30], "shift": [-3]}, "takes one int8.scale, not multiplier"),
        ({"output_zero_point": 4}, "int8.output_zero_point = 4 differs from the zero point"),
        ({"qmin": 5, "qmax": 4}, r"int8 clamp \[5, 4\]"),
    ],
)
def test_bad_fp32_global_pool_stages_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        runtime.loads(_pool_file(**fields))


def test_gemmlowp_pool_stages_still_refuse_fp32_elsewhere():
    """An FP32 stage on a windowed AVG_POOL2D is refused, naming the ops that take one."""
    q = optimizer.quantize_(
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2)).eval(), FP32, [torch.randn(4, 1, 6, 6)]
    )
    assert [m.requantization for m in q.modules() if isinstance(m, qm.QAvgPool2d)] == ["gemmlowp"]
    w = native.EomWriter()
    x = w.add_tensor("x", (1, 4, 4, 2))
    xq = w.add_tensor("xq", (1, 4, 4, 2), np.int8, {"scale": [0.05], "zero_point": [0]})
    w.add_operator(fb.OpType.QUANTIZE, "quant", [x], [xq])
    yq = w.add_tensor("yq", (1, 2, 2, 2), np.int8, {"scale": [0.05], "zero_point": [0]})
    opts = {"kernel": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0]}
    stage = {"requantization": fb.Requantization.FP32, "scale": np.ones(1, np.float32)}
    pool = ("Pool2DOptions", opts)
    w.add_operator(fb.OpType.AVG_POOL2D, "pool", [xq], [yq], options=pool, int8=stage)
    y = w.add_tensor("y", (1, 2, 2, 2))
    w.add_operator(fb.OpType.DEQUANTIZE, "dequant", [yq], [y])
    blob = w.finish([x], [y], version=native.FORMAT_VERSION_FP32_REQUANT)
    with pytest.raises(ValueError, match="only CONV2D, LINEAR, ADD, MUL and GLOBAL_AVG_POOL take"):
        runtime.loads(blob)


@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
def test_fp32_global_pool_under_qemu_is_not_fused(arch, tmp_path):
    """On ARM a compiler may fuse the product and the add into one FMA (one rounding): the
    runtime keeps them apart. Inputs around the zero point 3 with H * W = 14 hit the ties where the
    fused form differs."""
    from tests.test_native_cross import _cross_build, _qemu
    from tests.test_runtime_cross import ARCHES, _bench_under_qemu

    compiler, qemu, cpu = ARCHES[arch]
    shape, zp = (1, 2, 7, 4096), 3
    rng = np.random.default_rng(3)
    xq = np.clip(zp + rng.integers(-40, 41, shape), -128, 127).astype(np.int8)
    scale = ar.mean_fp32_scale(0.05, 0.05, 14)
    want = ar.global_avg_pool_s8_fp32(xq, scale, zp, zp)
    acc = xq.astype(np.int64).sum(axis=(1, 2), keepdims=True)
    bias = ar.mean_fp32_bias(scale, zp, zp, 14)
    fused = np.clip(np.rint((acc * float(scale) + float(bias)).astype(f32)), -128, 127)
    assert (fused != want).sum() > 0  # the data tells the two apart
    path = tmp_path / "pool.eom"
    path.write_bytes(_pool_file(shape, zp))
    build = _cross_build(arch, compiler)
    x = ar.dequantize(xq, f32(0.05), zp).astype(np.float32)
    out = _bench_under_qemu([_qemu(qemu), "-cpu", cpu], build, path, x, tmp_path)
    assert "s8_global_mean_fp32__generic" in out.stdout, out.stdout
    got = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32).reshape(want.shape)
    np.testing.assert_array_equal(got, ar.dequantize(want, f32(0.05), zp))
