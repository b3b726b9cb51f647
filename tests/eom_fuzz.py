"""Mutation helpers shared by the .eom robustness tests (Python byte mutations, the C++ fuzzer)."""

from __future__ import annotations

import random
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from optimizer import runtime

HOST_BUILD = Path(__file__).resolve().parents[1] / "build" / "host"


def fix_crc(data: bytearray) -> bytearray:
    """Rewrites the header's CRC-32 of bytes [24, end), so a mutation reaches the verifier."""
    struct.pack_into("<I", data, 20, zlib.crc32(memoryview(data)[24:]) & 0xFFFFFFFF)
    return data


def mutate_and_load(good: bytes, x: np.ndarray, seed: int, rounds: int = 400) -> int:
    """Loads ``rounds`` copies of ``good`` with 1-3 random bytes past the CRC changed (checksum
    fixed): each must raise ValueError (``edgeopt model: ...``) or load and run on ``x``.
    Returns how many were refused."""
    rng = random.Random(seed)
    refused = 0
    for _ in range(rounds):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(24, len(good))] = rng.randrange(256)
        fix_crc(data)
        try:
            rt = runtime.loads(bytes(data))
        except ValueError as e:
            assert str(e).startswith("edgeopt model: "), e
            refused += 1
            continue
        rt.run(x)
    return refused


def cpp_fuzz(path: Path, files: int = 2000) -> None:
    """The C++ mutation fuzzer of kernels/tests/test_runtime.cc over ``path``: no crash, no
    failure."""
    exe = HOST_BUILD / "edgeopt_test_runtime"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: `make native` builds it (make test does this first)")
    out = subprocess.run(
        [str(exe), "--model", str(path), "--fuzz", str(files)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr
