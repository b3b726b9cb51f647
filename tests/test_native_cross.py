"""The C++ kernel tests on this CPU, on emulated older x86 CPUs, and on ARM under qemu-user.

Each emulated CPU must pass the whole C++ test with the path run-time dispatch should pick for it,
and never die with SIGILL (a kernel path built for a newer CPU must not leak into an older one).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_BUILD = ROOT / "build" / "host"
TEST_BIN = "edgeopt_test_gemm"
SPARSE_BIN = "edgeopt_test_sparse"
BENCH_BIN = "edgeopt-gemm-bench"
IS_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _run(cmd: list[str], timeout: int = 900) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode < 0:
        pytest.fail(
            f"{' '.join(cmd)} died with signal {-proc.returncode} (SIGILL is 4):\n{out[-3000:]}"
        )
    summary = re.findall(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$", out, re.M)
    assert proc.returncode == 0 and summary and summary[-1][1] == "0", (
        f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}"
    )
    assert int(summary[-1][0]) > 0, f"{' '.join(cmd)} ran no check:\n{out[-2000:]}"
    return out


def _host_binary(name: str = TEST_BIN) -> Path:
    exe = HOST_BUILD / name
    if not exe.exists():
        pytest.fail(f"{exe} is missing: `make native` builds it (make test does this first)")
    return exe


@pytest.mark.parametrize("binary", [TEST_BIN, SPARSE_BIN])
def test_host_cpu_all_paths(binary):
    out = _run([str(_host_binary(binary))])
    # Paths compiled in but missing on this CPU must be reported by name, never silently dropped.
    for line in out.splitlines():
        if line.startswith("skip "):
            print(line)


def _qemu(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not found: install Debian's qemu-user (.ci/run does)")
    return exe


@pytest.mark.skipif(not IS_X86, reason="emulated x86 CPUs: host is not x86_64")
@pytest.mark.parametrize(("cpu", "path"), [("Haswell", "avx2"), ("Nehalem", "scalar")])
def test_emulated_x86_cpu_picks_its_path(cpu, path):
    qemu = _qemu("qemu-x86_64")
    _run([qemu, "-cpu", cpu, str(_host_binary()), "--quick", "--expect-path", path])
    out = _run([qemu, "-cpu", cpu, str(_host_binary(SPARSE_BIN)), "--quick"])
    assert f"ok {path}:" in out, out[-3000:]


def _cross_build(arch: str, compiler: str) -> Path:
    if shutil.which(compiler) is None:
        pytest.skip(
            f"{compiler} not found: install Debian's g++-{compiler[: -len('-g++')]} (.ci/run does)"
        )
    build = ROOT / "build" / arch
    cmake = shutil.which("cmake", path=str(ROOT / ".venv" / "bin")) or shutil.which("cmake")
    ninja = shutil.which("ninja", path=str(ROOT / ".venv" / "bin")) or shutil.which("ninja")
    cfg = [
        cmake, "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={ninja}",
        f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'targets' / arch / 'toolchain.cmake'}",
        "-DCMAKE_BUILD_TYPE=Release", "-DEDGEOPT_STATIC_EXE=ON", "-DEDGEOPT_BUILD_PYTHON=OFF",
    ]  # fmt: skip
    for cmd in (cfg, [cmake, "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    return build


@pytest.fixture(scope="module")
def aarch64_build() -> Path:
    return _cross_build("aarch64", "aarch64-linux-gnu-g++")


@pytest.fixture(scope="module")
def armv7_build() -> Path:
    return _cross_build("armv7", "arm-linux-gnueabihf-g++")


@pytest.mark.parametrize(("cpu", "path"), [("max", "neondot"), ("cortex-a72", "neon")])
def test_aarch64_under_qemu(aarch64_build, cpu, path):
    qemu = _qemu("qemu-aarch64")
    args = [] if cpu == "max" else ["--quick"]  # one full run per architecture keeps CI short
    _run([qemu, "-cpu", cpu, str(aarch64_build / TEST_BIN), *args, "--expect-path", path])
    out = _run([qemu, "-cpu", cpu, str(aarch64_build / SPARSE_BIN), *args])
    assert f"ok {path}:" in out, out[-3000:]


def test_armv7_under_qemu(armv7_build):
    qemu = _qemu("qemu-arm")
    _run([qemu, "-cpu", "cortex-a7", str(armv7_build / TEST_BIN), "--expect-path", "neon"])
    _run([qemu, "-cpu", "cortex-a7", str(armv7_build / SPARSE_BIN)])


@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
def test_benchmark_binary_runs_on_arm(arch, request):
    build = request.getfixturevalue(f"{arch}_build")
    qemu = _qemu("qemu-aarch64" if arch == "aarch64" else "qemu-arm")
    cpu = "max" if arch == "aarch64" else "cortex-a7"
    proc = subprocess.run(
        [qemu, "-cpu", cpu, str(build / BENCH_BIN), "--quick"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^neon\w*\s+16x256x256\s+[\d.]+", proc.stdout, re.M), proc.stdout


ISA = re.compile(r"_(avx2|avx512vnni|avx512|amx|neondot|neon)\.cc\.o$")
FAMILY = {"avx512": "avx512vnni"}  # the two suffixes share one set of flags


def _weak_code_symbols(lib: Path, nm: str) -> dict[str, set[str]]:
    out = subprocess.run([nm, "-A", "--defined-only", str(lib)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    by_symbol: dict[str, set[str]] = defaultdict(set)
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] != "W" or parts[2].startswith("DW.ref."):
            continue
        member = parts[0].rstrip(":").split(":")[-2] if parts[0].count(":") >= 2 else parts[0]
        m = ISA.search(member)
        flags = FAMILY.get(m.group(1), m.group(1)) if m else "generic"
        by_symbol[parts[2]].add(f"{flags}:{member}")
    return by_symbol


def _check_no_shared_weak_code(lib: Path, nm: str, neon_is_baseline: bool) -> None:
    """Files compiled with an ISA's flags define no weak code symbol that an object compiled with
    other flags also defines: inline functions and template instantiations are weak, the linker
    keeps one copy, and an AVX-512 copy kept for generic code makes an older CPU die with SIGILL
    (shared helpers go in anonymous namespaces; ISA files use common/isa_local.h containers)."""
    if shutil.which(nm) is None:
        pytest.skip(f"{nm} not found (binutils of the toolchain)")
    clashes = []
    for symbol, where in _weak_code_symbols(lib, nm).items():
        flags = {w.split(":")[0] for w in where}
        if neon_is_baseline:
            flags = {"generic" if f == "neon" else f for f in flags}
        if len(flags) > 1:
            clashes.append(f"{symbol}: {sorted(where)}")
    assert not clashes, (
        "weak symbols defined under different ISA flags (the linker may keep the wrong copy):\n"
        + "\n".join(clashes[:20])
    )


def test_host_isa_objects_share_no_weak_code():
    lib = HOST_BUILD / "libedgeopt_kernels.a"
    if not lib.exists():
        pytest.fail(f"{lib} is missing: `make native` builds it")
    _check_no_shared_weak_code(lib, "nm", neon_is_baseline=False)


def test_aarch64_isa_objects_share_no_weak_code(aarch64_build):
    lib = aarch64_build / "libedgeopt_kernels.a"
    _check_no_shared_weak_code(lib, "aarch64-linux-gnu-nm", neon_is_baseline=True)


def test_armv7_isa_objects_share_no_weak_code(armv7_build):
    lib = armv7_build / "libedgeopt_kernels.a"
    _check_no_shared_weak_code(lib, "arm-linux-gnueabihf-nm", neon_is_baseline=False)
