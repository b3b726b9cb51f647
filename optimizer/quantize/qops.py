"""The int8 reference maths of :mod:`optimizer.quantize.arithmetic`, ported to torch, bit-exact.

The quantized modules run on ordinary ``torch.int8`` / ``torch.int32`` tensors (PyTorch 2.13
deprecates its quantized tensor types). Integer accumulation is done in float64: with int8 inputs
each product ``(x - zp) * w`` is at most 255 * 127 in magnitude, so every partial sum of a layer
with fewer than 2^53 / 32385 (about 2.8e11) terms is an exact integer whatever order BLAS or the
convolution uses, and the result converts to int64 without loss. Requantization is
``MultiplyByQuantizedMultiplier`` in int64, step for step as the numpy reference, so outputs equal
those of :mod:`optimizer.kernels` and of the C++ runtime bit for bit.

Example::

    acc = torch.tensor([[1000, -1000]])
    y = requantize(acc, torch.tensor([1 << 30, 1 << 30]), torch.tensor([-3, -3]), 5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
#: Largest K for which float64 accumulation of int8 products is exact.
MAX_EXACT_K = (2**53) // (255 * 128)

__all__ = [
    "MAX_EXACT_K",
    "add_s8",
    "add_s8_fp32",
    "avg_pool2d_s8",
    "conv2d_s8",
    "conv2d_s8_fp32",
    "dequantize",
    "linear_s8",
    "linear_s8_fp32",
    "lookup_s8",
    "max_pool2d_s8",
    "mul_s8",
    "mul_s8_fp32",
    "multiply_by_quantized_multiplier",
    "quantize",
    "requantize",
    "requantize_fp32",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
    "wrap_s32",
]


def wrap_s32(v: torch.Tensor) -> torch.Tensor:
    """Two's-complement wrap of int64 values to the int32 range (kept as int64)."""
    return ((v + 2**31) & (2**32 - 1)) - 2**31


def saturating_rounding_doubling_high_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gemmlowp SRDHM on int64 tensors holding int32 values: round(a * b / 2^31), ties away."""
    ab = a * b  # |a * b| <= 2^62: exact in int64
    nudge = torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")  # C division truncates
    overflow = (a == b) & (a == INT32_MIN)
    return torch.where(overflow, torch.full_like(q, INT32_MAX), q)


def rounding_divide_by_pot(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, round to nearest, ties away from zero."""
    pot = torch.pow(torch.full_like(exponent, 2), exponent)
    mask = pot - 1
    remainder = x & mask
    threshold = torch.div(mask, 2, rounding_mode="floor") + (x < 0).to(torch.int64)
    return torch.div(x, pot, rounding_mode="floor") + (remainder > threshold).to(torch.int64)


def multiply_by_quantized_multiplier(
    x: torch.Tensor, multiplier: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """TFLite MultiplyByQuantizedMultiplier on int64 tensors (broadcasting); the left shift wraps
    in int32 like ``x * (1 << s)`` in C++."""
    multiplier = multiplier.to(torch.int64)
    shift = shift.to(torch.int64)
    left = torch.clamp(shift, min=0)
    right = torch.clamp(-shift, min=0)
    xs = wrap_s32(x * torch.pow(torch.full_like(left, 2), left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xs, multiplier), right)


def requantize(
    acc: torch.Tensor,
    multiplier: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """int32 accumulators (int64 tensor) -> int8 with multiplier/shift broadcast against ``acc``."""
    v = multiply_by_quantized_multiplier(wrap_s32(acc), multiplier, shift) + int(output_zero_point)
    return torch.clamp(v, clamp[0], clamp[1]).to(torch.int8)


def requantize_fp32(
    acc: torch.Tensor,
    scale: torch.Tensor,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """XNNPACK's fp32 output stage (``arithmetic.requantize_fp32``): the int32 accumulator
    (int64 tensor) converted to float32, times the float32 ``scale`` (broadcast against ``acc``)
    in float32, rounded half to even, plus the zero point, clamped. Float32 throughout: one
    rounding for the conversion, one for the product, then the integer rounding."""
    v = wrap_s32(acc).to(torch.float32) * scale.to(torch.float32)
    zp = int(output_zero_point)
    q = torch.clamp(torch.round(v), clamp[0] - zp, clamp[1] - zp).to(torch.int64) + zp
    return q.to(torch.int8)


def quantize(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """float -> int8 as ``arithmetic.quantize``: float64 division, round half to even, saturate."""
    q = torch.round(x.to(torch.float64) / float(scale)) + int(zero_point)
    return torch.clamp(q, -128, 127).to(torch.int8)


def dequantize(q: torch.Tensor, scale: float | torch.Tensor, zero_point: int = 0) -> torch.Tensor:
    """int8 -> float32: ``(q - zero_point) * scale`` computed in float64."""
    if isinstance(scale, torch.Tensor):
        scale = scale.to(torch.float64)
    return ((q.to(torch.float64) - int(zero_point)) * scale).to(torch.float32)


def _channel_view(v: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.reshape(shape)


def linear_s8(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    input_zero_point: int,
    multiplier: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """int8 ``x`` [..., K] and ``w`` [N, K] -> int8 [..., N]; equals ``kernels.linear_s8``."""
    acc = _linear_acc(x, w, bias, input_zero_point)
    return requantize(acc, multiplier, shift, output_zero_point, clamp)


def _linear_acc(x, w, bias, input_zero_point) -> torch.Tensor:
    acc = torch.matmul(x.to(torch.float64) - int(input_zero_point), w.to(torch.float64).t())
    acc = acc.to(torch.int64)
    return acc + bias.to(torch.int64) if bias is not None else acc


def linear_s8_fp32(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    input_zero_point: int,
    scale: torch.Tensor,
    output_zero_point: int,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """:func:`linear_s8` with XNNPACK's fp32 output stage (``scale`` float32 [N] or [1])."""
    return requantize_fp32(
        _linear_acc(x, w, bias, input_zero_point), scale, output_zero_point, clamp
    )


def _conv_acc(x, w, bias, input_zero_point, stride, padding, dilation, groups) -> torch.Tensor:
    acc = F.conv2d(
        x.to(torch.float64) - int(input_zero_point),
        w.to(torch.float64),
        None,
        stride,
        padding,
        dilation,
        groups,
    ).to(torch.int64)
    if bias is not None:
        acc = acc + _channel_view(bias.to(torch.int64), 4, 1)
    return acc


def conv2d_s8_fp32(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    input_zero_point: int,
    scale: torch.Tensor,
    output_zero_point: int,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """:func:`conv2d_s8` with XNNPACK's fp32 output stage (``scale`` float32 [O] or [1])."""
    acc = _conv_acc(x, w, bias, input_zero_point, stride, padding, dilation, groups)
    s = scale.to(torch.float32)
    s = _channel_view(s, 4, 1) if s.numel() > 1 else s.reshape(())
    return requantize_fp32(acc, s, output_zero_point, clamp)


def conv2d_s8(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    input_zero_point: int,
    multiplier: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """int8 conv on NCHW ``x`` and OIHW ``w``; equals ``arithmetic.conv2d_s8`` on NHWC/OHWI.

    Zero padding of ``x - zp`` is padding ``x`` with its zero point; the float64 accumulation is
    exact, so the order of the sum (OIHW here, (kh, kw, c) on the device) does not matter.
    """
    acc = _conv_acc(x, w, bias, input_zero_point, stride, padding, dilation, groups)
    return requantize(
        acc, _channel_view(multiplier, 4, 1), _channel_view(shift, 4, 1), output_zero_point, clamp
    )


def add_s8(
    x1: torch.Tensor,
    x2: torch.Tensor,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    multipliers: tuple[int, int, int, int, int, int],
    left_shift: int = 20,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """TFLite int8 ADD (broadcasting); equals ``arithmetic.add_s8``."""
    m1, s1, m2, s2, mo, so = (torch.tensor(v, dtype=torch.int64) for v in multipliers)
    a = (x1.to(torch.int64) - int(input1_zero_point)) * (1 << left_shift)
    b = (x2.to(torch.int64) - int(input2_zero_point)) * (1 << left_shift)
    a = multiply_by_quantized_multiplier(a, m1, s1)
    b = multiply_by_quantized_multiplier(b, m2, s2)
    return requantize(a + b, mo, so, output_zero_point, clamp)


def add_s8_fp32(
    x1: torch.Tensor,
    x2: torch.Tensor,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    multipliers: tuple[int, int, int],
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """XNNPACK's int8 ADD (broadcasting); equals ``arithmetic.add_s8_fp32``. ``multipliers`` =
    (m1, m2, shift) from ``arithmetic.add_fp32_multipliers``."""
    m1, m2, shift = multipliers
    a = (x1.to(torch.int64) - int(input1_zero_point)) * m1
    b = (x2.to(torch.int64) - int(input2_zero_point)) * m2
    v = torch.bitwise_right_shift(a + b + (1 << (shift - 1)), shift) + int(output_zero_point)
    return torch.clamp(v, clamp[0], clamp[1]).to(torch.int8)


def mul_s8_fp32(
    x1: torch.Tensor,
    x2: torch.Tensor,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    scale: torch.Tensor,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """XNNPACK's int8 MUL (broadcasting); equals ``arithmetic.mul_s8_fp32``."""
    prod = (x1.to(torch.int64) - int(input1_zero_point)) * (
        x2.to(torch.int64) - int(input2_zero_point)
    )
    return requantize_fp32(prod, scale.reshape(()), output_zero_point, clamp)


def mul_s8(
    x1: torch.Tensor,
    x2: torch.Tensor,
    input1_zero_point: int,
    input2_zero_point: int,
    output_zero_point: int,
    multiplier: int,
    shift: int,
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """TFLite int8 MUL (broadcasting); equals ``arithmetic.mul_s8``."""
    prod = (x1.to(torch.int64) - int(input1_zero_point)) * (
        x2.to(torch.int64) - int(input2_zero_point)
    )
    m = torch.tensor(multiplier, dtype=torch.int64)
    s = torch.tensor(shift, dtype=torch.int64)
    v = multiply_by_quantized_multiplier(prod, m, s) + int(output_zero_point)
    return torch.clamp(v, clamp[0], clamp[1]).to(torch.int8)


def avg_pool2d_s8(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    clamp: tuple[int, int] = (-128, 127),
) -> torch.Tensor:
    """TFLite int8 AVERAGE_POOL_2D on NCHW: sum of valid positions / count, rounded half away
    from zero; equals ``arithmetic.avg_pool2d_s8``."""
    xf = x.to(torch.float64)
    acc = F.avg_pool2d(xf, kernel, stride, padding, divisor_override=1).to(torch.int64)
    if padding == (0, 0):
        cnt = torch.tensor(kernel[0] * kernel[1], dtype=torch.int64)
    else:
        ones = torch.ones_like(xf[:1, :1])
        cnt = F.avg_pool2d(ones, kernel, stride, padding, divisor_override=1).to(torch.int64)
    half = torch.div(cnt, 2, rounding_mode="floor")
    q = torch.where(
        acc > 0,
        torch.div(acc + half, cnt, rounding_mode="trunc"),
        torch.div(acc - half, cnt, rounding_mode="trunc"),
    )
    return torch.clamp(q, clamp[0], clamp[1]).to(torch.int8)


def max_pool2d_s8(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    ceil_mode: bool = False,
) -> torch.Tensor:
    """int8 max pooling on NCHW (exact: int8 values are exact in float32)."""
    y = F.max_pool2d(x.to(torch.float32), kernel, stride, padding, dilation, ceil_mode)
    return y.to(torch.int8)


def lookup_s8(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Applies a 256-entry int8 table: ``table[x + 128]``."""
    return table[x.to(torch.int64) + 128]
