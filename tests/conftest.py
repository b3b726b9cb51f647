"""Shared fixtures: paths of the native build, and a helper to parametrize over kernel paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimizer import kernels

ROOT = Path(__file__).resolve().parents[1]

try:  # The models in the tests are tiny: one torch thread is faster and repeatable on 2 cores.
    import torch

    torch.set_num_threads(1)
except ImportError:  # the kernel tests need numpy only
    pass


def path_params() -> list:
    """Every path this build might have: available ones run, others skip naming the feature."""
    params = []
    for name in kernels.ALL_PATHS:
        reason = kernels.unavailable_reason(name)
        if reason is not None and name not in kernels.compiled_paths():
            # Not an ISA of this architecture (e.g. NEON on x86): tested under qemu instead.
            marks = [pytest.mark.skip(reason=f"{name}: {reason}; see test_native_cross.py")]
        elif reason is not None:
            marks = [pytest.mark.skip(reason=f"{name}: {reason}")]
        else:
            marks = []
        params.append(pytest.param(name, marks=marks, id=name))
    return params
