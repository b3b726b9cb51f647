"""Python face of the native GEMM kernels (``optimizer._kernels``).

The functions are the extension's builtins themselves, with no Python wrapper: ``linear_s8``,
``linear_f32`` and ``gemm_s8s8s32`` are plain CPython functions that parse their arguments by hand
(positional or keyword), so a call costs about 0.1 us over the kernel (edge models call small layers
often; pybind11's dispatcher cost ~1 us). Example::

    import numpy as np
    from optimizer import kernels
    w = kernels.PackedLinearS8(np.ones((64, 32), np.int8))
    y = kernels.linear_s8(np.zeros((1, 32), np.int8), w, None, 0,
                          np.full(64, 1 << 30, np.int32), np.full(64, -8, np.int32), 0)
    with kernels.force_path("scalar"):
        kernels.gemm_s8s8s32(np.ones((2, 32), np.int8), np.ones((64, 32), np.int8))
    assert kernels.last_path() == "scalar"
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

try:
    from optimizer import _kernels
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "optimizer._kernels is not built: run `make build` (or `pip install -e .`) first"
    ) from exc

PackedLinearS8 = _kernels.PackedLinearS8
PackedLinearF32 = _kernels.PackedLinearF32
PackedBsrS8 = _kernels.PackedBsrS8
PackedBsrF32 = _kernels.PackedBsrF32
PackedCodebookS8 = _kernels.PackedCodebookS8
PackedCodebookF32 = _kernels.PackedCodebookF32
gemm_s8s8s32 = _kernels.gemm_s8s8s32
linear_s8 = _kernels.linear_s8
linear_f32 = _kernels.linear_f32
last_path = _kernels.last_path
cpu_description = _kernels.cpu_description
peak_int8_gops = _kernels.peak_int8_gops

ALL_PATHS = ("scalar", "avx2", "avx512vnni", "amx", "neon", "neondot")


def available_paths() -> list[str]:
    """Paths compiled into this build that this CPU (and OS) supports, best last."""
    return list(_kernels.available_paths())


def compiled_paths() -> list[str]:
    """Paths whose kernels were built, whether or not this CPU can run them."""
    return list(_kernels.compiled_paths())


def cpu_paths() -> list[str]:
    """Paths this CPU supports, whether or not they were built."""
    return list(_kernels.cpu_paths())


def unavailable_reason(name: str) -> str | None:
    """Why path ``name`` cannot run here, or None when it can."""
    if name not in ALL_PATHS:
        raise ValueError(f"unavailable_reason: unknown path {name!r}; expected one of {ALL_PATHS}")
    if name in available_paths():
        return None
    if name not in compiled_paths():
        return f"path {name!r} is not compiled into this build (architecture or compiler)"
    if name not in cpu_paths():
        feature = {
            "avx2": "AVX2+FMA",
            "avx512vnni": "AVX-512 VNNI",
            "amx": "AMX-INT8 (or the kernel's tile-data permission)",
            "neon": "NEON",
            "neondot": "the Armv8.2 dot-product extension",
        }.get(name, name)
        return f"this CPU lacks {feature} ({cpu_description()})"
    return f"path {name!r} is masked by the EDGEOPT_PATHS environment variable"


@contextlib.contextmanager
def force_path(name: str) -> Iterator[None]:
    """Restrict dispatch to path ``name`` (plus scalar) inside the ``with`` block.

    Raises ValueError when the path is unknown or cannot run on this machine; the message says
    why (use it as a skip reason in tests).
    """
    reason = unavailable_reason(name)
    if reason is not None:
        raise ValueError(f"force_path: cannot force {name!r}: {reason}")
    previous = list(_kernels._forced_paths())
    _kernels._force_paths([name])
    try:
        yield
    finally:
        _kernels._force_paths(previous)


# --- Choosing a weight format ---------------------------------------------------------------------

#: The block shape each path's block-sparse int8 kernel is built around (a block fills the vector
#: unit: 16 output channels x 4 k is one vpdpbusd; NEON dot-product works on 4-byte groups).
NATIVE_BSR_BLOCK: dict[str, tuple[int, int]] = {
    "amx": (16, 4),
    "avx512vnni": (16, 4),
    "avx2": (8, 4),
    "neondot": (8, 4),
    "neon": (8, 4),
    "scalar": (1, 4),
}

#: A format must be predicted at least this much faster than dense to be chosen: calibration
#: timings carry a few percent of noise, and a layer must never end up slower than dense.
_MARGIN = 0.95
_CAL_VERSION = 1


def best_path() -> str:
    """The int8 path dense small-M calls run on now (AMX serves only large M)."""
    paths = [p for p in available_paths() if p != "amx"]
    order = ["scalar", "neon", "neondot", "avx2", "avx512vnni"]
    return max(paths, key=order.index)


def native_bsr_block(path: str | None = None) -> tuple[int, int]:
    """Block shape (R, C) of the block-sparse int8 kernel of ``path`` (default: this CPU)."""
    return NATIVE_BSR_BLOCK[path or best_path()]


def _median_time(fn, target_s: float = 0.01, repeats: int = 5) -> float:
    fn()
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target_s or calls >= 1 << 16:
            break
        calls *= 2
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times))


def _block_weight(rng, n: int, k: int, block: tuple[int, int], density: float) -> np.ndarray:
    r, c = block
    mask = rng.random(((n + r - 1) // r, (k + c - 1) // c)) < density
    full = np.kron(mask, np.ones((r, c), dtype=bool))[:n, :k]
    w = rng.integers(1, 128, size=(n, k)).astype(np.int8) * rng.choice([-1, 1], size=(n, k))
    return np.where(full, w, 0).astype(np.int8)


def _cache_file(path: str, settings: object) -> Path:
    root = Path(os.environ.get("EDGEOPT_CACHE", Path.home() / ".cache" / "edgeopt"))
    build = Path(_kernels.__file__).stat().st_mtime_ns
    key = f"{cpu_description()}|{path}|{_CAL_VERSION}|{_kernels.__file__}|{build}|{settings}"
    return root / f"formats-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def calibrate_formats(
    path: str | None = None,
    *,
    shape: tuple[int, int] = (1024, 1024),
    ms: Sequence[int] = (1, 16),
    densities: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
    use_cache: bool = True,
) -> dict:
    """Measures the break-even table of the weight formats on this machine for ``path``.

    For a [N, K] = ``shape`` layer and each batch size in ``ms`` it times dense int8 against
    block-sparse int8 (the path's native block, at each density) and 4-/2-bit codebooks, all on
    the same path, and returns time ratios (format / dense). The result is cached (atomically
    written JSON under ``$EDGEOPT_CACHE`` or ``~/.cache/edgeopt``), keyed by CPU, path and build.
    A device's table can be measured there and passed to ``choose_format(target=...)``.
    """
    path = path or best_path()
    cache = _cache_file(path, (tuple(shape), tuple(ms), tuple(densities)))
    if use_cache and cache.exists():
        try:
            return json.loads(cache.read_text())
        except (OSError, ValueError):
            pass  # unreadable cache: measure again and rewrite it
    rng = np.random.default_rng(0)
    n, k = shape
    block = native_bsr_block(path)
    bias = np.zeros(n, np.int32)
    mult = np.full(n, 1 << 30, np.int32)
    shift = np.full(n, -10, np.int32)
    table: dict = {"cpu": cpu_description(), "path": path, "block": list(block), "shape": [n, k]}
    table["bsr"], table["codebook4"], table["codebook2"] = {}, {}, {}
    with force_path(path):
        dense = PackedLinearS8(rng.integers(-127, 128, size=(n, k), dtype=np.int8))
        cb = {
            bits: PackedCodebookS8(
                rng.integers(0, 1 << bits, size=(n, k), dtype=np.uint8),
                rng.integers(-127, 128, size=1 << bits, dtype=np.int8),
                bits=bits,
            )
            for bits in (4, 2)
        }
        bsr = {d: PackedBsrS8(_block_weight(rng, n, k, block, d), block) for d in densities}
        for m in ms:
            x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)

            def run(w, x=x):
                return linear_s8(x, w, bias, 0, mult, shift, 0)

            t_dense = _median_time(lambda: run(dense))
            table["bsr"][str(m)] = [
                [d, _median_time(lambda w=w: run(w)) / t_dense] for d, w in bsr.items()
            ]
            for bits, w in cb.items():
                table[f"codebook{bits}"][str(m)] = _median_time(lambda w=w: run(w)) / t_dense
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(table, f, indent=1)
        os.replace(tmp, cache)
    return table


def _nearest_m(entries: Mapping[str, object], m: int) -> object:
    best = min(entries, key=lambda key: abs(np.log2(int(key)) - np.log2(max(m, 1))))
    return entries[best]


def format_costs(weight, target: Mapping | None = None, *, m: int = 1) -> dict[str, float]:
    """Predicted time of each usable format relative to dense int8 (dense = 1.0).

    Args:
        weight: int8 weight [N, K] (numpy array or torch tensor).
        target: a calibration table from ``calibrate_formats`` (e.g. measured on the device and
            kept with its target profile); None measures (once, cached) this machine.
        m: the batch size (rows) the layer runs with.
    """
    w = np.asarray(weight.detach().cpu().numpy() if hasattr(weight, "detach") else weight)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(
            f"choose_format: `weight` must be an int8 array [N, K], got {w.dtype} {w.shape}"
        )
    table = dict(target) if target is not None else calibrate_formats()
    costs = {"dense": 1.0}
    r, c = table["block"]
    n, k = w.shape
    padded = np.zeros(((n + r - 1) // r * r, (k + c - 1) // c * c), np.int8)
    padded[:n, :k] = w
    blocks = padded.reshape(padded.shape[0] // r, r, padded.shape[1] // c, c)
    density = float(np.any(blocks != 0, axis=(1, 3)).mean())
    curve = np.array(_nearest_m(table["bsr"], m), dtype=np.float64)
    if density < 1.0:
        costs["bsr"] = float(np.interp(density, curve[:, 0], curve[:, 1]))
    distinct = np.unique(w).size
    if distinct <= 4 and "codebook2" in table:
        costs["codebook"] = float(_nearest_m(table["codebook2"], m))
    elif distinct <= 16:
        costs["codebook"] = float(_nearest_m(table["codebook4"], m))
    return costs


def choose_format(weight, target: Mapping | None = None, *, m: int = 1) -> str:
    """Picks "dense", "bsr" or "codebook" for an int8 weight from its structure and the measured
    break-even table, so a layer is never stored in a format slower than dense.

    BSR is considered at the path's native block shape (see ``native_bsr_block``); a codebook when
    the weight has at most 16 distinct values (4-bit; at most 4: 2-bit). A format is chosen only if
    it is predicted at least 5 % faster than dense.

    Example::

        fmt = choose_format(w_int8)            # e.g. "bsr" for a 90 % block-sparse weight
    """
    costs = format_costs(weight, target, m=m)
    fmt = min(costs, key=costs.__getitem__)
    return fmt if fmt == "dense" or costs[fmt] <= _MARGIN else "dense"


__all__ = [
    "ALL_PATHS",
    "NATIVE_BSR_BLOCK",
    "PackedBsrF32",
    "PackedBsrS8",
    "PackedCodebookF32",
    "PackedCodebookS8",
    "best_path",
    "calibrate_formats",
    "choose_format",
    "format_costs",
    "native_bsr_block",
    "PackedLinearF32",
    "PackedLinearS8",
    "available_paths",
    "compiled_paths",
    "cpu_description",
    "cpu_paths",
    "force_path",
    "gemm_s8s8s32",
    "last_path",
    "linear_f32",
    "linear_s8",
    "peak_int8_gops",
    "unavailable_reason",
]
