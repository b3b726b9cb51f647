// Scalar int8 requantization, TFLite/gemmlowp fixed-point rounding; shared by every path's tails.
#pragma once

#include <cstdint>
#include <limits>

namespace edgeopt {
// Internal linkage: these are compiled into files built with different ISA flags, and a shared
// (weak) out-of-line copy could carry one ISA's instructions into another's code.
namespace {

// gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31), ties away from zero,
// saturating the single overflow case a == b == INT32_MIN.
inline int32_t srdhm(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min())
    return std::numeric_limits<int32_t>::max();
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));  // C++ division truncates
}

// gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero.
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// TFLite MultiplyByQuantizedMultiplier (double rounding). The left shift wraps in int32, exactly
// as optimizer.quantize.arithmetic does (TFLite's `x * (1 << left_shift)`).
inline int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const int32_t xs = static_cast<int32_t>(static_cast<uint32_t>(x) << left);
  return rounding_divide_by_pot(srdhm(xs, multiplier), right);
}

// Full fused output stage for one accumulator that already holds sum((a - za) * w) + bias.
inline int8_t requantize_s8(int32_t acc, int32_t multiplier, int32_t shift,
                            int32_t output_zero_point, int32_t qmin, int32_t qmax) {
  int32_t v = multiply_by_quantized_multiplier(acc, multiplier, shift);
  // Adding the zero point cannot overflow: |v| <= 2^31 / 2 after a right shift >= 1 and the
  // clamp below runs in int64 to stay exact for any multiplier.
  int64_t o = static_cast<int64_t>(v) + output_zero_point;
  if (o < qmin) o = qmin;
  if (o > qmax) o = qmax;
  return static_cast<int8_t>(o);
}

}  // namespace
}  // namespace edgeopt
