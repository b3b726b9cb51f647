"""The numpy int8 reference (optimizer.quantize.arithmetic) against an independent scalar model of
TFLite's integer maths, and its documented properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.quantize import arithmetic as ar

I32 = st.integers(-(2**31), 2**31 - 1)


def _srdhm_scalar(a: int, b: int) -> int:
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    q = abs(v) >> 31  # C division truncates toward zero
    return q if v >= 0 else -q


def _rdbp_scalar(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def _mbqm_scalar(x: int, m: int, s: int) -> int:
    left, right = max(s, 0), max(-s, 0)
    xs = ((x << left) + 2**31) % 2**32 - 2**31
    return _rdbp_scalar(_srdhm_scalar(xs, m), right)


@settings(max_examples=400, deadline=None)
@given(I32, I32, st.integers(-31, 30))
def test_multiply_by_quantized_multiplier_matches_scalar_model(x, m, s):
    got = int(ar.multiply_by_quantized_multiplier(np.array([x]), np.array([m]), np.array([s]))[0])
    assert got == _mbqm_scalar(x, m, s)


def test_srdhm_saturates_only_int32_min_squared():
    got = ar.saturating_rounding_doubling_high_mul(np.array([-(2**31)]), np.array([-(2**31)]))
    assert int(got[0]) == 2**31 - 1


def test_rounding_divide_by_pot_rounds_ties_away_from_zero():
    x = np.array([5, -5, 6, -6, 7, -7])
    assert ar.rounding_divide_by_pot(x, np.array(1)).tolist() == [3, -3, 3, -3, 4, -4]


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-8, max_value=1e4, allow_nan=False))
def test_quantize_multiplier_represents_scale(scale):
    m, s = ar.quantize_multiplier(np.array([scale]))
    assert 2**30 <= int(m[0]) < 2**31
    approx = int(m[0]) * 2.0 ** (int(s[0]) - 31)
    assert abs(approx - scale) <= scale * 2.0**-30


def test_quantize_multiplier_rejects_negative_and_nan():
    with pytest.raises(ValueError, match=r"scale\[1\]"):
        ar.quantize_multiplier(np.array([0.5, -1.0]))
    with pytest.raises(ValueError, match=r"scale\[0\]"):
        ar.quantize_multiplier(np.array([np.nan]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=32),
    st.floats(1e-3, 1.0),
    st.integers(-128, 127),
)
def test_quantize_dequantize_within_half_a_step(values, scale, zp):
    x = np.array(values)
    q = ar.quantize(x, scale, zp)
    back = ar.dequantize(q, scale, zp)
    lo, hi = (-128 - zp) * scale, (127 - zp) * scale
    inside = (x >= lo) & (x <= hi)
    err = np.abs(back.astype(np.float64) - x)[inside]
    assert np.all(err <= scale / 2 + 1e-6 * max(1.0, abs(scale)) + 1e-5 * np.abs(x[inside]))
    # Quantizing the dequantized values again is the identity (idempotent).
    assert np.array_equal(ar.quantize(back, scale, zp), q)


def test_linear_s8_matches_float_within_one_step():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(4, 64), dtype=np.int8)
    w = rng.integers(-127, 128, size=(8, 64), dtype=np.int8)
    bias = rng.integers(-1000, 1000, size=8).astype(np.int32)
    scale = np.full(8, 0.0007)
    m, s = ar.quantize_multiplier(scale)
    y = ar.linear_s8(x, w, bias, 3, m, s, -2)
    exact = ((x.astype(np.float64) - 3) @ w.T.astype(np.float64) + bias) * scale - 2
    assert np.max(np.abs(y - np.clip(exact, -128, 127))) <= 0.5 + 1e-9
