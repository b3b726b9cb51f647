"""optimizer.kernels vs the numpy reference, on every path this machine has, bit-exact for int8.

Paths this CPU lacks are skipped with the missing feature named; ARM paths and older x86 CPUs are
covered by test_native_cross.py under qemu-user.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer import kernels
from optimizer.quantize import arithmetic as ar
from tests.conftest import path_params

PATHS = path_params()


def _rand_params(rng: np.random.Generator, n: int, k: int):
    bias = rng.integers(-(2**20), 2**20, size=n).astype(np.int32)
    scale = rng.uniform(0.2, 2.0, size=n) / (k * 64.0)
    mult, shift = ar.quantize_multiplier(scale)
    return bias, mult, shift


def _check_linear(rng, m, n, k, zx, zo, clamp, threads=1):
    x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    w = rng.integers(-127, 128, size=(n, k), dtype=np.int8)
    bias, mult, shift = _rand_params(rng, n, k)
    packed = kernels.PackedLinearS8(w)
    got = kernels.linear_s8(x, packed, bias, zx, mult, shift, zo, clamp=clamp, threads=threads)
    want = ar.linear_s8(x, w, bias, zx, mult, shift, zo, clamp)
    if not np.array_equal(got, want):
        i, j = np.argwhere(got != want)[0]
        pytest.fail(
            f"linear_s8 i={i} j={j} M x N x K = {m} x {n} x {k} path={kernels.last_path()} "
            f"threads={threads}: reference {want[i, j]}, optimized {got[i, j]}"
        )


@pytest.mark.parametrize("path", PATHS)
def test_gemm_all_small_shapes_bit_exact(path):
    rng = np.random.default_rng(1)
    with kernels.force_path(path):
        for m, n, k in itertools.product(range(1, 18), range(1, 18), range(1, 18)):
            if (m * 7 + n * 3 + k) % 5:  # a fifth of the cube here; the C++ test runs all of it
                continue
            a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
            b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
            got = kernels.gemm_s8s8s32(a, b)
            assert kernels.last_path() == path
            np.testing.assert_array_equal(got, ar.gemm_s8s8s32(a, b), err_msg=f"{m}x{n}x{k} {path}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("m", "n", "k"),
    [
        (1, 1024, 1024),
        (4, 64, 4096),
        (16, 48, 1023),
        (65, 17, 257),
        (33, 129, 8192),
        (196, 64, 576),
    ],
)
def test_linear_s8_tile_shapes_bit_exact(path, m, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    with kernels.force_path(path):
        _check_linear(rng, m, n, k, zx=int(rng.integers(-128, 128)), zo=-7, clamp=(-128, 127))
        assert kernels.last_path() == path


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("m", "n", "k"),
    [(64, 32, 288), (64, 16, 288), (15, 24, 99), (7, 96, 16), (3, 144, 1), (1, 17, 5), (23, 33, 6)],
)
def test_linear_s8_narrow_panels_bit_exact(path, m, n, k):
    """N = 16 / 32 layers and narrow last panels (AVX-512 VNNI packs them 16 or 32 wide): every
    row remainder (8, 4, 2, 1), K % 4 != 0, the int8 and the int32 output."""
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    with kernels.force_path(path):
        _check_linear(rng, m, n, k, zx=int(rng.integers(-128, 128)), zo=5, clamp=(-100, 127))
        a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        got = kernels.gemm_s8s8s32(a, b)
        assert kernels.last_path() == path
        np.testing.assert_array_equal(got, ar.gemm_s8s8s32(a, b), err_msg=f"{m}x{n}x{k} {path}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("zx", "zo", "clamp"),
    [(-128, 127, (0, 127)), (127, -128, (-128, 0)), (0, 0, (-5, 6)), (-128, -128, (-128, 127))],
)
def test_linear_s8_extreme_zero_points_and_clamps(path, zx, zo, clamp):
    rng = np.random.default_rng(7)
    with kernels.force_path(path):
        _check_linear(rng, 9, 37, 100, zx, zo, clamp)


@pytest.mark.parametrize("path", PATHS)
def test_int32_range_with_k_8192(path):
    a = np.full((3, 8192), -128, np.int8)
    b = np.full((5, 8192), -128, np.int8)
    with kernels.force_path(path):
        got = kernels.gemm_s8s8s32(a, b)
    assert np.all(got == 128 * 128 * 8192)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_results_identical_for_any_thread_count(threads):
    rng = np.random.default_rng(3)
    for m, n, k in [(1, 1024, 256), (64, 256, 512), (300, 40, 70), (7, 130, 33)]:
        x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        w = rng.integers(-127, 128, size=(n, k), dtype=np.int8)
        bias, mult, shift = _rand_params(rng, n, k)
        p = kernels.PackedLinearS8(w)
        one = kernels.linear_s8(x, p, bias, 1, mult, shift, 2, threads=1)
        many = kernels.linear_s8(x, p, bias, 1, mult, shift, 2, threads=threads)
        np.testing.assert_array_equal(one, many)
        xf = rng.standard_normal((m, k)).astype(np.float32)
        pf = kernels.PackedLinearF32(rng.standard_normal((n, k)).astype(np.float32))
        np.testing.assert_array_equal(
            kernels.linear_f32(xf, pf, threads=1), kernels.linear_f32(xf, pf, threads=threads)
        )


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 40),
    n=st.integers(1, 70),
    k=st.integers(1, 300),
    zx=st.integers(-128, 127),
    zo=st.integers(-128, 127),
    seed=st.integers(0, 2**31),
    threads=st.integers(1, 3),
)
def test_linear_s8_property_matches_reference(m, n, k, zx, zo, seed, threads):
    rng = np.random.default_rng(seed)
    lo = int(rng.integers(-128, 128))
    hi = int(rng.integers(lo, 128))
    _check_linear(rng, m, n, k, zx, zo, (lo, hi), threads=threads)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("m", "n", "k"), [(1, 1024, 1024), (5, 33, 17), (64, 96, 768), (3, 7, 4099)]
)
def test_linear_f32_within_k_scaled_tolerance(path, m, n, k):
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    w = rng.uniform(-1, 1, (n, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    with kernels.force_path(path):
        got = kernels.linear_f32(x, kernels.PackedLinearF32(w), bias, clamp=(-3.0, 6.0))
    want = np.clip(x.astype(np.float64) @ w.T.astype(np.float64) + bias, -3.0, 6.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-6 * (k + 8))


# --- Errors name the argument and what was expected --------------------------------------------


def _args(n=8, k=16):
    w = kernels.PackedLinearS8(np.ones((n, k), np.int8))
    return (
        np.zeros((2, k), np.int8),
        w,
        np.zeros(n, np.int32),
        0,
        np.full(n, 1 << 30, np.int32),
        np.full(n, -4, np.int32),
        0,
    )


@pytest.mark.parametrize(
    ("index", "value", "pattern"),
    [
        (0, np.zeros((2, 16), np.float32), r"`x` must have dtype int8, got float32"),
        (0, np.zeros((2, 15), np.int8), r"`x` must be \[M, K\] with K = packed.k = 16"),
        (0, np.zeros((16, 2), np.int8).T, r"`x` must be C-contiguous"),
        (0, np.zeros(16, np.int8), r"`x` must be 2-D"),
        (2, np.zeros(7, np.int32), r"`bias` must have shape \(8,\)"),
        (2, np.zeros(8, np.int64), r"`bias` must have dtype int32"),
        (3, 200, r"`input_zero_point` must be in \[-128, 127\].*200"),
        (4, [1, 2], r"`multiplier` must be a numpy array"),
        (5, np.full(8, 40, np.int32), r"`shift\[0\]` must be in \[-31, 30\], got 40"),
        (6, -129, r"`output_zero_point` must be in \[-128, 127\]"),
    ],
)
def test_linear_s8_bad_arguments_raise_value_error(index, value, pattern):
    args = list(_args())
    args[index] = value
    with pytest.raises(ValueError, match=pattern):
        kernels.linear_s8(*args)


def test_bad_clamp_and_threads_raise():
    with pytest.raises(ValueError, match=r"`clamp` must be"):
        kernels.linear_s8(*_args(), clamp=(10, -10))
    with pytest.raises(ValueError, match=r"`threads` must be in"):
        kernels.linear_s8(*_args(), threads=0)


def test_gemm_shape_mismatch_names_argument():
    with pytest.raises(
        ValueError, match=r"gemm_s8s8s32: `b` must be \[N, K\] with K = a.shape\[1\]"
    ):
        kernels.gemm_s8s8s32(np.zeros((2, 4), np.int8), np.zeros((3, 5), np.int8))
    with pytest.raises(ValueError, match=r"PackedLinearS8: `weight` must have dtype int8"):
        kernels.PackedLinearS8(np.zeros((3, 5), np.float32))


def test_force_path_unknown_or_missing_raises():
    with pytest.raises(ValueError, match="unknown path"):
        with kernels.force_path("sse9"):
            pass
    missing = [p for p in kernels.ALL_PATHS if kernels.unavailable_reason(p)]
    if missing:
        with pytest.raises(ValueError, match=f"cannot force '{missing[0]}'"):
            with kernels.force_path(missing[0]):
                pass


def test_force_path_restores_previous_choice():
    best = kernels.available_paths()[-1]
    with kernels.force_path("scalar"):
        kernels.gemm_s8s8s32(np.ones((1, 4), np.int8), np.ones((4, 4), np.int8))
        assert kernels.last_path() == "scalar"
    kernels.gemm_s8s8s32(np.ones((1, 4), np.int8), np.ones((4, 4), np.int8))
    assert kernels.last_path() in (best, "amx", "avx512vnni", "avx2", "neondot", "neon")
    assert kernels.last_path() != "scalar" or best == "scalar"
