"""Deployment target profiles: what runs fast on a device, read by the passes and the exporters.

A profile names the architecture, the kernel paths the device has (best first), the channel
multiple that keeps the int8 kernels' SIMD lanes full (structured pruning rounds kept channel
counts to it), the block shape of the block-sparse kernels there (block pruning uses it), the
thread count to plan for, and the CMake toolchain that cross-builds the runtime for it.

Example:
    >>> target = get("rpi5")
    >>> cfg = ChannelPruneConfig(ratio=0.5, round_to=target.channel_multiple)
    >>> BlockPruneConfig(block=target.bsr_block, sparsity=0.9)
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROFILES", "Target", "get", "host", "names"]

_TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"


@dataclass(frozen=True)
class Target:
    """One deployment target.

    Attributes:
        name: short name (``"rpi5"``).
        description: the device in words.
        arch: ``"x86_64"``, ``"aarch64"`` or ``"armv7"``.
        paths: kernel paths of ``optimizer.kernels`` the device runs, best first.
        channel_multiple: kept channel counts are rounded to this (the int8 kernels' output tile).
        bsr_block: (rows, cols) block of the block-sparse kernels on the best path.
        threads: cores to plan for.
        toolchain: CMake toolchain file of the cross build (None: native build).
        requantization: the int8 output-stage arithmetic recipes quantize with
            (``Int8Config.requantization``): ``"fp32"`` (XNNPACK's) where the model will mostly
            run in LiteRT, whose default delegate computes it (phones), so LiteRT, the PyTorch
            module and this runtime agree bit for bit; ``"gemmlowp"`` (the TFLite spec's, which
            LiteRT's reference kernels compute) elsewhere.
    """

    name: str
    description: str
    arch: str
    paths: tuple[str, ...]
    channel_multiple: int
    bsr_block: tuple[int, int]
    threads: int
    toolchain: str | None
    requantization: str = "gemmlowp"

    @property
    def toolchain_path(self) -> Path | None:
        """Absolute path of the toolchain file in a source checkout (None for native builds)."""
        return None if self.toolchain is None else _TARGETS_DIR.parent / self.toolchain


PROFILES: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "x86_64-avx512vnni",
            "x86-64 with AVX-512 VNNI (Intel Ice Lake and later, AMD Zen 4 and later)",
            "x86_64",
            ("avx512vnni", "avx2", "scalar"),
            16,
            (16, 4),
            4,
            None,
        ),
        Target(
            "x86_64-avx2",
            "x86-64 with AVX2 (Haswell and later mini-PCs)",
            "x86_64",
            ("avx2", "scalar"),
            16,
            (8, 4),
            4,
            None,
        ),
        Target(
            "rpi4",
            "Raspberry Pi 4 (Cortex-A72, aarch64, NEON, no dot product)",
            "aarch64",
            ("neon", "scalar"),
            8,
            (8, 4),
            4,
            "targets/aarch64/toolchain.cmake",
        ),
        Target(
            "rpi5",
            "Raspberry Pi 5 (Cortex-A76, aarch64, NEON dot product)",
            "aarch64",
            ("neondot", "neon", "scalar"),
            16,
            (8, 4),
            4,
            "targets/aarch64/toolchain.cmake",
        ),
        Target(
            "rpi32",
            "Raspberry Pi with a 32-bit OS (armv7, NEON)",
            "armv7",
            ("neon", "scalar"),
            8,
            (8, 4),
            4,
            "targets/armv7/toolchain.cmake",
        ),
        Target(
            "android-arm64",
            "Android arm64-v8a phone (NEON dot product on every big core since ~2018)",
            "aarch64",
            ("neondot", "neon", "scalar"),
            16,
            (8, 4),
            4,
            "targets/android-arm64/toolchain.cmake",
            "fp32",
        ),
    )
}


def names() -> list[str]:
    """Names of the known targets."""
    return list(PROFILES)


def get(name: str) -> Target:
    """The profile called ``name`` (``"host"`` detects this machine)."""
    if name == "host":
        return host()
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"targets.get: unknown target {name!r}; expected one of {names()} or 'host'"
        ) from None


def host() -> Target:
    """The profile of this machine, from the kernel paths its CPU offers."""
    from optimizer import kernels

    paths = kernels.available_paths()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return PROFILES["x86_64-avx512vnni" if "avx512vnni" in paths else "x86_64-avx2"]
    if machine in ("aarch64", "arm64"):
        return PROFILES["rpi5" if "neondot" in paths else "rpi4"]
    if machine.startswith("arm"):
        return PROFILES["rpi32"]
    raise ValueError(f"targets.host: no profile for machine {machine!r}; pick one of {names()}")
