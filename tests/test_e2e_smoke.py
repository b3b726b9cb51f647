"""benchmarks/e2e.py runs end to end on the digits MLP (a smoke run: structure of its tables and
JSON, and sane accuracies; speed is judged by reading the benchmark's output, never by a test)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTESTANTS = (
    "ours fp32",
    "ours int8",
    "ours pruned int8",
    "PyTorch fp32",
    "PyTorch x86 int8",
    "ORT int8",
    "LiteRT int8",
)
OURS_INT8 = ("ours int8", "ours pruned int8")


def _int8_runtime_written() -> bool:
    """True once export_native writes int8 operators (its int8 format version, 1.1)."""
    from optimizer.export import native

    return tuple(getattr(native, "FORMAT_VERSION_INT8", (1, 0))) >= (1, 1)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    out = tmp / "e2e.json"
    env = {**os.environ, "EDGEOPT_CACHE": str(tmp / "cache")}  # trains the MLP here (seconds)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "e2e.py"), "--quick", "--models", "mlp",
         "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _table(stdout: str, heading: str) -> list[list[str]]:
    """The Markdown table under ``## heading``: rows of cells (header and separator included)."""
    block = stdout.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in block.splitlines()
        if line.startswith("|")
    ]


def test_header_names_the_machine_and_isa_path(quick_run):
    stdout, data = quick_run
    first = stdout.splitlines()[0]
    assert first.startswith("# End to end") and data["machine"]["arch"] in first
    assert "ISA paths" in first and "onnxruntime" in first
    assert data["machine"]["isa_paths"], data["machine"]


def test_latency_table_has_every_contestant_with_a_number_or_a_reason(quick_run):
    stdout, data = quick_run
    rows = _table(stdout, "Latency µs")
    assert rows[0] == ["model", "threads", *CONTESTANTS]
    (body,) = rows[2:]  # one model, one thread count
    assert body[:2] == ["mlp", "1"]
    for name, cell in zip(CONTESTANTS, body[2:]):
        assert re.fullmatch(r"\d+\.\d / \d+\.\d", cell) or cell.startswith("n/a ("), (name, cell)
    cells = data["rows"][0]["latency"]["1"]
    for name in CONTESTANTS:
        c = cells[name]
        assert ("median_us" in c and 0 < c["median_us"] <= c["p90_us"]) or c["error"], (name, c)
    # Ours in float and every peer must run here (all are in requirements-dev.txt).
    for name in ("ours fp32", "PyTorch fp32", "PyTorch x86 int8", "ORT int8", "LiteRT int8"):
        assert "median_us" in cells[name], (name, cells[name])


def test_accuracies_are_sane_and_files_measured(quick_run):
    _, data = quick_run
    variants = data["rows"][0]["variants"]
    assert set(variants) == set(CONTESTANTS)
    ref = variants["PyTorch fp32"]["accuracy"]
    assert ref is not None and ref >= 95.0, ref
    assert variants["ours fp32"]["accuracy"] == pytest.approx(ref, abs=0.5)  # same fp32 model
    for name, v in variants.items():
        if v["accuracy"] is None:
            assert v["error"], (name, v)
            continue
        assert 90.0 <= v["accuracy"] <= 100.0, (name, v["accuracy"])  # nobody wins by being wrong
        assert v["file_bytes"] and v["file_bytes"] > 0, (name, v)
    if _int8_runtime_written():
        for name in OURS_INT8:
            assert variants[name]["accuracy"] is not None, (name, variants[name]["error"])
    else:  # until the int8 runtime lands, the reason is export_native's refusal, shown as n/a
        for name in OURS_INT8:
            assert "export_native" in (variants[name]["error"] or ""), variants[name]


def test_ratios_agreement_and_verdicts_are_printed(quick_run):
    stdout, data = quick_run
    ratios = _table(stdout, "Speed-up of ours")
    assert ratios[0][:2] == ["model", "threads"] and "int8 vs ORT int8" in ratios[0]
    assert len(ratios[2]) == len(ratios[0])
    agreement = data["rows"][0]["agreement"]
    fp32 = next(a for a in agreement if a["variant"] == "ours fp32")
    assert fp32["profile_us"] > 0
    if "bench_us" in fp32:  # edgeopt-bench is built by `make native`
        assert fp32["bench_us"] > 0 and "diff" in fp32
    else:
        assert "edgeopt-bench" in fp32["error"] or "make native" in fp32["error"], fp32
    if "median_us" in data["rows"][0]["latency"]["1"]["ours int8"]:  # where to look when slower
        slowest = _table(stdout, "Slowest operators of ours int8")
        assert slowest[0][:4] == ["model", "layer", "op", "kernel"] and slowest[2][0] == "mlp"
    verdicts = stdout.split("## Verdicts", 1)[1].strip().splitlines()[1:]
    lines = [v for v in verdicts if v.strip()][:-1]  # the last line is the PASS/FAIL count
    assert lines and all(re.match(r"(PASS|FAIL|N/A|NOTE) ", v) for v in lines), lines
    assert any("PyTorch fp32" in v and "3x" in v for v in lines)
    assert data["verdicts"] == lines
