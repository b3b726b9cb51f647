"""Block-sparse and codebook kernels from Python: bit-exact to the dense reference on every path
this machine has, clear refusals, and the format choice."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer import kernels
from optimizer.quantize import arithmetic as ar
from tests.conftest import path_params

PATHS = path_params()
BLOCKS = [(16, 4), (8, 4), (4, 4), (1, 4), (4, 1), (8, 1), (16, 1)]


def _block_weight(rng, n, k, block, density):
    r, c = block
    mask = rng.random(((n + r - 1) // r, (k + c - 1) // c)) < density
    keep = np.kron(mask, np.ones((r, c), bool))[:n, :k]
    w = rng.integers(1, 128, size=(n, k)) * rng.choice([-1, 1], size=(n, k))
    return np.where(keep, w, 0).astype(np.int8)


def _params(rng, n, k):
    bias = rng.integers(-(2**18), 2**18, size=n).astype(np.int32)
    mult, shift = ar.quantize_multiplier(rng.uniform(0.3, 3.0, n) / (k * 64.0))
    return bias, mult, shift


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}x{b[1]}")
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_bsr_linear_s8_bit_exact(path, block, density):
    rng = np.random.default_rng(hash((block, density)) % 2**32)
    for m, n, k in [(1, 64, 256), (5, 37, 101), (16, 128, 1024), (33, 20, 8)]:
        w = _block_weight(rng, n, k, block, density)
        x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        bias, mult, shift = _params(rng, n, k)
        with kernels.force_path(path):
            packed = kernels.PackedBsrS8(w, block=block)
            got = kernels.linear_s8(x, packed, bias, -5, mult, shift, 3, threads=2)
        want = ar.linear_s8(x, w, bias, -5, mult, shift, 3)
        np.testing.assert_array_equal(got, want, err_msg=f"{m}x{n}x{k} {block} on {path}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_codebook_linear_s8_bit_exact(path, bits, per_channel):
    rng = np.random.default_rng(bits * 10 + per_channel)
    for m, n, k in [(1, 4096 // 8, 4096 // 4), (7, 33, 99), (16, 64, 256)]:
        entries = 1 << bits
        idx = rng.integers(0, entries - 1, size=(n, k), dtype=np.uint8)  # one entry unused
        table = rng.integers(-128, 128, size=(n, entries) if per_channel else entries).astype(
            np.int8
        )
        w = np.take_along_axis(table, idx, 1) if per_channel else table[idx]
        x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        bias, mult, shift = _params(rng, n, k)
        with kernels.force_path(path):
            packed = kernels.PackedCodebookS8(idx, table, bits=bits)
            got = kernels.linear_s8(x, packed, bias, 7, mult, shift, -1)
        np.testing.assert_array_equal(got, ar.linear_s8(x, w, bias, 7, mult, shift, -1))


@pytest.mark.parametrize("path", PATHS)
def test_bsr_and_codebook_f32_within_tolerance(path):
    rng = np.random.default_rng(11)
    n, k, m = 96, 300, 9
    w = _block_weight(rng, n, k, (16, 1), 0.3).astype(np.float32) / 64
    x = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    idx = rng.integers(0, 16, size=(n, k), dtype=np.uint8)
    table = rng.uniform(-1, 1, 16).astype(np.float32)
    with kernels.force_path(path):
        got = kernels.linear_f32(x, kernels.PackedBsrF32(w, block=(16, 1)))
        got_cb = kernels.linear_f32(x, kernels.PackedCodebookF32(idx, table))
    np.testing.assert_allclose(got, x.astype(np.float64) @ w.T, atol=1e-5 * k)
    np.testing.assert_allclose(got_cb, x.astype(np.float64) @ table[idx].T, atol=1e-5 * k)


def test_bsr_refuses_weight_whose_zeros_are_not_whole_blocks():
    rng = np.random.default_rng(0)
    w = _block_weight(rng, 32, 32, (1, 4), 0.5)  # pruned in 1x4 blocks
    with pytest.raises(
        ValueError, match=r"PackedBsrS8: block \(16, 4\) at rows 0\.\.15.*partly zero"
    ):
        kernels.PackedBsrS8(w, block=(16, 4))
    relaxed = kernels.PackedBsrS8(w, block=(16, 4), strict=False)  # stored densely, still exact
    x = rng.integers(-128, 128, size=(2, 32), dtype=np.int8)
    bias, mult, shift = _params(rng, 32, 32)
    np.testing.assert_array_equal(
        kernels.linear_s8(x, relaxed, bias, 0, mult, shift, 0),
        ar.linear_s8(x, w, bias, 0, mult, shift, 0),
    )


def test_codebook_refuses_out_of_range_index_and_bad_table():
    idx = np.zeros((4, 8), np.uint8)
    idx[2, 5] = 16
    with pytest.raises(ValueError, match=r"indices\[2, 5\] = 16 is out of range for 4-bit"):
        kernels.PackedCodebookS8(idx, np.zeros(16, np.int8))
    with pytest.raises(ValueError, match=r"`table` must have shape \(16,\)"):
        kernels.PackedCodebookS8(np.zeros((4, 8), np.uint8), np.zeros(15, np.int8))
    with pytest.raises(ValueError, match=r"`block` must be \(R, C\)"):
        kernels.PackedBsrS8(np.zeros((4, 8), np.int8), block=(0, 4))


def test_linear_s8_rejects_float_packed_weight():
    with pytest.raises(ValueError, match=r"`packed` must be a PackedLinearS8, PackedBsrS8"):
        kernels.linear_s8(
            np.zeros((1, 4), np.int8), kernels.PackedLinearF32(np.zeros((2, 4), np.float32)),
            None, 0, np.ones(2, np.int32), np.zeros(2, np.int32), 0,
        )  # fmt: skip


def test_sparse_and_codebook_are_smaller_than_dense():
    rng = np.random.default_rng(2)
    w = _block_weight(rng, 512, 512, kernels.native_bsr_block(), 0.1)
    dense = kernels.PackedLinearS8(w)
    bsr = kernels.PackedBsrS8(w, block=kernels.native_bsr_block())
    assert bsr.nbytes < 0.2 * dense.nbytes
    cb = kernels.PackedCodebookS8(
        rng.integers(0, 16, (512, 512), dtype=np.uint8), np.arange(16, dtype=np.int8)
    )
    assert cb.nbytes < 0.6 * dense.nbytes


# --- Format choice ------------------------------------------------------------------------------

TABLE = {
    "block": [16, 4],
    "bsr": {"1": [[0.05, 0.1], [0.5, 0.7], [0.75, 1.05], [1.0, 1.4]]},
    "codebook4": {"1": 0.6},
    "codebook2": {"1": 0.5},
}


def test_choose_format_follows_the_break_even_table():
    rng = np.random.default_rng(3)
    sparse = _block_weight(rng, 64, 64, (16, 4), 0.1)
    assert kernels.choose_format(sparse, TABLE) == "bsr"
    dense = rng.integers(-127, 128, size=(64, 64), dtype=np.int8)
    assert kernels.choose_format(dense, TABLE) == "dense"
    shared = rng.choice(np.arange(-8, 8, dtype=np.int8), size=(64, 64))
    assert kernels.choose_format(shared, TABLE) == "codebook"


def test_choose_format_never_picks_a_format_slower_than_dense():
    rng = np.random.default_rng(4)
    w = _block_weight(rng, 64, 64, (16, 4), 0.95)  # most blocks kept: BSR predicted slower
    assert kernels.format_costs(w, TABLE)["bsr"] > 1.0
    assert kernels.choose_format(w, TABLE) == "dense"
    slow = dict(TABLE, codebook4={"1": 0.97})  # within the noise margin: stay dense
    shared = rng.choice(np.arange(-8, 8, dtype=np.int8), size=(64, 64))
    assert kernels.choose_format(shared, slow) == "dense"


def test_calibration_measures_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path))
    table = kernels.calibrate_formats(shape=(128, 256), ms=(1,), densities=(0.1, 1.0))
    assert table["path"] == kernels.best_path()
    assert [d for d, _ in table["bsr"]["1"]] == [0.1, 1.0]
    assert all(v > 0 for _, v in table["bsr"]["1"])
    assert list(tmp_path.glob("formats-*.json")), "calibration table not cached"
    again = kernels.calibrate_formats(shape=(128, 256), ms=(1,), densities=(0.1, 1.0))
    assert again == table  # served from the cache
