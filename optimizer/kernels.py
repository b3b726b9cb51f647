"""Python face of the native GEMM kernels (``optimizer._kernels``).

The functions are the pybind11 builtins themselves, so a call costs one C++ dispatch (edge models
call small layers often). Example::

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
from collections.abc import Iterator

try:
    from optimizer import _kernels
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "optimizer._kernels is not built: run `make build` (or `pip install -e .`) first"
    ) from exc

PackedLinearS8 = _kernels.PackedLinearS8
PackedLinearF32 = _kernels.PackedLinearF32
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


__all__ = [
    "ALL_PATHS",
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
