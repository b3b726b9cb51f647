"""Reference int8 arithmetic (TFLite int8 spec, gemmlowp rounding) in numpy.

One definition, three implementations: this module, the C++ kernels (bit-exact to it) and the
TFLite exporter (same scales and zero points). Conventions:

- weights symmetric int8 in [-127, 127], zero point 0, one scale per output channel;
- activations asymmetric int8 with one zero point per tensor;
- bias int32 with scale ``s_in * s_w``;
- the int32 accumulator is requantized with a fixed-point ``multiplier`` in [2^30, 2^31) and a
  ``shift`` (> 0 left, < 0 right): ``MultiplyByQuantizedMultiplier`` with the double rounding of
  TFLite's reference kernels (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT).

Example::

    m, s = quantize_multiplier(np.array([0.0123]))
    y = linear_s8(x, w, bias, input_zero_point=-3, multiplier=m, shift=s, output_zero_point=5)
"""

from __future__ import annotations

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _wrap_s32(v: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 (what every kernel's accumulator does)."""
    return ((v.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int64)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SRDHM: round(a * b / 2^31), ties away from zero; INT32_MIN^2 saturates."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b  # exact: |a*b| <= 2^62
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C integer division truncates toward zero.
    q = np.where(num >= 0, num >> 31, -((-num) >> 31))
    return np.where(overflow, INT32_MAX, q).astype(np.int64)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, round to nearest, ties away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier; the left shift wraps in int32 like ``x * (1 << s)``."""
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    xs = _wrap_s32(x << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xs, multiplier), right)


def quantize_multiplier(real_multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split positive real scales into (int32 multiplier in [2^30, 2^31), int32 shift).

    ``real ~= multiplier * 2^(shift - 31)``, as TFLite's QuantizeMultiplier. A scale of 0 gives
    (0, 0). Raises ValueError for negative, NaN or infinite scales.
    """
    r = np.atleast_1d(np.asarray(real_multiplier, np.float64))
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        bad = int(np.flatnonzero(~np.isfinite(r) | (r < 0))[0])
        raise ValueError(
            f"quantize_multiplier: scale[{bad}] must be finite and >= 0, got {r[bad]!r}"
        )
    mant, exp = np.frexp(r)  # r = mant * 2^exp, mant in [0.5, 1)
    q = np.round(mant * (1 << 31)).astype(np.int64)
    carry = q == (1 << 31)
    q = np.where(carry, q // 2, q)
    exp = np.where(carry, exp + 1, exp)
    # Scales below 2^-31 round to zero; above 2^30 they cannot be represented.
    tiny = exp < -31
    q = np.where(tiny | (r == 0), 0, q)
    exp = np.where(tiny | (r == 0), 0, exp)
    if np.any(exp > 30):
        bad = int(np.flatnonzero(exp > 30)[0])
        raise ValueError(f"quantize_multiplier: scale[{bad}] = {r[bad]!r} is too large (> 2^30)")
    return q.astype(np.int32), exp.astype(np.int32)


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """int32 accumulators [..., N] -> int8 with per-channel multiplier/shift (broadcast on N)."""
    v = multiply_by_quantized_multiplier(acc, multiplier, shift) + int(output_zero_point)
    return np.clip(v, clamp[0], clamp[1]).astype(np.int8)


# --- XNNPACK's fp32 requantization (Int8Config(requantization="fp32")) ----------------------------
#
# XNNPACK, LiteRT's default CPU delegate, requantizes its per-channel int8 convolutions and fully
# connected layers in float32: scale[c] = input_scale * weight_scale[c] / output_scale computed in
# float32 (left to right: the product rounded to float32, then the quotient), and
# out = clamp(rint(float32(acc) * scale[c]) + output_zero_point, qmin, qmax) with the float32
# product and rint rounding half to even. Every float32 operation is one IEEE rounding, so any
# implementation that performs the same operations (no fused multiply-add, no wider
# intermediates) gets the same bits.


def fp32_requant_scale(
    input_scale: float, weight_scale: np.ndarray, output_scale: float
) -> np.ndarray:
    """XNNPACK's float32 requantization scales ``s_in * s_w[c] / s_out`` (float32 each step).

    Example:
        >>> fp32_requant_scale(0.02, np.array([0.01], np.float32), 0.05).dtype
        dtype('float32')
    """
    s_in = np.float32(input_scale)
    s_w = np.atleast_1d(np.asarray(weight_scale, np.float32))
    s_out = np.float32(output_scale)
    scale = (s_in * s_w).astype(np.float32) / s_out
    scale = np.asarray(scale, np.float32)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        bad = int(np.flatnonzero(~np.isfinite(scale) | (scale <= 0))[0])
        raise ValueError(
            f"fp32_requant_scale: scale[{bad}] = {scale[bad]!r} must be finite and > 0 (input "
            f"scale {input_scale!r}, weight scale {s_w[bad]!r}, output scale {output_scale!r})"
        )
    return scale


def requantize_fp32(
    acc: np.ndarray,
    scale: np.ndarray,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """int32 accumulators [..., N] -> int8 with XNNPACK's fp32 stage (``scale`` float32 [N]/[1]).

    Example:
        >>> requantize_fp32(np.array([5, 15]), np.array([0.1], np.float32), 0)
        array([0, 2], dtype=int8)
    """
    a = _wrap_s32(np.asarray(acc)).astype(np.float32)
    with np.errstate(over="ignore"):  # a huge scale may overflow to inf: clamped below
        v = a * np.asarray(scale, np.float32)  # float32 * float32: one rounding
    zp = int(output_zero_point)
    # rint rounds half to even; clamping the rounded float first keeps a huge (infinite)
    # product in range, and is the same integer as clamping after adding the zero point.
    q = np.clip(np.rint(v), clamp[0] - zp, clamp[1] - zp).astype(np.int64) + zp
    return q.astype(np.int8)


def linear_s8_fp32(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    input_zero_point: int,
    scale: np.ndarray,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """:func:`linear_s8` with the fp32 output stage :func:`requantize_fp32`."""
    acc = (x.astype(np.int64) - int(input_zero_point)) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return requantize_fp32(acc, scale, output_zero_point, clamp)


#: XNNPACK's int8 ADD takes input-to-output scale ratios in [2^-10, 2^8) only; its delegate leaves
#: other ADDs to TFLite's reference kernel (the gemmlowp arithmetic).
ADD_FP32_RATIO_RANGE = (2.0**-10, 2.0**8)


def add_fp32_ratios(
    input1_scale: float, input2_scale: float, output_scale: float
) -> np.ndarray | None:
    """The float32 ratios ``[s1 / s_out, s2 / s_out]`` of XNNPACK's int8 ADD, or None when one is
    outside :data:`ADD_FP32_RATIO_RANGE` (XNNPACK does not run that ADD).

    Example:
        >>> add_fp32_ratios(0.1, 0.05, 0.2)
        array([0.5 , 0.25], dtype=float32)
    """
    so = np.float32(output_scale)
    r = np.array([np.float32(input1_scale) / so, np.float32(input2_scale) / so], np.float32)
    lo, hi = ADD_FP32_RATIO_RANGE
    if not np.all(np.isfinite(r)) or np.any(r < lo) or np.any(r >= hi):
        return None
    return r


def add_fp32_multipliers(ratios: np.ndarray) -> tuple[int, int, int]:
    """XNNPACK's (a_multiplier, b_multiplier, shift) from the float32 ratios of
    :func:`add_fp32_ratios`: ``shift = 20 - exponent(max ratio)`` and each multiplier is the ratio
    times ``2^shift`` rounded half to even (the largest in [2^20, 2^21)).

    Example:
        >>> add_fp32_multipliers(np.array([0.5, 0.25], np.float32))
        (1048576, 524288, 21)
    """
    r = np.asarray(ratios, np.float32).reshape(2)
    lo, hi = ADD_FP32_RATIO_RANGE
    if not np.all(np.isfinite(r)) or np.any(r < lo) or np.any(r >= hi):
        raise ValueError(f"add_fp32_multipliers: ratios must be in [2^-10, 2^8); got {r.tolist()}")
    _, exp = np.frexp(np.float32(r.max()))  # r = m * 2^exp, m in [0.5, 1)
    shift = 20 - (int(exp) - 1)
    mult = np.rint(r.astype(np.float64) * 2.0**shift).astype(np.int64)  # exact scaling, then rint
    return int(mult[0]), int(mult[1]), shift


#: XNNPACK's int8 MUL takes product-to-output scale ratios in [2^-16, 2^8) only.
MUL_FP32_SCALE_RANGE = (2.0**-16, 2.0**8)


def mul_fp32_scale(input1_scale: float, input2_scale: float, output_scale: float) -> float | None:
    """XNNPACK's int8 MUL scale ``float32(float32(s1 * s2) / s_out)``, or None outside
    :data:`MUL_FP32_SCALE_RANGE` (XNNPACK does not run that MUL). The product
    ``(x1 - z1) * (x2 - z2)`` then goes through :func:`requantize_fp32` with it.

    Example:
        >>> mul_fp32_scale(0.5, 0.25, 0.125)
        1.0
    """
    s = np.float32(np.float32(input1_scale) * np.float32(input2_scale)) / np.float32(output_scale)
    lo, hi = MUL_FP32_SCALE_RANGE
    if not np.isfinite(s) or not lo <= s < hi:
        return None
    return float(np.float32(s))


def mul_s8_fp32(
    x1: np.ndarray,
    x2: np.ndarray,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    scale: float,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """XNNPACK's int8 MUL (broadcasting): the int32 product of the centred inputs through
    :func:`requantize_fp32` with the float32 ``scale`` of :func:`mul_fp32_scale`."""
    prod = (np.asarray(x1, np.int64) - int(input1_zero_point)) * (
        np.asarray(x2, np.int64) - int(input2_zero_point)
    )
    return requantize_fp32(prod, np.array([scale], np.float32), output_zero_point, clamp)


def add_s8_fp32(
    x1: np.ndarray,
    x2: np.ndarray,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    ratios: np.ndarray,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """XNNPACK's int8 ADD (broadcasting): ``((x1 - z1) * m1 + (x2 - z2) * m2 + 2^(shift-1)) >>
    shift`` (arithmetic shift: rounds half up) plus the output zero point, clamped; ``m1, m2,
    shift`` from :func:`add_fp32_multipliers`."""
    m1, m2, shift = add_fp32_multipliers(ratios)
    a = (np.asarray(x1, np.int64) - int(input1_zero_point)) * m1
    b = (np.asarray(x2, np.int64) - int(input2_zero_point)) * m2
    v = ((a + b + (1 << (shift - 1))) >> shift) + int(output_zero_point)
    return np.clip(v, clamp[0], clamp[1]).astype(np.int8)


def gemm_s8s8s32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C[M,N] = a[M,K] . b[N,K]^T with int32 wrap-around, exact."""
    acc = a.astype(np.int64) @ b.astype(np.int64).T
    return _wrap_s32(acc).astype(np.int32)


def linear_s8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    input_zero_point: int,
    multiplier: np.ndarray,
    shift: np.ndarray,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """Fused int8 linear: requantize(sum_k (x - zx) * w + bias); the kernels' oracle."""
    acc = (x.astype(np.int64) - int(input_zero_point)) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return requantize(_wrap_s32(acc), multiplier, shift, output_zero_point, clamp)


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8: round half to even (numpy/TFLite's float rounding) and saturate."""
    q = np.round(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float | np.ndarray, zero_point: int = 0) -> np.ndarray:
    """int8 -> float32: (q - zero_point) * scale."""
    return ((q.astype(np.float64) - zero_point) * scale).astype(np.float32)


# --- Ops between layers (TFLite int8 reference kernels) -------------------------------------------
#
# Layouts are the device's: activations NHWC, conv weights OHWI (output channel, kernel row,
# kernel column, input channel), so a convolution is im2col with K ordered (kh, kw, c) followed by
# ``linear_s8``. Scales are float32 values (as a .tflite file stores them) combined in float64, as
# TFLite's Prepare functions do, so the exporter and the runtime derive the same multipliers.


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def conv_multiplier(
    input_scale: float, weight_scale: np.ndarray, output_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) of a conv/linear: ``s_in * s_w[c] / s_out`` in float64.

    Each scale is first rounded to float32 (what a model file stores), then the product and the
    quotient are taken in float64, as TFLite's ``PopulateConvolutionQuantizationParams``.
    """
    s_in = np.float64(np.float32(input_scale))
    s_w = np.asarray(weight_scale, np.float32).astype(np.float64)
    s_out = np.float64(np.float32(output_scale))
    return quantize_multiplier(np.atleast_1d(s_in * s_w / s_out))


def im2col_nhwc(
    x: np.ndarray,
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    pad_value: int = 0,
) -> np.ndarray:
    """NHWC ``x`` [N, H, W, C] -> patches [N * OH * OW, KH * KW * C], K ordered (kh, kw, c).

    Positions outside the image hold ``pad_value`` (the input zero point for int8, so padding
    contributes exactly 0 to ``sum (x - zp) * w``).
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel, stride, padding, dilation))
    n, h, w, c = x.shape
    xp = np.full((n, h + 2 * ph, w + 2 * pw, c), pad_value, dtype=x.dtype)
    xp[:, ph : ph + h, pw : pw + w] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = xp[
                :,
                i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                j * dw : j * dw + sw * (ow - 1) + 1 : sw,
            ]
    return cols.reshape(n * oh * ow, kh * kw * c)


def conv2d_s8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    input_zero_point: int,
    multiplier: np.ndarray,
    shift: np.ndarray,
    output_zero_point: int,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """int8 conv, NHWC ``x`` [N, H, W, C] and OHWI ``w`` [O, KH, KW, C / groups] -> [N, OH, OW, O].

    Each group is im2col (padded with the input zero point) then :func:`linear_s8`; depthwise is
    ``groups == C`` (one input channel per group), accumulated then requantized the same way.
    """
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    if c != cg * groups or o % groups:
        raise ValueError(
            f"conv2d_s8: shapes do not match groups={groups}; got x {x.shape} and w {w.shape}"
        )
    og = o // groups
    mult = np.broadcast_to(np.asarray(multiplier), (o,))
    sh = np.broadcast_to(np.asarray(shift), (o,))
    outs = []
    for g in range(groups):
        cols = im2col_nhwc(
            x[..., g * cg : (g + 1) * cg], (kh, kw), stride, padding, dilation, input_zero_point
        )
        sl = slice(g * og, (g + 1) * og)
        b = None if bias is None else np.asarray(bias)[sl]
        outs.append(
            linear_s8(
                cols,
                w[sl].reshape(og, -1),
                b,
                input_zero_point,
                mult[sl],
                sh[sl],
                output_zero_point,
                clamp,
            )
        )
    (ph, pw), (dh, dw), (sth, stw) = _pair(padding), _pair(dilation), _pair(stride)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sth + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // stw + 1
    return np.concatenate(outs, axis=1).reshape(n, oh, ow, o)


def add_multipliers(
    input1_scale: float, input2_scale: float, output_scale: float, left_shift: int = 20
) -> tuple[int, int, int, int, int, int]:
    """TFLite int8 ADD's (m1, shift1, m2, shift2, m_out, shift_out), as its ``Prepare`` computes."""
    s1, s2, so = (np.float64(np.float32(s)) for s in (input1_scale, input2_scale, output_scale))
    twice_max = 2.0 * max(s1, s2)
    m, s = quantize_multiplier(
        np.array([s1 / twice_max, s2 / twice_max, twice_max / ((1 << left_shift) * so)])
    )
    return int(m[0]), int(s[0]), int(m[1]), int(s[1]), int(m[2]), int(s[2])


def add_s8(
    x1: np.ndarray,
    x2: np.ndarray,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    multipliers: tuple[int, int, int, int, int, int],
    left_shift: int = 20,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """TFLite int8 ADD (broadcasting): inputs rescaled to a common 2^-left_shift grid, summed,
    requantized; ``multipliers`` from :func:`add_multipliers`."""
    m1, s1, m2, s2, mo, so = multipliers
    a = (np.asarray(x1, np.int64) - int(input1_zero_point)) * (1 << left_shift)
    b = (np.asarray(x2, np.int64) - int(input2_zero_point)) * (1 << left_shift)
    a = multiply_by_quantized_multiplier(a, np.int64(m1), np.int64(s1))
    b = multiply_by_quantized_multiplier(b, np.int64(m2), np.int64(s2))
    v = multiply_by_quantized_multiplier(_wrap_s32(a + b), np.int64(mo), np.int64(so))
    return np.clip(v + int(output_zero_point), clamp[0], clamp[1]).astype(np.int8)


def mul_multiplier(
    input1_scale: float, input2_scale: float, output_scale: float
) -> tuple[int, int]:
    """TFLite int8 MUL's (multiplier, shift) of ``s1 * s2 / s_out`` (float64 of float32 scales)."""
    s1, s2, so = (np.float64(np.float32(s)) for s in (input1_scale, input2_scale, output_scale))
    m, s = quantize_multiplier(np.array([s1 * s2 / so]))
    return int(m[0]), int(s[0])


def mul_s8(
    x1: np.ndarray,
    x2: np.ndarray,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    multiplier: int,
    shift: int,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """TFLite int8 MUL (broadcasting, e.g. squeeze-excitation [N,H,W,C] * [N,1,1,C])."""
    prod = (np.asarray(x1, np.int64) - int(input1_zero_point)) * (
        np.asarray(x2, np.int64) - int(input2_zero_point)
    )
    v = multiply_by_quantized_multiplier(prod, np.int64(multiplier), np.int64(shift))
    return np.clip(v + int(output_zero_point), clamp[0], clamp[1]).astype(np.int8)


def _pool_windows(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = map(_pair, (kernel, stride, padding))
    n, h, w, c = x.shape
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * sh - ph, j * sw - pw
            r1, c1 = min(r0 + kh, h), min(c0 + kw, w)
            r0, c0 = max(r0, 0), max(c0, 0)
            yield i, j, x[:, r0:r1, c0:c1]


def avg_pool2d_s8(
    x: np.ndarray,
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """TFLite int8 AVERAGE_POOL_2D on NHWC: the sum of the valid positions divided by their count,
    rounded half away from zero; output shares the input's scale and zero point."""
    stride = kernel if stride is None else stride
    (kh, kw), (sh, sw), (ph, pw) = map(_pair, (kernel, stride, padding))
    n, h, w, c = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.empty((n, oh, ow, c), np.int8)
    for i, j, win in _pool_windows(x, (kh, kw), (sh, sw), (ph, pw)):
        acc = win.astype(np.int64).sum(axis=(1, 2))
        cnt = win.shape[1] * win.shape[2]
        half = cnt // 2
        # C++ integer division truncates toward zero.
        q = np.where(acc > 0, (acc + half) // cnt, -((-(acc - half)) // cnt))
        out[:, i, j] = np.clip(q, clamp[0], clamp[1])
    return out


def max_pool2d_s8(
    x: np.ndarray,
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
) -> np.ndarray:
    """int8 MAX_POOL_2D on NHWC over the valid positions of each window (exact)."""
    stride = kernel if stride is None else stride
    (kh, kw), (sh, sw), (ph, pw) = map(_pair, (kernel, stride, padding))
    n, h, w, c = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.empty((n, oh, ow, c), np.int8)
    for i, j, win in _pool_windows(x, (kh, kw), (sh, sw), (ph, pw)):
        out[:, i, j] = win.max(axis=(1, 2))
    return out


# XNNPACK's int8 MEAN over H and W (what LiteRT's delegate runs for TFLite's MEAN with axes [1, 2],
# TFLiteConverter's form of a global average pool). Found by reading XNNPACK's reduce operator and
# confirmed on LiteRT 2.3's delegate bit for bit (random shapes, scales, zero points): the int32
# sum of the raw int8 values (no zero point subtracted) is converted to float32, multiplied by the
# float32 ``scale = float32(float32(s_in / s_out) * float32(1 / count))``, the float32 ``bias =
# float32(z_out + float32(float32(-z_in * count) * scale))`` is added (a separate rounding: no
# fused multiply-add), and the result is rounded half to even and clamped:
# ``y = clamp(rint(float32(float32(sum) * scale) + bias))``. Both float32 conversions are exact
# while |sum| and |z_in * count| stay below 2^24 (count < 131072).


def mean_fp32_scale(input_scale: float, output_scale: float, count: int) -> np.float32:
    """XNNPACK's MEAN factor ``float32(float32(s_in / s_out) * float32(1 / count))``.

    Example:
        >>> float(mean_fp32_scale(0.05, 0.05, 16))
        0.0625
    """
    n = int(count)
    if n < 1:
        raise ValueError(f"mean_fp32_scale: count must be >= 1, got {count!r}")
    ratio = np.float32(np.float32(input_scale) / np.float32(output_scale))
    scale = np.float32(ratio * np.float32(np.float32(1.0) / np.float32(n)))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"mean_fp32_scale: scale {scale!r} must be finite and > 0 (input scale "
            f"{input_scale!r}, output scale {output_scale!r}, count {n})"
        )
    return scale


def mean_fp32_bias(
    scale: float, input_zero_point: int, output_zero_point: int, count: int
) -> np.float32:
    """XNNPACK's MEAN offset ``float32(z_out + float32(float32(-z_in * count) * scale))``.

    Example:
        >>> float(mean_fp32_bias(np.float32(0.0625), 4, -1, 16))
        -5.0
    """
    zero = np.float32(-int(input_zero_point) * int(count))
    return np.float32(np.float32(output_zero_point) + np.float32(zero * np.float32(scale)))


def global_avg_pool_s8_fp32(
    x: np.ndarray,
    scale: float,
    input_zero_point: int,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> np.ndarray:
    """XNNPACK's int8 MEAN over H and W of NHWC ``x`` [N, H, W, C] -> [N, 1, 1, C];
    ``scale`` from :func:`mean_fp32_scale` (see the comment above it for the formula).

    Example:
        >>> x = np.array([1, 2, 3, 4], np.int8).reshape(1, 2, 2, 1)
        >>> global_avg_pool_s8_fp32(x, mean_fp32_scale(0.1, 0.1, 4), 0, 0).ravel()
        array([2], dtype=int8)
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"global_avg_pool_s8_fp32: x must be NHWC [N, H, W, C], got {x.shape}")
    count = x.shape[1] * x.shape[2]
    acc = _wrap_s32(x.astype(np.int64).sum(axis=(1, 2), keepdims=True)).astype(np.float32)
    s = np.float32(scale)
    bias = mean_fp32_bias(s, input_zero_point, output_zero_point, count)
    with np.errstate(over="ignore"):
        v = (acc * s).astype(np.float32) + bias  # two float32 roundings
    return np.clip(np.rint(v), clamp[0], clamp[1]).astype(np.int8)


def lookup_table(
    fn, input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int
) -> np.ndarray:
    """The 256-entry int8 table of an elementwise ``fn`` (numpy float64 -> float64).

    ``table[q + 128] = quantize(fn(dequantize(q)))`` for every int8 ``q``; applying it is exact by
    construction, so every runtime that indexes the same table agrees bit for bit.
    """
    q = np.arange(-128, 128, dtype=np.int64)
    x = (q - int(input_zero_point)).astype(np.float64) * np.float64(np.float32(input_scale))
    y = np.asarray(fn(x), np.float64)
    return quantize(y, float(np.float32(output_scale)), int(output_zero_point))


def lookup_s8(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Applies a 256-entry int8 table: ``table[x + 128]``."""
    return np.asarray(table, np.int8)[np.asarray(x, np.int64) + 128]


def activation_range(activation: str | None, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp bounds of a fused activation, as TFLite's ``CalculateActivationRangeQuantized``:
    ``None`` -> [-128, 127], ``"relu"`` -> [zp, 127], ``"relu6"`` -> [zp, zp + round(6 / s)],
    with TFLite's rounding (half away from zero)."""
    if activation in (None, "none"):
        return -128, 127
    lo = max(-128, int(zero_point))
    if activation == "relu":
        return lo, 127
    if activation == "relu6":
        v = 6.0 / float(np.float32(scale))
        r = int(np.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)
        return lo, min(127, int(zero_point) + r)
    raise ValueError(
        "activation_range: unknown activation; expected None, 'relu' or 'relu6', "
        f"got {activation!r}"
    )


__all__ = [
    "activation_range",
    "ADD_FP32_RATIO_RANGE",
    "add_fp32_multipliers",
    "add_fp32_ratios",
    "add_multipliers",
    "add_s8",
    "add_s8_fp32",
    "MUL_FP32_SCALE_RANGE",
    "mul_fp32_scale",
    "mul_s8_fp32",
    "avg_pool2d_s8",
    "conv2d_s8",
    "conv_multiplier",
    "fp32_requant_scale",
    "global_avg_pool_s8_fp32",
    "mean_fp32_bias",
    "mean_fp32_scale",
    "im2col_nhwc",
    "lookup_s8",
    "lookup_table",
    "max_pool2d_s8",
    "mul_multiplier",
    "mul_s8",
    "dequantize",
    "gemm_s8s8s32",
    "linear_s8",
    "linear_s8_fp32",
    "multiply_by_quantized_multiplier",
    "quantize",
    "quantize_multiplier",
    "requantize",
    "requantize_fp32",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]
