"""Coverage-guided fuzzing of the .eom loader with libFuzzer (kernels/fuzz/fuzz_eom_loader.cc, built
with clang, AddressSanitizer and UndefinedBehaviorSanitizer into build/fuzz, as `make fuzz` does).
Seeds are valid files written by the exporters at test time (float, int8 with float islands in
gemmlowp and fp32 requantization, float and int8 block-sparse and codebook weights, compact 1.3 with
packed block-sparse codebook weights, 1.5 with inline int8 weights, a transformer with GATHER);
the fuzzer mutates them for a bounded time and any crash, sanitizer report, leak or timeout fails
the test. A twin binary with a planted heap overflow proves that a finding does fail it. The files
in tests/data/fuzz are inputs the fuzzer once flagged: they replay cleanly under the sanitizers,
and through the ordinary build give a clear ValueError or load and run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optimizer import runtime
from optimizer.export import native
from optimizer.export.native import export_native

ROOT = Path(__file__).resolve().parents[1]
FUZZ_BUILD = ROOT / "build" / "fuzz"
FUZZER = FUZZ_BUILD / "edgeopt-fuzz-eom-loader"
PLANTED = FUZZ_BUILD / "edgeopt-fuzz-eom-loader-planted"
REGRESSIONS = sorted((ROOT / "tests" / "data" / "fuzz").glob("*.eom"))
# Seconds of fuzzing in the test suite (raise it to fuzz longer by hand).
SECONDS = int(os.environ.get("EDGEOPT_FUZZ_SECONDS", "40"))
# The header's magic, FlatBuffer file identifier, byte-order marker and format versions.
DICTIONARY = [
    b"\x89EOM\r\n\x1a\n",
    b"EOM1",
    b"\x0d\x0c\x0b\x0a",
    b"\x01\x00\x05\x00",
    b"\x01\x00\x03\x00",
    b"\x01\x00\x02\x00",
    b"\x40\x00\x00\x00",
]


def _tool(name: str) -> str | None:
    """`name` next to this Python (the project's venv has cmake and ninja), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _libfuzzer_missing(tmp: Path) -> str | None:
    """Why clang cannot build a libFuzzer target here, or None when it can."""
    clang = shutil.which("clang++")
    if clang is None:
        return "clang++ is not installed (apt-get install clang libclang-rt-14-dev; .ci/run does)"
    src = tmp / "probe.cc"
    src.write_text(
        '#include <cstddef>\n#include <cstdint>\nextern "C" int LLVMFuzzerTestOneInput('
        "const uint8_t*, size_t) { return 0; }\n"
    )
    probe = subprocess.run(
        [clang, "-fsanitize=fuzzer,address,undefined", str(src), "-o", str(tmp / "probe")],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return (
            "clang++ cannot link -fsanitize=fuzzer (the libFuzzer runtime is missing: apt-get "
            f"install libclang-rt-14-dev; .ci/run does): {probe.stderr.strip()[-300:]}"
        )
    return None


@pytest.fixture(scope="module")
def fuzzers(tmp_path_factory) -> tuple[Path, Path]:
    """Builds both fuzz targets (the same configuration as `make fuzz`)."""
    reason = _libfuzzer_missing(tmp_path_factory.mktemp("probe"))
    if reason is not None:
        pytest.skip(reason)
    cmake, ninja = _tool("cmake"), _tool("ninja")
    assert cmake is not None, "cmake is missing (it is in requirements-dev.txt)"
    configure = [cmake, "-S", str(ROOT), "-B", str(FUZZ_BUILD), "-DCMAKE_BUILD_TYPE=Debug"]
    configure += ["-DEDGEOPT_FUZZ=ON", "-DCMAKE_CXX_COMPILER=clang++"]
    configure += ["-DEDGEOPT_BUILD_TESTS=OFF", "-DEDGEOPT_BUILD_BENCH=OFF"]
    if ninja is not None:
        configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    jobs = os.environ.get("JOBS", str(os.cpu_count() or 2))
    for cmd in (configure, [cmake, "--build", str(FUZZ_BUILD), "-j", jobs]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        log = done.stdout[-3000:] + done.stderr
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{log}"
    return FUZZER, PLANTED


class _Wide(nn.Module):
    """Many operators in a few KiB: conv, depthwise, fused activations, elementwise, concat,
    pools, upsample, GroupNorm, linear, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(16, 8, 1)
        self.gn = nn.GroupNorm(2, 8)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn(self.conv(x)))
        y = y + torch.sigmoid(self.dw(y))
        z = self.pw(torch.cat([F.hardswish(y), F.silu(y) * torch.tanh(y)], 1))
        z = self.avg(self.gn(self.up(self.pool(z)) - z))
        return torch.softmax(self.fc2(F.gelu(self.fc1(torch.flatten(z, 1)))), -1)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """A folder of small valid files, one per loader path (each loads and runs)."""
    from optimizer import BlockPruneConfig, WeightShareConfig, prune_blocks_, share_weights_
    from optimizer.quantize.ptq import Int8Config, quantize_
    from tests.test_eom_compact import TARGET, _quantized
    from tests.test_eom_inline import _mixed
    from tests.zoo import Transformer

    d = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)
    model, x = _Wide().eval(), torch.randn(1, 3, 4, 4)
    export_native(model, (x,), d / "float.eom")
    # int8 with float islands (QUANTIZE / DEQUANTIZE around the layers int8 has no kernel for)
    config = Int8Config(keep_float=["sub", "gn", "softmax"])
    q = quantize_(model, config, calibration=[x, torch.randn(1, 3, 4, 4)])
    export_native(q, (x,), d / "int8.eom")
    # the same with XNNPACK's fp32 requantization (format 1.4 FP32 stages: conv, linear, add, mul)
    fp32 = Int8Config(keep_float=["sub", "gn", "softmax"], requantization="fp32")
    q = quantize_(model, fp32, calibration=[x, torch.randn(1, 3, 4, 4)])
    export_native(q, (x,), d / "int8_fp32.eom")
    # Float BSR and codebook weights, and int8 BSR (format 1.1)
    torch.manual_seed(0)
    layers = [nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)]
    mlp = nn.Sequential(*layers)
    x = torch.randn(2, 16)
    first, second = (lambda m, name: name == "0"), (lambda m, name: name == "2")
    prune_blocks_(mlp, BlockPruneConfig(block=(8, 4), sparsity=0.5, filter_fn=first)).remove()
    share_weights_(mlp, WeightShareConfig(clusters=16, filter_fn=second))
    export_native(mlp.eval(), (x,), d / "sparse_float.eom")
    export_native(quantize_(mlp, Int8Config(), calibration=[x]), (x,), d / "sparse_int8.eom")
    q, xq = _quantized()  # compact 1.3: conv with a packed BSR-codebook weight, then a linear
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "INLINE_WEIGHTS", False)
        export_native(q, (xq,), d / "packed.eom", target=TARGET)
    # format 1.5: inline packed BSR codebook, int8 BSR and codebook weights with inline biases
    qi, xi = _mixed()
    export_native(qi, (xi,), d / "inline.eom", target=TARGET)
    torch.manual_seed(0)
    tiny = Transformer(vocab=10, seq_len=4, dim=8, heads=2, hidden=8, num_classes=3).eval()
    export_native(tiny, (torch.randint(0, 10, (1, 4)),), d / "transformer.eom")
    # An int8 conv of 1.3 M MACs: enough work for 2 threads (the input's last byte picks 1 or 2)
    torch.manual_seed(0)
    conv, x = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()), torch.randn(2, 16, 12, 12)
    export_native(quantize_(conv.eval(), Int8Config(), calibration=[x]), (x,), d / "threads.eom")
    for f in d.iterdir():
        runtime.load(f)  # a seed that does not load would fuzz the header checks only
    return d


def _dict_entry(token: bytes) -> str:
    """One libFuzzer dictionary line: the token in quotes, every byte escaped as \\xNN."""
    return '"' + "".join(f"\\x{b:02x}" for b in token) + '"\n'


def _fuzz(binary: Path, corpus: Path, work: Path, *flags: str) -> tuple[int, str, list[Path]]:
    """Runs libFuzzer on a copy of `corpus`; returns its exit code, its log and the artifacts."""
    run_corpus, artifacts = work / "corpus", work / "artifacts"
    shutil.copytree(corpus, run_corpus)
    artifacts.mkdir()
    dictionary = work / "eom.dict"
    dictionary.write_text("".join(_dict_entry(token) for token in DICTIONARY))
    cmd = [str(binary), str(run_corpus), f"-artifact_prefix={artifacts}/", f"-dict={dictionary}"]
    # A unit takes at most ~0.1 s (the harness bounds the MACs it runs); 20 s is a hang even on a
    # machine shared with other jobs. Memory: one allocation over 512 MiB is a finding; the
    # process as a whole may reach 2 GiB, since ASan keeps freed blocks (a valid model's arena
    # of up to 256 MiB, EDGEOPT_MAX_ARENA_BYTES) in its quarantine and libFuzzer's RSS grew past
    # 1 GiB on a CI run with 25 MB live.
    cmd += ["-timeout=20", "-rss_limit_mb=2048", "-malloc_limit_mb=512", "-print_final_stats=1"]
    cmd += list(flags)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:quarantine_size_mb=64")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=SECONDS + 120)
    return done.returncode, done.stdout + done.stderr, sorted(artifacts.iterdir())


def _stat(log: str, name: str) -> int:
    found = re.search(rf"stat::{name}:\s+(\d+)", log)
    assert found, f"libFuzzer printed no stat::{name}:\n{log[-3000:]}"
    return int(found.group(1))


def test_libfuzzer_finds_no_crash_leak_or_timeout_in_the_loader(fuzzers, seeds, tmp_path):
    fuzzer, _ = fuzzers
    code, log, artifacts = _fuzz(fuzzer, seeds, tmp_path, f"-max_total_time={SECONDS}")
    names = [a.name for a in artifacts]
    assert code == 0 and not artifacts, (
        f"libFuzzer found a bug in the .eom loader (exit {code}, artifacts {names}); replay "
        f"with `{fuzzer} <artifact>`, add it to tests/data/fuzz once fixed:\n{log[-6000:]}"
    )
    # The fuzzer must have done real work: many inputs, and mutations that reached new code.
    executed, added = _stat(log, "number_of_executed_units"), _stat(log, "new_units_added")
    rate = _stat(log, "average_exec_per_sec")
    print(f"libFuzzer: {executed} inputs in {SECONDS} s ({rate}/s), {added} reached new code")
    assert executed >= 20 * SECONDS, f"only {executed} inputs ran in {SECONDS} s:\n{log[-3000:]}"
    assert added >= 10, f"only {added} mutations reached new code:\n{log[-3000:]}"


def test_a_planted_heap_overflow_is_reported_and_fails_the_run(fuzzers, tmp_path):
    _, planted = fuzzers
    corpus = tmp_path / "seed"
    corpus.mkdir()
    torch.manual_seed(0)
    one_op = nn.Sequential(nn.Linear(4, 3)).eval()
    export_native(one_op, (torch.randn(2, 4),), corpus / "one_op.eom")
    assert len(runtime.load(corpus / "one_op.eom").layers) == 1  # the planted bug's trigger
    code, log, artifacts = _fuzz(planted, corpus, tmp_path / "run", "-runs=100")
    assert code != 0, f"the planted overflow went unnoticed:\n{log[-3000:]}"
    assert "heap-buffer-overflow" in log, log[-3000:]
    assert [a.name[:6] for a in artifacts] == ["crash-"], artifacts
    assert artifacts[0].read_bytes() == (corpus / "one_op.eom").read_bytes()


def test_inputs_that_once_failed_replay_clean_under_the_sanitizers(fuzzers):
    fuzzer, _ = fuzzers
    assert REGRESSIONS, "tests/data/fuzz holds no .eom file"
    done = subprocess.run([str(fuzzer), *map(str, REGRESSIONS)], capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_inputs_that_once_failed_are_refused_or_run(path):
    """Through the ordinary build: a clear ValueError, or a model that loads and runs."""
    try:
        rt = runtime.loads(path.read_bytes())
    except ValueError as e:
        assert str(e).startswith("edgeopt model: "), e
        return
    inputs = [np.zeros(spec["shape"], spec["dtype"]) for spec in rt.inputs]
    outputs = rt.run(*inputs)
    outputs = outputs if len(rt.outputs) > 1 else [outputs]
    assert [tuple(o.shape) for o in outputs] == [tuple(s["shape"]) for s in rt.outputs]
