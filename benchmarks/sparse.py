"""Block-sparse and codebook int8 Linear: our kernels against our dense int8 and sparse peers.

Table 1, for each shape (M, K, N) and block sparsity: time per call (us) and speedup over OUR dense
int8 `linear_s8` (same quantized problem as benchmarks/gemm.py, on the sparsified weight) of
  - ours: block-sparse int8 (`PackedBsrS8`, the path's int8 block) and fp32 (`PackedBsrF32`, 16x1);
  - PyTorch CSR fp32 (torch.sparse_csr weight: the faster of F.linear(x, W) and
    torch.sparse.mm(W, x^T)), PyTorch BSR fp32 (to_sparse_bsr with the int8 block, or the largest
    square block that tiles it where MKL refuses non-square blocks), SciPy BSR fp32
    (scipy.sparse.bsr_matrix with the int8 block, W @ x^T), PyTorch dense fp32 (F.linear);
  - the ideal speedup 1 / (1 - sparsity), ours / ideal, and choose_format()'s pick for the weight.
Table 2: codebook int8 weights (4-bit indices with one table per layer or per output channel;
2-bit too where the API accepts it) against our dense int8 on the same shapes.

Weights: random int8 in [-127, 127] with whole R x C blocks zeroed (fixed seed) so that exactly
round(sparsity * blocks) blocks are zero; fp32 runs use the dequantized weights. Our dense and
sparse kernels run forced to one ISA path (the best one with sparse kernels unless --path).
Every output is checked before timing: ours int8 bit-exact against the numpy fixed-point
reference (optimizer.quantize.arithmetic), fp32 within 1e-3 of max |reference|; a failed check
is flagged with "!" in the table and listed below it (the time is still shown). Sparse peers are
timed on their lowest-overhead call: no bias, x^T pre-transposed, output left transposed. Timing
is gemm.py's: calibrated blocks of calls, round-robin over the row's contestants, median block.
The closing summary prints PASS/MISS against the issue's targets; nothing is enforced.

Usage:
    python benchmarks/sparse.py                   # 5 shapes x 4 sparsities + codebooks (~1-2 min)
    python benchmarks/sparse.py --quick           # smoke run: 1 shape, 2 sparsities
    python benchmarks/sparse.py --block 8,4 --threads 2 --json out.json
    python benchmarks/sparse.py --markdown        # tables as markdown, for a closing note
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see gemm.py: numpy only checks outputs here

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import _peers  # noqa: E402
import gemm  # noqa: E402
import numpy as np  # noqa: E402

from optimizer.quantize import arithmetic  # noqa: E402

#: (M, K, N) of the issue: decode-like M = 1 and 16, a batch of 64.
SHAPES: tuple[tuple[int, int, int], ...] = (
    (1, 1024, 1024),
    (16, 1024, 1024),
    (1, 4096, 4096),
    (16, 4096, 4096),
    (64, 1024, 1024),
)
SPARSITIES: tuple[float, ...] = (0.5, 0.75, 0.9, 0.95)
QUICK_SHAPES: tuple[tuple[int, int, int], ...] = ((16, 1024, 1024),)
QUICK_SPARSITIES: tuple[float, ...] = (0.5, 0.9)

#: The int8 block of each path's block-sparse kernel (issue 4: R output channels x C consecutive
#: k), used where optimizer.kernels has no NATIVE_BSR_BLOCK (peers-only runs, older builds).
INT8_BLOCK: dict[str, tuple[int, int]] = {
    "avx512vnni": (16, 4),
    "avx2": (8, 4),
    "neondot": (8, 4),
    "neon": (8, 4),
    "scalar": (1, 4),
}
F32_BLOCK: tuple[int, int] = (16, 1)
#: Paths with block-sparse kernels, best first (AMX has none: forcing it would run scalar).
SPARSE_PATHS = ("avx512vnni", "avx2", "neondot", "neon", "scalar")

#: Issue targets: sparsity -> minimum speedup of block-sparse int8 over dense int8, every shape.
SPARSE_TARGETS: dict[float, float] = {0.5: 1.0, 0.75: 2.0, 0.9: 4.0, 0.95: 6.0}
CODEBOOK_TARGET_SHAPE = (1, 4096, 4096)
CODEBOOK_TARGET = 1.5

F32_TOL = 1e-3  # max |out - ref| / max |ref|, as gemm.py

#: Table 1 contestants after dense int8: (key, column title).
SPARSE_KEYS: tuple[tuple[str, str], ...] = (
    ("bsr-s8", "ours BSR int8"),
    ("bsr-f32", "ours BSR fp32"),
    ("torch-csr", "PT CSR fp32"),
    ("torch-bsr", "PT BSR fp32"),
    ("scipy-bsr", "SciPy BSR fp32"),
    ("torch-f32", "PT dense fp32"),
)
#: Table 2 contestants: (key, bits, per_channel, column title).
CODEBOOK_KEYS: tuple[tuple[str, int, bool, str], ...] = (
    ("cb4-layer", 4, False, "cb4 layer"),
    ("cb4-chan", 4, True, "cb4 per-chan"),
    ("cb2-layer", 2, False, "cb2 layer"),
    ("cb2-chan", 2, True, "cb2 per-chan"),
)

import_ours = gemm.import_ours


# --------------------------------------------------------------------------------------------
# Problems and references
# --------------------------------------------------------------------------------------------


def with_weight(p: _peers.LinearProblem, w: np.ndarray) -> _peers.LinearProblem:
    """`p` with int8 weight `w` [N, K] (and its dequantized fp32 twin); x, bias, scales kept."""
    w = np.ascontiguousarray(w, dtype=np.int8)
    w_f32 = (p.weight_scales[:, None] * w.astype(np.float64)).astype(np.float32)
    return dataclasses.replace(p, w=w, w_f32=np.ascontiguousarray(w_f32))


def block_sparsify(
    w: np.ndarray, block: tuple[int, int], sparsity: float, rng: np.random.Generator
) -> tuple[np.ndarray, int, int]:
    """Zeroes exactly round(sparsity * blocks) whole R x C blocks of `w`, chosen at random.

    Blocks are cut from (0, 0); edge blocks are partial where R or C does not divide N or K.
    Every kept block keeps a non-zero value. Returns (weight, kept blocks, all blocks).
    """
    n, k = w.shape
    r, c = block
    br, bc = -(-n // r), -(-k // c)
    total = br * bc
    zeroed = int(round(sparsity * total))
    keep = np.ones(total, dtype=bool)
    keep[rng.choice(total, size=zeroed, replace=False)] = False
    keep = keep.reshape(br, bc)
    out = np.where(np.repeat(np.repeat(keep, r, 0), c, 1)[:n, :k], w, 0).astype(np.int8)
    padded = np.zeros((br * r, bc * c), dtype=np.int8)
    padded[:n, :k] = out
    nonzero = (padded.reshape(br, r, bc, c) != 0).any(axis=(1, 3))
    for i, j in zip(*np.nonzero(keep & ~nonzero)):
        out[i * r, j * c] = 1
    return out, total - zeroed, total


@dataclass
class References:
    """Exact int8 and float64 references of one problem, computed once."""

    s8: np.ndarray  # int8 [M, N], TFLite fixed-point requantization (what our kernels do)
    f32: np.ndarray  # float64 [M, N] with bias
    f32_nobias: np.ndarray  # float64 [M, N] without bias


def references(p: _peers.LinearProblem) -> References:
    # float64 BLAS is exact here: |sum| <= K * 255 * 127 < 2^53.
    xz = p.x.astype(np.float64) - p.input_zero_point
    acc = np.rint(xz @ p.w.astype(np.float64).T).astype(np.int64) + p.bias.astype(np.int64)
    s8 = arithmetic.requantize(acc, p.multiplier, p.shift, p.output_zero_point, (-128, 127))
    nobias = p.x_f32.astype(np.float64) @ p.w_f32.astype(np.float64).T
    return References(s8, nobias + p.bias_f32, nobias)


def check(r: _peers.Runner, refs: References) -> tuple[float, bool]:
    """(max error, ok): int8 in LSB and bit-exact required; fp32 relative to max |reference|."""
    out = np.asarray(r.result())
    if r.kind == "s8":
        err = float(np.abs(out.astype(np.int64) - refs.s8).max())
        return err, err == 0
    ref = refs.f32 if r.with_bias else refs.f32_nobias
    if out.shape != ref.shape:
        return math.inf, False
    err = float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-30))
    return err, err <= F32_TOL


# --------------------------------------------------------------------------------------------
# Contestants
# --------------------------------------------------------------------------------------------


def ours_bsr_f32(
    kernels: Any, p: _peers.LinearProblem, packed: Any, threads: int
) -> tuple[_peers.Runner, str]:
    x, bias = p.x_f32.copy(), p.bias_f32.copy()
    inf = float("inf")
    run = functools.partial(kernels.linear_f32, x, packed, bias, clamp=(-inf, inf), threads=threads)
    run()
    path = str(kernels.last_path())
    r, c = packed.block
    detail = f"optimizer.kernels.linear_f32 on PackedBsrF32 b{r}x{c} ({path})"
    return _peers.Runner("bsr-f32", run, run, "f32", detail, keep=[packed, x, bias]), path


def pick_fastest(
    variants: dict[str, tuple[Callable[[], Any], Any]],
) -> tuple[str, Callable[[], Any], Any, dict[str, str]]:
    """The variant with the shortest of a few calls (min of >= 3 calls and >= 10 ms).

    `variants` maps a name to (call, extra); a variant whose first call raises is skipped and its
    error returned. Raises RuntimeError when none runs.
    """
    best: tuple[float, str] | None = None
    errors: dict[str, str] = {}
    for name, (run, _) in variants.items():
        try:
            run()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
            continue
        shortest, calls, t_start = math.inf, 0, time.perf_counter()
        while calls < 3 or (time.perf_counter() - t_start < 0.01 and calls < 200):
            t0 = time.perf_counter()
            run()
            shortest = min(shortest, time.perf_counter() - t0)
            calls += 1
        if best is None or shortest < best[0]:
            best = (shortest, name)
    if best is None:
        raise RuntimeError("no variant runs: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    run, extra = variants[best[1]]
    return best[1], run, extra, errors


def _transposed_result(run: Callable[[], Any], transposed: bool) -> Callable[[], np.ndarray]:
    def result() -> np.ndarray:
        y = run()
        y = y.T if transposed else y
        return np.asarray(y.numpy() if hasattr(y, "numpy") else y)

    return result


def torch_csr(p: _peers.LinearProblem) -> _peers.Runner:
    """PyTorch sparse CSR fp32 weight: the faster of F.linear(x, W) and sparse.mm(W, x^T)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR tensor support is in beta state"
        w = torch.from_numpy(p.w_f32.copy()).to_sparse_csr()
    x = torch.from_numpy(p.x_f32.copy())
    xt = x.T.contiguous()
    variants = {
        "F.linear(x, W)": (functools.partial(torch.nn.functional.linear, x, w), False),
        "sparse.mm(W, x^T)": (functools.partial(torch.sparse.mm, w, xt), True),
    }
    name, run, transposed, _ = pick_fastest(variants)
    return _peers.Runner(
        "torch-csr",
        run,
        _transposed_result(run, transposed),
        "f32",
        f"torch sparse_csr fp32, {name}",
        with_bias=False,
        keep=[w, x, xt],
    )


def torch_bsr(p: _peers.LinearProblem, block: tuple[int, int]) -> tuple[_peers.Runner, str]:
    """PyTorch sparse BSR fp32 weight, W @ x^T or F.linear(x, W), whichever is faster.

    Tries the int8 block first, then the largest square block that tiles it (MKL, PyTorch's CPU
    BSR backend, refuses non-square blocks). Returns the runner and the block used ("4x4").
    """
    import torch

    blocks = [block]
    g = math.gcd(*block)
    if g > 1 and (g, g) != block:
        blocks.append((g, g))
    x = torch.from_numpy(p.x_f32.copy())
    xt = x.T.contiguous()
    w32 = torch.from_numpy(p.w_f32.copy())
    variants: dict[str, tuple[Callable[[], Any], Any]] = {}
    keep: list[Any] = [x, xt]
    refused: dict[str, str] = {}
    for b in blocks:
        tag = f"{b[0]}x{b[1]}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = w32.to_sparse_bsr(b)
        except Exception as exc:
            refused[tag] = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
            continue
        keep.append(w)
        variants[f"b{tag} W @ x^T"] = (functools.partial(torch.matmul, w, xt), (True, tag))
        variants[f"b{tag} F.linear(x, W)"] = (
            functools.partial(torch.nn.functional.linear, x, w),
            (False, tag),
        )
    name, run, (transposed, tag), errors = pick_fastest(variants)
    why = {**refused, **{k: v for k, v in errors.items() if k.startswith(f"b{block[0]}x")}}
    detail = f"torch sparse_bsr fp32, {name}"
    if tag != f"{block[0]}x{block[1]}" and why:
        detail += f" (b{block[0]}x{block[1]} refused: {next(iter(why.values()))})"
    return _peers.Runner(
        "torch-bsr",
        run,
        _transposed_result(run, transposed),
        "f32",
        detail,
        with_bias=False,
        keep=keep,
    ), tag


def scipy_bsr(p: _peers.LinearProblem, block: tuple[int, int]) -> _peers.Runner:
    """scipy.sparse.bsr_matrix fp32 with the int8 block: W @ x^T (a vector product at M = 1)."""
    import scipy.sparse

    w = scipy.sparse.bsr_matrix(p.w_f32, blocksize=block)
    if p.m == 1:
        v = p.x_f32[0].copy()
        run = functools.partial(w.dot, v)

        def result() -> np.ndarray:
            return np.asarray(run()).reshape(1, -1)

        how = "W @ x (vector)"
    else:
        xt = np.ascontiguousarray(p.x_f32.T)
        v = xt
        run = functools.partial(w.dot, xt)

        def result() -> np.ndarray:
            return np.asarray(run()).T

        how = "W @ x^T"
    detail = (
        f"scipy.sparse.bsr_matrix fp32 b{block[0]}x{block[1]} ({w.nnz // (block[0] * block[1])}"
    )
    return _peers.Runner(
        "scipy-bsr", run, result, "f32", f"{detail} blocks), {how}", with_bias=False, keep=[w, v]
    )


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One contestant of one row."""

    us: float | None = None  # median time per call
    us_best_block: float | None = None  # fastest block: a noise gauge
    ratio: float | None = None  # dense int8 time / this time
    error: float | None = None  # check: LSB (int8) or relative (fp32)
    ok: bool = True  # passed its check
    detail: str = ""
    path: str = ""  # ours: the ISA path last_path() reported
    failed: str = ""  # why it was not run


@dataclass
class SparseRow:
    m: int
    k: int
    n: int
    sparsity: float
    block: tuple[int, int]
    kept_blocks: int = 0
    total_blocks: int = 0
    dense_us: float | None = None
    dense_path: str = ""
    dense_ok: bool = True
    ideal: float = 1.0
    ours_over_ideal: float | None = None
    choose_format: str = ""
    bsr_nbytes: int | None = None
    dense_nbytes: int | None = None
    f32_density: float | None = None  # stored 16x1 blocks / all 16x1 blocks
    torch_bsr_block: str = ""
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def shape(self) -> str:
        return f"{self.m}x{self.k}x{self.n}"

    @property
    def label(self) -> str:
        return f"{self.shape} {self.sparsity * 100:g}%"


@dataclass
class CodebookRow:
    m: int
    k: int
    n: int
    dense_us: float | None = None
    dense_path: str = ""
    dense_ok: bool = True
    dense_nbytes: int | None = None
    nbytes: dict[str, int] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def shape(self) -> str:
        return f"{self.m}x{self.k}x{self.n}"


class _Collector:
    """Builds runners (a failure is recorded, never raised), checks them, times them together."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries
        self.runners: list[tuple[_peers.Runner, References]] = []

    def add(self, key: str, make: Callable[[], _peers.Runner], refs: References) -> None:
        try:
            r = make()
        except Exception as exc:  # a peer or an API part that is missing or refuses the weight
            self.entries[key] = Entry(failed=f"{type(exc).__name__}: {exc}".splitlines()[0][:160])
            return
        self.runners.append((r, refs))

    def run(self, args: argparse.Namespace) -> dict[str, gemm.Contestant]:
        contestants = []
        for r, refs in self.runners:
            e = self.entries.setdefault(r.name, Entry())
            e.detail = r.detail
            try:
                e.error, e.ok = check(r, refs)
            except Exception as exc:
                e.failed = f"check raised {type(exc).__name__}: {exc}".splitlines()[0][:160]
                continue
            contestants.append(gemm.Contestant(r.name, r.run, r.detail))
        target_s = args.target_ms / 1000.0
        for c in contestants:
            gemm.calibrate(c, target_s, warmup=3)
        gemm.time_round_robin(contestants, args.repeats, gap_s=0.01 if args.threads > 1 else 0.0)
        for c in contestants:
            e = self.entries[c.key]
            e.us, e.us_best_block = c.median_s * 1e6, min(c.times) * 1e6
        return {c.key: c for c in contestants}


def _ratios(entries: dict[str, Entry], dense_key: str) -> float | None:
    dense = entries.get(dense_key)
    dense_us = dense.us if dense is not None else None
    for e in entries.values():
        e.ratio = dense_us / e.us if dense_us and e.us else None
    return dense_us


def run_sparse_row(
    shape: tuple[int, int, int],
    sparsity: float,
    kernels: Any,
    path: str,
    args: argparse.Namespace,
) -> SparseRow:
    m, k, n = shape
    row = SparseRow(m, k, n, sparsity, args.block, ideal=1.0 / (1.0 - sparsity))
    base = _peers.make_problem(m, k, n, seed=args.seed)
    rng = np.random.default_rng([args.seed, m, k, n, round(sparsity * 1000)])
    w, row.kept_blocks, row.total_blocks = block_sparsify(base.w, args.block, sparsity, rng)
    p = with_weight(base, w)
    refs = references(p)
    entries: dict[str, Entry] = {}
    col = _Collector(entries)

    if kernels is not None:

        def make_dense() -> _peers.Runner:
            r, entries.setdefault("dense", Entry()).path = gemm.ours_s8(kernels, p, args.threads)
            row.dense_nbytes = getattr(r.keep[0], "nbytes", None)
            return _peers.Runner("dense", r.run, r.result, "s8", r.detail, keep=r.keep)

        def make_bsr_s8() -> _peers.Runner:
            packed = kernels.PackedBsrS8(p.w, block=args.block)
            row.bsr_nbytes = getattr(packed, "nbytes", None)
            what = f"PackedBsrS8 b{args.block[0]}x{args.block[1]}"
            r, entries.setdefault("bsr-s8", Entry()).path = gemm.ours_linear_s8(
                kernels, p, packed, args.threads, "bsr-s8", what
            )
            return r

        def make_bsr_f32() -> _peers.Runner:
            # strict (refuse blocks at least half zero) only where the fp32 block tiles the int8
            # one, so that a finer int8 pattern (8x4 under 16x1) is still stored.
            (r8, c8), (rf, cf) = args.block, args.block_f32
            strict = r8 % rf == 0 and c8 % cf == 0
            packed = kernels.PackedBsrF32(p.w_f32, block=args.block_f32, strict=strict)
            nnz = getattr(packed, "nnz_blocks", None)
            if nnz is not None:
                row.f32_density = nnz / ((-(-n // rf)) * (-(-k // cf)))
            r, entries.setdefault("bsr-f32", Entry()).path = ours_bsr_f32(
                kernels, p, packed, args.threads
            )
            return r

        col.add("dense", make_dense, refs)
        col.add("bsr-s8", make_bsr_s8, refs)
        col.add("bsr-f32", make_bsr_f32, refs)
        choose = getattr(kernels, "choose_format", None)
        if choose is not None:
            try:
                row.choose_format = str(choose(p.w, m=m))
            except Exception as exc:
                row.choose_format = f"error: {type(exc).__name__}"

    def make_torch_bsr() -> _peers.Runner:
        r, row.torch_bsr_block = torch_bsr(p, args.block)
        return r

    col.add("torch-csr", lambda: torch_csr(p), refs)
    col.add("torch-bsr", make_torch_bsr, refs)
    col.add("scipy-bsr", lambda: scipy_bsr(p, args.block), refs)
    col.add("torch-f32", lambda: _peers.torch_f32_linear(p), refs)
    col.run(args)

    row.dense_us = _ratios(entries, "dense")
    dense = entries.pop("dense", None)
    if dense is not None:
        row.dense_path, row.dense_ok = dense.path, dense.ok and not dense.failed
        if dense.failed or not dense.ok:
            entries["dense"] = dense  # listed in the notes
    row.entries = entries
    ours = entries.get("bsr-s8")
    if ours is not None and ours.ratio is not None:
        row.ours_over_ideal = ours.ratio / row.ideal
    return row


def codebook_weight(idx: np.ndarray, table: np.ndarray, per_channel: bool) -> np.ndarray:
    """The dense int8 weight of a codebook: W[n, k] = table[t(n)][idx[n, k]]."""
    if per_channel:
        return table[np.arange(idx.shape[0])[:, None], idx]
    return table[idx]


def run_codebook_row(
    shape: tuple[int, int, int], kernels: Any, args: argparse.Namespace
) -> CodebookRow:
    m, k, n = shape
    row = CodebookRow(m, k, n)
    base = _peers.make_problem(m, k, n, seed=args.seed)
    rng = np.random.default_rng([args.seed, m, k, n, 4242])
    idx4 = rng.integers(0, 16, size=(n, k), dtype=np.uint8)
    entries: dict[str, Entry] = {}
    col = _Collector(entries)
    dense_problem = None
    for key, bits, per_channel, _ in CODEBOOK_KEYS:
        idx = idx4 if bits == 4 else np.ascontiguousarray(idx4 & ((1 << bits) - 1))
        size = (n, 1 << bits) if per_channel else (1 << bits,)
        table = rng.integers(-127, 128, size=size, dtype=np.int8)
        p = with_weight(base, codebook_weight(idx, table, per_channel))
        refs = references(p)
        if dense_problem is None:
            dense_problem = (p, refs)

        def make(p=p, idx=idx, table=table, bits=bits, key=key) -> _peers.Runner:
            packed = kernels.PackedCodebookS8(idx, table, bits=bits)
            row.nbytes[key] = getattr(packed, "nbytes", None)
            what = f"PackedCodebookS8 {bits}-bit, table {'x'.join(map(str, table.shape))}"
            r, entries.setdefault(key, Entry()).path = gemm.ours_linear_s8(
                kernels, p, packed, args.threads, key, what
            )
            return r

        col.add(key, make, refs)

    p, refs = dense_problem

    def make_dense() -> _peers.Runner:
        r, entries.setdefault("dense", Entry()).path = gemm.ours_s8(kernels, p, args.threads)
        row.dense_nbytes = getattr(r.keep[0], "nbytes", None)
        return _peers.Runner("dense", r.run, r.result, "s8", r.detail, keep=r.keep)

    col.add("dense", make_dense, refs)
    col.run(args)
    row.dense_us = _ratios(entries, "dense")
    dense = entries.pop("dense", None)
    if dense is not None:
        row.dense_path, row.dense_ok = dense.path, dense.ok and not dense.failed
        if dense.failed or not dense.ok:
            entries["dense"] = dense
    row.entries = entries
    return row


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}"


def _cell(e: Entry | None) -> str:
    """'time ratio' for a timed contestant, '!' appended when its check failed."""
    if e is None:
        return "-"
    if e.us is None:
        return "n/a"
    text = _us(e.us) + (f" {e.ratio:.2f}x" if e.ratio is not None else "")
    return text + ("" if e.ok else " !")


def _render(columns: Sequence[str], body: Sequence[Sequence[str]], left: int, md: bool) -> str:
    """A text or markdown table; the first `left` columns are left-aligned."""
    if md:
        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|",
        ]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in
              enumerate(columns)]  # fmt: skip

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([fmt(columns), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body])


def sparse_table(rows: Sequence[SparseRow], md: bool) -> str:
    has_choice = any(r.choose_format for r in rows)
    columns = ["M x K x N", "sparsity", "dense int8 us"] + [t for _, t in SPARSE_KEYS]
    columns += ["ideal", "ours/ideal"] + (["choose_format"] if has_choice else [])
    body = []
    for r in rows:
        cells = [r.shape, f"{r.sparsity * 100:g}%", _us(r.dense_us) + ("" if r.dense_ok else " !")]
        cells += [_cell(r.entries.get(key)) for key, _ in SPARSE_KEYS]
        cells += [f"{r.ideal:.1f}x", gemm._f(r.ours_over_ideal, "{:.2f}")]
        cells += [r.choose_format or "-"] if has_choice else []
        body.append(cells)
    return _render(columns, body, 2, md)


def codebook_table(rows: Sequence[CodebookRow], md: bool) -> str:
    columns = ["M x K x N", "dense int8 us"] + [t for *_, t in CODEBOOK_KEYS]
    columns += ["bytes cb4/dense", "bytes cb2/dense"]
    body = []
    for r in rows:
        cells = [r.shape, _us(r.dense_us) + ("" if r.dense_ok else " !")]
        cells += [_cell(r.entries.get(key)) for key, *_ in CODEBOOK_KEYS]
        for key in ("cb4-layer", "cb2-layer"):
            b = r.nbytes.get(key)
            cells.append(f"{b / r.dense_nbytes:.3f}" if b and r.dense_nbytes else "-")
        body.append(cells)
    return _render(columns, body, 1, md)


def _judge(name: str, items: Sequence[tuple[str, Entry | None]], threshold: float) -> gemm.Target:
    """PASS when every item was measured, checked correct and reached `threshold`."""
    if not items or all(e is None or e.ratio is None for _, e in items):
        return gemm.Target(name, "n/a", "no measurement")
    met = [
        label for label, e in items if e and e.ratio is not None and e.ok and e.ratio >= threshold
    ]
    timed = [(label, e.ratio) for label, e in items if e and e.ratio is not None]
    worst_label, worst = min(timed, key=lambda lv: lv[1])
    detail = f"{len(met)}/{len(items)} met; worst {worst:.2f}x at {worst_label}"
    wrong = [label for label, e in items if e and e.ratio is not None and not e.ok]
    missing = [label for label, e in items if e is None or e.ratio is None]
    if wrong:
        detail += f"; wrong output at {', '.join(wrong)}"
    if missing:
        detail += f"; not measured at {', '.join(missing)}"
    return gemm.Target(name, "PASS" if len(met) == len(items) else "MISS", detail)


def judge_targets(rows: Sequence[SparseRow], cb_rows: Sequence[CodebookRow]) -> list[gemm.Target]:
    targets = []
    for s, thr in SPARSE_TARGETS.items():
        items = [(r.shape, r.entries.get("bsr-s8")) for r in rows if r.sparsity == s]
        targets.append(
            _judge(f"block-sparse int8 >= {thr:g}x dense int8 at {s * 100:g}% (every shape)",
                   items, thr)
        )  # fmt: skip
    m, k, n = CODEBOOK_TARGET_SHAPE
    for key, label in (("cb4-layer", "per-layer table"), ("cb4-chan", "per-channel tables")):
        items = [(r.shape, r.entries.get(key)) for r in cb_rows if (r.m, r.k, r.n) == (m, k, n)]
        targets.append(
            _judge(f"codebook 4-bit ({label}) >= {CODEBOOK_TARGET:g}x dense int8 at M={m} "
                   f"K=N={k}", items, CODEBOOK_TARGET)
        )  # fmt: skip
    return targets


def notes(rows: Sequence[SparseRow], cb_rows: Sequence[CodebookRow], path: str) -> list[str]:
    """Failed checks, contestants that did not run, our calls that ran off the forced path.

    One line per (table, contestant, message), naming the rows it concerns ("every row" if all).
    """
    groups: dict[tuple[str, str, str], list[str]] = {}
    tables = [
        ("", [(r.label, r.entries, r.dense_path) for r in rows]),
        ("codebook ", [(r.shape, r.entries, r.dense_path) for r in cb_rows]),
    ]
    for table, labelled in tables:
        for label, entries, dense_path in labelled:
            found: list[tuple[str, str]] = []
            for key, e in entries.items():
                if e.failed:
                    found.append((key, f"not run: {e.failed}"))
                elif not e.ok:
                    unit = "LSB" if key in ("dense", "bsr-s8") or key.startswith("cb") else "rel."
                    found.append((key, f"WRONG OUTPUT, max error {e.error:g} {unit}"))
                if e.path and path and e.path != path:
                    found.append((key, f"ran on path {e.path}, not {path}"))
            if dense_path and path and dense_path != path:
                found.append(("dense", f"ran on path {dense_path}, not {path}"))
            for key, msg in found:
                groups.setdefault((table, key, msg), []).append(label)
    out = []
    for (table, key, msg), labels in groups.items():
        every = len(labels) == (len(rows) if not table else len(cb_rows)) and len(labels) > 1
        where = "every row" if every else ", ".join(labels)
        out.append(f"{table}{key}: {msg} ({where})")
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_block(text: str) -> tuple[int, int]:
    parts = text.replace("x", ",").split(",")
    if len(parts) != 2 or not all(s.strip().isdigit() and int(s) > 0 for s in parts):
        raise argparse.ArgumentTypeError(f"expected R,C such as 16,4; got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_sparsities(text: str) -> list[float]:
    try:
        vals = [float(s) / (100.0 if float(s) > 1 else 1.0) for s in text.split(",")]
    except ValueError:
        vals = []
    if not vals or not all(0.0 <= v < 1.0 for v in vals):
        raise argparse.ArgumentTypeError(f"--sparsities: expected e.g. 50,90; got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 shape, 2 sparsities")
    ap.add_argument("--threads", type=int, default=1, help="threads of every contestant (1)")
    ap.add_argument(
        "--block", type=parse_block, default=None, help="int8 block R,C (default: the path's)"
    )
    ap.add_argument(
        "--block-f32", type=parse_block, default=F32_BLOCK, help="our fp32 BSR block (16,1)"
    )
    ap.add_argument("--path", default=None, help="ISA path to force (default: best with BSR)")
    ap.add_argument("--shapes", type=gemm.parse_shapes, default=None, help="comma-separated MxKxN")
    ap.add_argument(
        "--sparsities", type=parse_sparsities, default=None, help="comma-separated %%, e.g. 50,90"
    )
    ap.add_argument(
        "--repeats", type=int, default=0, help="timed blocks per contestant (7; 3 quick)"
    )
    ap.add_argument(
        "--target-ms", type=float, default=None, help="one timed block in ms (20; 5 quick)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of weights and sparsity patterns")
    ap.add_argument("--no-codebook", action="store_true", help="skip the codebook table")
    ap.add_argument("--json", type=Path, default=None, help="write machine-readable results here")
    ap.add_argument("--markdown", action="store_true", help="print the report as markdown")
    ap.add_argument(
        "--peers-only", action="store_true", help="skip our kernels (no extension built)"
    )
    return ap


def _scipy_version() -> str:
    try:
        import scipy

        return str(scipy.__version__)
    except ImportError:
        return "missing"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print(f"sparse.py: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    shapes = args.shapes or list(QUICK_SHAPES if args.quick else SHAPES)
    sparsities = args.sparsities or list(QUICK_SPARSITIES if args.quick else SPARSITIES)
    args.repeats = args.repeats or (3 if args.quick else 7)
    if args.target_ms is None:
        args.target_ms = 5.0 if args.quick else 20.0
    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    try:
        kernels = None if args.peers_only else import_ours()
    except ImportError as exc:
        print(f"sparse.py: {exc}; or pass --peers-only to time the peers alone", file=sys.stderr)
        return 2
    paths: list[str] = list(kernels.available_paths()) if kernels is not None else []
    path = args.path or next((q for q in SPARSE_PATHS if q in paths), "")
    if kernels is not None and path not in paths:
        print(f"sparse.py: --path {path!r} is not available here; have {paths}", file=sys.stderr)
        return 2
    if args.block is None:
        native = getattr(kernels, "NATIVE_BSR_BLOCK", INT8_BLOCK)
        args.block = tuple(native.get(path or "avx512vnni", (16, 4)))
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass

    rows: list[SparseRow] = []
    cb_rows: list[CodebookRow] = []
    with kernels.force_path(path) if kernels is not None else _nullcontext():
        for shape in shapes:
            for s in sparsities:
                row = run_sparse_row(shape, s, kernels, path, args)
                gc.collect()
                rows.append(row)
                ours = row.entries.get("bsr-s8")
                print(
                    f"  .. {row.label}: dense {_us(row.dense_us)} us, BSR int8 {_cell(ours)}",
                    file=sys.stderr,
                    flush=True,
                )
        if kernels is not None and not args.no_codebook:
            for shape in shapes:
                cb = run_codebook_row(shape, kernels, args)
                gc.collect()
                cb_rows.append(cb)
                print(
                    f"  .. codebook {cb.shape}: dense {_us(cb.dense_us)} us, cb4 "
                    f"{_cell(cb.entries.get('cb4-layer'))}",
                    file=sys.stderr,
                    flush=True,
                )
    targets = judge_targets(rows, cb_rows)
    elapsed = time.perf_counter() - t_start

    machine = gemm.machine_description()
    machine["load_average_at_start"] = load
    versions = _peers.peer_versions()
    versions["scipy"] = _scipy_version()
    torch_blocks = sorted({r.torch_bsr_block for r in rows if r.torch_bsr_block})
    md = args.markdown
    bullet = "- " if md else ""
    rb, cb = args.block
    lines = [
        f"{bullet}machine: {machine['model']} ({machine['arch']}, {machine['cores']} cores); "
        f"flags: {' '.join(machine['flags']) or '-'}",
        f"{bullet}our paths: {', '.join(paths) or '(not run)'}; forced: {path or '-'} "
        f"(dense int8, BSR and codebook alike); threads: {args.threads} (ours threads=, "
        "torch.set_num_threads; SciPy is single-threaded)",
        f"{bullet}blocks: ours int8 {rb}x{cb} (the {path or '?'} target), ours fp32 "
        f"{args.block_f32[0]}x{args.block_f32[1]} (same weights: it stores every "
        f"{args.block_f32[0]}x{args.block_f32[1]} block touching a kept {rb}x{cb} block), "
        f"PyTorch BSR {', '.join(torch_blocks) or '-'}, SciPy BSR {rb}x{cb}; "
        f"sparsity = zeroed {rb}x{cb} blocks / all",
        f"{bullet}peers: torch {versions['torch']}, scipy {versions['scipy']}, numpy "
        f"{versions['numpy']}; python {machine['python']}",
        f"{bullet}cells: median us per call and speedup over our dense int8 (its time / this "
        "time); ideal = 1 / (1 - sparsity); ours/ideal = BSR int8 speedup / ideal; "
        "'!' = output failed its check (see below)",
    ]
    if load is not None and load >= 0.5:
        lines.append(
            f"{bullet}WARNING: the machine was busy when the benchmark started (1-min load "
            f"{load:.1f} on {machine['cores']} cores): timings are noisy"
        )
    lines += ["", sparse_table(rows, md)]
    if cb_rows:
        lines += [
            "",
            f"{bullet}codebook int8 (indices [N, K] with 2^bits entries, one int8 table per layer "
            "or per output channel) vs our dense int8 on the equivalent weight; bytes = packed "
            "nbytes / dense packed nbytes",
            "",
            codebook_table(cb_rows, md),
        ]
    found = notes(rows, cb_rows, path)
    if found:
        lines += ["", "**notes:**" if md else "notes:"] + [f"  {bullet}{x}" for x in found]
    lines += [
        "",
        "**targets** (printed only, never enforced):"
        if md
        else "targets (printed only, never enforced):",
    ]
    lines += [f"  {bullet}[{tg.status}] {tg.name}: {tg.detail}" for tg in targets]
    lines += ["", f"{bullet}benchmark time: {elapsed:.0f} s"]
    print("\n".join(lines), flush=True)

    if args.json is not None:
        doc = {
            "machine": machine,
            "paths": paths,
            "forced_path": path,
            "block_int8": list(args.block),
            "block_f32": list(args.block_f32),
            "versions": versions,
            "threads": args.threads,
            "rows": [{**asdict(r), "shape": r.shape} for r in rows],
            "codebook_rows": [{**asdict(r), "shape": r.shape} for r in cb_rows],
            "notes": found,
            "targets": [asdict(t) for t in targets],
            "elapsed_s": elapsed,
            "settings": {
                "quick": args.quick,
                "repeats": args.repeats,
                "target_ms": args.target_ms,
                "seed": args.seed,
            },
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


def _nullcontext() -> Any:
    import contextlib

    return contextlib.nullcontext()


if __name__ == "__main__":
    sys.exit(main())
