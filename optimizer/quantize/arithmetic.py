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


__all__ = [
    "dequantize",
    "gemm_s8s8s32",
    "linear_s8",
    "multiply_by_quantized_multiplier",
    "quantize",
    "quantize_multiplier",
    "requantize",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]
