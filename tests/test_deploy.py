"""Deployment targets: targets/<name>/build.sh cross-builds edgeopt-bench, the binary runs under
qemu-user on an exported digits model and agrees with the host runtime, and deploy.sh (through
optimizer.deploy) copies, benchmarks and brings the JSON back from a fake device: ssh/scp/adb
replaced by small stubs that copy files locally and run the binary under qemu."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from optimizer import deploy

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["aarch64", "armv7", "android-arm64", "x86_64"]
# compiler, qemu, profile that builds in this folder, ELF e_machine
ARCHES = {
    "aarch64": ("aarch64-linux-gnu-g++", "qemu-aarch64", "rpi5", 183),
    "armv7": ("arm-linux-gnueabihf-g++", "qemu-arm", "rpi32", 40),
}


def _script(folder: str, name: str, *args: str, env: dict | None = None):
    return subprocess.run(
        [str(ROOT / "targets" / folder / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _need(arch: str) -> None:
    compiler, qemu, _, _ = ARCHES[arch]
    for tool, pkg in ((compiler, f"g++-{compiler[: -len('-g++')]}"), (qemu, "qemu-user")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: install Debian's {pkg} (.ci/run does)")


@pytest.fixture(scope="module", params=sorted(ARCHES))
def cross(request) -> tuple[str, Path]:
    """Builds once per architecture (build/<arch>, shared with test_native_cross)."""
    arch = request.param
    _need(arch)
    return arch, deploy.build(arch, jobs=2)


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """The float digits VGG exported to .eom (and the int8 one when export_native takes it), with
    an input batch of real digits."""
    torch = pytest.importorskip("torch", reason="exporting a model needs torch")
    from optimizer.examples import digits
    from optimizer.export.native import export_native

    d = tmp_path_factory.mktemp("digits")
    model = digits.pretrained("vgg").eval()
    x_train, _, x_test, _ = digits.load_digits_split()
    x = x_test[:4].contiguous()
    export_native(model, (x,), d / "vgg.eom")
    models = {"float": (d / "vgg.eom", x.numpy())}
    from optimizer import Int8Config, quantize_

    calib = [x_train[i : i + 32] for i in range(0, 128, 32)]
    with torch.no_grad():
        q = quantize_(model, Int8Config(), calib, (x,))
    export_native(q, (x,), d / "vgg_int8.eom")
    models["int8"] = (d / "vgg_int8.eom", x.numpy())
    return models


def _model(digits_models, kind: str) -> tuple[Path, np.ndarray]:
    return digits_models[kind]


@pytest.mark.parametrize("name", ["build.sh", "deploy.sh"])
@pytest.mark.parametrize("folder", FOLDERS)
def test_scripts_print_help(folder, name):
    proc = _script(folder, name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: targets/{folder}/{name}"), proc.stdout
    assert "--dry-run" in proc.stdout if name == "deploy.sh" else "--jobs" in proc.stdout


def test_scripts_are_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not found: apt-get install shellcheck")
    scripts = sorted(str(p) for p in (ROOT / "targets").glob("*/*.sh"))
    assert len(scripts) == 2 * len(FOLDERS), scripts
    proc = subprocess.run(
        ["shellcheck", "-x", str(ROOT / "targets" / "common.sh"), *scripts],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _env_without_ndk() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("ANDROID_NDK", "ANDROID_NDK_HOME")}


def test_android_build_without_ndk_names_android_ndk(tmp_path):
    proc = _script(
        "android-arm64", "build.sh", "--build-dir", str(tmp_path / "b"), env=_env_without_ndk()
    )
    assert proc.returncode != 0
    assert "ANDROID_NDK is not set" in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists(), "nothing is configured without the NDK"


def test_android_build_with_wrong_ndk_names_the_missing_toolchain(tmp_path):
    env = {**_env_without_ndk(), "ANDROID_NDK": str(tmp_path)}
    proc = _script("android-arm64", "build.sh", "--build-dir", str(tmp_path / "b"), env=env)
    assert proc.returncode != 0
    assert "build/cmake/android.toolchain.cmake is missing" in proc.stderr, proc.stderr


def test_android_build_error_reaches_python(monkeypatch):
    monkeypatch.delenv("ANDROID_NDK", raising=False)
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
    with pytest.raises(deploy.DeployError, match="ANDROID_NDK is not set"):
        deploy.build("android-arm64")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "0"], "--jobs must be an integer in [1, 1024], got '0'"),
        (["--build-type", "Fast"], "--build-type must be Release"),
        (["--bogus"], "unknown option '--bogus'"),
        (["--build-dir"], "--build-dir needs a value"),
    ],
)
def test_build_sh_rejects_bad_options(args, message):
    proc = _script("armv7", "build.sh", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m.eom", "--host", "pi@pi", "--threads", "0"], "--threads must be"),
        (["--model", "m.eom"], "--host USER@HOST is required"),
        (["--host", "pi@pi"], "--model is required"),
        (["--model", "m.eom", "--host", "pi@x;reboot"], "--host must look like user@host"),
        (["--model", "m.eom", "--host", "pi@pi", "--dir", "a b"], "--dir may hold only"),
        (["--model", "m.eom", "--host", "pi@pi", "--serial", "X"], "--serial is for android"),
    ],
)
def test_deploy_sh_rejects_bad_options(args, message):
    proc = _script("aarch64", "deploy.sh", *args, "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr


def test_cross_build_makes_target_binaries(cross):
    arch, exe = cross
    header = exe.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", exe
    assert int.from_bytes(header[18:20], "little") == ARCHES[arch][3], f"{exe} is not {arch}"
    assert (exe.parent / "libedgeopt_runtime.a").is_file()
    assert (exe.parent / "libedgeopt_kernels.a").is_file()


def _host_reference(path: Path, x: np.ndarray):
    from optimizer import runtime

    rt = runtime.load(path)
    return rt, rt.run(x)


def _check_report(report: dict, rt, path: Path, threads: int, runs: int, warmup: int) -> None:
    assert (report["threads"], report["runs"], report["warmup"]) == (threads, runs, warmup)
    assert report["file_bytes"] == path.stat().st_size
    assert report["weight_bytes"] == rt.weight_bytes
    got = [(la["name"], la["op"], la["macs"]) for la in report["layers"]]
    want = [(la["name"], la["op"], la["macs"]) for la in rt.layers]
    assert got == want
    assert report["latency_ms"]["min"] > 0
    kernels = [la["kernel"] for la in report["layers"]]
    assert any("neon" in k for k in kernels), f"no layer ran a NEON kernel: {kernels}"


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_bench_under_qemu_matches_host(cross, digits_models, kind, tmp_path):
    arch, exe = cross
    path, x = _model(digits_models, kind)
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    report = deploy.run_under_qemu(
        ARCHES[arch][2],
        path,
        threads=2,
        runs=2,
        warmup=1,
        input_path=tmp_path / "x.bin",
        output_path=tmp_path / "y.bin",
        json_out=tmp_path / "bench.json",
        binary=exe,
    )
    rt, want = _host_reference(path, x)
    got = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32).reshape(want.shape)
    if kind == "int8":
        np.testing.assert_array_equal(got, want, err_msg=f"{arch}: int8 is bit-exact")
    else:  # NEON and x86 kernels sum in different orders
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=arch)
    assert (got.argmax(1) == want.argmax(1)).all()
    _check_report(report, rt, path, threads=2, runs=2, warmup=1)
    assert (tmp_path / "bench.json").is_file()


def _stub(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    path.chmod(0o755)
    return path


# The remote command runs here; "./edgeopt-bench" becomes "$FAKE_QEMU ./edgeopt-bench".
_RUN_REMOTE = 'cmd="$*"\nexec bash -c "${cmd//.\\/edgeopt-bench/$FAKE_QEMU ./edgeopt-bench}"\n'


def _fake_device(tmp_path: Path, arch: str) -> dict:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    log = 'echo "$(basename "$0") $*" >> "$FAKE_LOG"\n'
    ssh = _stub(stubs / "ssh", log + "shift\n" + _RUN_REMOTE)
    scp = _stub(
        stubs / "scp",
        log + 'args=()\nfor a in "$@"; do args+=("${a#*@*:}"); done\ncp "${args[@]}"\n',
    )
    adb = _stub(
        stubs / "adb",
        log
        + 'if [ "$1" = -s ]; then shift 2; fi\n'
        + 'case $1 in\n  push | pull) cp "$2" "$3" ;;\n  shell)\n    shift\n'
        + _RUN_REMOTE
        + "    ;;\n  *) exit 64 ;;\nesac\n",
    )
    qemu = deploy.qemu_command(arch)
    return {
        **os.environ,
        "EDGEOPT_SSH": str(ssh),
        "EDGEOPT_SCP": str(scp),
        "EDGEOPT_ADB": str(adb),
        "FAKE_QEMU": " ".join(qemu),
        "FAKE_LOG": str(tmp_path / "calls.log"),
    }


def test_deploy_ssh_to_fake_pi_brings_json_back(cross, digits_models, tmp_path):
    arch, exe = cross
    path, x = _model(digits_models, "float")
    env = _fake_device(tmp_path, arch)
    remote = tmp_path / "pi-home" / "edgeopt"
    out = tmp_path / "local" / "rpi.json"
    out.parent.mkdir()
    res = deploy.deploy_and_bench(
        ARCHES[arch][2],
        path,
        "pi@fakepi",
        threads=2,
        runs=2,
        warmup=1,
        json_out=out,
        remote_dir=str(remote),
        env=env,
    )
    assert res.json_path == out and out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["rpi.json"], "no .part left behind"
    assert (remote / "edgeopt-bench").read_bytes() == exe.read_bytes()
    assert (remote / path.name).read_bytes() == path.read_bytes()
    rt, _ = _host_reference(path, x)
    _check_report(res.report, rt, path, threads=2, runs=2, warmup=1)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["ssh", "scp", "scp", "ssh", "scp"], calls
    assert all(" pi@fakepi" in c for c in calls), calls
    assert len(res.commands) == 6 and res.commands[-1].startswith("mv -f"), res.commands
    assert "latency min" in res.output, "the device's table is passed on"


def test_deploy_adb_to_fake_phone_brings_json_back(digits_models, tmp_path):
    arch = "aarch64"  # a Linux aarch64 binary stands in for the NDK build under qemu
    _need(arch)
    exe = deploy.build(arch, jobs=2)  # up to date after the `cross` fixture: no compile
    path, x = _model(digits_models, "float")
    env = _fake_device(tmp_path, arch)
    remote = tmp_path / "data-local-tmp"
    remote.mkdir()
    out = tmp_path / "phone.json"
    res = deploy.deploy_and_bench(
        "android-arm64",
        path,
        "emulator-5554",
        threads=1,
        runs=3,
        warmup=0,
        json_out=out,
        remote_dir=str(remote),
        binary=exe,
        env=env,
    )
    rt, _ = _host_reference(path, x)
    _check_report(res.report, rt, path, threads=1, runs=3, warmup=0)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[3] for c in calls] == ["shell", "push", "push", "shell", "pull"], calls
    assert all(c.startswith("adb -s emulator-5554 ") for c in calls), calls


def test_deploy_dry_run_lists_commands_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    tool = _stub(tmp_path / "tool", f'touch "{marker}"\nexit 97\n')
    env = {**os.environ, "EDGEOPT_SSH": f"{tool} -p 2222", "EDGEOPT_SCP": str(tool)}
    out = tmp_path / "r.json"
    res = deploy.deploy_and_bench(
        "rpi4",
        tmp_path / "not-there.eom",
        "pi@raspberrypi.local",
        threads=4,
        runs=7,
        warmup=2,
        json_out=out,
        dry_run=True,
        env=env,
    )
    assert not marker.exists() and not out.exists()
    assert len(res.commands) == 6, res.commands
    assert res.commands[0] == f"{tool} -p 2222 pi@raspberrypi.local 'mkdir -p /tmp/edgeopt'"
    remote = "pi@raspberrypi.local:/tmp/edgeopt"
    assert res.commands[1].endswith(f"build/aarch64/edgeopt-bench {remote}/edgeopt-bench")
    bench = res.commands[3]
    flags = ("--threads 4", "--runs 7", "--warmup 2", "--json bench.json", "--model not-there.eom")
    for flag in flags:
        assert flag in bench, bench
    assert res.commands[4] == f"{tool} {remote}/bench.json {out}.part"


def test_deploy_failure_names_the_failing_command(tmp_path):
    model = tmp_path / "m.eom"
    model.write_bytes(b"x")
    binary = tmp_path / "edgeopt-bench"
    binary.write_bytes(b"x")
    tool = _stub(tmp_path / "ssh", "exit 255\n")
    env = {**os.environ, "EDGEOPT_SSH": str(tool), "EDGEOPT_SCP": str(tool)}
    out = tmp_path / "r.json"
    with pytest.raises(deploy.DeployError, match=r"exit code 255: .*mkdir -p /tmp/edgeopt"):
        deploy.deploy_and_bench(
            "rpi5", model, "pi@pi", json_out=out, binary=binary, env=env, runs=1, warmup=0
        )
    assert not out.exists() and not Path(f"{out}.part").exists()


def test_deploy_python_api_checks_arguments(tmp_path):
    model = tmp_path / "m.eom"
    model.write_bytes(b"x")
    common = {"json_out": tmp_path / "r.json", "dry_run": True}
    with pytest.raises(ValueError, match="unknown target 'rpi9'"):
        deploy.deploy_and_bench("rpi9", model, "pi@pi", **common)
    with pytest.raises(ValueError, match="threads must be in"):
        deploy.deploy_and_bench("rpi5", model, "pi@pi", threads=0, **common)
    with pytest.raises(TypeError, match="runs must be an int"):
        deploy.deploy_and_bench("rpi5", model, "pi@pi", runs=2.0, **common)
    with pytest.raises(ValueError, match="host must be 'user@host'"):
        deploy.deploy_and_bench("rpi5", model, None, **common)
    with pytest.raises(FileNotFoundError, match="model_path"):
        deploy.deploy_and_bench("rpi5", tmp_path / "none.eom", "pi@pi", json_out=model)
    with pytest.raises(ValueError, match="qemu-user cannot run Android"):
        deploy.run_under_qemu("android-arm64", model)
    assert [deploy.target_dir(t) for t in ("rpi4", "rpi5", "rpi32", "x86_64-avx2")] == [
        "aarch64",
        "aarch64",
        "armv7",
        "x86_64",
    ]
