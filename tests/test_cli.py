"""The `edgeopt` command line: targets, compress end to end, --help everywhere, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from optimizer import targets
from optimizer.cli import EXIT_BUDGET, EXIT_OK, EXIT_USAGE, main

DIGITS = "optimizer.examples.digits"
COMMANDS = ("compress", "targets", "export", "bench", "report", "demo")

TINY = """
[budget]
{budget}
[[stages]]
kind = "prune_channels"
ratio = 0.5
[[stages]]
kind = "distill"
epochs = 1
[[stages]]
kind = "quantize"
calibration_batches = 2
"""


def _run(args, tmp_path, **env):
    e = dict(os.environ, EDGEOPT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "optimizer.cli", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=300,
    )


def test_targets_lists_every_profile_and_marks_host(capsys):
    assert main(["targets"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(f"| {n}" in out for n in targets.names())
    assert f"{targets.host().name} (host)" in out


def test_targets_json(capsys):
    assert main(["targets", "--json"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == targets.names()
    assert sum(r["host"] for r in rows) == 1


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd, capsys):
    assert main([cmd, "--help"]) == EXIT_OK
    assert f"usage: edgeopt {cmd}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "usage: edgeopt"),
        (["frobnicate"], "invalid choice"),
        (["compress", "--example", "digits-vgg", "--model", "a:b"], "not allowed with"),
        (["compress", "--recipe", "nope.toml"], "does not exist"),
        (["compress", "--recipe", "fastest"], "unknown recipe"),
        (["compress", "--target", "pi9", "--dry-run"], "unknown target"),
        (["compress"], "give --model"),
        (["compress", "--model", "os:getcwd"], "needs --data"),
        (["compress", "--model", "no_such_mod:f", "--data", "x:y"], "cannot import"),
        (["bench", "no/such.eom"], "`no/such.eom` not found"),
        (["bench", "x.eom", "--host", "pi@pi"], "--host needs --target"),
        (["report", "no/such/dir"], "summary.json` not found"),
        (["export", "--model", f"{DIGITS}:mlp_digits", "--out", "o"], "give --input-shape"),
        (["export", "--model", "os:getcwd", "--int8", "--out", "o"], "needs --data"),
    ],
)
def test_usage_errors_exit_2_with_message_on_stderr(argv, needle, capsys):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert needle in err


def test_bad_recipe_key_exits_2_naming_stage(tmp_path, capsys):
    p = tmp_path / "r.toml"
    p.write_text('[[stages]]\nkind = "distill"\nepoch = 1\n')
    assert main(["compress", "--example", "digits-mlp", "--recipe", str(p)]) == EXIT_USAGE
    assert "stage 1 (distill): unknown key `epoch`" in capsys.readouterr().err


def test_dry_run_prints_the_resolved_builtin_recipe(capsys):
    assert main(["compress", "--recipe", "default", "--target", "rpi4", "--dry-run"]) == EXIT_OK
    plan = json.loads(capsys.readouterr().out)
    assert plan["target"] == "rpi4" and plan["stages"][0]["config"]["round_to"] == 8


@pytest.mark.parametrize(
    ("budget", "code"),
    [("max_accuracy_drop = 100.0", EXIT_OK), ("min_size_reduction = 1000.0", EXIT_BUDGET)],
)
def test_compress_example_end_to_end_in_a_subprocess(tmp_path, budget, code):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.format(budget=budget))
    out = tmp_path / "out"
    args = ["compress", "--example", "digits-mlp", "--pretrain-epochs", "2", "--threads", "1"]
    args += ["--recipe", str(recipe), "--target", "rpi5", "--out", str(out), "-q"]
    proc = _run(args, tmp_path)
    assert proc.returncode == code, proc.stderr
    assert "| 3 | quantize |" in proc.stdout  # the table goes to stdout, messages to stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [s["kind"] for s in summary["stages"]] == [
        "original",
        "prune_channels",
        "distill",
        "quantize",
    ]
    assert summary["ok"] is (code == EXIT_OK) and summary["size_reduction"] > 2
    assert (out / "model.pt").is_file() and (out / "model_float.pt").is_file()
    if code == EXIT_BUDGET:
        assert "budget not met: min_size_reduction" in proc.stderr
        return
    # Both formats written, each run on the test split in its own runtime, and the report.
    final = summary["stages"][-1]["accuracy"]
    for fmt, name in (("native", "model.eom"), ("tflite", "model.tflite")):
        info = summary["exports"][fmt]
        assert info["file"] == name and (out / name).stat().st_size == info["bytes"]
        assert abs(info["accuracy"] - final) <= 1.0, (fmt, info, final)
    assert (out / "report" / "report.html").is_file() and (out / "report" / "report.md").is_file()

    # bench: native + LiteRT + PyTorch on the same input, JSON with the per-layer profile.
    bench = tmp_path / "bench.json"
    args = ["bench", str(out / "model.eom"), "--tflite", str(out / "model.tflite"), "--runs", "5"]
    args += ["--example", "digits-mlp", "--pretrain-epochs", "2", "--json", str(bench), "-q"]
    proc = _run(args, tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    payload = json.loads(bench.read_text())
    assert [r["runtime"] for r in payload["rows"]] == ["native", "litert", "pytorch"]
    assert all(r["median_us"] > 0 for r in payload["rows"])
    assert payload["profile"]["layers"] and "| litert | model.tflite |" in proc.stdout

    # report: rebuilt from summary.json plus the bench rows and profile.
    proc = _run(
        ["report", str(out), "--bench", str(bench), "--out", str(tmp_path / "rep")], tmp_path
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "litert" in md and "quantize" in md


def test_export_example_int8_to_both_formats(tmp_path):
    out = tmp_path / "exp"
    args = ["export", "--example", "digits-mlp", "--pretrain-epochs", "2", "--int8"]
    proc = _run([*args, "--out", str(out), "-q"], tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info) == {"native", "tflite"}
    assert info["native"]["accuracy"] > 80 and info["tflite"]["accuracy"] > 80
    assert abs(info["native"]["accuracy"] - info["tflite"]["accuracy"]) <= 1.0


def test_demo_quick_prints_the_summary_and_writes_reports(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--recipes", "default", "--runs", "5", "--out", str(out), "-q"]
    proc = _run(args, tmp_path)
    assert proc.returncode in (EXIT_OK, EXIT_BUDGET), proc.stderr  # 1: a goal missed (quick)
    assert "| original | pytorch |" in proc.stdout and "| default | native |" in proc.stdout
    assert "| default | litert |" in proc.stdout
    assert "x smaller file" in proc.stdout
    assert (out / "report-default" / "report.html").is_file()
    rows = json.loads((out / "demo.json").read_text())["rows"]
    native = next(r for r in rows if r["recipe"] == "default" and r["runtime"] == "native")
    assert native["size_bytes"] < rows[0]["size_bytes"] / 4  # int8 and pruned: much smaller


def test_compress_user_model_from_module_factory(tmp_path):
    pkg = tmp_path / "userpkg.py"
    pkg.write_text(
        "from optimizer.examples import digits\n"
        "def make():\n    return digits.mlp_digits()\n"
        "def data():\n    tr, te = digits.loaders()\n    return list(tr)[:4], list(te)\n"
    )
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[stages]]\nkind = "prune_channels"\nratio = 0.5\n')
    args = ["compress", "--model", "userpkg:make", "--data", "userpkg:data", "--recipe"]
    proc = _run(
        [*args, str(recipe), "--out", str(tmp_path / "o"), "-q"],
        tmp_path,
        PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    from optimizer import load
    from optimizer.examples import digits

    model = load(tmp_path / "o" / "model.pt", digits.mlp_digits)
    assert model.net[0].out_features < 256


def test_bench_on_a_device_dry_run_prints_the_commands(tmp_path):
    eom = tmp_path / "m.eom"
    eom.write_bytes(b"\0" * 64)  # dry run: the file is copied, never parsed here
    args = ["bench", str(eom), "--target", "rpi5", "--host", "pi@raspberrypi", "--dry-run"]
    proc = _run([*args, "--runs", "7", "--json", str(tmp_path / "d.json")], tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "scp" in proc.stdout and "pi@raspberrypi" in proc.stdout
    assert "./edgeopt-bench --model m.eom" in proc.stdout and "--runs 7" in proc.stdout
    assert not (tmp_path / "d.json").exists()


def test_targets_into_a_closed_pipe_is_not_an_error():
    proc = subprocess.run(
        f"{sys.executable} -m optimizer.cli targets | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "| target |" in proc.stdout
    assert "Traceback" not in proc.stderr
