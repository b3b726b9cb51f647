"""The hand-written argument parsing of the per-call kernels (linear_s8, linear_f32, gemm_s8s8s32).

These three are raw CPython functions, not pybind11 overloads (to keep a call's fixed cost small),
so the Python calling convention is re-implemented by hand: these tests pin it down. Numerics are
covered by test_kernels.py and test_sparse_kernels.py.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from optimizer import kernels

N, K = 24, 40  # N not a multiple of 16: the shift check's vector loop and its tail both run


def _weight(rng, n=N, k=K):
    """An int8 weight with 16 distinct values in whole 16x4 zero blocks: every format holds it."""
    table = np.arange(-120, 120, 15, dtype=np.int8)  # 16 values, one of them 0
    zero = int(np.flatnonzero(table == 0)[0])
    idx = rng.integers(0, 16, size=(n, k), dtype=np.uint8)
    idx[:16, :8] = zero
    return table[idx], idx, table


def _qparams(rng, n=N):
    bias = rng.integers(-5000, 5000, size=n, dtype=np.int32)
    mult = rng.integers(1 << 30, (1 << 31) - 1, size=n, dtype=np.int64).astype(np.int32)
    shift = rng.integers(-12, -6, size=n, dtype=np.int32)
    return bias, mult, shift


@pytest.fixture
def s8_case():
    rng = np.random.default_rng(7)
    w, idx, table = _weight(rng)
    x = rng.integers(-128, 128, size=(3, K), dtype=np.int8)
    bias, mult, shift = _qparams(rng)
    packs = {
        "dense": kernels.PackedLinearS8(w),
        "bsr": kernels.PackedBsrS8(w, (16, 4), strict=False),
        "codebook": kernels.PackedCodebookS8(idx, table, bits=4),
    }
    return x, packs, bias, mult, shift


def test_keyword_and_positional_forms_give_identical_results_for_every_int8_format(s8_case):
    x, packs, bias, mult, shift = s8_case
    outputs = []
    for packed in packs.values():
        pos = kernels.linear_s8(x, packed, bias, -3, mult, shift, 5, (-100, 90), 1)
        forms = [
            kernels.linear_s8(x, packed, bias, -3, mult, shift, 5, clamp=(-100, 90), threads=1),
            kernels.linear_s8(
                x, packed, bias, -3, mult, shift, output_zero_point=5, clamp=(-100, 90)
            ),
            kernels.linear_s8(
                threads=1, clamp=(-100, 90), output_zero_point=5, shift=shift, multiplier=mult,
                input_zero_point=-3, bias=bias, packed=packed, x=x,
            ),
        ]  # fmt: skip
        for y in forms:
            np.testing.assert_array_equal(y, pos)
        assert pos.dtype == np.int8 and pos.shape == (3, N)
        assert pos.min() >= -100 and pos.max() <= 90
        outputs.append(pos)
    # The same integer weight in three formats gives the same bits: each type was dispatched right.
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_defaults_are_full_int8_clamp_and_one_thread(s8_case):
    x, packs, bias, mult, shift = s8_case
    w = packs["dense"]
    np.testing.assert_array_equal(
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0),
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0, clamp=(-128, 127), threads=1),
    )


def test_linear_f32_keyword_and_positional_forms_agree_for_every_format():
    rng = np.random.default_rng(3)
    _, idx, table = _weight(rng)
    tablef = table.astype(np.float32) / 16
    wf = tablef[idx]
    x = rng.standard_normal((2, K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    packs = [
        kernels.PackedLinearF32(wf),
        kernels.PackedBsrF32(wf, (16, 4), strict=False),
        kernels.PackedCodebookF32(idx, tablef, bits=4),
    ]
    for packed in packs:
        pos = kernels.linear_f32(x, packed, bias, (-1.0, 2.0), 1)
        np.testing.assert_array_equal(
            kernels.linear_f32(clamp=[-1, 2.0], x=x, bias=bias, packed=packed, threads=1), pos
        )
        np.testing.assert_array_equal(kernels.linear_f32(x, packed, bias, clamp=(-1.0, 2.0)), pos)
        assert pos.dtype == np.float32 and pos.min() >= -1.0 and pos.max() <= 2.0
        unclamped = kernels.linear_f32(x, packed)
        np.testing.assert_array_equal(unclamped, kernels.linear_f32(x, packed, None))
        np.testing.assert_allclose(unclamped, x @ wf.T, rtol=1e-5, atol=1e-4)


def test_gemm_keyword_and_positional_forms_agree():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, size=(4, K), dtype=np.int8)
    b = rng.integers(-128, 128, size=(N, K), dtype=np.int8)
    want = a.astype(np.int32) @ b.astype(np.int32).T
    packed = kernels.PackedLinearS8(b)
    for got in (
        kernels.gemm_s8s8s32(a, b),
        kernels.gemm_s8s8s32(a, packed, 1),
        kernels.gemm_s8s8s32(b=packed, a=a, threads=1),
        kernels.gemm_s8s8s32(a, b=b),
    ):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("missing", ["x", "packed", "bias", "input_zero_point", "multiplier",
                                     "shift", "output_zero_point"])  # fmt: skip
def test_missing_required_argument_raises_type_error_naming_function(s8_case, missing):
    x, packs, bias, mult, shift = s8_case
    args = dict(x=x, packed=packs["dense"], bias=bias, input_zero_point=0, multiplier=mult,
                shift=shift, output_zero_point=0)  # fmt: skip
    del args[missing]
    with pytest.raises(TypeError, match=rf"linear_s8\(\) missing required argument '{missing}'"):
        kernels.linear_s8(**args)


def test_argument_count_and_name_errors_are_type_errors_naming_function(s8_case):
    x, packs, bias, mult, shift = s8_case
    w = packs["dense"]
    with pytest.raises(TypeError, match=r"linear_s8\(\) missing required argument 'x'"):
        kernels.linear_s8()
    with pytest.raises(TypeError, match=r"linear_s8\(\) takes at most 9 arguments \(10 given\)"):
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0, (-128, 127), 1, 1)
    with pytest.raises(TypeError, match=r"linear_s8\(\) got multiple values for argument 'x'"):
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0, x=x)
    with pytest.raises(TypeError, match=r"linear_s8\(\) got multiple values for argument 'clamp'"):
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0, (-128, 127), clamp=(-128, 127))
    with pytest.raises(
        TypeError, match=r"linear_s8\(\) got an unexpected keyword argument 'thread'"
    ):
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0, thread=1)
    with pytest.raises(TypeError, match=r"linear_f32\(\) missing required argument 'packed'"):
        kernels.linear_f32(np.zeros((1, K), np.float32))
    with pytest.raises(TypeError, match=r"linear_f32\(\) takes at most 5 arguments"):
        kernels.linear_f32(1, 2, 3, 4, 5, 6)
    with pytest.raises(TypeError, match=r"linear_f32\(\) got an unexpected keyword argument 'w'"):
        kernels.linear_f32(np.zeros((1, K), np.float32), w=None)
    with pytest.raises(TypeError, match=r"gemm_s8s8s32\(\) missing required argument 'b'"):
        kernels.gemm_s8s8s32(x)
    with pytest.raises(TypeError, match=r"gemm_s8s8s32\(\) got multiple values for argument 'a'"):
        kernels.gemm_s8s8s32(x, w, a=x)
    with pytest.raises(TypeError, match=r"gemm_s8s8s32\(\) takes at most 3 arguments"):
        kernels.gemm_s8s8s32(x, w, 1, 1)


def test_numpy_integer_scalars_are_accepted_for_zero_points_clamp_and_threads(s8_case):
    x, packs, bias, mult, shift = s8_case
    w = packs["bsr"]
    want = kernels.linear_s8(x, w, bias, -3, mult, shift, 5, clamp=(-100, 90), threads=2)
    got = kernels.linear_s8(
        x, w, bias, np.int8(-3), mult, shift, np.int64(5),
        clamp=(np.int16(-100), np.uint8(90)), threads=np.int32(2),
    )  # fmt: skip
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(kernels.linear_s8(x, w, bias, True, mult, shift, 0),
                                  kernels.linear_s8(x, w, bias, 1, mult, shift, 0))  # fmt: skip


def test_clamp_may_be_a_list_tuple_or_array(s8_case):
    x, packs, bias, mult, shift = s8_case
    w = packs["codebook"]
    want = kernels.linear_s8(x, w, bias, 0, mult, shift, 0, clamp=(-20, 20))
    assert want.min() >= -20 and want.max() <= 20
    for clamp in ([-20, 20], np.array([-20, 20]), range(-20, 21, 40)):
        np.testing.assert_array_equal(kernels.linear_s8(x, w, bias, 0, mult, shift, 0, clamp), want)


@pytest.mark.parametrize("bad", [(1, 2, 3), 5, None, "ab", (1.0, 2)])
def test_malformed_clamp_raises_type_error(s8_case, bad):
    x, packs, bias, mult, shift = s8_case
    with pytest.raises(TypeError, match=r"linear_s8: `clamp` must be"):
        kernels.linear_s8(x, packs["dense"], bias, 0, mult, shift, 0, clamp=bad)


@pytest.mark.parametrize("value", [1.0, None, "0", np.float32(0)])
def test_non_integer_zero_point_raises_type_error_naming_it(s8_case, value):
    x, packs, bias, mult, shift = s8_case
    with pytest.raises(TypeError, match=r"linear_s8: `input_zero_point` must be an int"):
        kernels.linear_s8(x, packs["dense"], bias, value, mult, shift, 0)
    with pytest.raises(TypeError, match=r"linear_s8: `threads` must be an int"):
        kernels.linear_s8(x, packs["dense"], bias, 0, mult, shift, 0, threads=value)


def test_huge_integers_are_range_errors_not_overflow(s8_case):
    x, packs, bias, mult, shift = s8_case
    w = packs["dense"]
    with pytest.raises(
        ValueError, match=r"`output_zero_point` must be in \[-128, 127\].*got -10{30}"
    ):
        kernels.linear_s8(x, w, bias, 0, mult, shift, -(10**30))
    with pytest.raises(ValueError, match=r"`clamp` must be \(lo, hi\) with -128 <= lo"):
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0, clamp=(-(2**80), 0))
    with pytest.raises(ValueError, match=r"`threads` must be in \[1, 256\], got 1267"):
        kernels.linear_s8(x, w, bias, 0, mult, shift, 0, threads=2**100)


@pytest.mark.parametrize("name", ["x", "packed", "multiplier", "shift"])
def test_none_where_an_array_is_required_raises_value_error_naming_it(s8_case, name):
    x, packs, bias, mult, shift = s8_case
    args = dict(x=x, packed=packs["dense"], bias=bias, input_zero_point=0, multiplier=mult,
                shift=shift, output_zero_point=0)  # fmt: skip
    args[name] = None
    with pytest.raises(ValueError, match=rf"linear_s8: `{name}` must be"):
        kernels.linear_s8(**args)


def test_none_or_wrong_types_in_fp32_and_gemm_raise_value_error_naming_argument():
    wf = kernels.PackedLinearF32(np.ones((N, K), np.float32))
    with pytest.raises(ValueError, match=r"linear_f32: `x` must be a numpy array"):
        kernels.linear_f32(None, wf)
    with pytest.raises(ValueError, match=r"linear_f32: `packed` must be a PackedLinearF32"):
        kernels.linear_f32(np.ones((1, K), np.float32), None)
    with pytest.raises(ValueError, match=r"linear_f32: `bias` must have shape \(24,\)"):
        kernels.linear_f32(np.ones((1, K), np.float32), wf, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"linear_f32: `clamp` must be \(lo, hi\) with lo <= hi"):
        kernels.linear_f32(np.ones((1, K), np.float32), wf, clamp=(math.nan, 1.0))
    with pytest.raises(ValueError, match=r"gemm_s8s8s32: `a` must be a numpy array"):
        kernels.gemm_s8s8s32(None, np.ones((N, K), np.int8))
    with pytest.raises(ValueError, match=r"gemm_s8s8s32: `b` must be a numpy array"):
        kernels.gemm_s8s8s32(np.ones((1, K), np.int8), None)
    with pytest.raises(ValueError, match=r"gemm_s8s8s32: `threads` must be in \[1, 256\]"):
        kernels.gemm_s8s8s32(np.ones((1, K), np.int8), np.ones((N, K), np.int8), threads=0)


@pytest.mark.parametrize("bad", [-32, 31, 1000, -(2**31), 2**31 - 1])
@pytest.mark.parametrize(
    "where", [0, 5, 15, 16, 23]
)  # inside the 16-wide vector pass, and the tail
def test_shift_check_names_the_first_bad_channel(s8_case, bad, where):
    x, packs, bias, mult, shift = s8_case
    s = shift.copy()
    s[where] = bad
    s[-1] = bad  # a later bad channel: the message names the first
    with pytest.raises(ValueError, match=rf"`shift\[{where}\]` must be in \[-31, 30\], got {bad}"):
        kernels.linear_s8(x, packs["dense"], bias, 0, mult, s, 0)


def test_shift_bounds_are_accepted(s8_case):
    x, packs, bias, mult, _ = s8_case
    s = np.resize(np.array([-31, 30, 0, -1], np.int32), N)
    assert kernels.linear_s8(x, packs["dense"], bias, 0, mult, s, 0).shape == (3, N)


def test_non_native_byte_order_is_refused_not_misread(s8_case):
    x, packs, bias, mult, shift = s8_case
    swapped = mult.astype(mult.dtype.newbyteorder())
    with pytest.raises(ValueError, match=r"`multiplier` must have dtype int32"):
        kernels.linear_s8(x, packs["dense"], bias, 0, swapped, shift, 0)


def test_uninitialised_packed_weight_raises_instead_of_crashing(s8_case):
    x, _, bias, mult, shift = s8_case
    for cls in (kernels.PackedLinearS8, kernels.PackedBsrS8, kernels.PackedCodebookS8):
        empty = cls.__new__(cls)
        with pytest.raises(TypeError, match=r"linear_s8: `packed` is an uninitialised"):
            kernels.linear_s8(x, empty, bias, 0, mult, shift, 0)


def test_subclass_of_a_packed_weight_is_accepted(s8_case):
    x, packs, bias, mult, shift = s8_case

    class MyPacked(kernels.PackedLinearS8):
        pass

    rng = np.random.default_rng(7)
    w, _, _ = _weight(rng)
    np.testing.assert_array_equal(
        kernels.linear_s8(x, MyPacked(w), bias, 0, mult, shift, 0),
        kernels.linear_s8(x, packs["dense"], bias, 0, mult, shift, 0),
    )


def test_signatures_are_introspectable():
    sig = inspect.signature(kernels.linear_s8)
    assert list(sig.parameters) == ["x", "packed", "bias", "input_zero_point", "multiplier",
                                    "shift", "output_zero_point", "clamp", "threads"]  # fmt: skip
    assert sig.parameters["clamp"].default == (-128, 127)
    assert sig.parameters["threads"].default == 1
    f32 = inspect.signature(kernels.linear_f32)
    assert f32.parameters["bias"].default is None
    assert f32.parameters["clamp"].default == (-math.inf, math.inf)
    assert list(inspect.signature(kernels.gemm_s8s8s32).parameters) == ["a", "b", "threads"]
    assert kernels.linear_s8.__module__ == "optimizer._kernels"
