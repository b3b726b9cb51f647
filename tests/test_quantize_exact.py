"""The int8 model of ``quantize_`` is integer-exact: every layer equals the native kernels
(``optimizer.kernels.linear_s8``, conv as NHWC im2col + linear_s8) and the numpy reference
(``optimizer.quantize.arithmetic``) bit for bit, on the model zoo; quantizer properties; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optimizer import kernels
from optimizer.quantize import arithmetic as ar
from optimizer.quantize import modules as qm
from optimizer.quantize import qops
from optimizer.quantize.observers import activation_qparams
from optimizer.quantize.ptq import Int8Config, quantize_
from tests.test_arithmetic import _mbqm_scalar
from tests.zoo import ZOO

# Zoo models the int8 ops cover, with the float islands they need. Not covered: ``transformer``
# beyond its Linear layers (Embedding, LayerNorm, attention and a mean over tokens have no int8
# op here; they run as float islands, see test_transformer_runs_mixed_with_float_islands).
COVERED = {
    "vgg": (),
    "resnet_basic": (),
    "mobilenetv2": (),
    "efficientnet": (),
    "mlp": (),
    "densenet": (),
    "yolo_c2f": (),
    "resnet_bottleneck": ("blocks.1.bn1", "blocks.1.bn2", "blocks.1.bn3"),  # GroupNorm
}
TRANSFORMER_FLOAT = (
    "embed",
    "layers.0.ln1",
    "layers.0.attn",
    "layers.0.ln2",
    "layers.1.ln1",
    "layers.1.attn",
    "layers.1.ln2",
    "mean",
    "norm",
)


def _calib(x: torch.Tensor, n: int = 3, seed: int = 0, shift: float = 0.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*x.shape, generator=g) + shift for _ in range(n)]


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())


def _check_conv(m: qm.QConv2d, x: torch.Tensor, y: torch.Tensor) -> None:
    xn, yn = _nhwc(x), _nhwc(y)
    w = m.weight_ohwi()
    o, kh, kw, cg = w.shape
    og = o // m.groups
    ref = ar.conv2d_s8(
        xn,
        w,
        m.bias_int32.numpy(),
        m.input_zero_point,
        m.multiplier.numpy(),
        m.shift.numpy(),
        m.output_zero_point,
        m.stride,
        m.padding,
        m.dilation,
        m.groups,
        m.clamp,
    )
    assert np.array_equal(ref, yn), f"{m.path}: torch conv != arithmetic.conv2d_s8"
    for g in range(m.groups):
        cols = ar.im2col_nhwc(
            np.ascontiguousarray(xn[..., g * cg : (g + 1) * cg]),
            (kh, kw),
            m.stride,
            m.padding,
            m.dilation,
            m.input_zero_point,
        )
        sl = slice(g * og, (g + 1) * og)
        packed = kernels.PackedLinearS8(np.ascontiguousarray(w[sl].reshape(og, -1)))
        got = kernels.linear_s8(
            cols,
            packed,
            np.ascontiguousarray(m.bias_int32.numpy()[sl]),
            m.input_zero_point,
            np.ascontiguousarray(m.multiplier.numpy()[sl]),
            np.ascontiguousarray(m.shift.numpy()[sl]),
            m.output_zero_point,
            clamp=m.clamp,
        )
        want = yn[..., sl].reshape(-1, og)
        if not np.array_equal(got, want):
            i, j = np.argwhere(got != want)[0]
            raise AssertionError(
                f"{m.path} group {g}: kernels.linear_s8 {got[i, j]} != torch {want[i, j]} at "
                f"({i}, {j}), M x N x K = {cols.shape[0]} x {og} x {cols.shape[1]}"
            )


def _check_linear(m: qm.QLinear, x: torch.Tensor, y: torch.Tensor) -> None:
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]).numpy())
    y2 = y.reshape(-1, y.shape[-1]).numpy()
    w = m.weight_int8.numpy()
    args = (
        m.bias_int32.numpy(),
        m.input_zero_point,
        m.multiplier.numpy(),
        m.shift.numpy(),
        m.output_zero_point,
    )
    got = kernels.linear_s8(x2, kernels.PackedLinearS8(w), *args, clamp=m.clamp)
    assert np.array_equal(got, y2), f"{m.path}: kernels.linear_s8 != torch"
    assert np.array_equal(ar.linear_s8(x2, w, *args, m.clamp), y2), f"{m.path}: arithmetic"


def check_exact(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """Runs ``model`` with hooks on every int8 module and checks each one against the kernels
    and the numpy reference; returns how many of each op were checked."""
    seen: list[tuple[qm.QModule, tuple, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, i, o: seen.append((mod, tuple(t.detach() for t in i), o))
        )
        for m in model.modules()
        if isinstance(m, qm.QModule)
    ]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    counts: dict[str, int] = {}
    for m, ins, y in seen:
        counts[m.op] = counts.get(m.op, 0) + 1
        x = ins[0]
        if isinstance(m, qm.QConv2d):
            _check_conv(m, x, y)
        elif isinstance(m, qm.QLinear):
            _check_linear(m, x, y)
        elif isinstance(m, qm.QAdd):
            ref = ar.add_s8(
                ins[0].numpy(),
                ins[1].numpy(),
                *m.input_zero_points,
                m.output_zero_point,
                m.multipliers,
                m.left_shift,
                m.clamp,
            )
            assert np.array_equal(ref, y.numpy()), m.path
        elif isinstance(m, qm.QMul):
            ref = ar.mul_s8(
                ins[0].numpy(),
                ins[1].numpy(),
                *m.input_zero_points,
                m.output_zero_point,
                m.multiplier,
                m.shift,
                m.clamp,
            )
            assert np.array_equal(ref, y.numpy()), m.path
        elif isinstance(m, qm.QAvgPool2d):
            ref = ar.avg_pool2d_s8(_nhwc(x), m.kernel_size, m.stride, m.padding)
            assert np.array_equal(ref, _nhwc(y)), m.path
        elif isinstance(m, qm.QMaxPool2d):
            ref = ar.max_pool2d_s8(_nhwc(x), m.kernel_size, m.stride, m.padding)
            assert np.array_equal(ref, _nhwc(y)), m.path
        elif isinstance(m, qm.QLookupTable):
            assert np.array_equal(ar.lookup_s8(x.numpy(), m.table.numpy()), y.numpy()), m.path
        elif isinstance(m, qm.QuantStub):
            ref = ar.quantize(x.numpy(), m.output_scale, m.output_zero_point)
            assert np.array_equal(ref, y.numpy()), m.path
        elif isinstance(m, qm.DeQuantStub):
            ref = ar.dequantize(x.numpy(), m.input_scale, m.input_zero_point)
            assert np.array_equal(ref, y.numpy()), m.path
        elif isinstance(m, qm.QClamp):
            assert np.array_equal(np.clip(x.numpy(), *m.clamp), y.numpy()), m.path
    return counts


# --------------------------------------------------------------------------- the zoo


@pytest.mark.parametrize("name", sorted(COVERED))
def test_zoo_model_int8_layers_equal_kernels_and_reference(name):
    model, inputs = ZOO[name]()
    q = quantize_(model, Int8Config(keep_float=COVERED[name]), calibration=_calib(inputs[0]))
    counts = check_exact(q, inputs)
    assert counts.get("conv2d", 0) + counts.get("linear", 0) >= 3
    # And the int8 model still computes the float model's function.
    with torch.no_grad():
        yf, yq = model(*inputs), q(*inputs)
    rel = float((yf - yq).norm() / yf.norm())
    assert rel < 0.1, f"{name}: int8 output relative error {rel:.3f}"


def test_zoo_ops_between_layers_are_all_exercised():
    ops: set[str] = set()
    for name in ("vgg", "resnet_basic", "efficientnet", "densenet", "yolo_c2f", "mobilenetv2"):
        model, inputs = ZOO[name]()
        q = quantize_(model, Int8Config(), calibration=_calib(inputs[0]))
        ops |= set(check_exact(q, inputs))
    want = {"conv2d", "linear", "add", "mul", "lut", "avg_pool2d", "max_pool2d", "quantize"}
    assert want <= ops, f"not exercised: {want - ops}"


def test_transformer_runs_mixed_with_float_islands():
    model, inputs = ZOO["transformer"]()
    calib = [inputs[0]]
    q = quantize_(model, Int8Config(keep_float=TRANSFORMER_FLOAT), calibration=calib)
    counts = check_exact(q, inputs)
    assert counts["linear"] == 5  # fc1, fc2 of two layers and the head
    with torch.no_grad():
        yf, yq = model(*inputs), q(*inputs)
    assert float((yf - yq).norm() / yf.norm()) < 0.1


@pytest.mark.parametrize("shift, zero_point", [(6.0, -128), (-6.0, 127)])
def test_extreme_input_zero_points_stay_bit_exact(shift, zero_point):
    # All-positive inputs put the input zero point at -128, all-negative at 127; conv padding
    # then pads with that zero point.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8)
    ).eval()
    x = torch.rand(2, 3, 8, 8) * 2 + shift
    q = quantize_(model, Int8Config(), calibration=[x])
    assert q.get_submodule("0").input_zero_point == zero_point
    counts = check_exact(q, (x,))
    assert counts["conv2d"] == 2


@pytest.mark.parametrize("in_zp, out_zp", [(-128, 127), (127, -128), (0, 0), (-128, -128)])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_linear_and_conv_extreme_zero_points_and_clamps(in_zp, out_zp, activation):
    torch.manual_seed(0)
    lin = nn.Linear(37, 19)
    m = qm.QLinear.from_float(lin, 0.05, in_zp, 0.02, out_zp, True, activation, "fc")
    x = torch.randint(-128, 128, (5, 37), dtype=torch.int8)
    _check_linear(m, x, m(x))
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, dilation=1)
    c = qm.QConv2d.from_float(conv, 0.05, in_zp, 0.02, out_zp, True, activation, "conv")
    x = torch.randint(-128, 128, (2, 6, 9, 7), dtype=torch.int8)
    _check_conv(c, x, c(x))
    dw = nn.Conv2d(6, 12, 3, padding=2, dilation=2, groups=6)
    d = qm.QConv2d.from_float(dw, 0.05, in_zp, 0.02, out_zp, False, activation, "dw")
    _check_conv(d, x, d(x))


def test_torch_ops_equal_numpy_reference_on_random_tensors():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x1 = rng.integers(-128, 128, (2, 5, 6, 6)).astype(np.int8)
        x2 = rng.integers(-128, 128, (2, 5, 1, 1)).astype(np.int8)
        z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
        s1, s2, so = rng.uniform(1e-3, 1.0, 3)
        mp = ar.add_multipliers(s1, s2, so)
        t1, t2 = torch.from_numpy(x1), torch.from_numpy(x2)
        assert np.array_equal(
            qops.add_s8(t1, t2, z1, z2, zo, mp).numpy(), ar.add_s8(x1, x2, z1, z2, zo, mp)
        )
        m, s = ar.mul_multiplier(s1, s2, so)
        assert np.array_equal(
            qops.mul_s8(t1, t2, z1, z2, zo, m, s).numpy(), ar.mul_s8(x1, x2, z1, z2, zo, m, s)
        )
        got = qops.avg_pool2d_s8(t1, (3, 3), (2, 2), (1, 1)).numpy().transpose(0, 2, 3, 1)
        assert np.array_equal(got, ar.avg_pool2d_s8(x1.transpose(0, 2, 3, 1), 3, 2, 1))


def _tflite_add_scalar(a, b, za, zb, zo, mult, left_shift, lo, hi):
    """TFLite's reference int8 AddElementwise, one element, in plain Python integers."""
    m1, s1, m2, s2, mo, so = mult
    sa = _mbqm_scalar((a - za) * (1 << left_shift), m1, s1)
    sb = _mbqm_scalar((b - zb) * (1 << left_shift), m2, s2)
    return min(hi, max(lo, _mbqm_scalar(sa + sb, mo, so) + zo))


def _tflite_avg_scalar(vals: list[int]) -> int:
    acc, n = sum(vals), len(vals)
    q = (acc + n // 2) / n if acc > 0 else (acc - n // 2) / n
    return max(-128, min(127, int(q)))  # int() truncates like C++ division


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-128, 127), min_size=2, max_size=2),
    st.lists(st.integers(-128, 127), min_size=3, max_size=3),
    st.lists(st.floats(1e-3, 10.0), min_size=3, max_size=3),
)
def test_add_and_mul_references_follow_tflite_element_by_element(x, zps, scales):
    a, b = x
    za, zb, zo = zps
    mult = ar.add_multipliers(*scales)
    got = ar.add_s8(np.array([a]), np.array([b]), za, zb, zo, mult, 20, (-100, 120))
    assert int(got[0]) == _tflite_add_scalar(a, b, za, zb, zo, mult, 20, -100, 120)
    m, s = ar.mul_multiplier(*scales)
    got = ar.mul_s8(np.array([a]), np.array([b]), za, zb, zo, m, s)
    assert int(got[0]) == max(-128, min(127, _mbqm_scalar((a - za) * (b - zb), m, s) + zo))


def test_average_pool_reference_rounds_like_tflite():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 5, 5, 2)).astype(np.int8)
    got = ar.avg_pool2d_s8(x, 3, 2, 1)
    for i in range(got.shape[1]):
        for j in range(got.shape[2]):
            for c in range(2):
                rows = range(max(0, 2 * i - 1), min(5, 2 * i + 2))
                cols = range(max(0, 2 * j - 1), min(5, 2 * j + 2))
                vals = [int(x[0, r, q, c]) for r in rows for q in cols]
                assert int(got[0, i, j, c]) == _tflite_avg_scalar(vals)


def test_lookup_table_of_identity_with_equal_quantization_is_identity():
    table = ar.lookup_table(lambda v: v, 0.05, 3, 0.05, 3)
    assert np.array_equal(table, np.arange(-128, 128))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**31 - 1),
    st.integers(-31, 30),
)
def test_torch_requantization_equals_numpy_reference(x, m, s):
    got = qops.multiply_by_quantized_multiplier(
        torch.tensor([x]), torch.tensor([m]), torch.tensor([s])
    )
    want = ar.multiply_by_quantized_multiplier(np.array([x]), np.array([m]), np.array([s]))
    assert int(got[0]) == int(want[0])


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-100.0, 0.0),
    st.floats(1e-3, 100.0),
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
)
def test_quantize_dequantize_within_half_a_step(lo, hi, fractions):
    scale, zp = activation_qparams(lo, hi)
    x = np.array([lo + f * (hi - lo) for f in fractions])
    # Only values inside the representable range: the saturated ends are clipping, not rounding.
    x = x[(x >= (-128 - zp) * scale) & (x <= (127 - zp) * scale)]
    back = ar.dequantize(ar.quantize(x, scale, zp), scale, zp).astype(np.float64)
    # Half a step, plus the float32 rounding of the dequantized value.
    assert np.all(np.abs(back - x) <= scale / 2 + np.abs(x) * 2.0**-23 + 1e-12)
    tq = qops.quantize(torch.from_numpy(x), scale, zp).numpy()
    assert np.array_equal(tq, ar.quantize(x, scale, zp))


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-6, 1e3), st.integers(-128, 127))
def test_quantize_is_idempotent_on_dequantized_values(scale, zp):
    scale = float(np.float32(scale))
    q = np.arange(-128, 128).astype(np.int8)
    assert np.array_equal(ar.quantize(ar.dequantize(q, scale, zp), scale, zp), q)
    t = torch.from_numpy(q)
    assert torch.equal(qops.quantize(qops.dequantize(t, scale, zp), scale, zp), t)


@settings(max_examples=100, deadline=None)
@given(st.floats(-50.0, 50.0), st.floats(0.0, 50.0))
def test_zero_is_exactly_representable(lo, width):
    scale, zp = activation_qparams(lo, lo + width)
    assert ar.dequantize(ar.quantize(np.array([0.0]), scale, zp), scale, zp)[0] == 0.0


# --------------------------------------------------------------------------- errors


def test_unsupported_module_names_its_path():
    model, inputs = ZOO["resnet_bottleneck"]()
    with pytest.raises(ValueError, match=r"`blocks\.1\.bn1` \(GroupNorm\).*keep_float"):
        quantize_(model, Int8Config(), calibration=_calib(inputs[0]))


def test_empty_calibration_data_is_refused():
    model, _ = ZOO["mlp"]()
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize_(model, Int8Config(), calibration=[])
    with pytest.raises(ValueError, match="calibration data is missing"):
        quantize_(model, Int8Config(), calibration=None)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_names_path_and_value(bad):
    model, inputs = ZOO["vgg"]()
    with torch.no_grad():
        model.features[3].weight[2, 1, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"`features\.3\.weight`.*{bad}.*\[2, 1, 0, 0\]"):
        quantize_(model, Int8Config(), calibration=_calib(inputs[0]))


def test_non_finite_activation_names_path_and_value():
    class Log(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.fc2 = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(torch.exp(self.fc1(x) * 1000.0))

    with pytest.raises(ValueError, match=r"output of `exp`.*non-finite value inf"):
        quantize_(Log().eval(), Int8Config(), calibration=[torch.randn(8, 4) * 10])


def test_non_finite_calibration_input_is_refused():
    model, _ = ZOO["mlp"]()
    x = torch.randn(4, 64)
    x[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"model input `x`.*nan"):
        quantize_(model, Int8Config(), calibration=[x])
