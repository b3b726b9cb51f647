"""Build the runtime for a device, copy a model there, benchmark it, bring the numbers back.

A thin Python face of the scripts in ``targets/<name>/`` (``build.sh`` and ``deploy.sh``, whose
shared logic is ``targets/common.sh``), so the CLI and the tests drive the same commands a user
types. It needs a source checkout (the scripts and the CMake project are not in a wheel), CMake,
and for cross builds the cross compiler; no torch.

Targets are the profile names of :mod:`optimizer.targets` (``"rpi5"``, ``"rpi32"``,
``"android-arm64"``, ``"x86_64-avx2"`` ...) or the folder names of ``targets/`` (``"aarch64"``,
``"armv7"``, ``"android-arm64"``, ``"x86_64"``); profiles sharing a folder share its build.

Example::

    from optimizer import deploy
    bench = deploy.build("rpi5", jobs=2)                       # build/aarch64/edgeopt-bench
    res = deploy.deploy_and_bench("rpi5", "model.eom", "pi@raspberrypi.local",
                                  threads=4, runs=50, warmup=5, json_out="rpi5.json")
    print(res.report["latency_ms"]["median"])
    out = deploy.run_under_qemu("rpi5", "model.eom", runs=1)  # no device: qemu-user, correctness
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optimizer import targets as _targets
from optimizer._util import atomic_write

__all__ = [
    "TARGET_DIRS",
    "DeployError",
    "DeployResult",
    "build",
    "default_build_dir",
    "deploy_and_bench",
    "qemu_command",
    "run_under_qemu",
    "script",
    "target_dir",
]

ROOT = Path(__file__).resolve().parents[1]
TARGETS_ROOT = ROOT / "targets"

#: Folders of ``targets/`` that have build.sh and deploy.sh.
TARGET_DIRS: tuple[str, ...] = ("aarch64", "armv7", "android-arm64", "x86_64")

# qemu-user program, default -cpu, and the target's library folder (for -L) per target folder.
_QEMU: dict[str, tuple[str, str, str]] = {
    "aarch64": ("qemu-aarch64", "max", "/usr/aarch64-linux-gnu"),
    "armv7": ("qemu-arm", "cortex-a7", "/usr/arm-linux-gnueabihf"),
}

#: ``runner(argv, env)``: runs one command, returns its CompletedProcess (text stdout/stderr).
Runner = Callable[[Sequence[str], Mapping[str, str]], "subprocess.CompletedProcess[str]"]


class DeployError(RuntimeError):
    """A build, copy or benchmark command failed; the message holds the command and its output."""


@dataclass
class DeployResult:
    """What :func:`deploy_and_bench` did.

    Attributes:
        target: the target folder (``"aarch64"`` ...).
        commands: the commands of the run, one shell line each (what ``--dry-run`` prints).
        json_path: where the JSON report was written (None for a dry run).
        report: the parsed JSON report of edgeopt-bench (None for a dry run): ``latency_ms``
            (``min``, ``median``, ``p90``), ``spread``, ``warning``, ``cpu``, ``threads``,
            ``runs``, ``warmup``, ``file_bytes``, ``arena_bytes``, ``weight_bytes`` and
            ``layers`` (``name``, ``op``, ``kernel``, ``median_ms``, ``macs``).
        output: what the script printed (the per-layer table of the device, then the report path).
    """

    target: str
    commands: list[str] = field(default_factory=list)
    json_path: Path | None = None
    report: dict[str, Any] | None = None
    output: str = ""


def target_dir(target: str) -> str:
    """The ``targets/`` folder that builds for ``target`` (a profile or a folder name).

    Example::

        >>> target_dir("rpi5"), target_dir("rpi32"), target_dir("x86_64-avx2")
        ('aarch64', 'armv7', 'x86_64')
    """
    if not isinstance(target, str):
        raise TypeError(f"`deploy`: target must be a str, got {type(target).__name__}")
    if target in TARGET_DIRS:
        return target
    if target in _targets.PROFILES:
        prof = _targets.PROFILES[target]
        if prof.toolchain is None:
            return prof.arch
        return Path(prof.toolchain).parent.name
    raise ValueError(
        f"`deploy`: unknown target {target!r}; expected a profile {_targets.names()} or a "
        f"folder of targets/ {list(TARGET_DIRS)}"
    )


def script(target: str, name: str) -> Path:
    """Path of ``targets/<folder>/<name>`` (``"build.sh"`` or ``"deploy.sh"``) for ``target``.

    Example::

        >>> script("rpi5", "deploy.sh").parts[-2:]
        ('aarch64', 'deploy.sh')
    """
    if name not in ("build.sh", "deploy.sh"):
        raise ValueError(f"`deploy.script`: name must be 'build.sh' or 'deploy.sh', got {name!r}")
    path = TARGETS_ROOT / target_dir(target) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"`deploy`: {path} not found; building and deploying need a source checkout of "
            "edge-optimizer (the targets/ scripts are not part of an installed wheel)"
        )
    return path


def default_build_dir(target: str) -> Path:
    """``build/<folder>`` in the checkout: where ``build.sh`` puts ``target``'s build.

    Example::

        >>> default_build_dir("rpi4").name
        'aarch64'
    """
    return ROOT / "build" / target_dir(target)


def _default_runner(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=dict(env), capture_output=True, text=True)


def _call(api: str, argv: list[str], runner: Runner | None, env: Mapping[str, str] | None = None):
    proc = (runner or _default_runner)(argv, dict(os.environ if env is None else env))
    if proc.returncode != 0:
        out = ((proc.stdout or "") + (proc.stderr or ""))[-6000:]
        raise DeployError(
            f"`{api}`: {' '.join(argv)} failed with exit code {proc.returncode}:\n{out}"
        )
    return proc


def _check_int(api: str, name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{api}`: {name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"`{api}`: {name} must be in [{lo}, {hi}], got {value}")
    return value


def _check_file(api: str, name: str, path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"`{api}`: {name} {str(p)!r} is not a file")
    return p


def build(
    target: str,
    build_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    *,
    build_type: str = "Release",
    cmake_args: Sequence[str] = (),
    runner: Runner | None = None,
) -> Path:
    """Builds edgeopt-bench and the runtime library for ``target`` with ``targets/<f>/build.sh``.

    Args:
        target: a profile (``"rpi5"``) or a ``targets/`` folder (``"aarch64"``).
        build_dir: the CMake build folder (default ``build/<folder>``; an existing one is reused,
            so a second call only rebuilds what changed).
        jobs: parallel compile jobs (default: the script's, ``nproc``).
        build_type: ``"Release"``, ``"RelWithDebInfo"``, ``"Debug"`` or ``"MinSizeRel"``.
        cmake_args: extra ``-DVAR=VALUE`` entries for CMake.
        runner: runs the command (see :data:`Runner`); default :func:`subprocess.run`, output
            captured and shown in the error.

    Returns:
        The path of the built ``edgeopt-bench``; ``libedgeopt_runtime.a`` and
        ``libedgeopt_kernels.a`` are beside it.

    Raises:
        ValueError: unknown target or bad option. DeployError: the script failed (a missing
            cross compiler, ANDROID_NDK unset, a compile error), with its output.

    Example::

        exe = build("rpi5", jobs=2)     # build/aarch64/edgeopt-bench
    """
    api = "deploy.build"
    folder = target_dir(target)
    if build_type not in ("Release", "RelWithDebInfo", "Debug", "MinSizeRel"):
        raise ValueError(
            f"`{api}`: build_type must be Release, RelWithDebInfo, Debug or MinSizeRel, "
            f"got {build_type!r}"
        )
    bdir = Path(build_dir) if build_dir is not None else default_build_dir(folder)
    argv = [str(script(folder, "build.sh")), "--build-dir", str(bdir), "--build-type", build_type]
    if jobs is not None:
        argv += ["--jobs", str(_check_int(api, "jobs", jobs, 1, 1024))]
    for a in cmake_args:
        if not isinstance(a, str) or not a.startswith("-D"):
            raise ValueError(f"`{api}`: cmake_args entries must be '-DVAR=VALUE', got {a!r}")
        argv.append(a)
    _call(api, argv, runner)
    exe = bdir / "edgeopt-bench"
    if not exe.is_file():
        raise DeployError(f"`{api}`: the build succeeded but {exe} is missing")
    return exe


def deploy_and_bench(
    target: str,
    model_path: str | os.PathLike,
    host: str | None,
    *,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    json_out: str | os.PathLike,
    remote_dir: str | None = None,
    binary: str | os.PathLike | None = None,
    dry_run: bool = False,
    runner: Runner | None = None,
    env: Mapping[str, str] | None = None,
) -> DeployResult:
    """Copies edgeopt-bench and a ``.eom`` model to a device, benchmarks it there, fetches the JSON.

    Runs ``targets/<folder>/deploy.sh``: over ssh/scp for Linux boards (the Pi targets, x86_64),
    over adb for ``android-arm64``. The binary comes from :func:`build` (``build/<folder>``)
    unless ``binary`` names another one. ``EDGEOPT_SSH`` / ``EDGEOPT_SCP`` / ``EDGEOPT_ADB`` in
    the environment (or ``env``) replace the tools, e.g. ``EDGEOPT_SSH="ssh -p 2222"``.

    Args:
        target: a profile (``"rpi5"``) or a ``targets/`` folder.
        model_path: the ``.eom`` file (from ``optimizer.export_native``).
        host: ``user@host`` for ssh targets; for android-arm64 the adb serial (None: the only
            device adb sees).
        threads, runs, warmup: edgeopt-bench's ``--threads``, ``--runs``, ``--warmup``.
        json_out: where the JSON report lands on this machine (written whole or not at all).
        remote_dir: folder on the device (default ``/tmp/edgeopt``; ``/data/local/tmp`` on
            Android).
        binary: the edgeopt-bench to copy (default ``build/<folder>/edgeopt-bench``).
        dry_run: only list the commands (``DeployResult.commands``); nothing runs or is copied.
        runner: runs the script (see :data:`Runner`).
        env: the environment for the script (default ``os.environ``).

    Returns:
        A :class:`DeployResult` with the parsed report.

    Raises:
        ValueError / TypeError: bad argument (named). FileNotFoundError: the model or binary is
            missing. DeployError: a command failed (which one, its exit code and output).

    Example::

        res = deploy_and_bench("rpi5", "m.eom", "pi@raspberrypi.local",
                               threads=4, runs=50, warmup=5, json_out="rpi5.json")
        print(res.report["latency_ms"]["median"], "ms")
    """
    api = "deploy.deploy_and_bench"
    folder = target_dir(target)
    _check_int(api, "threads", threads, 1, 256)
    _check_int(api, "runs", runs, 1, 1_000_000)
    _check_int(api, "warmup", warmup, 0, 1_000_000)
    if not dry_run:
        _check_file(api, "model_path", model_path)
    exe = Path(binary) if binary is not None else default_build_dir(folder) / "edgeopt-bench"
    if not dry_run and not exe.is_file():
        raise FileNotFoundError(
            f"`{api}`: {exe} not found; build it first with deploy.build({target!r}) or "
            f"targets/{folder}/build.sh, or pass binary="
        )
    out = Path(json_out)
    argv = [str(script(folder, "deploy.sh")), "--model", str(model_path), "--binary", str(exe)]
    if folder == "android-arm64":
        if host is not None:
            argv += ["--serial", str(host)]
    else:
        if not host or not isinstance(host, str):
            raise ValueError(
                f"`{api}`: host must be 'user@host' for target {target!r}, got {host!r}"
            )
        argv += ["--host", host]
    if remote_dir is not None:
        argv += ["--dir", str(remote_dir)]
    argv += ["--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)]
    argv += ["--json", str(out)]
    if dry_run:
        argv.append("--dry-run")
    proc = _call(api, argv, runner, env)
    text = (proc.stdout or "") + (proc.stderr or "")
    if dry_run:
        cmds = [line for line in (proc.stdout or "").splitlines() if line.strip()]
        return DeployResult(folder, commands=cmds, output=text)
    cmds = [
        line.split(": ", 1)[1]
        for line in (proc.stderr or "").splitlines()
        if line.startswith(f"targets/{folder}/deploy.sh: ") and "error:" not in line
    ]
    return DeployResult(folder, cmds, out, _read_report(api, out), text)


def _read_report(api: str, path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(f"`{api}`: the JSON report {path} cannot be read: {exc}") from exc
    if not isinstance(report, dict) or "latency_ms" not in report:
        raise DeployError(f"`{api}`: {path} is not an edgeopt-bench report (no latency_ms)")
    return report


def qemu_command(target: str, cpu: str | None = None) -> list[str]:
    """The qemu-user prefix that runs ``target``'s Linux binaries here (empty for this machine's
    own architecture).

    Args:
        target: a profile or folder; ``android-arm64`` is refused (qemu-user cannot run bionic
            binaries: test those on a phone with :func:`deploy_and_bench`).
        cpu: qemu ``-cpu`` value (default ``max`` on aarch64, which has SDOT, ``cortex-a7`` on
            armv7); e.g. ``"cortex-a72"`` for a Pi 4 without SDOT.

    Example::

        >>> qemu_command("rpi4", cpu="cortex-a72")[1:3]
        ['-cpu', 'cortex-a72']
    """
    folder = target_dir(target)
    if folder == "android-arm64":
        raise ValueError(
            "`deploy.qemu_command`: qemu-user cannot run Android (bionic) binaries; run them on "
            "a device (deploy_and_bench) or test the aarch64 build under qemu instead"
        )
    machine = platform.machine().lower()
    native = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64"), "armv7": ()}
    if machine in native[folder] or (folder == "armv7" and machine.startswith("armv7")):
        return []
    if folder == "x86_64":
        raise ValueError(f"`deploy.qemu_command`: x86_64 binaries on a {machine} host need qemu")
    prog, default_cpu, sysroot = _QEMU[folder]
    exe = shutil.which(prog)
    if exe is None:
        raise FileNotFoundError(
            f"`deploy.qemu_command`: {prog} not found; install Debian's qemu-user"
        )
    return [exe, "-cpu", cpu or default_cpu, "-L", sysroot]


def run_under_qemu(
    target: str,
    model_path: str | os.PathLike,
    *,
    threads: int = 1,
    runs: int = 1,
    warmup: int = 0,
    json_out: str | os.PathLike | None = None,
    input_path: str | os.PathLike | None = None,
    output_path: str | os.PathLike | None = None,
    binary: str | os.PathLike | None = None,
    cpu: str | None = None,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Runs ``target``'s edgeopt-bench on a model here, under qemu-user (checks correctness; qemu's
    timings say nothing about a real core).

    Args:
        target: a Linux profile or folder (``"rpi5"``, ``"rpi32"``, ``"aarch64"`` ...).
        model_path: the ``.eom`` file.
        threads, runs, warmup: edgeopt-bench's options.
        json_out: keep the JSON report there (default: a temporary file, removed).
        input_path: raw input bytes (all inputs concatenated, as the model declares them);
            default: edgeopt-bench's deterministic pseudo-random inputs.
        output_path: write the outputs' raw bytes there.
        binary: the edgeopt-bench to run (default ``build/<folder>/edgeopt-bench``).
        cpu: qemu ``-cpu`` (see :func:`qemu_command`).
        runner: runs the command (see :data:`Runner`).

    Returns:
        The parsed JSON report, plus ``"stdout"`` (the per-layer table edgeopt-bench printed).

    Example::

        rep = run_under_qemu("rpi5", "m.eom", output_path="y.bin")
        print([layer["kernel"] for layer in rep["layers"]])
    """
    api = "deploy.run_under_qemu"
    folder = target_dir(target)
    _check_int(api, "threads", threads, 1, 256)
    _check_int(api, "runs", runs, 1, 1_000_000)
    _check_int(api, "warmup", warmup, 0, 1_000_000)
    prefix = qemu_command(folder, cpu)
    model = _check_file(api, "model_path", model_path)
    exe = Path(binary) if binary is not None else default_build_dir(folder) / "edgeopt-bench"
    if not exe.is_file():
        raise FileNotFoundError(
            f"`{api}`: {exe} not found; build it first with deploy.build({target!r})"
        )
    inp = None if input_path is None else _check_file(api, "input_path", input_path)
    with tempfile.TemporaryDirectory(prefix="edgeopt-qemu-") as tmp:
        # edgeopt-bench writes in place; its files land here first, then move whole.
        report_path, out_path = Path(tmp) / "bench.json", Path(tmp) / "outputs.bin"
        argv = [*prefix, str(exe), "--model", str(model), "--threads", str(threads)]
        argv += ["--runs", str(runs), "--warmup", str(warmup), "--json", str(report_path)]
        if inp is not None:
            argv += ["--input", str(inp)]
        if output_path is not None:
            argv += ["--output", str(out_path)]
        proc = _call(api, argv, runner)
        report = _read_report(api, report_path)
        if json_out is not None:
            data = report_path.read_bytes()
            atomic_write(json_out, lambda f: f.write(data))
        if output_path is not None:
            outputs = out_path.read_bytes()
            atomic_write(output_path, lambda f: f.write(outputs))
    report["stdout"] = proc.stdout or ""
    return report
